"""Export records as deepmd/npy systems: the database as a training-data store.

``deepmd`` (mixed type) writes one system per atom count, for descriptors with a type embedding
(dpa1, dpa2, se_e3_tebd); ``deepmd-standard`` writes one standard system per composition, atoms
sorted by type, which every descriptor (se_e2_a too) reads.

Layout, one system per atom count (as the reference's mixed type groups frames)::

    OUT/type_map.raw                  the elements of the export, by atomic number
    OUT/<natoms>/type.raw             natoms zeros (placeholder: types are per frame)
    OUT/<natoms>/type_map.raw         the same element list
    OUT/<natoms>/set.NNN/coord.npy    [nf, natoms*3] Å, Cartesian (frac_coords @ lattice)
                        box.npy       [nf, 9] Å, rows a, b, c
                        real_atom_types.npy  [nf, natoms] indices into type_map.raw
                        energy.npy    [nf, 1] eV
                        force.npy     [nf, natoms*3] eV/Å             (when stored)
                        virial.npy    [nf, 9] eV, -stress * volume     (when stored)

Only records with an energy are exported.  A label file must cover every frame of a system, so
records of one atom count that carry different labels go to separate systems, named
``<natoms>`` when they carry forces and stress and ``<natoms>_<labels>`` otherwise (e.g.
``8_energy_force``).  ``lam train`` and ``lam test`` read the folders as they are.

Standard layout: ``OUT/<composition>/`` (e.g. ``Cu3Au1``, elements in type-map order, the same
label suffix), ``type.raw`` the sorted types, no ``real_atom_types.npy``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers

from .errors import QueryError
from .records import Record

log = logging.getLogger(__name__)

#: Frames per ``set.NNN`` folder (the reference's default set size).
SET_SIZE = 2000


def _labels_of(rec: Record) -> tuple[str, ...]:
    out = ["energy"]
    if rec.forces is not None:
        out.append("force")
    if rec.stress is not None:
        out.append("virial")
    return tuple(out)


def _system_name(group: int | str, labels: tuple[str, ...]) -> str:
    if labels == ("energy", "force", "virial"):
        return str(group)
    return f"{group}_" + "_".join(labels)


class _System:
    """Frames of one group (an atom count, or a composition for standard type) and label set,
    written set by set."""

    def __init__(self, root: Path, group: int | str, natoms: int, labels: tuple[str, ...]):
        self.path = root / _system_name(group, labels)
        self.natoms = natoms
        self.labels = labels
        self.mixed = isinstance(group, int)
        self.frames: list[Record] = []
        self.nsets = 0
        self.nframes = 0

    def add(self, rec: Record, type_index: dict[str, int]) -> None:
        self.frames.append(rec)
        if len(self.frames) >= SET_SIZE:
            self.flush(type_index)

    def flush(self, type_index: dict[str, int]) -> None:
        if not self.frames:
            return
        n = self.natoms
        recs = self.frames
        types = np.array([[type_index[el] for el in r.species] for r in recs], dtype=np.int64)
        # standard type: atoms sorted by type (stable), the same order for every frame
        order = (
            np.tile(np.arange(n), (len(recs), 1))
            if self.mixed
            else np.argsort(types, axis=1, kind="stable")
        )
        if self.nsets == 0:
            self.path.mkdir(parents=True, exist_ok=True)
            first = np.zeros(n, dtype=np.int64) if self.mixed else types[0][order[0]]
            np.savetxt(self.path / "type.raw", first, fmt="%d")
        d = self.path / f"set.{self.nsets:03d}"
        d.mkdir(exist_ok=True)
        coords = np.stack([(r.frac_coords @ r.lattice)[o] for r, o in zip(recs, order)])
        np.save(d / "coord.npy", coords.reshape(-1, n * 3))
        np.save(d / "box.npy", np.stack([r.lattice.reshape(9) for r in recs]))
        if self.mixed:
            np.save(d / "real_atom_types.npy", types)
        np.save(d / "energy.npy", np.array([[r.energy] for r in recs], dtype=np.float64))
        if "force" in self.labels:
            forces = [r.forces[o].reshape(-1) for r, o in zip(recs, order)]
            np.save(d / "force.npy", np.stack(forces))
        if "virial" in self.labels:
            virials = [(-r.stress * r.volume).reshape(9) for r in recs]
            np.save(d / "virial.npy", np.stack(virials))
        self.nsets += 1
        self.nframes += len(recs)
        self.frames = []


def write_deepmd(
    recs: Iterable[Record], path: Path, type_map: list[str], mixed: bool = True
) -> int:
    """Write records with an energy as mixed-type (or standard) systems under ``path`` (see the
    module doc); ``type_map``: every element the records hold.  Returns the frames written."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise QueryError(
            f"export: {path} exists and is not an empty folder; deepmd export "
            "writes a folder of systems"
        )
    type_index = {el: i for i, el in enumerate(type_map)}
    systems: dict[tuple[int | str, tuple[str, ...]], _System] = {}
    skipped = 0
    path.mkdir(parents=True, exist_ok=True)
    for rec in recs:
        if rec.energy is None:
            skipped += 1
            continue
        group = rec.nsites if mixed else _composition(rec.species, type_map)
        key = (group, _labels_of(rec))
        if key not in systems:
            systems[key] = _System(path, group, rec.nsites, key[1])
        systems[key].add(rec, type_index)
    for system in systems.values():
        system.flush(type_index)
        (system.path / "type_map.raw").write_text("\n".join(type_map) + "\n")
    (path / "type_map.raw").write_text("\n".join(type_map) + "\n")
    if skipped:
        log.warning("deepmd export: %d record(s) without an energy left out", skipped)
    return sum(s.nframes for s in systems.values())


def _composition(species: list[str], type_map: list[str]) -> str:
    counts = {el: 0 for el in type_map}
    for el in species:
        counts[el] += 1
    return "".join(f"{el}{n}" for el, n in counts.items() if n)


def sorted_elements(elements: Iterable[str]) -> list[str]:
    """Element symbols by atomic number."""
    return sorted(set(elements), key=lambda el: atomic_numbers[el])
