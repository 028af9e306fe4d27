"""Compiled inference: energy, forces and virial of an energy model through one fused graph.

``DeepPot(model, compile=True)`` (and the ASE calculator's ``compile=True``) evaluate through
this module. The model's forward pass *and* the backward pass that gives the forces are
traced into one graph of ATen operations (``make_fx``), which ``torch.compile`` (Inductor)
turns into fused kernels: the chains of element-wise operations between the matrix products
then run in one pass over memory instead of one pass each. On the DPA-2 medium water model
that takes about a fifth off an evaluation on CPU (see ``docs/benchmarks.md``).

A traced graph is only valid for the input shapes it was traced with, so graphs are cached by
a shape key: frames, atoms, extended (ghost) atoms rounded up to a bucket, and the widths of
the neighbour lists a descriptor trims from the data (:meth:`Descriptor.graph_inputs`, rounded
up to a multiple of ``width_step``). Padding is exact: extra ghost atoms are referenced by no
neighbour list, and extra list slots are empty slots. Models with type-sorted networks
(se_e2_a, per-type fittings: shapes that depend on the types) are refused. Each new key costs
one trace and compile (about a minute for DPA-2 medium on two cores the first time; Inductor
caches compiled kernels on disk, so later processes take less). Everything else (atomic
virials, frames sliced into chunks of atoms) is evaluated eagerly, with the same results up to
rounding.
"""

from __future__ import annotations

import logging
import time
import warnings

import torch

from .. import keys
from ..descriptor.base import widen_lists
from ..model.derivatives import forces_and_virials
from ..model.energy_model import EnergyModel

log = logging.getLogger(__name__)

# where padded ghost atoms sit (Å from the origin): far outside any cutoff, finite
_FAR = 1.0e4


