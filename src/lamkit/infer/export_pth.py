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

Models with message passing (DPA-2) report ``has_message_passing() == True``; DeePMD-kit's
C++ side then passes a ``comm_dict`` and the ghost atoms' features are exchanged through
DeePMD-kit's ``deepmd::border_op`` (:mod:`.export_pth_comm`), so such a file needs DeePMD-kit's
op library wherever it is loaded, as one frozen by DeePMD-kit does. Their graphs take the
blocks' neighbour lists at any width: a first small graph builds them at full ``sel`` width and
the scripted wrapper cuts them to the neighbours present (where exact) before the model runs.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from pathlib import Path

import torch

from ..errors import ModelFileError
from ..model.energy_model import EnergyModel
from .export_dense import dense_type_selection, supported
from .export_pt2 import _aten_only
from .export_pth_module import Frozen, FrozenMessagePassing

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


def _lower_program(model: EnergyModel, ghosts: str = "none"):
    """(ext_coord, ext_atype, nlist, fparam [nf, dim_fparam], aparam [nf, nloc, dim_aparam][,
    comm tensors]) -> energy, atom_energy, extended_force, virial, extended_virial with
    DeePMD-kit's atomic virial correction, and without it. fparam/aparam have width 0 in
    models without. ``ghosts``: ``"none"`` (a model without message passing) or ``"comm"``
    (the ghost atoms' features come from the placeholder exchange of
    :mod:`.export_pth_comm`, given the comm_dict tensors, nlocal and nghost)."""
    rcut, sel, mixed = float(model.rcut), list(model.sel), bool(model.mixed_types)
    sub_lists = getattr(model.descriptor, "sub_lists", None)

    def run(ext_coord, ext_atype, nlist, *rest):
        if ghosts == "comm":  # the block lists come in (see _lists_program): any widths
            blocks = list(model.descriptor._blocks())
            given, rest = (
                dict(zip(("repinit", "repformer", "three_body"), (nlist, *rest))),
                rest[2:],
            )
            lists = {name: given[name] for name in blocks}
        (fparam, aparam), comm = rest[:2], rest[2:]
        nf, nall = ext_atype.shape
        nloc = nlist.shape[1]
        fparam = fparam if fparam.shape[-1] else None  # zero width: the model takes none
        aparam = aparam if aparam.shape[-1] else None
        with torch.no_grad():
            x0 = ext_coord.reshape(nf, nall, 3).to(torch.float64)
            if ghosts != "comm":
                nlist = format_nlist(x0, ext_atype, nlist, rcut, sel, mixed)
                lists = sub_lists(x0, ext_atype, nlist) if sub_lists is not None else None
        x = x0.detach().requires_grad_(True)
        given = {} if lists is None else model.descriptor.forward_inputs(lists)
        if ghosts == "comm":
            from .export_pth_comm import exchange

            given["ghost_exchange"] = lambda g1: exchange(g1, nall, comm)
        with torch.enable_grad():
            atom_e, _ = model.atomic_outputs(
                x, ext_atype, nlist, None, fparam, aparam, descriptor_inputs=given
            )
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


def _lists_program(model: EnergyModel):
    """(ext_coord, ext_atype, nlist [nf, nloc, any]) -> the DPA-2 blocks' lists repinit,
    repformer and three-body (repinit's first column when there is no three-body block),
    each at its full ``nsel`` width: the model's ``sel`` nearest within ``rcut``, cut per
    block."""
    rcut, sel, mixed = float(model.rcut), list(model.sel), bool(model.mixed_types)
    desc = model.descriptor

    def lists(ext_coord, ext_atype, nlist):
        nf, nall = ext_atype.shape
        x0 = ext_coord.reshape(nf, nall, 3).to(torch.float64)
        out = desc.sub_lists(x0, ext_atype, format_nlist(x0, ext_atype, nlist, rcut, sel, mixed))
        return out["repinit"], out["repformer"], out.get("three_body", out["repinit"][..., :1])

    return lists


