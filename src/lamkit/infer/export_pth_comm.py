"""Message passing across MPI ranks in ``--format pth`` files (DPA-2 under ``pair_style deepmd``).

A repformer layer reads the g1 features of its ghost atoms. On one process they are copies of
local atoms (``mapping``); on several MPI ranks they belong to other ranks, and DeePMD-kit's
C++ inference then hands ``forward_lower`` a ``comm_dict`` (LAMMPS's swap lists, the
communicator) for ``torch.ops.deepmd.border_op``: the operator of DeePMD-kit's own C++ op
library (``libdeepmd_op_pt.so``, which the LAMMPS plugin loads) that fills the ghost rows of a
``[nall, g1_dim]`` tensor from their owners, with ``border_op_backward`` for the reverse
exchange of gradients.

The program is traced with two placeholder operators (:func:`exchange` and its backward) at
those points, so that forward and backward stay one ATen graph; :func:`use_deepmd_ops` then
puts DeePMD-kit's operators in their place. The written file therefore needs DeePMD-kit's op
library where it is loaded (as a DPA-2 model frozen by DeePMD-kit itself does), and nothing of
lamkit.
"""

from __future__ import annotations

import copy
import importlib.util
import operator
from pathlib import Path

import torch
from torch import Tensor

from ..errors import ModelFileError

# the comm_dict keys, in the order border_op takes them (g1 goes between recv_num and
# communicator)
COMM_KEYS = ("send_list", "send_proc", "recv_proc", "send_num", "recv_num", "communicator")


@torch.library.custom_op("lamkit_pth::exchange", mutates_args=())
def _exchange(
    g1: Tensor,
    send_list: Tensor,
    send_proc: Tensor,
    recv_proc: Tensor,
    send_num: Tensor,
    recv_num: Tensor,
    communicator: Tensor,
    nlocal: Tensor,
    nghost: Tensor,
) -> Tensor:
    raise RuntimeError("lamkit_pth::exchange only stands in for deepmd::border_op in a trace")


@torch.library.custom_op("lamkit_pth::exchange_back", mutates_args=())
def _exchange_back(
    grad: Tensor,
    send_list: Tensor,
    send_proc: Tensor,
    recv_proc: Tensor,
    send_num: Tensor,
    recv_num: Tensor,
    communicator: Tensor,
    nlocal: Tensor,
    nghost: Tensor,
) -> Tensor:
    raise RuntimeError(
        "lamkit_pth::exchange_back only stands in for deepmd::border_op_backward in a trace"
    )


@_exchange.register_fake
def _(g1, *comm):
    return torch.empty_like(g1)


@_exchange_back.register_fake
def _(grad, *comm):
    return torch.empty_like(grad)


def _setup(ctx, inputs, output) -> None:
    ctx.comm = inputs[1:]


def _backward(ctx, grad):
    return (_exchange_back(grad, *ctx.comm),) + (None,) * len(ctx.comm)


_exchange.register_autograd(_backward, setup_context=_setup)


def exchange(g1: Tensor, nall: int, comm: tuple[Tensor, ...]) -> Tensor:
    """Local g1 ``[1, nloc, g1_dim]`` -> g1 of all ``nall`` extended atoms ``[1, nall, g1_dim]``
    through the placeholder operator; ``comm``: the :data:`COMM_KEYS` tensors, then nlocal
    and nghost as 0-d int32 tensors."""
    pad = torch.nn.functional.pad(g1[0], (0, 0, 0, nall - g1.shape[1]))
    return _exchange(pad, *comm).unsqueeze(0)