def ghost_bucket(nall: int) -> int:
    """``nall`` rounded up to a multiple of 1/16 of its next power of two (at least 16): at
    most ~6 % of padding and a few buckets as the ghost count drifts in a simulation."""
    step = max(16, (1 << max(0, (nall - 1).bit_length())) // 16)
    return -(-nall // step) * step


class CompiledEnergy:
    """Callable like :meth:`EnergyModel.forward` (energy, atom_energy, force, virial, mask)
    for ``do_atomic_virial=False``, through cached compiled graphs.

    Args:
        model: an :class:`EnergyModel` in eval mode with frozen parameters.
        width_step: neighbour-list widths are rounded up to a multiple of this.

    Per atom count, each list is also padded to the widest met so far (exact: the extra
    slots are empty): in MD the trimmed widths drift by a slot or two from step to step, and a
    frame with narrower lists then runs an existing graph instead of compiling another.
    """

    def __init__(self, model: EnergyModel, width_step: int = 4):
        if not isinstance(model, EnergyModel):
            raise TypeError(f"compiled inference needs an energy model, got {type(model)}")
        self.model = model
        self.width_step = int(width_step)
        self.graphs: dict[tuple, object] = {}
        self.widest: dict[int, dict[str, int]] = {}  # per atom count: list name -> width
        self.compile_seconds = 0.0
        self.error: str | None = None  # why compilation was given up (then eager is used)
        desc, fit = model.descriptor, model.fitting
        if not (desc.mixed_types and getattr(fit, "mixed_types", True)):
            raise ValueError(
                "compiled inference needs a model whose networks do not depend on the atom "
                f"types through data-dependent selections; {type(desc).__name__} with "
                f"{type(fit).__name__} sorts atoms by type (evaluate it without compile=True)"
            )

    def supports(self, do_atomic_virial: bool, chunk_atoms: int | None) -> bool:
        """Whether a call with these options goes through a compiled graph."""
        return self.error is None and not do_atomic_virial and not chunk_atoms

    def _key(self, coord, atype, box, fparam, aparam, nall_pad, lists) -> tuple:
        return (
            tuple(coord.shape),
            nall_pad,
            box is None,
            None if fparam is None else tuple(fparam.shape),
            None if aparam is None else tuple(aparam.shape),
            tuple((name, tuple(t.shape)) for name, t in lists.items()),
            str(coord.device),
        )

    def _graph_function(self, names: list[str], nloc: int):
        """``run(*tensors)`` for tensors named ``names`` (ext_coord, ext_atype, nlist, mapping,
        optional fparam/aparam and the descriptor's graph inputs)."""
        model = self.model
        desc = model.descriptor
        fixed = ("ext_coord", "ext_atype", "nlist", "mapping", "fparam", "aparam")

        def run(*tensors):
            given = dict(zip(names, tensors))
            lists = {k: v for k, v in given.items() if k not in fixed}
            x = given["ext_coord"].detach().requires_grad_(True)
            with torch.enable_grad():
                atom_e, mask = model.atomic_outputs(
                    x,
                    given["ext_atype"],
                    given["nlist"],
                    given["mapping"],
                    given.get("fparam"),
                    given.get("aparam"),
                    descriptor_inputs=desc.forward_inputs(lists),
                )
                energy = atom_e.sum(1)
                der = forces_and_virials(energy, atom_e, x, given["mapping"], nloc)
            return energy, atom_e, mask, der[keys.FORCE], der[keys.VIRIAL]

        return run

    def _compile(self, tensors: list[torch.Tensor], names: list[str], nloc: int):
        import torch._inductor
        from torch.fx.experimental.proxy_tensor import make_fx

        t0 = time.perf_counter()
        traced = make_fx(self._graph_function(names, nloc), tracing_mode="real")(*tensors)
        # Inductor straight on the traced graph: no Dynamo guards and no re-compilation behind
        # our back (the shape key is the guard)
        compiled = torch._inductor.compile(traced, tensors)
        compiled(*tensors)  # run once now, so that failures surface here
        dt = time.perf_counter() - t0
        self.compile_seconds += dt
        log.info("compiled inference graph %d in %.1f s", len(self.graphs) + 1, dt)
        return compiled

    def __call__(self, coord, atype, box, nbr, fparam=None, aparam=None):
        model = self.model
        nloc = coord.shape[1]
        coord = coord.detach().to(torch.float64)
        box = None if box is None else box.to(torch.float64)
        with torch.no_grad():
            ext_coord, ext_atype = model.extend(coord, atype, box, nbr)
            nlist, mapping = nbr[keys.NLIST], nbr[keys.MAPPING]
            lists = model.descriptor.graph_inputs(ext_coord, ext_atype, nlist, self.width_step)
            lists = widen_lists(lists, self.widest.setdefault(nloc, {}))
            nf, nall = ext_atype.shape
            nall_pad = ghost_bucket(nall)
            if nall_pad > nall:
                extra = nall_pad - nall
                far = ext_coord.new_full((nf, extra, 3), _FAR)
                ext_coord = torch.cat([ext_coord, far], dim=1)
                ext_atype = torch.cat([ext_atype, ext_atype[:, :1].expand(-1, extra)], dim=1)
                mapping = torch.cat([mapping, mapping.new_zeros(nf, extra)], dim=1)
        inputs = {"ext_coord": ext_coord, "ext_atype": ext_atype, "nlist": nlist}
        inputs.update(mapping=mapping, fparam=fparam, aparam=aparam, **lists)
        names = [k for k, v in inputs.items() if v is not None]
        tensors = [inputs[k].contiguous() for k in names]
        key = self._key(coord, atype, box, fparam, aparam, nall_pad, lists)
        graph = self.graphs.get(key)
        if graph is None:
            try:
                graph = self._compile(tensors, names, nloc)
            except Exception as exc:  # no C++ compiler, unsupported operation, ...
                self.error = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"compiled inference is not available ({self.error.splitlines()[0]}); "
                    "evaluating eagerly",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return None
            self.graphs[key] = graph
        energy, atom_e, mask, force, virial = graph(*tensors)
        return {
            keys.ENERGY: energy,
            keys.ATOM_ENERGY: atom_e,
            keys.MASK: mask,
            keys.FORCE: force,
            keys.VIRIAL: virial,
        }
