"""``lam freeze --format pt2``: an energy model as an AOTInductor package that torch alone runs.

The package holds one compiled program ``(coord, atype, box) -> (energy, force, virial,
atom_energy)`` for one frame: coord [1, natoms, 3] Å (float64), atype [1, natoms] int64 (type
indices of the model's ``type_map``, -1 for a virtual atom) and box [1, 9] Å (rows are cell
vectors; a package written with ``periodic=False`` takes no box). Outputs: energy [1, 1] eV,
force [1, natoms, 3] eV/Å, virial [1, 9] eV, atom_energy [1, natoms, 1] eV. The atom count is
dynamic (2 or more); the frame count is 1 (a traced frame count > 1 would carry guards of the
trace), so a service evaluates frames one by one. A model with frame or atomic parameters
takes fparam [1, numb_fparam] and aparam [1, natoms, numb_aparam] after the box. A service
loads it without lamkit::

    import torch
    pot = torch._inductor.aoti_load_package("model.pt2")
    energy, force, virial, atom_energy = pot(coord, atype, box)
    meta = pot.get_metadata()  # type_map, rcut, inputs, outputs, units (JSON strings)

Everything lamkit normally does outside the model happens inside the program, with torch
operations: the atoms are wrapped into the cell, every atom gets its ``(2k+1)^3`` periodic
images (``k = images``, default 1), and the neighbour list is the nearest ``sel`` atoms within
``rcut`` by brute force over all of them (memory ~ ``natoms^2 * 27 * 32`` bytes for ``k = 1``:
meant for the few hundred atoms a service evaluates, not for MD boxes). Every cell height must
be at least ``rcut / k``; the program cannot raise an error, so it returns NaN energies,
forces, virials and atom energies for a frame whose cell is too thin (use a larger ``images``).

The forward *and* the backward pass (forces, virial) are traced into one graph of ATen
operations with ``make_fx`` (as :mod:`lamkit.infer.compiled` does), which ``torch.export``
turns into an exported program with a symbolic atom count and AOTInductor compiles to
C++ and packages (about half a minute to a few minutes on CPU).
"""

from __future__ import annotations

import itertools
import json
import tempfile
import warnings
from pathlib import Path

import torch

from ..errors import ConfigError, ModelFileError
from ..model.derivatives import forces_and_virials
from ..model.energy_model import EnergyModel
from .export_dense import dense_type_selection, supported

OUTPUTS = ("energy", "force", "virial", "atom_energy")
UNITS = {
    "coord": "Angstrom",
    "box": "Angstrom",
    "energy": "eV",
    "force": "eV/Angstrom",
    "virial": "eV",
    "atom_energy": "eV",
}


def _image_shifts(images: int) -> torch.Tensor:
    """Integer cell translations [(2k+1)^3, 3], the zero translation first."""
    r = range(-images, images + 1)
    shifts = [s for s in itertools.product(r, r, r) if any(s)]
    return torch.tensor([(0, 0, 0)] + shifts, dtype=torch.float64)


def _neighbor_list(
    ext: torch.Tensor,
    ext_atype: torch.Tensor,
    nloc: int,
    rcut: float,
    sel: list[int],
    mixed_types: bool,
) -> torch.Tensor:
    """Extended indices [nf, nloc, sum(sel)] of the nearest neighbours within ``rcut`` (-1:
    empty), by distance; per-type sections of ``sel[t]`` slots unless ``mixed_types``."""
    nf, nall = ext_atype.shape
    centre = ext[:, :nloc]
    dist = torch.linalg.vector_norm(ext.unsqueeze(1) - centre.unsqueeze(2), dim=-1)
    real = ext_atype >= 0
    ok = (dist <= rcut) & real.unsqueeze(1) & real[:, :nloc].unsqueeze(2)
    ok = ok & (torch.arange(nall).unsqueeze(0) != torch.arange(nloc).unsqueeze(1))
    nsel = int(sum(sel))
    # nsel padding columns, so that topk always finds nsel candidates whatever nall is
    pad_dist = dist.new_full((nf, nloc, nsel), float("inf"))
    groups = [None] if mixed_types else list(range(len(sel)))
    sections = []
    for t, width in zip(groups, [nsel] if mixed_types else sel):
        keep = ok if t is None else ok & (ext_atype == t).unsqueeze(1)
        d = torch.cat([torch.where(keep, dist, float("inf")), pad_dist], dim=-1)
        val, idx = torch.topk(d, int(width), dim=-1, largest=False, sorted=True)
        sections.append(torch.where(torch.isfinite(val), idx, -1))
    return torch.cat(sections, dim=-1)


