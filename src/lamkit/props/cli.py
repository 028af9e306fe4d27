"""``lam props``: alloy properties of crystals from the command line.

    lam props param.json [-o OUTDIR]
    lam props --structure POSCAR [more ...] (--model MODEL [--head H] | --calc emt)
              [--props eos elastic vacancy ...] [-o OUTDIR]

``param.json`` follows APEX's layout (a subset)::

    {"structures": ["confs/Cu.vasp", "confs/*.cif"],
     "interaction": {"type": "emt"} | {"type": "lamkit", "model": "model.pth", "head": null},
     "relaxation": {"skip": false, "fmax": 0.005},
     "properties": [{"type": "eos", "vol_start": 0.9, "vol_end": 1.1, "vol_step": 0.025},
                    {"type": "elastic", "norm_deform": 0.01, "shear_deform": 0.01},
                    {"type": "vacancy", "supercell": [2, 2, 2]}, {"type": "gamma"}, ...]}

Each structure is relaxed first (positions and cell), then every property is computed on the
relaxed crystal; results go to ``OUTDIR/<structure>/<property>/result.json`` (APEX's layout)
with a picture where one exists, and a summary of all to ``OUTDIR/summary.json``.
"""

from __future__ import annotations

import argparse
import glob
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..registry import did_you_mean
from .common import PropsError, write_json
from .elastic import compute_elastic
from .eos import compute_eos
from .gamma import compute_gamma
from .phonon import compute_phonon
from .point_defects import compute_interstitial, compute_vacancy
from .relaxation import relax_crystal
from .surface import compute_surface

