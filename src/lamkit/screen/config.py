"""Settings of a screening (:class:`ScreenConfig`) and its error type (:class:`ScreenError`).

Every field has a role: ``result`` fields change what is computed per structure (they are
hashed into the resume key, so a changed value never silently reuses stored results), ``final``
fields only change the flags computed at the end from stored values (thresholds, the insert
filter), ``exec`` fields only change how the work is run (batch sizes, parse workers, device).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import LamkitError

PRESET_NAMES = ("openlam", "mattergen")
OPTIMIZERS = ("fire", "lbfgs")
CELL_FILTERS = ("frechet", "fixed", "hydrostatic")
DTYPES = ("float32", "float64")
INSERT_WHEN = ("converged", "metastable", "stable", "unique", "sun")


class ScreenError(LamkitError, ValueError):
    """A screening cannot run: bad settings, unusable inputs or out_dir, unknown potential."""


def _f(default, role: str = "result", **kw):
    if isinstance(default, (list, dict, tuple)):
        return field(default_factory=lambda: default, metadata={"role": role}, **kw)
    return field(default=default, metadata={"role": role}, **kw)


@dataclass
class ScreenConfig:
    """What a screening checks and how it relaxes (lengths Å, energies eV, eV/atom)."""

    # -- validity rules (see lamkit.screen.validity)
    min_distance: float = _f(0.5)  # Å, shortest interatomic distance, periodic images included
    volume_per_atom: tuple[float, float] = _f((1.0, 200.0))  # Å^3/atom, inclusive bounds
    max_sites: int = _f(1000)  # largest structure accepted
    charge_neutrality: bool = _f(False)  # SMACT charge-neutrality rule (needs smact)
    check_type_map: bool = _f(True)  # elements must be in the potential's type map
    check_db_elements: bool = _f(True)  # elements need an elemental reference in the database
    # -- parsing
    parse_timeout: float = _f(60.0)  # s per file; a file that takes longer is rejected
    max_file_bytes: int = _f(1 << 30)  # larger files (and archive members) are rejected
    max_archive_bytes: int = _f(4 << 30)  # total bytes extracted from one archive
    parse_workers: int = _f(2, "exec")  # parser processes (0: parse in this process, no timeout)
    # -- relaxation (passed to lamkit.relax.relax)
    optimizer: str = _f("fire")
    cell_filter: str = _f("frechet")
    pressure: float = _f(0.0)  # GPa
    fmax: float = _f(0.05)  # eV/Å
    smax: float | None = _f(None)  # eV/Å^3
    steps: int = _f(500)
    dtype: str = _f("float64")
    head: str | None = _f(None)
    max_atoms: int = _f(8192, "exec")  # atom budget of one in-flight batch
    device: str | None = _f(None, "exec")
    chunk_size: int = _f(256, "exec")  # structures per relax() call / per cluster shard
    retries: int = _f(2, "exec")  # cluster: retries of a failed shard
    # -- judgement
    preset: str = _f("openlam")  # StructureMatcher preset for uniqueness and novelty
    hull_model: str | None = _f(None)  # database model whose hull is used (None: model name)
    novelty_model: str | None = _f(None)  # compare against this model's records (None: all)
    references: dict[str, float] | None = _f(None)  # elemental references, eV/atom (override)
    stability_threshold: float = _f(0.0, "final")  # stable: e_above_hull <= this, eV/atom
    metastability_threshold: float = _f(0.1, "final")  # metastable: e_above_hull <= this
    sun_threshold: float = _f(0.1, "final")  # S.U.N. counts e_above_hull <= this (MatterGen)
    require_converged: bool = _f(True, "final")  # unconverged: no stable/metastable/S.U.N. flag
    insert_when: str = _f("converged", "final")  # which rows --insert writes (see INSERT_WHEN)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ScreenError naming the first invalid setting."""
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("cell_filter", self.cell_filter, CELL_FILTERS)
        _choice("dtype", self.dtype, DTYPES)
        _choice("preset", self.preset, PRESET_NAMES)
        _choice("insert_when", self.insert_when, INSERT_WHEN)
        lo_hi = self.volume_per_atom
        if (
            not isinstance(lo_hi, (tuple, list))
            or len(lo_hi) != 2
            or not all(_finite(v) for v in lo_hi)
            or not 0 <= lo_hi[0] < lo_hi[1]
        ):
            raise ScreenError(
                f"volume_per_atom: expected (lo, hi) in Å^3/atom with 0 <= lo < hi; found {lo_hi!r}"
            )
        self.volume_per_atom = (float(lo_hi[0]), float(lo_hi[1]))
        for name in ("min_distance", "fmax", "parse_timeout"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                raise ScreenError(f"{name}: expected a positive number; found {value!r}")
        if self.smax is not None and (not _finite(self.smax) or self.smax <= 0):
            raise ScreenError(f"smax: expected a positive number or None; found {self.smax!r}")
        if not _finite(self.pressure):
            raise ScreenError(f"pressure: expected a finite number (GPa); found {self.pressure!r}")
        for name in ("max_sites", "steps", "max_atoms", "chunk_size", "max_file_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ScreenError(f"{name}: expected a positive integer; found {value!r}")
        for name in ("parse_workers", "retries"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ScreenError(f"{name}: expected an integer >= 0; found {value!r}")
        for name in ("stability_threshold", "metastability_threshold", "sun_threshold"):
            if not _finite(getattr(self, name)):
                raise ScreenError(f"{name}: expected a finite number (eV/atom)")
        if self.references is not None:
            if not isinstance(self.references, dict) or not all(
                isinstance(k, str) and _finite(v) for k, v in self.references.items()
            ):
                raise ScreenError(
                    "references: expected {element: energy per atom (eV/atom)}; "
                    f"found {self.references!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        """All settings as a JSON-ready dict."""
        d = asdict(self)
        d["volume_per_atom"] = list(self.volume_per_atom)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScreenConfig:
        """A config from :meth:`to_dict` output (unknown keys raise ScreenError)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ScreenError(f"unknown screening setting(s) {unknown}; known: {sorted(names)}")
        d = dict(d)
        if "volume_per_atom" in d:
            d["volume_per_atom"] = tuple(d["volume_per_atom"])
        return cls(**d)

    def result_settings(self) -> dict[str, Any]:
        """The settings that change per-structure results (hashed into the resume key)."""
        d = self.to_dict()
        return {f.name: d[f.name] for f in fields(self) if f.metadata["role"] == "result"}

    def relax_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of lamkit.relax.relax taken from these settings."""
        keys = ("optimizer", "cell_filter", "pressure", "fmax", "smax", "steps", "max_atoms")
        kw = {k: getattr(self, k) for k in keys}
        kw.update(dtype=self.dtype, device=self.device, head=self.head)
        return kw


def settings_hash(settings: dict[str, Any]) -> str:
    """sha256 (hex) of a JSON-ready dict, keys sorted."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ScreenError(f"{name}: expected one of {', '.join(choices)}; found {value!r}")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
