"""Ready-made inputs: DeePMD-kit's water example configurations, in its input.json schema.

========================  ============================================  ==========
preset                    what                                          parameters
========================  ============================================  ==========
dpa2 (size small)         DPA-2, repformer 3 layers, no g2 attention     622,219
dpa2 (size medium)        DPA-2, 6 layers with g2 attention (default)  1,017,163
dpa2 (size large)         DPA-2, 12 layers with g2 attention           1,741,003
dpa2_compressible         DPA-2 small, repinit ``tebd_input_mode`` strip   628,698
dpa3                      DPA-3, 6 repflow layers, float32             1,309,761
dpa1 (alias se_atten)     DPA-1, two attention layers                    612,995
se_e3_tebd                three-body embedding with type embedding       120,593
se_e2_a (alias se_a)      the classic smooth-edition descriptor        1,014,182
========================  ============================================  ==========

(counts for the type map [O, H]). :func:`make_input` fills in the data, the type map and the
number of steps; ``lam init`` writes the result as input.json.
"""

from __future__ import annotations

import copy
import json
import logging
from importlib import resources
from pathlib import Path

from ..errors import ConfigError, DataError
from ..registry import did_you_mean

log = logging.getLogger("lamkit")

SIZES = ("small", "medium", "large")
DEFAULT_SIZE = "medium"  # the reference's recommended DPA-2 model
# preset name -> file stem; "{size}" is filled in from SIZES
_PRESETS = {
    "dpa2": "dpa2_{size}",
    "dpa2_compressible": "dpa2_compressible",
    "dpa3": "dpa3",
    "dpa1": "dpa1",
    "se_e3_tebd": "se_e3_tebd",
    "se_e2_a": "se_e2_a",
}
_ALIASES = {"se_atten": "dpa1", "se_a": "se_e2_a", "dpa2-compressible": "dpa2_compressible"}


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def load_preset(name: str, size: str | None = None) -> dict:
    """The preset input as a dict (a fresh copy). ``size`` applies to dpa2 only."""
    canonical = _ALIASES.get(name, name)
    if canonical not in _PRESETS:
        known = preset_names() + sorted(_ALIASES)
        raise ConfigError(
            f"no preset '{name}'; available: {', '.join(preset_names())}."
            + did_you_mean(name, known)
        )
    stem = _PRESETS[canonical]
    if "{size}" in stem:
        size = size or DEFAULT_SIZE
        if size not in SIZES:
            raise ConfigError(f"--size: '{size}' is not one of {', '.join(SIZES)}")
        stem = stem.format(size=size)
    elif size is not None:
        raise ConfigError(f"--size: only dpa2 comes in sizes, not '{name}'")
    text = resources.files(__name__).joinpath(f"{stem}.json").read_text()
    return copy.deepcopy(json.loads(text))


def _type_map_of(systems: list[Path]) -> list[str]:
    """Element names of the systems' ``type_map.raw`` files, in order of first appearance."""
    names: list[str] = []
    for path in systems:
        tm = path / "type_map.raw" if path.is_dir() else None
        if tm is None or not tm.exists():
            raise DataError(
                f"{path}: no type_map.raw, so the element names are unknown; give them with "
                "--type-map (e.g. --type-map O H)"
            )
        for name in tm.read_text().split():
            if name not in names:
                names.append(name)
    return names


def split_systems(folders: list[str | Path]) -> tuple[list[Path], list[Path]]:
    """Systems found under ``folders`` (in the given order, each searched in sorted order):
    all but the last for training, the last for validation."""
    from ..data.discover import expand_systems

    systems: list[Path] = []
    for folder in folders:
        if not Path(folder).exists():
            raise DataError(f"--data {folder}: no such folder")
        try:
            systems.extend(expand_systems(str(folder)))
        except DataError as exc:
            raise DataError(f"--data {folder}: {exc}") from None
    if len(systems) < 2:
        raise DataError(
            f"--data {' '.join(map(str, folders))}: found {len(systems)} system(s); need at "
            "least two (data_0 ... data_n-1 for training, the last one for validation)"
        )
    return systems[:-1], systems[-1:]


def make_input(
    name: str,
    size: str | None = None,
    train: list[str] | None = None,
    valid: list[str] | None = None,
    type_map: list[str] | None = None,
    steps: int | None = None,
) -> dict:
    """A preset with its data, type map and step count replaced (None keeps the preset's).

    A per-type ``sel`` (se_e2_a) that does not fit the new type map becomes ``"auto"``.
    """
    conf = load_preset(name, size)
    model, tr = conf["model"], conf["training"]
    if type_map is not None:
        if not type_map or len(set(type_map)) != len(type_map):
            raise ConfigError(f"--type-map: expected distinct element names, got {type_map}")
        model["type_map"] = list(type_map)
        sel = model["descriptor"].get("sel")
        if isinstance(sel, list) and len(sel) != len(type_map):
            model["descriptor"]["sel"] = "auto"
    if train is not None:
        tr["training_data"]["systems"] = [str(s) for s in train]
    if valid is not None:
        tr["validation_data"]["systems"] = [str(s) for s in valid]
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"--steps: expected a positive number, got {steps}")
        tr["numb_steps"] = int(steps)
        tr["disp_freq"] = min(tr["disp_freq"], max(1, steps // 10))
        tr["save_freq"] = min(tr["save_freq"], steps)
    return conf


def init_input(
    name: str,
    output: str | Path = "input.json",
    size: str | None = None,
    data: list[str | Path] | None = None,
    type_map: list[str] | None = None,
    steps: int | None = None,
) -> Path:
    """Write a ready-to-run input file (``lam init``); returns its path.

    Without ``data`` the built-in example (``lam example``) is used, written to
    ``lamkit-example`` next to the output file unless it is there already. System paths are
    written relative to the output file's folder, the folder to run ``lam train`` from.
    """
    from ..examples import TYPE_MAP, write_example

    output = Path(output)
    base = output.parent
    if data:
        train, valid = split_systems(list(data))
        type_map = type_map or _type_map_of(train + valid)
    else:
        example = base / "lamkit-example"
        train = [example / "data" / "train_0", example / "data" / "train_1"]
        valid = [example / "data" / "valid"]
        if not all((p / "type.raw").exists() for p in train + valid):
            write_example(example)
            log.info("wrote the built-in example data to %s", example)
        type_map = type_map or list(TYPE_MAP)

    def rel(p: Path) -> str:  # relative below the output folder, absolute elsewhere
        p = Path(p).resolve()
        try:
            return str(p.relative_to(base.resolve()))
        except ValueError:
            return str(p)

    conf = make_input(
        name,
        size,
        [rel(p) for p in train],
        [rel(p) for p in valid],
        type_map,
        steps,
    )
    base.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(conf, indent=2) + "\n")
    return output
