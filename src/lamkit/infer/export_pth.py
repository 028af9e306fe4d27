"""``lam freeze --format pth``: an energy model as TorchScript for DeePMD-kit's C++ inference.

DeePMD-kit's ``DeepPotPT`` (and through it ``pair_style deepmd`` in LAMMPS) and its Python
``deepmd.infer.DeepPot`` load a ``.pth`` file with ``torch.jit.load`` and call methods of the
scripted module. The file written here has them:

* ``forward_lower(extended_coord [nf, nall*3] or [nf, nall, 3], extended_atype [nf, nall],
  nlist [nf, nloc, nnei], mapping, fparam, aparam, do_atomic_virial[, comm_dict])`` ->
  ``{"energy" [nf, 1], "atom_energy" [nf, nloc, 1], "extended_force" [nf, nall, 3],
  "virial" [nf, 9], "extended_virial" [nf, nall, 9]}``. The neighbour list may come as any
  engine builds it: unsorted, any width, -1 padded, with atoms beyond ``rcut``; it is reduced
  to the model's ``sel`` nearest neighbours inside the program.
* ``forward(coord [nf, nloc, 3], atype [nf, nloc], box [nf, 9] or None, do_atomic_virial,
  fparam, aparam, charge_spin)`` -> ``energy, atom_energy, force, virial[, atom_virial]``: the
  periodic images and the neighbour list are built inside (brute force over all image pairs:
  meant for the small systems a Python caller evaluates, not for MD).
* getters with values fixed when freezing: ``get_rcut``, ``get_type_map``, ``get_ntypes``,
  ``get_sel``, ``get_dim_fparam``, ``get_dim_aparam``, ``has_message_passing``, ...

The model's forward and backward pass (forces, virials) are traced into one graph of ATen
operations with ``make_fx`` and symbolic sizes, which is then compiled with
``torch.jit.script``: the file holds no lamkit code and loads in a process without lamkit.
"""

from __future__ import annotations

import contextlib
import copy
import json
import warnings
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..model.energy_model import EnergyModel
from .export_dense import dense_type_selection, supported
from .export_pt2 import _aten_only

# DeePMD-kit's C++ DeepPotPT reads these keys from forward_lower's result
LOWER_OUTPUTS = ("energy", "atom_energy", "extended_force", "virial", "extended_virial")


def format_nlist(
    ext: torch.Tensor,
    ext_atype: torch.Tensor,
    nlist: torch.Tensor,
    rcut: float,
    sel: list[int],
    mixed_types: bool,
) -> torch.Tensor:
    """An engine's neighbour list [nf, nloc, nnei] (any order and width, -1 padded, may hold
    atoms beyond ``rcut``) as the model's: the nearest ``sum(sel)`` real neighbours within
    ``rcut`` sorted by distance, -1 padded; without ``mixed_types`` split into per-type
    sections of ``sel[t]`` slots (the nearest of each type among those ``sum(sel)``)."""
    nf, nloc, nnei = nlist.shape
    nsel = int(sum(sel))
    valid = nlist >= 0
    index = torch.where(valid, nlist, 0).reshape(nf, nloc * nnei, 1)
    neigh = torch.gather(ext, 1, index.expand(-1, -1, 3)).reshape(nf, nloc, nnei, 3)
    dist = torch.linalg.vector_norm(neigh - ext[:, :nloc].unsqueeze(2), dim=-1)
    ntype = torch.gather(ext_atype, 1, index.reshape(nf, nloc * nnei)).reshape(nf, nloc, nnei)
    valid = valid & (ntype >= 0) & (dist <= rcut)
    dist = torch.where(valid, dist, float("inf"))
    # nsel padding columns, so that topk finds nsel candidates whatever nnei is
    dist = torch.cat([dist, dist.new_full((nf, nloc, nsel), float("inf"))], dim=-1)
    nlist = torch.cat([nlist, nlist.new_full((nf, nloc, nsel), -1)], dim=-1)
    ntype = torch.cat([ntype, ntype.new_full((nf, nloc, nsel), -1)], dim=-1)
    val, pos = torch.topk(dist, nsel, dim=-1, largest=False, sorted=True)
    near = torch.where(torch.isfinite(val), torch.gather(nlist, 2, pos), -1)
    if mixed_types:
        return near
    near_type = torch.where(torch.isfinite(val), torch.gather(ntype, 2, pos), -1)
    rank = torch.arange(nsel, dtype=val.dtype).expand(nf, nloc, nsel)
    sections = []
    for t, width in enumerate(sel):
        # rank (distance order) as the key: stays sorted, other types last
        key = torch.where(near_type == t, rank, float("inf"))
        key = torch.cat([key, key.new_full((nf, nloc, int(width)), float("inf"))], dim=-1)
        padded = torch.cat([near, near.new_full((nf, nloc, int(width)), -1)], dim=-1)
        kval, kpos = torch.topk(key, int(width), dim=-1, largest=False, sorted=True)
        sections.append(torch.where(torch.isfinite(kval), torch.gather(padded, 2, kpos), -1))
    return torch.cat(sections, dim=-1)


