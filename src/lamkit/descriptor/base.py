"""Descriptor contract and registry.

A descriptor maps the extended neighbourhood of every local atom to a per-atom feature:

    forward(extended_coord [nf, nall, 3], extended_atype [nf, nall], nlist [nf, nloc, nnei],
            mapping [nf, nall]) -> {DESCRIPTOR: [nf, nloc, dim_out], "rot_mat": [nf, nloc, m1, 3]}

It declares its cutoff ``rcut``, neighbour slots ``sel`` and whether its neighbour list mixes
types (``mixed_types``), so the caller builds the right neighbour data.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from ..config.schema import Arg, normalize
from ..errors import ConfigError
from ..registry import Registry

DESCRIPTORS: Registry = Registry("descriptor")


def pair_exclude_mask(
    exclude_types, ntypes: int, atype: torch.Tensor, ext_atype: torch.Tensor, nlist: torch.Tensor
) -> torch.Tensor | None:
    """[nf, nloc, nnei] 0/1 mask that removes pairs of excluded type pairs, or None."""
    if not exclude_types:
        return None
    table = torch.ones(ntypes + 1, ntypes + 1, dtype=torch.bool, device=nlist.device)
    for a, b in exclude_types:
        table[a, b] = table[b, a] = False
    nf, nloc, nnei = nlist.shape
    tj = torch.gather(ext_atype, 1, nlist.clamp(min=0).reshape(nf, -1)).reshape(nf, nloc, nnei)
    tj = torch.where(nlist >= 0, tj, ntypes)
    ti = torch.where(atype >= 0, atype, ntypes)
    return table[ti.unsqueeze(-1).expand_as(tj), tj]


def check_exclude_types(exclude_types, ntypes: int, where: str) -> list[tuple[int, int]]:
    """``exclude_types`` as a list of type-index pairs, each checked against ``ntypes``."""
    out = []
    for pair in exclude_types or ():
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) != 2
            or not all(isinstance(t, int) and not isinstance(t, bool) for t in pair)
        ):
            raise ConfigError(f"{where}: expected pairs of type indices like [0, 1], got {pair!r}")
        if not all(0 <= t < ntypes for t in pair):
            raise ConfigError(f"{where}: {list(pair)} has a type index outside 0..{ntypes - 1}")
        out.append((int(pair[0]), int(pair[1])))
    return out


def env_stat_id(
    rcut: float, rcut_smth: float, sel, mixed_types: bool, exclude_types, env_protection: float
) -> str:
    """What un-normalised environment-matrix statistics depend on (the stat-file cache key)."""
    excl = sorted(tuple(sorted(p)) for p in exclude_types)
    return (
        f"env_mat|rcut={float(rcut)}|rcut_smth={float(rcut_smth)}|sel={list(sel)}"
        f"|mixed={bool(mixed_types)}|exclude={excl}|protection={float(env_protection)}"
    )


class Descriptor(nn.Module):
    """Base class: subclasses set ``ARGS`` (their config spec, derived from a typed
    :class:`~lamkit.descriptor.block_config.BlockConfig`) and implement ``forward``; those built
    on the environment matrix also derive from :class:`~lamkit.descriptor.env_block.EnvBlock`.
    Constructors take ``ntypes``, the config's keys and ``where`` (the config's key path)."""

    ARGS: tuple[Arg, ...] = ()
    rcut: float
    rcut_smth: float
    sel: list[int]
    mixed_types: bool
    dim_out: int
    # True when forward also returns "rot_mat" [nf, nloc, dim_emb, 3] (dipole/polar fittings)
    has_rot_mat: bool = False

    @classmethod
    def normalize_config(cls, config: dict, path: str = "model/descriptor") -> dict:
        return normalize(config, cls.ARGS, path, allow_extra=("type",))

    @classmethod
    def neighbor_selections(cls, config: dict) -> list[tuple[tuple[str, ...], float]]:
        """Where a normalised config holds neighbour counts, with the cutoff each one counts
        within: ``[(key path, rcut)]``. The trainer resolves ``"auto"``/``"auto:factor"`` values
        from the training data; descriptors with several neighbour lists override this."""
        return [(("sel",), float(config["rcut"]))]

    def forward(
        self, ext_coord, ext_atype, nlist, mapping=None, chunking=None
    ) -> dict[str, torch.Tensor]:
        """``chunking`` (a :class:`lamkit.nn.chunking.Chunking`, or None): evaluate the
        atom-local blocks in slices of centre atoms."""
        raise NotImplementedError

    # --- compiled inference (lamkit.infer.compiled) -----------------------------------------
    def graph_inputs(self, ext_coord, ext_atype, nlist, step: int = 1) -> dict[str, torch.Tensor]:
        """Tensors that ``forward`` derives from the input *values* with Python decisions
        (shapes that depend on data), computed outside a traced graph; ``step`` rounds such
        widths up so that fewer distinct shapes occur. None for most descriptors."""
        return {}

    def forward_inputs(self, inputs: dict[str, torch.Tensor]) -> dict:
        """The named inputs (keyword arguments) of ``forward`` that hand it ``inputs`` (from
        :meth:`graph_inputs`), which it then takes instead of deriving them."""
        return {}

    def env_stat(self, samples):
        """Un-normalised environment-matrix statistics over an iterable of dicts holding
        EXT_COORD, EXT_ATYPE and NLIST built for this descriptor: an ``EnvStat``, or a dict of
        them (one per block). See :class:`lamkit.descriptor.env_block.EnvBlock`."""
        raise NotImplementedError

    def set_stat(self, stat, protection: float = 1e-2) -> None:
        """Set the ``davg``/``dstd`` buffers from ``env_stat``'s result."""
        raise NotImplementedError

    def share_type_embedding(self, tebd: nn.Module) -> None:
        """Use ``tebd`` (another descriptor's type embedding) as this one's: multi-task sharing
        level 1 of the type-embedding descriptors."""
        if not isinstance(getattr(self, "type_embedding", None), nn.Module):
            raise ConfigError(
                f"{type(self).__name__} has no type embedding to share (sharing level 1 needs "
                "dpa1, dpa2 or se_e3_tebd; use level 0 to share the whole descriptor)"
            )
        self.type_embedding = tebd

    def stat_id(self) -> str | dict[str, str]:
        """What the statistics depend on, for the stat-file cache: one string, or one per block
        (the same keys as ``env_stat``'s dict) for descriptors with several blocks."""
        raise NotImplementedError


