"""Spin energy models: the reference's ``spin`` section (the virtual-atom "deepspin" scheme).

Each atom ``i`` of a magnetic type ``t`` (``use_spin[t]``) gets a virtual atom at
``R_i + s_i * virtual_scale[t]`` (``s_i`` the atomic spin, μB); its type is ``t + ntypes``
(named ``<element>_spin``). Atoms of non-magnetic types get a placeholder at their own position
(type ``t + ntypes`` too), which every pair involving it excludes. A standard DP energy model
(the *backbone*) over the doubled type map then sees ``2 nloc`` atoms:

* the descriptor: type map ``type_map + [e + "_spin"]``, its ``exclude_types`` the placeholder
  pairs plus ``model/pair_exclude_types``, ``env_protection`` 0.01 unless set, ``sel`` doubled
  for descriptors that keep neighbour types apart (se_e2_a);
* the fitting: virtual and placeholder atoms are excluded (their energy is zero), so
  ``E = sum_i e_i`` over the real atoms;
* outputs: ``force_i = F_i + F_i'`` (real plus virtual atom), the magnetic force
  ``force_mag_i = -dE/ds_i = F_i' * virtual_scale[t]`` (zero for non-magnetic types;
  ``mask_mag`` marks the magnetic atoms), and the virial with the virtual atoms moved back onto
  their real atoms (``sum_k F_k (x) R_k - sum_i F_i' (x) s_i virtual_scale``): the spins stay
  fixed when the cell deforms.

Inputs are those of :class:`~lamkit.model.EnergyModel` plus ``spin`` [nf, nloc, 3]; the
neighbour data must come from :meth:`SpinEnergyModel.neighbor_builder` (it builds the lists
of the doubled system, and also takes ``spin``).
"""

from __future__ import annotations

import torch

from .. import keys
from ..config.schema import REQUIRED, Arg, normalize
from ..descriptor.base import pair_exclude_mask
from ..errors import ConfigError
from ..geometry.env import gather_rows
from ..geometry.neighbor import NeighborBuilder
from .energy_model import EnergyModel

SPIN_ARGS = (
    Arg("use_spin", (list,), REQUIRED, doc="per type: bool, or the magnetic type indices/names"),
    Arg("virtual_scale", (list, float), REQUIRED, doc="Å/μB, per type, per magnetic type or one"),
    Arg("scheme", (str,), "deepspin", choices=("deepspin",)),
    Arg("allow_missing_label", (bool,), False),
    # TensorFlow-only keys of the reference: accepted, not used
    Arg("spin_norm", (list, type(None)), None),
    Arg("virtual_len", (list, type(None)), None),
)


# a ConfigError (a ValueError too): the CLI shows it without a traceback
_NO_SPIN = (
    "a spin model needs the atomic spins (spin [nf, nloc, 3], spin.npy); this path does not "
    "pass them (spin models work with lam train, lam test, DeepPot.eval(spin=...), "
    "lam convert; not yet with fine-tuning, change-bias, model deviation or ASE)"
)


def normalize_spin(spin: dict, type_map: list[str], path: str = "model/spin") -> dict:
    """The ``spin`` section with ``use_spin`` as one bool per type and ``virtual_scale`` as one
    float per type (zero for non-magnetic types), as the reference expands them."""
    conf = normalize(spin, SPIN_ARGS, path)
    if conf["allow_missing_label"]:
        raise ConfigError(
            f"{path}/allow_missing_label: only the reference's SeZM/DPA-4 spin models take it"
        )
    nt = len(type_map)
    use = conf["use_spin"]
    if use and all(isinstance(u, bool) for u in use):
        if len(use) != nt:
            raise ConfigError(f"{path}/use_spin: {len(use)} flags for the {nt} types {type_map}")
        flags = list(use)
    else:
        flags = [False] * nt
        for u in use:
            if isinstance(u, str):
                if u not in type_map:
                    raise ConfigError(f"{path}/use_spin: '{u}' is not in type_map {type_map}")
                u = type_map.index(u)
            if isinstance(u, bool) or not isinstance(u, int) or not 0 <= u < nt:
                raise ConfigError(
                    f"{path}/use_spin: expected {nt} bools, or type indices (0..{nt - 1}) or "
                    f"element names, got {use}"
                )
            flags[u] = True
    scale = conf["virtual_scale"]
    nmag = sum(flags)
    if isinstance(scale, float):
        full = [scale] * nt
    elif len(scale) == nt:
        full = [float(v) for v in scale]
    elif len(scale) == nmag:
        it = iter(scale)
        full = [float(next(it)) if f else 0.0 for f in flags]
    else:
        raise ConfigError(
            f"{path}/virtual_scale: expected {nt} values (one per type) or {nmag} (one per "
            f"magnetic type), got {len(scale)}"
        )
    return {**conf, "use_spin": flags, "virtual_scale": full}