def use_deepmd_ops(gm: torch.fx.GraphModule) -> int:
    """The placeholder operators in ``gm`` replaced, in place, by DeePMD-kit's
    ``deepmd::border_op`` (first output) and ``deepmd::border_op_backward`` (on a copy of the
    gradient: it works in place). Returns how many were replaced."""
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is torch.ops.lamkit_pth.exchange.default:
            g1, *comm = node.args
            with gm.graph.inserting_before(node):
                call = gm.graph.call_function(
                    torch.ops.deepmd.border_op.default, (*comm[:5], g1, *comm[5:])
                )
                first = gm.graph.call_function(operator.getitem, (call, 0))
            node.replace_all_uses_with(first)
        elif node.target is torch.ops.lamkit_pth.exchange_back.default:
            grad, *comm = node.args
            with gm.graph.inserting_before(node):
                copy = gm.graph.call_function(torch.ops.aten.clone.default, (grad,))
                call = gm.graph.call_function(
                    torch.ops.deepmd.border_op_backward.default, (*comm[:5], copy, *comm[5:])
                )
            node.replace_all_uses_with(call)
        else:
            continue
        gm.graph.erase_node(node)
        count += 1
    gm.graph.lint()
    gm.recompile()
    return count


def use_mapping(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of ``gm`` (a program traced with the placeholder operators) that takes the
    ghost atoms' ``mapping [1, nall]`` (the local atom each extended atom copies) as its last
    input instead of the comm tensors: the exchange becomes a gather of the padded g1 rows
    (local rows only) and its backward the matching scatter-add."""
    gm = copy.deepcopy(gm)
    graph = gm.graph
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    with graph.inserting_after(inputs[-1]):
        mapping = graph.placeholder("mapping")
    with graph.inserting_after(mapping):
        index = graph.call_function(torch.ops.aten.view.default, (mapping, [-1]))
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is torch.ops.lamkit_pth.exchange.default:
            with graph.inserting_before(node):
                new = graph.call_function(
                    torch.ops.aten.index_select.default, (node.args[0], 0, index)
                )
        elif node.target is torch.ops.lamkit_pth.exchange_back.default:
            grad = node.args[0]
            with graph.inserting_before(node):
                zero = graph.call_function(torch.ops.aten.zeros_like.default, (grad,))
                new = graph.call_function(torch.ops.aten.index_add.default, (zero, 0, index, grad))
        else:
            continue
        node.replace_all_uses_with(new)
        graph.erase_node(node)
    for node in inputs[-len(COMM_KEYS) - 2 :]:  # the comm tensors, nlocal, nghost
        if node.users:
            raise RuntimeError(f"the traced program still reads {node.name}")
        graph.erase_node(node)
    graph.lint()
    gm.recompile()
    return gm


def _registered() -> bool:
    ops = torch.ops.deepmd
    return all(
        isinstance(getattr(ops, name, None), torch._ops.OpOverloadPacket)
        for name in ("border_op", "border_op_backward")
    )


def load_deepmd_ops() -> None:
    """Register DeePMD-kit's ``torch.ops.deepmd.border_op`` and ``border_op_backward`` (its
    ``libdeepmd_op_pt.so``, from the installed ``deepmd-kit`` package) unless they are."""
    if _registered():
        return
    spec = importlib.util.find_spec("deepmd")
    origin = spec.origin if spec is not None else None
    lib = Path(origin).parent / "lib" / "libdeepmd_op_pt.so" if origin else None
    if lib is None or not lib.is_file():
        raise ModelFileError(
            "--format pth: a message-passing model (DPA-2) calls DeePMD-kit's "
            "deepmd::border_op to exchange ghost-atom features between MPI ranks; install "
            "deepmd-kit (its PyTorch op library libdeepmd_op_pt.so) to freeze it"
        )
    try:
        torch.ops.load_library(str(lib))
    except OSError as exc:
        raise ModelFileError(
            f"--format pth: cannot load DeePMD-kit's op library {lib} ({exc}); it must be "
            f"built for this torch ({torch.__version__})"
        ) from exc
    if not _registered():
        raise ModelFileError(
            f"--format pth: {lib} does not provide deepmd::border_op and border_op_backward "
            "(DeePMD-kit 3.2 or later is needed)"
        )
