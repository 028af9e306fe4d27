"""Whether the code runs eagerly or is being captured into a graph (TorchScript, torch.compile,
make_fx): eager code may take data-dependent shortcuts (trimming empty slots, skipping a branch
no element takes) that a captured graph must not bake in."""

from __future__ import annotations

import torch
from torch.fx.experimental.proxy_tensor import get_proxy_mode


def capturing() -> bool:
    """True under ``torch.jit`` scripting, ``torch.compile`` or a make_fx trace."""
    return bool(torch.jit.is_scripting() or torch.compiler.is_compiling() or get_proxy_mode())
