"""Compiled training graphs: energy, forces and virial of an energy model as one traced and
Inductor-compiled function of the parameters, for the energy + force + virial loss.

The force loss needs a double backward (forces are a gradient; the loss of the forces is
differentiated again for the parameters), which ``torch.compile`` cannot do on the model
directly ("aot_autograd does not currently support double backward"). So the first backward is
made an ordinary part of the graph: ``make_fx`` traces, with symbolic shapes,

    (parameters, buffers, extended coordinates, types, neighbour list, ...)
        -> energy, atom energies, mask, forces, virial

through :func:`torch.func.functional_call` and ``torch.autograd.grad(create_graph=True)``; the
recorded graph holds the forward *and* the force backward as plain ATen operations of the
parameters. ``torch.compile(dynamic=True)`` of that graph then only needs one (ordinary)
backward for the loss, and the loss's ``backward()`` reaches the parameters through it.

One graph serves every batch of the same kind (frames, atoms and ghost atoms are symbolic): a
new atom count does not trace again. A graph is kept per kind of input (box or not,
fparam/aparam given or not, virial wanted or not) and per width of the lists a descriptor trims
from the data (DPA-2; rounded up to a multiple of ``width_step`` and to the widest list seen
so far), which the trace bakes in.

Opt in with ``"training": {"compile": true}``. Where compilation cannot work (no C++
compiler, a model with type-sorted networks, an unsupported operation) training goes on
eagerly, with one log line that says why; the numbers are the same either way up to rounding.
"""

from __future__ import annotations

import logging
import time

import torch

from .. import keys
from ..descriptor.base import widen_lists
from ..model.derivatives import forces_and_virials
from ..model.energy_model import EnergyModel

log = logging.getLogger("lamkit.train")

_FIXED = ("ext_coord", "ext_atype", "nlist", "mapping", "fparam", "aparam")


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """Why ``model`` cannot train through a compiled graph (None: it can)."""
    if type(model) is not EnergyModel:
        return f"{type(model).__name__} is not a plain energy model"
    desc, fit = model.descriptor, model.fitting
    if not (getattr(desc, "mixed_types", False) and getattr(fit, "mixed_types", True)):
        return (
            f"{type(desc).__name__} with {type(fit).__name__} selects atoms by type "
            "(shapes that depend on the data)"
        )
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as exc:  # noqa: BLE001 - no g++/clang++ on PATH, or no Inductor
        return f"no C++ compiler for Inductor ({exc})"
    return None


_SIZE_METHODS = {
    torch.ops.aten.sym_numel.default: "numel",
    torch.ops.aten.sym_storage_offset.default: "storage_offset",
}