#: property name -> (function, options it takes, picture file or None)
PROPERTIES: dict[str, tuple[Callable, tuple[str, ...], str | None]] = {
    "eos": (compute_eos, ("vol_start", "vol_end", "vol_step", "relax_ions", "fmax"), "eos.png"),
    "elastic": (
        compute_elastic,
        ("norm_deform", "shear_deform", "relax_ions", "fmax"),
        "elastic.png",
    ),
    "vacancy": (compute_vacancy, ("supercell", "relax", "cell_filter", "fmax"), None),
    "interstitial": (
        compute_interstitial,
        ("supercell", "element", "sites", "relax", "cell_filter", "fmax"),
        None,
    ),
    "surface": (compute_surface, ("millers", "min_thickness", "vacuum", "relax", "fmax"), None),
    "gamma": (compute_gamma, ("lattice", "n_steps", "min_height", "relax", "fmax"), "gamma.png"),
    "phonon": (
        compute_phonon,
        ("supercell", "distance", "band_path", "band_labels", "npoints", "mesh", "primitive"),
        "phonon.png",
    ),
}
RELAX_OPTIONS = ("skip", "fmax", "steps", "cell_filter")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``lam props`` options to ``p``."""
    p.add_argument("CONF", nargs="?", default=None, help="APEX-style param.json (optional)")
    p.add_argument("-s", "--structure", nargs="+", default=None, help="structure files (ASE)")
    p.add_argument("-m", "--model", default=None, help="lamkit or DeePMD-kit v3 model file")
    p.add_argument("--head", default=None, help="branch of a multi-task model")
    p.add_argument("--calc", default=None, help="'emt' or 'ase:module.Class' instead of a model")
    p.add_argument("-p", "--props", nargs="+", default=None, help="any of " + ", ".join(PROPERTIES))
    p.add_argument("--no-relax", action="store_true", help="use the structures as they are")
    p.add_argument("-o", "--output", default="props-out", help="output folder")


def _calculator(interaction: dict):
    kind = str(interaction.get("type", "")).lower()
    if kind == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if kind == "ase":
        target = str(interaction.get("class", ""))
        module, _, cls = target.rpartition(".")
        try:
            return getattr(importlib.import_module(module), cls)(**interaction.get("params", {}))
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            raise PropsError(
                f"interaction: cannot build ASE calculator {target!r}: {exc}"
            ) from None
    if kind in ("lamkit", "deepmd", "dp"):
        from ..infer.calculator import LamCalculator

        model = interaction.get("model")
        if not model or not Path(model).is_file():
            raise PropsError(f"interaction.model: no such model file {model!r}")
        return LamCalculator(model, head=interaction.get("head"))
    raise PropsError(f"interaction.type: expected 'emt', 'ase', 'lamkit' or 'deepmd', got {kind!r}")


def _load_conf(a) -> dict:
    conf: dict[str, Any] = {}
    if a.CONF:
        try:
            conf = json.loads(Path(a.CONF).read_text())
        except FileNotFoundError:
            raise PropsError(f"{a.CONF}: no such file") from None
        except json.JSONDecodeError as exc:
            raise PropsError(
                f"{a.CONF}: not valid JSON ({exc}); structure files go after --structure"
            ) from None
        if not isinstance(conf, dict):
            raise PropsError(f"{a.CONF}: expected a JSON object")
    if a.structure:
        conf["structures"] = a.structure
    if a.model or a.calc:
        if a.model and a.calc:
            raise PropsError("give --model or --calc, not both")
        if a.model:
            conf["interaction"] = {"type": "lamkit", "model": a.model, "head": a.head}
        elif a.calc.lower().startswith("ase:"):
            conf["interaction"] = {"type": "ase", "class": a.calc[4:]}
        else:
            conf["interaction"] = {"type": a.calc}
    if a.props:
        conf["properties"] = [{"type": name} for name in a.props]
    if a.no_relax:
        conf.setdefault("relaxation", {})["skip"] = True
    for key in ("structures", "interaction", "properties"):
        if not conf.get(key):
            raise PropsError(
                f"{key}: missing (give a param.json with it, or --structure, --model/--calc "
                "and --props)"
            )
    return conf


def _check_properties(props: list) -> list[tuple[str, dict]]:
    out = []
    for k, entry in enumerate(props):
        if not isinstance(entry, dict) or "type" not in entry:
            raise PropsError(f"properties[{k}]: expected an object with a 'type'")
        name = entry["type"]
        if name not in PROPERTIES:
            raise PropsError(
                f"properties[{k}].type: unknown property {name!r}; choose from "
                f"{', '.join(PROPERTIES)}." + did_you_mean(name, PROPERTIES)
            )
        if entry.get("skip"):
            continue
        options = {key: v for key, v in entry.items() if key not in ("type", "skip")}
        allowed = PROPERTIES[name][1]
        for key in options:
            if key not in allowed:
                raise PropsError(
                    f"properties[{k}] ({name}): unknown option {key!r}; allowed: "
                    f"{', '.join(allowed)}." + did_you_mean(key, allowed)
                )
        out.append((name, options))
    return out


def _structures(patterns: list[str]) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if not found:
            raise PropsError(f"structures: no file matches {pattern!r}")
        files.extend(Path(f) for f in found)
    return files


def _call(func: Callable, calc, atoms, options: dict, what: str):
    """``func(calc, atoms, **options)``; an option of the wrong type or value is reported as
    an error of ``what`` (e.g. "Cu vacancy")."""
    try:
        return func(calc, atoms, **options)
    except PropsError:
        raise
    except (TypeError, ValueError) as exc:
        raise PropsError(f"{what}: {exc} (options {json.dumps(options)})") from None


def run(a) -> int:
    """Entry point of ``lam props``."""
    from ase.io import read

    conf = _load_conf(a)
    props = _check_properties(conf["properties"])
    relax_conf = dict(conf.get("relaxation") or {})
    for key in relax_conf:
        if key not in RELAX_OPTIONS:
            raise PropsError(
                f"relaxation: unknown option {key!r}; allowed: {', '.join(RELAX_OPTIONS)}"
            )
    structures: dict[str, object] = {}
    for path in _structures(conf["structures"]):  # all read before any work starts
        try:
            atoms = read(path)
        except Exception as exc:  # noqa: BLE001 - any reader error is the file's problem
            raise PropsError(f"{path}: cannot read a structure ({exc})") from None
        name = path.stem if path.stem not in structures else str(path).replace("/", "_")
        structures[name] = atoms
    calc = _calculator(conf["interaction"])
    out = Path(a.output)
    summary: dict[str, dict] = {}
    for name, atoms in structures.items():
        here = out / name
        if not relax_conf.get("skip", False):
            options = {k: v for k, v in relax_conf.items() if k != "skip"}
            relaxed = _call(relax_crystal, calc, atoms, options, f"{name} relaxation")
            write_json(here / "relaxation" / "result.json", relaxed.to_result_json())
            if not relaxed.converged:
                print(f"{name}: warning: relaxation not converged in {relaxed.steps} steps")
            atoms = relaxed.atoms
        summary[name] = {}
        for prop, options in props:
            func, _, picture = PROPERTIES[prop]
            result = _call(func, calc, atoms, options, f"{name} {prop}")
            write_json(here / prop / "result.json", result.to_result_json())
            if picture:
                result.plot(here / prop / picture)
            summary[name][prop] = result.summary()
            print(f"{name} {prop}: {json.dumps(summary[name][prop])}")
    write_json(out / "summary.json", summary)
    print(f"results written to {out}/")
    return 0
