"""Labelling: energies, forces and virials of frames with any ASE calculator, in this process
or on Dask.distributed workers (the engine ``lam screen`` uses: a local cluster with
``workers=N`` or a running scheduler ``cluster="tcp://host:8786"``), and the labelled frames
written as deepmd/npy systems.

A frame whose calculation raises is recorded (index and error) and skipped; the others are
kept. The labeller is a spec ``{"type": "emt"}`` or ``{"type": "ase", "class":
"module.Class", "params": {...}}`` (built on each worker), or, from Python, a calculator
object (used in this process).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from ..errors import ConfigError
from ..screen.config import ScreenError

log = logging.getLogger("lamkit")


def build_labeller(spec: Any):
    """An ASE calculator from a labeller spec (an object is returned as it is)."""
    if not isinstance(spec, dict):
        if hasattr(spec, "get_potential_energy") or hasattr(spec, "calculate"):
            return spec
        raise ConfigError(f"labeller: expected an object like {{\"type\": \"emt\"}}, got {spec!r}")
    kind = str(spec.get("type", "")).lower()
    if kind == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if kind == "ase":
        target = str(spec.get("class", ""))
        module, _, cls = target.rpartition(".")
        try:
            return getattr(importlib.import_module(module), cls)(**spec.get("params", {}))
        except (ImportError, AttributeError, TypeError, ValueError) as exc:
            raise ConfigError(f"labeller: cannot build ASE calculator {target!r}: {exc}") from None
    raise ConfigError(f"labeller.type: expected 'emt' or 'ase', got {kind!r}")


def label_one(calc, atoms: Atoms) -> dict | str:
    """Energy eV, forces eV/Å and virial eV of one frame, or the error text."""
    a = atoms.copy()
    a.calc = calc
    try:
        energy = float(a.get_potential_energy())
        forces = np.asarray(a.get_forces(), dtype=np.float64)
        virial = None
        if a.pbc.all():
            stress = np.asarray(a.get_stress(voigt=False), dtype=np.float64)
            virial = -stress * a.get_volume()
    except Exception as exc:  # noqa: BLE001 - any calculator failure is recorded
        return f"{type(exc).__name__}: {exc}"
    return {"energy": energy, "forces": forces, "virial": virial}


def label_shard(spec: Any, shard: list[tuple[int, Atoms]]) -> list[tuple[int, Any]]:
    """Worker task: label (index, atoms) pairs with a labeller built from ``spec``."""
    calc = build_labeller(spec)
    return [(i, label_one(calc, atoms)) for i, atoms in shard]


def label_frames(
    frames: Sequence[Atoms],
    spec: Any,
    workers: int | None = None,
    cluster: str | None = None,
    chunk: int = 4,
) -> list[dict | str]:
    """Labels (or error texts) of ``frames``, in order."""
    jobs = list(enumerate(frames))
    if not jobs:
        return []
    if workers is None and cluster is None:
        calc = build_labeller(spec)
        return [label_one(calc, a) for a in frames]
    from ..screen.cluster import _client

    try:
        client, local = _client(workers, cluster)
    except ScreenError as exc:
        raise ConfigError(f"labeller workers: {exc}") from None
    out: list[Any] = [None] * len(frames)
    try:
        futures = [
            client.submit(label_shard, spec, jobs[k : k + chunk], pure=False)
            for k in range(0, len(jobs), chunk)
        ]
        for k, fut in enumerate(futures):
            try:
                results = fut.result()
            except Exception as exc:  # noqa: BLE001 - a lost shard: its frames failed
                for i, _ in jobs[k * chunk : (k + 1) * chunk]:
                    out[i] = f"worker task failed: {type(exc).__name__}: {exc}"
                continue
            for i, res in results:
                out[i] = res
    finally:
        client.close()
        if local is not None:
            local.close()
    return out


def write_labelled(
    folder: Path, frames: Sequence[Atoms], labels: Sequence[dict], type_map: list[str]
) -> list[Path]:
    """deepmd/npy systems of labelled frames under ``folder``, one per atom-type sequence."""
    groups: dict[tuple, list[int]] = {}
    for k, a in enumerate(frames):
        groups.setdefault(tuple(a.get_chemical_symbols()), []).append(k)
    from ..data.writer import write_deepmd_system

    paths = []
    for g, (symbols, idx) in enumerate(groups.items()):
        missing = sorted(set(symbols) - set(type_map))
        if missing:
            raise ConfigError(f"labelled frames: elements {missing} not in the type map {type_map}")
        atype = np.array([type_map.index(s) for s in symbols])
        periodic = all(frames[i].pbc.all() for i in idx) and all(
            labels[i]["virial"] is not None for i in idx
        )
        lab = {
            "energy": np.array([labels[i]["energy"] for i in idx]),
            "force": np.stack([labels[i]["forces"] for i in idx]),
        }
        if periodic:
            lab["virial"] = np.stack([np.asarray(labels[i]["virial"]).reshape(9) for i in idx])
        paths.append(
            write_deepmd_system(
                folder / f"sys.{g:03d}",
                np.stack([frames[i].get_positions() for i in idx]),
                atype,
                type_map,
                box=np.stack([frames[i].cell.array.reshape(9) for i in idx]) if periodic else None,
                labels=lab,
            )
        )
    return paths
