"""What each component of a model declares about its tensors, next to its code.

* ``TYPE_ROWS``: a tuple of :class:`TypeRows`, the parameters/buffers of the component that are
  indexed by atom type (which axis, and what rows of new types start from). Changing a model's
  type map (:mod:`lamkit.model.type_map`) asks every module of the model through
  :func:`type_rows`.
* ``REF_NAMES``: a :class:`RefNames`, how the component's tensors are named in a DeePMD-kit
  checkpoint, below the component's place there, plus the reference entries it has no
  counterpart for. :func:`reference_layout` walks the model's components, composes their
  places and names, and gives the full lamkit <-> DeePMD-kit name map that the checkpoint
  reader and writer (:mod:`lamkit.interop`) use.

Names are globs over dotted names: ``*`` stands for one part (``layers.*.matrix``), ``**`` for
one or more parts; the lamkit and the reference glob of a pair have the same wildcards in the
same order, so a pair maps names both ways.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from torch import nn


@dataclass(frozen=True)
class TypeRows:
    """A tensor ``name`` (below its component) with one slice per atom type along ``axis``.

    ``init`` says what the slices of new types hold when the type map changes: ``"zero"``, or
    ``"fresh"``, the value of a model freshly built for the new type map (initial statistics
    such as ``dstd = 1``, newly initialised embedding rows).
    """

    name: str
    init: str = "zero"
    axis: int = 0

    def __post_init__(self):
        if self.init not in ("zero", "fresh"):
            raise ValueError(f"TypeRows({self.name!r}): init must be 'zero' or 'fresh'")


# the environment statistics of a descriptor block: zero mean and the initial spread for new types
STAT_ROWS = (TypeRows("davg"), TypeRows("dstd", "fresh"))


_WILD = re.compile(r"\*\*|\*")


@cache
def _compile(glob: str) -> re.Pattern:
    out, pos = [], 0
    for m in _WILD.finditer(glob):
        out.append(re.escape(glob[pos : m.start()]))
        out.append("(.+)" if m.group() == "**" else r"([^.]+)")
        pos = m.end()
    out.append(re.escape(glob[pos:]))
    return re.compile("".join(out) + r"\Z")


def _fill(glob: str, parts: tuple[str, ...]) -> str:
    it = iter(parts)
    return _WILD.sub(lambda m: next(it), glob)


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def _below(name: str, prefix: str) -> str | None:
    """``name`` relative to ``prefix`` (None when it is not below it)."""
    if not prefix:
        return name
    return name[len(prefix) + 1 :] if name.startswith(prefix + ".") else None


def _map(pairs, name: str, src: int) -> str | None:
    for pair in pairs:
        m = _compile(pair[src]).match(name)
        if m is not None:
            return _fill(pair[1 - src], m.groups())
    return None


@dataclass(frozen=True)
class RefNames:
    """A component's names in DeePMD-kit checkpoints.

    Args:
        names: ``(lamkit glob, reference glob)`` pairs for the tensors of the component (those
            of its sub-modules that declare nothing themselves), below ``block``.
        ignore: reference globs below ``block`` with no lamkit tensor (compression tables,
            duplicates such as ``filter_layers._networks``).
        block: the reference sub-module that holds the component's tensors (``se_atten`` in
            DPA-1: the reference's descriptor wraps one block); empty if none.
        children: ``(lamkit glob, reference glob)`` places of declaring sub-components, relative
            to the component's own place (not its block); others keep their lamkit path.
        bare: sub-components placed as a block (their own ``block`` is dropped): DPA-2's
            repinit is a DPA-1 block directly at ``repinit``.
    """

    names: tuple[tuple[str, str], ...] = ()
    ignore: tuple[str, ...] = ()
    block: str = ""
    children: tuple[tuple[str, str], ...] = ()
    bare: tuple[str, ...] = ()

    def __post_init__(self):
        for own, ref in (*self.names, *self.children):
            if _WILD.findall(own) != _WILD.findall(ref):
                raise ValueError(f"RefNames: '{own}' and '{ref}' differ in their wildcards")

    def to_ref(self, own: str) -> str | None:
        """The reference name (below the block) of the lamkit name ``own``; None: not ours."""
        return _map(self.names, own, 0)

    def to_own(self, ref: str) -> str | None:
        """The lamkit name of the reference name ``ref`` (below the block); None: not ours."""
        return _map(self.names, ref, 1)

    def ignores(self, ref: str) -> bool:
        return any(_compile(g).match(ref) for g in self.ignore)

    def place(self, child: str) -> tuple[str, bool]:
        """The reference place of the sub-component at lamkit path ``child`` and whether it is
        placed bare (as a block)."""
        bare = any(_compile(g).match(child) for g in self.bare)
        return _map(self.children, child, 0) or child, bare


# shared vocabulary of the reference's descriptor blocks
STAT_NAMES = (("davg", "mean"), ("dstd", "stddev"))
# NetworkCollection keeps its nets twice (``networks`` and the alias ``_networks``); tabulated
# (compressed) descriptors keep their tables in ``compress_info``/``compress_data``
NETWORK_ALIASES = ("filter_layers._networks.**", "filter_layers_strip._networks.**")
COMPRESSION = ("compress_info.*", "compress_data.*")


@dataclass(frozen=True)
class Component:
    """A declaring module in a model: its lamkit path, its reference place and block."""

    own: str
    ref: str
    block: str
    names: RefNames


@dataclass
class ReferenceLayout:
    """The DeePMD-kit names of a model's tensors (relative to ``model.<head>.``).

    ``to_ref``: lamkit state-dict key -> reference key; ``uncovered``: lamkit keys that no
    component declares.
    """

    components: list[Component]
    to_ref: dict[str, str] = field(default_factory=dict)
    uncovered: list[str] = field(default_factory=list)

    def to_own(self) -> dict[str, str]:
        return {ref: own for own, ref in self.to_ref.items()}

    def ignored(self, ref: str) -> bool:
        """True for a reference entry that a component declares it has no tensor for."""
        for c in self.components:
            rest = _below(ref, c.block)
            if rest is not None and c.names.ignores(rest):
                return True
        return False


def _declaration(module: nn.Module) -> RefNames | None:
    names = getattr(module, "REF_NAMES", None)
    return names if isinstance(names, RefNames) else None


def components(model: nn.Module, root: str | None = None) -> list[Component]:
    """Every declaring module of ``model`` with its reference place (``root``: the place of
    ``model`` itself, default its ``REF_ROOT`` or nothing), parents before children."""
    root = getattr(model, "REF_ROOT", "") if root is None else root
    decl = _declaration(model)
    if decl is None:
        raise TypeError(f"{type(model).__name__} declares no REF_NAMES")
    out = [Component("", root, _join(root, decl.block), decl)]
    for path, module in model.named_modules():
        decl = _declaration(module)
        if not path or decl is None:
            continue
        parent = max((c for c in out if _below(path, c.own) is not None), key=lambda c: len(c.own))
        place, bare = parent.names.place(_below(path, parent.own))
        ref = _join(parent.ref, place)
        out.append(Component(path, ref, ref if bare else _join(ref, decl.block), decl))
    return out


def reference_layout(model: nn.Module, root: str | None = None) -> ReferenceLayout:
    """The reference names of every tensor in ``model.state_dict()``: each belongs to the
    deepest declaring module above it, which names it."""
    comps = components(model, root)
    layout = ReferenceLayout(comps)
    deepest_first = sorted(comps, key=lambda c: -len(c.own))
    for key in model.state_dict():
        owner = next(c for c in deepest_first if _below(key, c.own) is not None)
        ref = owner.names.to_ref(_below(key, owner.own))
        if ref is None:
            layout.uncovered.append(key)
        else:
            layout.to_ref[key] = _join(owner.block, ref)
    return layout


def type_rows(model: nn.Module) -> dict[str, TypeRows]:
    """``{state-dict key: TypeRows}`` of the type-indexed tensors of ``model``, as its modules
    declare them (``TYPE_ROWS``)."""
    keys = set(model.state_dict())
    out = {}
    for path, module in model.named_modules():
        for rows in getattr(module, "TYPE_ROWS", ()):
            key = _join(path, rows.name)
            if key in keys:
                out[key] = rows
    return out