def _lower_program(model: EnergyModel):
    """(ext_coord, ext_atype, nlist, fparam [nf, dim_fparam], aparam [nf, nloc, dim_aparam])
    -> energy, atom_energy, extended_force, virial, extended_virial with DeePMD-kit's atomic
    virial correction, and without it. fparam/aparam have width 0 in models without."""
    rcut, sel, mixed = float(model.rcut), list(model.sel), bool(model.mixed_types)

    def run(ext_coord, ext_atype, nlist, fparam, aparam):
        nf, nall = ext_atype.shape
        nloc = nlist.shape[1]
        fparam = fparam if fparam.shape[-1] else None  # zero width: the model takes none
        aparam = aparam if aparam.shape[-1] else None
        with torch.no_grad():
            x0 = ext_coord.reshape(nf, nall, 3).to(torch.float64)
            nlist = format_nlist(x0, ext_atype, nlist, rcut, sel, mixed)
        x = x0.detach().requires_grad_(True)
        with torch.enable_grad():
            atom_e, _ = model.atomic_outputs(x, ext_atype, nlist, None, fparam, aparam)
            energy = atom_e.sum(1)
            grad = torch.autograd.grad([energy.sum()], [x], retain_graph=True)[0]
            ext_force = -grad
            ext_vir = ext_force.unsqueeze(-1) * x.detach().unsqueeze(-2)  # [nf, nall, 3, 3]
            virial = ext_vir.sum(1).reshape(nf, 9)
            # DeePMD-kit's zero-sum correction of atomic virials (see lamkit.model.derivatives)
            ce = (x[:, :nloc].detach() * atom_e).sum(1)
            corr = [
                torch.autograd.grad([ce[:, a].sum()], [x], retain_graph=a < 2)[0] for a in range(3)
            ]
            corrected = ext_vir + torch.stack(corr, dim=-1)
        out = (energy, atom_e, ext_force, virial, corrected.reshape(nf, nall, 9))
        return tuple(t.detach() for t in out) + (ext_vir.reshape(nf, nall, 9).detach(),)

    return run


def _check_model(model) -> None:
    from .deep_pot import model_kind

    kind = model_kind(model)
    if kind != "energy":
        raise ModelFileError(
            f"--format pth: this is a {kind} model; DeePMD-kit's C++ inference (DeepPotPT, "
            "pair_style deepmd) runs energy models only (forces and virials from the energy)"
        )
    if not isinstance(model, EnergyModel):
        raise ModelFileError(
            f"--format pth cannot export a {type(model).__name__} (descriptor + fitting "
            "energy models only)"
        )
    if getattr(model.descriptor, "sub_lists", None) is not None:
        raise ModelFileError(
            f"--format pth does not export {type(model.descriptor).__name__} yet: it passes "
            "messages between atoms through the ghost-atom mapping (DeePMD-kit's "
            "has_message_passing path); use --format pt2 or lamkit.lammps (fix external)"
        )
    if not supported(model):
        raise ModelFileError(
            f"--format pth cannot trace {type(model.descriptor).__name__} with "
            f"{type(model.fitting).__name__}: its networks select atoms by type"
        )