def _program(model: EnergyModel, periodic: bool, images: int):
    """The function that is traced: (coord, atype[, box]) -> energy, force, virial, atom_e."""
    rcut, sel, mixed = float(model.rcut), list(model.sel), bool(model.mixed_types)
    desc = model.descriptor
    sub_lists = getattr(desc, "sub_lists", None)

    def run(coord, atype, box=None, fparam=None, aparam=None):
        nf, nloc = atype.shape
        with torch.no_grad():
            coord = coord.to(torch.float64)
            if box is None:
                ext, ext_atype = coord, atype
                mapping = torch.arange(nloc).unsqueeze(0).expand(nf, nloc)
                bad = torch.zeros(nf, dtype=torch.bool)
            else:
                cell = box.to(torch.float64).reshape(nf, 3, 3)
                inv = torch.linalg.inv(cell)
                wrap = -torch.floor(torch.matmul(coord, inv))
                local = torch.matmul(torch.matmul(coord, inv) + wrap, cell)
                shifts = _image_shifts(images)
                trans = torch.matmul(shifts.unsqueeze(0), cell)  # [nf, nimg, 3]
                nimg = shifts.shape[0]
                ext = (local.unsqueeze(1) + trans.unsqueeze(2)).reshape(nf, nimg * nloc, 3)
                ext_atype = atype.repeat(1, nimg)
                mapping = torch.arange(nloc).repeat(nimg).unsqueeze(0).expand(nf, -1)
                # cell heights (volume / area of the opposite face) must reach rcut / images
                a, b, c = cell[:, 0], cell[:, 1], cell[:, 2]
                vol = torch.abs((a * torch.linalg.cross(b, c)).sum(-1))
                areas = torch.stack(
                    [
                        torch.linalg.vector_norm(torch.linalg.cross(u, v), dim=-1)
                        for u, v in ((b, c), (c, a), (a, b))
                    ],
                    dim=-1,
                )
                bad = (vol.unsqueeze(-1) / areas * images < rcut).any(-1)
            nlist = _neighbor_list(ext, ext_atype, nloc, rcut, sel, mixed)
            # descriptors with several lists (DPA-2): the untrimmed per-block lists, so that
            # no list width depends on the data
            lists = sub_lists(ext, ext_atype, nlist) if sub_lists is not None else None
        x = ext.detach().requires_grad_(True)
        given = desc.forward_inputs(lists) if lists is not None else None
        with torch.enable_grad():
            atom_e, _ = model.atomic_outputs(
                x, ext_atype, nlist, mapping, fparam, aparam, descriptor_inputs=given
            )
            energy = atom_e.sum(1)
            der = forces_and_virials(energy, atom_e, x, mapping, nloc)
        nan = torch.where(bad, float("nan"), 0.0).to(energy.dtype)
        return (
            energy + nan.unsqueeze(-1),
            der["force"] + nan.view(nf, 1, 1),
            der["virial"] + nan.unsqueeze(-1),
            atom_e + nan.view(nf, 1, 1),
        )

    return run


def _aten_only() -> dict:
    """lamkit's custom operators (:mod:`lamkit.nn.rows`) as the ATen operations they run:
    a package must not need lamkit to load."""
    from ..nn.rows import put_rows, take_rows  # noqa: F401 - registers torch.ops.lamkit

    def take(x, index):
        return x.index_select(0, index)

    def put(src, index, n):
        return src.new_zeros(n, src.shape[1]).index_add(0, index, src)

    return {torch.ops.lamkit.take_rows.default: take, torch.ops.lamkit.put_rows.default: put}


def _outer_products(graph_module: torch.fx.GraphModule) -> None:
    """Matrix products with an inner size of 1 (``[n, 1] @ [1, m]``, e.g. the backward of a
    fitting net's last layer) as the broadcast products they are, in place: the same numbers.
    Inductor otherwise turns small ones into products itself, and with a symbolic ``n`` that
    choice adds a guard ``n + m <= 32`` that caps the atom count of the package."""
    mm = torch.ops.aten.mm.default
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and node.target is mm:
            a = node.args[0].meta.get("val")
            if a is not None and isinstance(a.shape[-1], int) and a.shape[-1] == 1:
                node.target = torch.ops.aten.mul.Tensor
    graph_module.recompile()


def _check_model(model) -> None:
    if not isinstance(model, EnergyModel):
        raise ModelFileError(
            f"--format pt2 packages energy models only; this model is a {type(model).__name__}"
        )
    desc, fit = model.descriptor, model.fitting
    if not supported(model):
        raise ModelFileError(
            f"--format pt2 cannot package {type(desc).__name__} with {type(fit).__name__}: "
            "its networks select atoms by type (data-dependent shapes that torch.export "
            "cannot trace with a dynamic atom count)"
        )