def _undetach(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``gm`` without its ``detach`` nodes (and with size queries Dynamo accepts).

    The autograd engine hands the tensors a backward formula saved (e.g. ``tanh``'s output for
    ``tanh_backward``) to the traced backward through ``detach``: in the recorded graph the
    forces would then depend on the parameters only partly, and the loss gradient would be
    wrong (percent-level on DPA-2). In eager mode, with ``create_graph=True``, those saved
    tensors stay connected. The model's own ``detach`` calls act on coordinates, which the
    graph is not differentiated for, so dropping every ``detach`` changes no value and makes
    the parameter gradients those of eager mode."""
    detach = torch.ops.aten.detach.default
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is detach:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
        elif node.target in _SIZE_METHODS:
            # ``aten.sym_numel(x)`` (from a ``numel()`` in the model) returns a SymInt, which
            # Dynamo refuses as a graph op ("torch.* op returned non-Tensor"); the method
            # ``x.numel()`` is the same number and stays in the graph
            with gm.graph.inserting_before(node):
                new = gm.graph.call_method(_SIZE_METHODS[node.target], node.args, node.kwargs)
            new.meta = dict(node.meta)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return gm


class _Outputs(torch.nn.Module):
    """``forward`` = the model's atomic outputs plus forces and virial (what is traced)."""

    def __init__(self, model: EnergyModel):
        super().__init__()
        self.m = model

    def forward(self, names: list[str], do_virial: bool, *tensors):
        given = dict(zip(names, tensors))
        nloc = given["nlist"].shape[1]
        lists = {k: v for k, v in given.items() if k not in _FIXED}
        x = given["ext_coord"].detach().requires_grad_(True)
        with torch.enable_grad():
            atom_e, mask = self.m.atomic_outputs(
                x,
                given["ext_atype"],
                given["nlist"],
                given["mapping"],
                given.get("fparam"),
                given.get("aparam"),
                descriptor_inputs=self.m.descriptor.forward_inputs(lists),
            )
            energy = atom_e.sum(1)
            der = forces_and_virials(
                energy, atom_e, x, given["mapping"], nloc, do_virial=do_virial, create_graph=True
            )
        virial = der[keys.VIRIAL] if do_virial else energy.new_zeros(energy.shape[0], 9)
        return energy, atom_e, mask, der[keys.FORCE], virial


class CompiledTraining:
    """Callable like :meth:`EnergyModel.forward` with ``do_force=True, create_graph=True``
    (energy, atom_energy, mask, force, and virial when asked) through compiled graphs whose
    backward reaches the model's parameters.

    Args:
        model: the :class:`EnergyModel` being trained (its parameters are read at every call,
            so optimizer steps and restored checkpoints are seen).
        width_step: trimmed neighbour-list widths are padded to a multiple of this (exact:
            extra slots are empty), so that few graphs are needed.

    Each list is also padded to the widest seen so far (:attr:`widest`): a batch with
    narrower lists runs the existing graph instead of compiling another, so a run compiles
    once per new widest list (a few times early on), not once per width it meets.
    """

    def __init__(self, model: EnergyModel, width_step: int = 8):
        self.model = model
        self.width_step = int(width_step)
        self.widest: dict[str, int] = {}
        self.wrapper = _Outputs(model)
        self.graphs: dict[tuple, object] = {}
        self.compile_seconds = 0.0
        self.error: str | None = unsupported_reason(model)

    def _state(self) -> tuple[list[str], list[torch.Tensor]]:
        names, values = [], []
        for name, p in self.wrapper.named_parameters(remove_duplicate=False):
            names.append(name)
            values.append(p)
        for name, b in self.wrapper.named_buffers(remove_duplicate=False):
            names.append(name)
            values.append(b)
        return names, values

    def _trace(self, state_names, names, do_virial, flat):
        from torch.fx.experimental.proxy_tensor import make_fx

        nstate = len(state_names)
        wrapper = self.wrapper

        def run(*args):
            state = dict(zip(state_names, args[:nstate]))
            return torch.func.functional_call(
                wrapper, state, (names, do_virial, *args[nstate:]), strict=True
            )

        t0 = time.perf_counter()
        traced = _undetach(make_fx(run, tracing_mode="symbolic")(*flat))
        compiled = torch.compile(traced, dynamic=True, fullgraph=True)
        out = compiled(*flat)  # compile now, so that failures surface here
        dt = time.perf_counter() - t0
        self.compile_seconds += dt
        log.info("compiled training graph %d in %.1f s", len(self.graphs) + 1, dt)
        return compiled, out

    def __call__(self, coord, atype, box, nbr, fparam=None, aparam=None, do_virial=True):
        """Predictions as :meth:`EnergyModel.forward`; None where compilation failed (the
        caller then evaluates eagerly; :attr:`error` says why)."""
        if self.error is not None:
            return None
        model = self.model
        coord = coord.detach().to(torch.float64)
        box = None if box is None else box.to(torch.float64)
        with torch.no_grad():
            ext_coord, ext_atype = model.extend(coord, atype, box, nbr)
            lists = model.descriptor.graph_inputs(
                ext_coord, ext_atype, nbr[keys.NLIST], self.width_step
            )
            lists = widen_lists(lists, self.widest)
        inputs = {"ext_coord": ext_coord, "ext_atype": ext_atype, "nlist": nbr[keys.NLIST]}
        inputs.update(mapping=nbr[keys.MAPPING], fparam=fparam, aparam=aparam, **lists)
        names = [k for k, v in inputs.items() if v is not None]
        state_names, state = self._state()
        flat = [*state, *(inputs[k].contiguous() for k in names)]
        # the widths of the descriptor's trimmed lists are in the key: the model reshapes with
        # them as Python numbers, which the symbolic trace bakes in (DPA-2 medium)
        widths = tuple(t.shape[-1] for t in lists.values())
        key = (tuple(names), widths, do_virial, box is None, str(coord.device))
        graph = self.graphs.get(key)
        if graph is None:
            try:
                graph, out = self._trace(state_names, names, do_virial, flat)
            except Exception as exc:  # noqa: BLE001 - unsupported operation, compiler error
                self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log.warning("compiled training is not available (%s); training eagerly", self.error)
                return None
            self.graphs[key] = graph
        else:
            try:
                out = graph(*flat)
            except Exception as exc:  # noqa: BLE001 - e.g. a shape the graph cannot take
                self.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log.warning("compiled training failed (%s); training eagerly", self.error)
                return None
        energy, atom_e, mask, force, virial = out
        pred = {keys.ENERGY: energy, keys.ATOM_ENERGY: atom_e, keys.MASK: mask, keys.FORCE: force}
        if do_virial:
            pred[keys.VIRIAL] = virial
        return pred


def compiled_forwards(tasks: dict, enabled: bool) -> dict[str, CompiledTraining]:
    """Per task name, the compiled training forward of its model (``training.enable_compile``);
    a task whose model cannot be compiled is left out (eager), with one log line saying why."""
    if not enabled:
        return {}
    out = {}
    for name, task in tasks.items():
        fast = CompiledTraining(task.model)
        if fast.error is not None:
            log.warning(
                "task %s: compiled training is not available (%s); training eagerly",
                name,
                fast.error,
            )
            continue
        out[name] = fast
    return out