def trace_lower(model: EnergyModel) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule]:
    """The lower program as ATen graphs with symbolic frame, atom, ghost and list sizes: with
    atomic virials and without (the same trace, the atomic-virial part removed)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    gen = torch.Generator().manual_seed(0)
    fit = model.fitting
    # one frame (DeePMD-kit's C++ side passes one; the wrapper loops over frames: a traced
    # frame count > 1 gets specialised by the fitting's parameter reshapes); distinct sizes,
    # none 0 or 1 and none a parameter width, so that no two share a symbol
    sizes = [n for n in range(2, 64) if n not in (fit.numb_fparam, fit.numb_aparam)]
    nf, nloc, nnei, nall = 1, sizes[3], sizes[5], sizes[9]
    cell = max(2.0 * float(model.rcut), 6.0)
    args = [
        torch.rand(nf, nall, 3, generator=gen, dtype=torch.float64) * cell,
        torch.arange(nall).remainder(model.ntypes).unsqueeze(0).repeat(nf, 1),
        torch.randint(-1, nall, (nf, nloc, nnei), generator=gen),
        torch.zeros(nf, fit.numb_fparam, dtype=torch.float64),
        torch.zeros(nf, nloc, fit.numb_aparam, dtype=torch.float64),
    ]
    run = _lower_program(model)

    try:
        with dense_type_selection(model):
            traced = make_fx(
                run,
                decomposition_table=_aten_only(),
                tracing_mode="symbolic",
                _allow_non_fake_inputs=True,
            )(*args)
    except Exception as exc:  # noqa: BLE001 - data-dependent Python control flow, ...
        raise ModelFileError(
            f"--format pth: {type(model.descriptor).__name__} cannot be traced with dynamic "
            f"sizes ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from exc
    graphs = []
    for keep in ((0, 1, 2, 3, 4), (0, 1, 2, 3, 5)):
        gm = copy.deepcopy(traced)
        (output,) = [n for n in gm.graph.nodes if n.op == "output"]
        outs = output.args[0]
        output.args = (tuple(outs[i] for i in keep),)
        gm.graph.eliminate_dead_code()
        gm.recompile()
        graphs.append(gm)
    return graphs[0], graphs[1]


class _Frozen(torch.nn.Module):
    """The scripted wrapper: DeePMD-kit's method names around the traced graphs."""

    def __init__(self, plain, atomic, info: dict):
        super().__init__()
        self.plain = plain
        self.atomic = atomic
        self.rcut = float(info["rcut"])
        self.type_map = list(info["type_map"])
        self.sel = list(info["sel"])
        self.dim_fparam = int(info["dim_fparam"])
        self.dim_aparam = int(info["dim_aparam"])
        self.model_def_script = json.dumps(info["model_def_script"])

    def _lower(
        self,
        ext_coord: torch.Tensor,
        ext_atype: torch.Tensor,
        nlist: torch.Tensor,
        fparam: torch.Tensor | None,
        aparam: torch.Tensor | None,
        do_atomic_virial: bool,
    ) -> list[torch.Tensor]:
        nf = ext_atype.shape[0]
        nloc = nlist.shape[1]
        coord = ext_coord.reshape(nf, -1, 3).to(torch.float64)
        if self.dim_fparam > 0:
            if fparam is None:
                raise RuntimeError("this model needs fparam")
            fp = fparam.reshape(nf, self.dim_fparam).to(torch.float64)
        else:
            fp = coord.new_zeros(nf, 0)
        if self.dim_aparam > 0:
            if aparam is None:
                raise RuntimeError("this model needs aparam")
            ap = aparam.reshape(nf, nloc, self.dim_aparam).to(torch.float64)
        else:
            ap = coord.new_zeros(nf, nloc, 0)
        parts: list[list[torch.Tensor]] = [[], [], [], [], []]
        for i in range(nf):  # the graphs are traced for one frame
            one = (coord[i : i + 1], ext_atype[i : i + 1], nlist[i : i + 1])
            if do_atomic_virial:
                out = self.atomic(one[0], one[1], one[2], fp[i : i + 1], ap[i : i + 1])
            else:
                out = self.plain(one[0], one[1], one[2], fp[i : i + 1], ap[i : i + 1])
            for k in range(5):
                parts[k].append(out[k])
        if nf == 1:
            return [p[0] for p in parts]
        return [torch.cat(p, dim=0) for p in parts]

    @torch.jit.export
    def forward_lower(
        self,
        extended_coord: torch.Tensor,
        extended_atype: torch.Tensor,
        nlist: torch.Tensor,
        mapping: torch.Tensor | None = None,
        fparam: torch.Tensor | None = None,
        aparam: torch.Tensor | None = None,
        do_atomic_virial: bool = False,
        comm_dict: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        dtype = extended_coord.dtype
        out = self._lower(extended_coord, extended_atype, nlist, fparam, aparam, do_atomic_virial)
        result: dict[str, torch.Tensor] = {
            "energy": out[0],
            "atom_energy": out[1].to(dtype),
            "extended_force": out[2].to(dtype),
            "virial": out[3].to(dtype),
        }
        if do_atomic_virial:
            result["extended_virial"] = out[4].to(dtype)
        return result

    def forward(
        self,
        coord: torch.Tensor,
        atype: torch.Tensor,
        box: torch.Tensor | None = None,
        do_atomic_virial: bool = False,
        fparam: torch.Tensor | None = None,
        aparam: torch.Tensor | None = None,
        charge_spin: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        dtype = coord.dtype
        nf, nloc = atype.shape[0], atype.shape[1]
        coord = coord.reshape(nf, nloc, 3).to(torch.float64)
        ext, ext_atype, mapping = self._extend(coord, atype, box)
        nall = ext.shape[1]
        dist = torch.linalg.vector_norm(ext.unsqueeze(1) - ext[:, :nloc].unsqueeze(2), dim=-1)
        idx = torch.arange(nall).reshape(1, 1, nall).expand(nf, nloc, nall)
        self_pair = idx == torch.arange(nloc).reshape(1, nloc, 1)
        nlist = torch.where((dist <= self.rcut) & ~self_pair, idx, -1)
        out = self._lower(ext, ext_atype, nlist, fparam, aparam, do_atomic_virial)
        idx3 = mapping.unsqueeze(-1).expand(nf, nall, 3)
        force = out[2].new_zeros(nf, nloc, 3).scatter_add(1, idx3, out[2])
        result: dict[str, torch.Tensor] = {
            "energy": out[0].to(dtype),
            "atom_energy": out[1].to(dtype),
            "force": force.to(dtype),
            "virial": out[3].to(dtype),
        }
        if do_atomic_virial:
            idx9 = mapping.unsqueeze(-1).expand(nf, nall, 9)
            atom_virial = out[4].new_zeros(nf, nloc, 9).scatter_add(1, idx9, out[4])
            result["atom_virial"] = atom_virial.to(dtype)
        return result

    def _extend(
        self, coord: torch.Tensor, atype: torch.Tensor, box: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Atoms wrapped into the cell and all periodic images within ``rcut`` of the cell."""
        nf, nloc = atype.shape[0], atype.shape[1]
        local = torch.arange(nloc).unsqueeze(0).expand(nf, nloc)
        if box is None:
            return coord, atype, local
        cell = box.reshape(nf, 3, 3).to(torch.float64)
        frac = torch.matmul(coord, torch.linalg.inv(cell))
        coord = torch.matmul(frac - torch.floor(frac), cell)
        a, b, c = cell[:, 0], cell[:, 1], cell[:, 2]
        vol = torch.abs((a * torch.linalg.cross(b, c)).sum(-1))
        areas = torch.stack(
            [
                torch.linalg.vector_norm(torch.linalg.cross(b, c), dim=-1),
                torch.linalg.vector_norm(torch.linalg.cross(c, a), dim=-1),
                torch.linalg.vector_norm(torch.linalg.cross(a, b), dim=-1),
            ],
            dim=-1,
        )
        reach = torch.ceil(self.rcut * areas / vol.unsqueeze(-1)).amax(0).to(torch.int64)
        ranges = [torch.arange(-int(reach[d]), int(reach[d]) + 1) for d in range(3)]
        shifts = torch.cartesian_prod(ranges[0], ranges[1], ranges[2]).to(torch.float64)
        # the zero translation first: the local atoms come first in the extended list
        order = torch.argsort((shifts != 0).any(-1).to(torch.int64), stable=True)
        shifts = shifts[order]
        nimg = shifts.shape[0]
        trans = torch.matmul(shifts.unsqueeze(0), cell)  # [nf, nimg, 3]
        ext = (coord.unsqueeze(1) + trans.unsqueeze(2)).reshape(nf, nimg * nloc, 3)
        return ext, atype.repeat(1, nimg), local.repeat(1, nimg)

    @torch.jit.export
    def get_rcut(self) -> float:
        return self.rcut

    @torch.jit.export
    def get_type_map(self) -> list[str]:
        return self.type_map

    @torch.jit.export
    def get_ntypes(self) -> int:
        return len(self.type_map)

    @torch.jit.export
    def get_sel(self) -> list[int]:
        return self.sel

    @torch.jit.export
    def get_nsel(self) -> int:
        return sum(self.sel)

    @torch.jit.export
    def get_nnei(self) -> int:
        return sum(self.sel)

    @torch.jit.export
    def get_dim_fparam(self) -> int:
        return self.dim_fparam

    @torch.jit.export
    def get_dim_aparam(self) -> int:
        return self.dim_aparam

    @torch.jit.export
    def has_default_fparam(self) -> bool:
        return False

    @torch.jit.export
    def is_aparam_nall(self) -> bool:
        return False

    @torch.jit.export
    def has_message_passing(self) -> bool:
        return False

    @torch.jit.export
    def get_sel_type(self) -> list[int]:
        return []

    @torch.jit.export
    def model_output_type(self) -> list[str]:
        return ["energy"]

    @torch.jit.export
    def get_model_def_script(self) -> str:
        return self.model_def_script

    @torch.jit.export
    def use_self_built_nlist(self) -> bool:
        """``forward`` builds its own neighbour list (DeePMD-kit's Python DeepPot then calls
        it instead of an external neighbour-list strategy)."""
        return True


@contextlib.contextmanager
def _quiet():
    """torch's own notices while it scripts and saves: TorchScript is deprecated (it is what
    DeePMD-kit's C++ side loads), and torch.fx's generated ``__init__`` annotations."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "The TorchScript type system", UserWarning)
        yield


def _scripted_graph(gm: torch.fx.GraphModule) -> torch.jit.ScriptModule:
    """``torch.jit.script`` of a traced ATen graph: TorchScript resolves the overload of an
    operator itself, so each call names the operator (``aten.mm``), not one overload."""
    for node in gm.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        if node.target is torch.ops.aten.sym_size.int:
            node.target = torch.ops.aten.size
        else:
            node.target = node.target.overloadpacket
    gm.recompile()
    return torch.jit.script(gm)


def script_model(model: EnergyModel) -> torch.jit.ScriptModule:
    """``model`` as the scripted module described in the module doc."""
    _check_model(model)
    model = model.eval()
    model.requires_grad_(False)
    with _quiet():
        atomic, plain = (_scripted_graph(gm) for gm in trace_lower(model))
        info = {
            "rcut": float(model.rcut),
            "type_map": list(model.type_map),
            "sel": [int(s) for s in model.sel],
            "dim_fparam": int(model.fitting.numb_fparam),
            "dim_aparam": int(model.fitting.numb_aparam),
            "model_def_script": model.config,
        }
        return torch.jit.script(_Frozen(plain, atomic, info))


def export_pth(model: EnergyModel, output: str | Path) -> Path:
    """Write ``model`` to ``output`` as a TorchScript ``.pth`` (see the module doc)."""
    output = Path(output)
    scripted = script_model(model)
    tmp = output.with_name(f".{output.name}.tmp")
    with _quiet():
        torch.jit.save(scripted, str(tmp))
    tmp.replace(output)
    return output