def _takes_type_map(cls) -> bool:
    """Whether ``cls`` takes the element names ``type_map`` (a constructor argument or a key
    of its typed config)."""
    if "type_map" in inspect.signature(cls.__init__).parameters:
        return True
    return any(a.name == "type_map" for a in getattr(cls, "ARGS", ()))


def build_descriptor(
    config: dict, type_map: list[str], path: str = "model/descriptor"
) -> Descriptor:
    """Descriptor from a (DeePMD-kit style) config dict with a ``type`` key; ``path`` is where
    the config sits (it prefixes every error message)."""
    cls = DESCRIPTORS.get(config.get("type", "se_e2_a"))
    conf = cls.normalize_config(config, path)
    conf.pop("type", None)
    kwargs = {k: v for k, v in conf.items() if not k.startswith("_")}
    if _takes_type_map(cls) and not kwargs.get("type_map"):
        kwargs["type_map"] = list(type_map)  # element names (e.g. use_econf_tebd)
    return cls(ntypes=len(type_map), where=path, **kwargs)


def widen_lists(lists: dict[str, torch.Tensor], widest: dict[str, int]) -> dict[str, torch.Tensor]:
    """Each neighbour list of ``lists`` (from :meth:`Descriptor.graph_inputs`) padded with empty
    slots to the widest met so far, which ``widest`` (list name -> width) keeps and this updates.
    Exact wherever the padding of ``graph_inputs`` is: compiled graphs bake the widths in, and
    a narrower list then runs an existing graph instead of compiling another."""
    out = {}
    for name, nl in lists.items():
        width = max(nl.shape[-1], widest.get(name, 0))
        widest[name] = width
        if width > nl.shape[-1]:
            nl = torch.nn.functional.pad(nl, (0, width - nl.shape[-1]), value=-1)
        out[name] = nl
    return out
