"""The environment-matrix block: what every descriptor block built on the smooth environment
matrix shares.

:class:`EnvBlock` owns the cutoffs ``rcut``/``rcut_smth``, the neighbour slots ``sel`` (and
``nnei``, their total), the excluded type pairs ``exclude_types``, ``env_protection``, the
``davg``/``dstd`` normalisation buffers and the statistics that set them. :func:`check_env`
is the one validation of those values, so the same mistake raises the same
:class:`~lamkit.errors.ConfigError`, naming the key path, in every descriptor.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import keys
from ..errors import ConfigError
from ..nn.mlp import to_dtype
from .base import check_exclude_types, env_stat_id, pair_exclude_mask


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_count(where: str, value) -> int:
    """A neighbour count ("auto" must be resolved by now): a non-negative integer."""
    if isinstance(value, str):
        raise ConfigError(
            f"{where}: '{value}' must be resolved from the training data before the model is "
            "built (lam train does this)"
        )
    if not _is_int(value) or value < 0:
        raise ConfigError(f"{where}: expected a non-negative integer, got {value!r}")
    return int(value)


def check_env(
    where: str,
    rcut,
    rcut_smth,
    sel,
    ntypes: int,
    typed: bool,
    names: tuple[str, str, str] = ("rcut", "rcut_smth", "sel"),
) -> list[int]:
    """Check the cutoffs and neighbour slots of a block configured at ``where``; return
    ``sel`` as a list of ints (one per type when ``typed``, else one number: the total).

    ``names`` are the block's keys for ``rcut``, ``rcut_smth`` and ``sel``."""
    rk, sk, nk = names
    for key, value in ((rk, rcut), (sk, rcut_smth)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}/{key}: expected a number, got {value!r}")
    if rcut <= 0:
        raise ConfigError(f"{where}/{rk}: must be > 0, got {rcut}")
    if rcut_smth < 0 or rcut_smth > rcut:
        raise ConfigError(f"{where}/{sk}: must lie in [0, {rk}] ([0, {rcut}]), got {rcut_smth}")
    if isinstance(sel, (list, tuple)):
        counts = [check_count(f"{where}/{nk}", s) for s in sel]
        if typed and len(counts) != ntypes:
            raise ConfigError(
                f"{where}/{nk}: needs one entry per type ({ntypes} types), got {list(sel)}"
            )
    elif typed:
        raise ConfigError(f"{where}/{nk}: expected a list with one entry per type, got {sel!r}")
    else:
        counts = [check_count(f"{where}/{nk}", sel)]
    return counts if typed else [sum(counts)]


class EnvBlock(nn.Module):
    """Base of the environment-matrix blocks (see the module doc); :meth:`init_env` sets the
    shared attributes and registers ``davg``/``dstd`` ([ntypes, ncol])."""

    rcut: float
    rcut_smth: float
    sel: list[int]
    nnei: int
    ntypes: int
    exclude_types: list[tuple[int, int]]
    env_protection: float
    dtype: torch.dtype
    set_davg_zero: bool = False
    # columns of davg/dstd: 4 (full environment matrix) or 1 (radial only)
    stat_columns: int = 4

    def init_env(
        self,
        ntypes: int,
        rcut,
        rcut_smth,
        sel,
        *,
        dtype: torch.dtype,
        typed: bool,
        exclude_types=(),
        env_protection: float = 0.0,
        where: str = "model/descriptor",
        names: tuple[str, str, str] = ("rcut", "rcut_smth", "sel"),
        stats: bool = True,
        std: float = 1.0,
    ) -> None:
        """Validate and set the shared attributes; with ``stats``, register ``davg`` (zeros)
        and ``dstd`` (``std``) buffers."""
        self.ntypes = ntypes
        self.sel = check_env(where, rcut, rcut_smth, sel, ntypes, typed, names)
        self.nnei = sum(self.sel)
        self.rcut, self.rcut_smth = float(rcut), float(rcut_smth)
        self.exclude_types = check_exclude_types(exclude_types, ntypes, f"{where}/exclude_types")
        self.env_protection = float(env_protection)
        self.dtype = dtype
        if stats:
            shape = (ntypes, self.stat_columns)
            self.register_buffer("davg", torch.zeros(shape, dtype=dtype))
            self.register_buffer("dstd", torch.full(shape, std, dtype=dtype))

    def init_env_from(self, cfg, ntypes: int, *, typed: bool, where: str) -> None:
        """:meth:`init_env` from a descriptor's typed config (its ``rcut``, ``rcut_smth``,
        ``sel``, ``precision``, ``exclude_types``, ``env_protection``, ``set_davg_zero``)."""
        self.set_davg_zero = cfg.set_davg_zero
        self.init_env(
            ntypes,
            cfg.rcut,
            cfg.rcut_smth,
            cfg.sel,
            dtype=to_dtype(cfg.precision),
            typed=typed,
            exclude_types=cfg.exclude_types,
            env_protection=cfg.env_protection,
            where=where,
        )

    def normalize_env(self, env: torch.Tensor, atype: torch.Tensor) -> torch.Tensor:
        """``(env - davg[t_i]) / dstd[t_i]`` for env [nf, rows, nnei, ncol] of centres of
        type ``atype`` [nf, rows] (virtual atoms read type 0)."""
        at = atype.clamp(min=0)
        return (env - self.davg[at].unsqueeze(2)) / self.dstd[at].unsqueeze(2)

    def exclude_mask(self, atype, ext_atype, nlist) -> torch.Tensor | None:
        """[nf, rows, nnei] mask of the pairs not excluded by ``exclude_types``, or None."""
        return pair_exclude_mask(self.exclude_types, self.ntypes, atype, ext_atype, nlist)

    # --- statistics ---------------------------------------------------------------------------
    @torch.no_grad()
    def env_stat(self, samples):
        """Un-normalised environment-matrix statistics (an ``EnvStat``: per centre type, every
        slot, excluded pairs zeroed) over an iterable of dicts holding EXT_COORD, EXT_ATYPE and
        NLIST built for this block."""
        from ..geometry.env import environment_matrix
        from .env_stat import EnvStat

        stat = EnvStat(self.ntypes)
        for s in samples:
            ext_coord, ext_atype, nlist = s[keys.EXT_COORD], s[keys.EXT_ATYPE], s[keys.NLIST]
            env, _, _, _ = environment_matrix(
                ext_coord.to(self.dtype), nlist, self.rcut, self.rcut_smth, self.env_protection
            )
            atype = ext_atype[:, : nlist.shape[1]]
            emask = self.exclude_mask(atype, ext_atype, nlist)
            if emask is not None:
                env = env * emask.unsqueeze(-1).to(env.dtype)
            stat.add(env, atype)
        return stat

    @torch.no_grad()
    def set_stat(self, stat, protection: float = 1e-2) -> None:
        """Set the ``davg``/``dstd`` buffers from ``env_stat``'s result."""
        davg, dstd = stat.davg_dstd(
            protection, self.set_davg_zero, radial_only=self.stat_columns == 1
        )
        self.davg.copy_(torch.as_tensor(davg, dtype=self.dtype))
        self.dstd.copy_(torch.as_tensor(dstd, dtype=self.dtype))

    def stat_id(self) -> str | dict[str, str]:
        """What the statistics depend on, for the stat-file cache."""
        return env_stat_id(
            self.rcut,
            self.rcut_smth,
            self.sel,
            self.mixed_types,
            self.exclude_types,
            self.env_protection,
        )