def backbone_config(conf: dict) -> dict:
    """The standard model config of the backbone over the doubled type map (see the module
    docstring) from a normalised spin model config."""
    tm = list(conf["type_map"])
    nt = len(tm)
    flags = conf["spin"]["use_spin"]
    placeholders = [nt + t for t in range(nt) if not flags[t]]
    pair_excl = [[p, j] for p in placeholders for j in range(2 * nt)]
    pair_excl += [list(p) for p in conf.get("pair_exclude_types", [])]
    atom_excl = sorted(set(range(nt, 2 * nt)) | set(conf.get("atom_exclude_types", [])))
    dconf = dict(conf["descriptor"])
    dconf["exclude_types"] = pair_excl
    if not dconf.get("env_protection"):
        dconf["env_protection"] = 0.01
    sel = dconf.get("sel")
    if isinstance(sel, list) and len(sel) == nt:  # neighbour types kept apart: one per type
        dconf["sel"] = sel + sel
    out = {k: v for k, v in conf.items() if k != "spin"}
    out.update(
        type_map=tm + [t + "_spin" for t in tm],
        descriptor=dconf,
        pair_exclude_types=[],
        atom_exclude_types=atom_excl,
    )
    return out


def is_spin_model(model) -> bool:
    return isinstance(model, SpinEnergyModel)