def export_program(model: EnergyModel, periodic: bool = True, images: int = 1, nloc: int = 7):
    """``torch.export`` of the energy/force/virial program for one frame with a dynamic atom
    count (traced on ``nloc`` example atoms)."""
    from torch.export import Dim
    from torch.fx.experimental.proxy_tensor import make_fx

    _check_model(model)
    model = model.eval()
    model.requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    nf = 1  # frames are traced as one: a frame count > 1 would be guarded by the trace
    cell = torch.eye(3, dtype=torch.float64) * max(2.0 * float(model.rcut), 6.0)
    coord = torch.rand(nf, nloc, 3, generator=gen, dtype=torch.float64) @ cell
    atype = torch.arange(nloc).remainder(model.ntypes).unsqueeze(0).repeat(nf, 1)
    inputs = {"coord": coord, "atype": atype}
    if periodic:
        inputs["box"] = cell.reshape(1, 9).repeat(nf, 1)
    fit = model.fitting
    if fit.numb_fparam:
        inputs["fparam"] = torch.zeros(nf, fit.numb_fparam, dtype=torch.float64)
    if fit.numb_aparam:
        inputs["aparam"] = torch.zeros(nf, nloc, fit.numb_aparam, dtype=torch.float64)
    names, args = list(inputs), tuple(inputs.values())
    run = _program(model, periodic, images)

    def fn(*tensors):
        return run(**dict(zip(names, tensors)))

    try:
        with dense_type_selection(model):
            traced = make_fx(
                fn,
                decomposition_table=_aten_only(),
                tracing_mode="symbolic",
                _allow_non_fake_inputs=True,
            )(*args)
    except Exception as exc:  # noqa: BLE001 - data-dependent Python control flow, ...
        raise ModelFileError(
            f"--format pt2: {type(model.descriptor).__name__} cannot be traced with dynamic "
            f"atom counts ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from exc
    _outer_products(traced)
    atoms = Dim("natoms", min=2)
    per_atom = {"coord": {1: atoms}, "atype": {1: atoms}, "aparam": {1: atoms}}
    shapes = tuple(per_atom.get(name) for name in names)
    program = torch.export.export(
        traced,
        args,
        dynamic_shapes=shapes,
        strict=False,
        prefer_deferred_runtime_asserts_over_guards=True,
    )
    foreign = sorted(
        {
            str(node.target)
            for node in program.graph.nodes
            if isinstance(node.target, torch._ops.OpOverload)
            and node.target.namespace not in ("aten", "prims")
        }
    )
    if foreign:  # they would need lamkit (Python) at load time
        raise ModelFileError(
            f"--format pt2: the traced program uses operators outside torch: {', '.join(foreign)}"
        )
    return program


def metadata(model: EnergyModel, periodic: bool, images: int) -> dict[str, str]:
    """What a loader needs, as strings (AOTInductor metadata is a map of strings)."""
    inputs = ["coord", "atype", "box"] if periodic else ["coord", "atype"]
    inputs += ["fparam"] * bool(model.fitting.numb_fparam)
    inputs += ["aparam"] * bool(model.fitting.numb_aparam)
    return {
        "format": "lamkit-pt2/1",
        "type_map": json.dumps(list(model.type_map)),
        "rcut": repr(float(model.rcut)),
        "sel": json.dumps([int(s) for s in model.sel]),
        "periodic": json.dumps(periodic),
        "images": str(int(images)),
        "inputs": json.dumps(inputs),
        "numb_fparam": str(int(model.fitting.numb_fparam)),
        "numb_aparam": str(int(model.fitting.numb_aparam)),
        "outputs": json.dumps(list(OUTPUTS)),
        "units": json.dumps(UNITS),
    }


def export_pt2(
    model: EnergyModel, output: str | Path, periodic: bool = True, images: int = 1
) -> Path:
    """Write ``model`` to ``output`` as an AOTInductor ``.pt2`` package (see the module doc)."""
    import torch._inductor

    if images < 1:
        raise ConfigError(f"images: expected a positive number of periodic images, got {images}")
    output = Path(output)
    # packaged under its final name (the archive's folder is named after the file), then moved
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".pt2-") as tmpdir:
        tmp = Path(tmpdir) / output.name
        with warnings.catch_warnings():
            # torch's own deprecation notices while it exports and packages (pytree internals)
            warnings.simplefilter("ignore", FutureWarning)
            program = export_program(model, periodic=periodic, images=images)
            torch._inductor.aoti_compile_and_package(
                program,
                package_path=str(tmp),
                inductor_configs={"aot_inductor.metadata": metadata(model, periodic, images)},
            )
        tmp.replace(output)
    return output