def trace_lists(model: EnergyModel) -> torch.fx.GraphModule:
    """:func:`_lists_program` as an ATen graph with symbolic sizes."""
    from torch.fx.experimental.proxy_tensor import make_fx

    gen = torch.Generator().manual_seed(0)
    nf, nloc, nnei, nall = 1, 5, 7, 11
    args = (
        torch.rand(nf, nall, 3, generator=gen, dtype=torch.float64) * 10.0,
        torch.arange(nall).remainder(model.ntypes).unsqueeze(0),
        torch.randint(-1, nall, (nf, nloc, nnei), generator=gen),
    )
    with torch.no_grad():
        return make_fx(
            _lists_program(model),
            decomposition_table=_aten_only(),
            tracing_mode="symbolic",
            _allow_non_fake_inputs=True,
        )(*args)


def message_passing(model) -> bool:
    """Whether ``model``'s descriptor reads features of ghost atoms computed from their own
    neighbours (DPA-2's repformers): DeePMD-kit's ``has_message_passing``."""
    return hasattr(model.descriptor, "repformers")


def _check_model(model) -> None:
    from .deep_eval import model_kind

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
    if not supported(model):
        raise ModelFileError(
            f"--format pth cannot trace {type(model.descriptor).__name__} with "
            f"{type(model.fitting).__name__}: its networks select atoms by type"
        )


def trace_lower(
    model: EnergyModel, ghosts: str = "none"
) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule]:
    """The lower program (:func:`_lower_program`) as ATen graphs with symbolic frame, atom,
    ghost and list sizes: with atomic virials and without (the same trace, the
    atomic-virial part removed)."""
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
    if ghosts == "comm":
        # the block lists, of distinct widths: repinit (in nlist's place), repformer, three-body
        args[2] = torch.randint(-1, nall, (nf, nloc, sizes[5]), generator=gen)
        args[3:3] = [torch.randint(-1, nall, (nf, nloc, sizes[k]), generator=gen) for k in (6, 7)]
        nswap, i32 = sizes[12], torch.int32
        args += [
            torch.zeros(nswap, dtype=torch.int64),  # send_list: pointers to LAMMPS's lists
            *(torch.zeros(nswap, dtype=i32) for _ in range(4)),  # send/recv proc and num
            torch.zeros(1, dtype=torch.int64),  # the communicator
            torch.tensor(nloc, dtype=i32),
            torch.tensor(nall - nloc, dtype=i32),
        ]
    run = _lower_program(model, ghosts)

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
    info = {
        "rcut": float(model.rcut),
        "type_map": list(model.type_map),
        "sel": [int(s) for s in model.sel],
        "dim_fparam": int(model.fitting.numb_fparam),
        "dim_aparam": int(model.fitting.numb_aparam),
        "model_def_script": model.config,
    }
    with _quiet():
        if not message_passing(model):
            atomic, plain = (_scripted_graph(gm) for gm in trace_lower(model))
            return torch.jit.script(Frozen(plain, atomic, info))
        from .export_pth_comm import load_deepmd_ops, use_deepmd_ops, use_mapping

        load_deepmd_ops()
        # one trace with placeholder exchanges: a gather through the mapping in one copy,
        # DeePMD-kit's border_op in the other
        traced = trace_lower(model, "comm")
        atomic, plain = (_scripted_graph(use_mapping(gm)) for gm in traced)
        for gm in traced:
            if use_deepmd_ops(gm) == 0:
                raise ModelFileError(
                    f"--format pth: no ghost-feature exchange in the trace of "
                    f"{type(model.descriptor).__name__}"
                )
        atomic_comm, plain_comm = (_scripted_graph(gm) for gm in traced)
        lists = _scripted_graph(trace_lists(model))
        desc = model.descriptor
        info["trim"] = [
            desc.exact_trim(n)
            for n in ("repinit", "repformer", "three_body")
            if n in desc._blocks()
        ] + [False] * (3 - len(desc._blocks()))
        frozen = FrozenMessagePassing(plain, atomic, plain_comm, atomic_comm, lists, info)
        return torch.jit.script(frozen)


def export_pth(model: EnergyModel, output: str | Path) -> Path:
    """Write ``model`` to ``output`` as a TorchScript ``.pth`` (see the module doc)."""
    output = Path(output)
    scripted = script_model(model)
    tmp = output.with_name(f".{output.name}.tmp")
    with _quiet():
        torch.jit.save(scripted, str(tmp))
    tmp.replace(output)
    return output