class SpinEnergyModel(EnergyModel):
    """Energy, forces, magnetic forces and virials of magnetic systems.

    ``type_map`` is the real one (what data and users name); the backbone's descriptor, fitting
    and ``out_bias`` [2 ntypes, 1] span the doubled type map ``backbone_type_map`` and
    ``ntypes`` counts its types.
    """

    extra_inputs = (keys.SPIN,)

    def __init__(self, descriptor, fitting, type_map, atom_exclude_types=(), config=None):
        super().__init__(descriptor, fitting, type_map, atom_exclude_types, config)
        spin = self.config["spin"]
        self.backbone_type_map = list(type_map)
        self.ntypes_real = len(type_map) // 2
        self.type_map = list(type_map[: self.ntypes_real])
        flags = torch.tensor(spin["use_spin"], dtype=torch.float64)
        scale = torch.tensor(spin["virtual_scale"], dtype=torch.float64) * flags
        self.register_buffer("virtual_scale_mask", scale, persistent=False)
        self.register_buffer("spin_mask", flags, persistent=False)

    def neighbor_builder(self, cache: bool = False) -> SpinNeighborBuilder:
        return SpinNeighborBuilder(self, cache)

    # --- the doubled system --------------------------------------------------------------------
    def _per_atom(self, table: torch.Tensor, atype: torch.Tensor) -> torch.Tensor:
        """``table[atype]`` [nf, n] with zero for virtual (padding) atoms (atype -1)."""
        vals = table.to(atype.device)[atype.clamp(min=0)]
        return torch.where(atype >= 0, vals, torch.zeros_like(vals))

    def pack(
        self, coord: torch.Tensor, atype: torch.Tensor, spin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Coordinates [nf, 2 nloc, 3] and types [nf, 2 nloc] of the real then the virtual
        atoms, and the virial correction [nf, 2 nloc, 3] (minus each virtual atom's offset)."""
        nf, nloc = atype.shape
        coord = coord.reshape(nf, nloc, 3)
        spin = spin.reshape(nf, nloc, 3).to(coord.dtype)
        dist = spin * self._per_atom(self.virtual_scale_mask, atype).to(coord.dtype)[..., None]
        vtype = torch.where(atype >= 0, atype + self.ntypes_real, torch.full_like(atype, -1))
        return (
            torch.cat([coord, coord + dist], dim=1),
            torch.cat([atype, vtype], dim=1),
            torch.cat([torch.zeros_like(coord), -dist], dim=1),
        )

    def statistics_batches(self, batches: list[dict]) -> list[dict]:
        """Statistics batches in the backbone's layout: virtual atoms added, atom counts
        ``[2n, 2n, n_0.., 0..]`` (virtual types hold no energy, as the reference's exclusion
        of their columns), atomic parameters zero on the virtual atoms."""
        out = []
        for b in batches:
            b = dict(b)
            atype = torch.as_tensor(b[keys.ATYPE])
            coord = torch.as_tensor(b[keys.COORD]).reshape(*atype.shape, 3)
            c, t, _ = self.pack(coord, atype, torch.as_tensor(b.pop(keys.SPIN)))
            b[keys.COORD], b[keys.ATYPE] = c, t
            nat = torch.as_tensor(b[keys.NATOMS])
            b[keys.NATOMS] = torch.cat(
                [2 * nat[:, :2], nat[:, 2:], torch.zeros_like(nat[:, 2:])], dim=1
            )
            if b.get(keys.APARAM) is not None:
                ap = torch.as_tensor(b[keys.APARAM]).reshape(*atype.shape, -1)
                b[keys.APARAM] = torch.cat([ap, torch.zeros_like(ap)], dim=1)
            out.append(b)
        return out

    # --- forward ---------------------------------------------------------------------------------
    def atomic_outputs(
        self,
        ext_coord,
        ext_atype,
        nlist,
        mapping,
        fparam=None,
        aparam=None,
        chunking=None,
        descriptor_inputs=None,
    ):
        """As the standard model's, with the excluded pairs (placeholders, and
        ``pair_exclude_types``) first removed from the neighbour list, as the reference's atomic
        model does: for the descriptor they are then empty slots, not zeroed rows."""
        nloc = nlist.shape[1]
        keep = pair_exclude_mask(
            self.descriptor.exclude_types, self.ntypes, ext_atype[:, :nloc], ext_atype, nlist
        )
        if keep is not None:
            nlist = torch.where(keep, nlist, torch.full_like(nlist, -1))
        return super().atomic_outputs(
            ext_coord, ext_atype, nlist, mapping, fparam, aparam, chunking, descriptor_inputs
        )

    def forward(
        self,
        coord: torch.Tensor,
        atype: torch.Tensor,
        box: torch.Tensor | None,
        nbr: dict[str, torch.Tensor],
        fparam: torch.Tensor | None = None,
        aparam: torch.Tensor | None = None,
        do_force: bool = True,
        do_virial: bool = True,
        do_atomic_virial: bool = False,
        create_graph: bool = False,
        chunk_atoms: int | None = None,
        spin: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Predictions for coord [nf, nloc, 3] Å, atype [nf, nloc], spin [nf, nloc, 3] μB and
        box [nf, 9] Å or None, with ``nbr`` from :meth:`neighbor_builder` (same spins).

        Returns energy [nf, 1], atom_energy [nf, nloc, 1], mask [nf, nloc], mask_mag
        [nf, nloc, 1] (bool) and, as asked, force and force_mag [nf, nloc, 3] (eV/Å, eV/μB),
        virial [nf, 9], atom_virial [nf, nloc, 9] (real plus virtual atom).
        """
        if spin is None:
            raise ConfigError(_NO_SPIN)
        nf, nloc = atype.shape
        coord = coord.detach().to(torch.float64).reshape(nf, nloc, 3)
        pcoord, ptype, corr = self.pack(coord, atype, spin.detach())
        if aparam is not None:
            aparam = aparam.reshape(nf, nloc, -1)
            aparam = torch.cat([aparam, torch.zeros_like(aparam)], dim=1)
        need_ext = do_virial or do_atomic_virial
        out = super().forward(
            pcoord,
            ptype,
            box,
            nbr,
            fparam,
            aparam,
            do_force=do_force or need_ext,
            do_virial=do_virial,
            do_atomic_virial=do_atomic_virial,
            create_graph=create_graph,
            chunk_atoms=chunk_atoms,
        )
        scale = self._per_atom(self.virtual_scale_mask, atype)[..., None]  # [nf, nloc, 1]
        res = {
            keys.ENERGY: out[keys.ENERGY],
            keys.ATOM_ENERGY: out[keys.ATOM_ENERGY][:, :nloc],
            keys.MASK: out[keys.MASK][:, :nloc],
            keys.MASK_MAG: scale > 0,
        }
        if keys.FORCE in out:
            force = out[keys.FORCE]
            res[keys.FORCE] = force[:, :nloc] + force[:, nloc:]
            res[keys.FORCE_MAG] = force[:, nloc:] * scale.to(force.dtype)
        if need_ext:
            mapping = nbr[keys.MAPPING]
            ext_force = out[keys.EXT_FORCE]
            ext_corr = gather_rows(corr.to(ext_force.dtype), mapping)  # [nf, nall, 3]
            ext_vir = (ext_force.unsqueeze(-1) * ext_corr.unsqueeze(-2)).reshape(nf, -1, 9)
            if keys.VIRIAL in out:
                res[keys.VIRIAL] = out[keys.VIRIAL] + ext_vir.sum(1)
            if do_atomic_virial:
                idx9 = mapping.unsqueeze(-1).expand(-1, -1, 9)
                av = out[keys.ATOM_VIRIAL] + torch.zeros_like(out[keys.ATOM_VIRIAL]).scatter_add(
                    1, idx9, ext_vir
                )
                res[keys.ATOM_VIRIAL] = av[:, :nloc] + av[:, nloc:]
        return res

    def evaluate(self, coord, atype, box=None, fparam=None, aparam=None, spin=None, **kw):
        """Convenience: build neighbour data and run ``forward`` (inputs as torch tensors)."""
        nbr = self.neighbor_builder()(coord, atype, box, spin=spin)
        nbr = {k: v.to(coord.device) for k, v in nbr.items()}
        return self.forward(coord, atype, box, nbr, fparam, aparam, spin=spin, **kw)

    # --- declarations (lamkit.nn.params): the reference's SpinModel wraps the standard one
    REF_ROOT = "backbone_model"


class SpinNeighborBuilder:
    """Neighbour data of the doubled (real + virtual atoms) system of a spin model; called as
    :class:`~lamkit.geometry.NeighborBuilder` plus ``spin`` [nf, nloc, 3]."""

    def __init__(self, model: SpinEnergyModel, cache: bool = False):
        self.model = model
        self.inner = NeighborBuilder(model.rcut, model.sel, model.mixed_types, cache=cache)

    def __call__(self, coord, atype, box, cache_keys: list | None = None, spin=None):
        if spin is None:
            raise ConfigError(_NO_SPIN)
        atype_t = torch.as_tensor(atype).detach().cpu()
        nf = len(coord)
        atype_t = atype_t.reshape(nf, -1)
        coord_t = torch.as_tensor(coord).detach().cpu().to(torch.float64).reshape(nf, -1, 3)
        spin_t = torch.as_tensor(spin).detach().cpu().to(torch.float64)
        with torch.no_grad():
            pcoord, ptype, _ = self.model.pack(coord_t, atype_t, spin_t)
        return self.inner(pcoord, ptype, box, cache_keys=cache_keys)
