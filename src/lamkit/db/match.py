"""Duplicate detection and symmetry analysis.

Two records are the same structure when pymatgen's ``StructureMatcher(ltol=0.05, stol=0.1,
angle_tol=5)`` matches them (primitive cells, volumes scaled).  The matcher is only run after a
cheap indexed prefilter: same reduced formula, same space group and, when both energies are
known, energy per atom within 5 % of each other.  That is :func:`match` and
:func:`find_duplicates`: the same crystal, possibly at another volume.

``import(dedupe=True)`` drops items, so it is stricter (:func:`dedupe_rows`): the same crystal
at the same volume with the same energy.  The matcher does not scale volumes, the volumes per
atom agree within ``DEDUPE_VOLUME_RTOL`` and the energies per atom within
``DEDUPE_ENERGY_ATOL``: the points of an energy-volume scan are all kept.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from .handle import Database
from .records import SYMPREC, Record, arrays_from, load_spglib, make_row, record_from_row
from .schema import records

#: StructureMatcher tolerances (fractional length, site and angle (degrees) tolerances).
LTOL, STOL, ANGLE_TOL = 0.05, 0.1, 5.0
#: Relative energy-per-atom window of the prefilter.
ENERGY_RTOL = 0.05
#: Dedupe: largest difference of energies per atom (eV/atom) of two duplicates (a repeated
#: relaxation agrees to about 1 meV/atom; points of a volume scan 1 % apart differ by ~0.5).
DEDUPE_ENERGY_ATOL = 0.005
#: Dedupe: largest relative difference of volumes per atom of two duplicates.
DEDUPE_VOLUME_RTOL = 0.005


def matcher(scale: bool = True):
    """pymatgen's StructureMatcher with the tolerances above (``scale=False``: volumes are
    compared as they are, for dedupe)."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(ltol=LTOL, stol=STOL, angle_tol=ANGLE_TOL, scale=scale)


def _energy_close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return True
    return abs(a - b) <= ENERGY_RTOL * max(abs(a), abs(b))


def candidates(
    conn: Connection,
    formula: str,
    spacegroup: int | None,
    epa: float | None,
    model: str | None = None,
) -> list[Record]:
    """Stored records passing the prefilter (formula, space group, energy within 5 %)."""
    c = records.c
    conds = [c.formula == formula]
    conds.append(
        c.spacegroup_number.is_(None) if spacegroup is None else c.spacegroup_number == spacegroup
    )
    if model is not None:
        conds.append(c.model == model)
    rows = conn.execute(select(records).where(*conds).order_by(c.id)).all()
    out = [record_from_row(r) for r in rows]
    return [r for r in out if _energy_close(r.energy_per_atom, epa)]


def match(
    conn: Connection, structure: Any, energy: float | None = None, model: str | None = None
) -> list[Record]:
    """Stored records that match ``structure`` (total ``energy`` in eV narrows the prefilter)."""
    row = make_row(structure, energy=energy)
    cands = candidates(
        conn, row["formula"], row["spacegroup_number"], row["energy_per_atom"], model
    )
    if not cands:
        return []
    sm = matcher()
    probe = _structure(row)
    return [r for r in cands if sm.fit(probe, r.structure)]


def _structure(row: dict):
    from pymatgen.core import Lattice, Structure

    lattice = np.frombuffer(row["lattice"], dtype="<f8").reshape(3, 3)
    frac = np.frombuffer(row["frac_coords"], dtype="<f8").reshape(-1, 3)
    return Structure(Lattice(lattice), row["species"].split(), frac)


def _same_point(a: tuple, b: tuple) -> bool:
    """Whether (energy per atom, volume per atom) pairs agree within the dedupe tolerances."""
    (ea, va), (eb, vb) = a, b
    if ea is not None and eb is not None and abs(ea - eb) > DEDUPE_ENERGY_ATOL:
        return False
    return abs(va - vb) <= DEDUPE_VOLUME_RTOL * max(va, vb)


def dedupe_rows(conn: Connection, rows: list[dict]) -> tuple[list[int], dict[int, str]]:
    """Which rows (from make_row) to keep for ``import(dedupe=True)``: (positions kept,
    {position dropped: what it duplicates}), the latter a public id ("lam-12") of a stored
    record or "#<position>" of an earlier row.  Duplicates: see the module doc."""
    sm = matcher(scale=False)
    kept: list[int] = []
    dropped: dict[int, str] = {}
    seen: dict[tuple, list] = defaultdict(list)
    for pos, row in enumerate(rows):
        key = (row["formula"], row["spacegroup_number"])
        s = _structure(row)
        point = (row["energy_per_atom"], row["volume"] / row["nsites"])
        twin = next(
            (f"#{p}" for p, st, pt in seen[key] if _same_point(pt, point) and sm.fit(s, st)),
            None,
        )
        if twin is None:
            stored = candidates(conn, row["formula"], row["spacegroup_number"], point[0])
            twin = next(
                (
                    r.public_id
                    for r in stored
                    if _same_point((r.energy_per_atom, r.volume / r.nsites), point)
                    and sm.fit(s, r.structure)
                ),
                None,
            )
        if twin is not None:
            dropped[pos] = twin
            continue
        seen[key].append((pos, s, point))
        kept.append(pos)
    return kept, dropped


def drop_matches(conn: Connection, rows: list[dict]) -> tuple[list[dict], int]:
    """Rows without the duplicates :func:`dedupe_rows` finds; (kept rows, number dropped)."""
    kept, dropped = dedupe_rows(conn, rows)
    return [rows[i] for i in kept], len(dropped)


def find_duplicates(db: Database, progress: bool = False, **filters) -> list[list[int]]:
    """Groups (two or more ids, ascending) of stored records matching each other, among the
    records selected by ``filters``; groups are built per (formula, space group)."""
    from tqdm.auto import tqdm

    groups: dict[tuple, list[Record]] = defaultdict(list)
    for rec in db.iter_query(**filters):
        groups[(rec.formula, rec.spacegroup_number)].append(rec)
    sm = matcher()
    out: list[list[int]] = []
    for members in tqdm(list(groups.values()), disable=not progress, desc="match"):
        if len(members) < 2:
            continue
        clusters: list[list[Record]] = []
        for rec in members:
            for cl in clusters:
                head = cl[0]
                if _energy_close(head.energy_per_atom, rec.energy_per_atom) and sm.fit(
                    head.structure, rec.structure
                ):
                    cl.append(rec)
                    break
            else:
                clusters.append([rec])
        out += [sorted(r.id for r in cl) for cl in clusters if len(cl) > 1]
    return sorted(out)


def symmetry(rec: Record | Any, symprec: float | None = None) -> dict:
    """spglib symmetry dataset of a structure as a JSON-ready dict (lengths Å)."""
    from ase.data import atomic_numbers, chemical_symbols

    spglib = load_spglib()
    s = arrays_from(rec)
    prec = SYMPREC if symprec is None else float(symprec)
    cell = (s.lattice, s.frac_coords, [atomic_numbers[el] for el in s.species])
    try:
        ds = spglib.get_symmetry_dataset(cell, symprec=prec)
    except spglib.error.SpglibError:
        ds = None
    if ds is None:
        return {"symprec": prec, "number": None, "error": "spglib found no symmetry"}
    try:
        prim = spglib.standardize_cell(cell, to_primitive=True, symprec=prec)
    except spglib.error.SpglibError:
        prim = None
    out = {
        "symprec": prec,
        "number": int(ds.number),
        "symbol": ds.international,
        "hall": ds.hall,
        "hall_number": int(ds.hall_number),
        "point_group": ds.pointgroup,
        "crystal_system": _crystal_system(int(ds.number)),
        "wyckoffs": list(ds.wyckoffs),
        "equivalent_atoms": [int(i) for i in ds.equivalent_atoms],
        "n_operations": len(ds.rotations),
        "conventional": {
            "lattice": np.asarray(ds.std_lattice).tolist(),
            "species": [chemical_symbols[int(z)] for z in ds.std_types],
            "frac_coords": np.asarray(ds.std_positions).tolist(),
        },
    }
    if prim is not None:
        lat, pos, nums = prim
        out["primitive"] = {
            "lattice": np.asarray(lat).tolist(),
            "species": [chemical_symbols[int(z)] for z in nums],
            "frac_coords": np.asarray(pos).tolist(),
        }
    return out


def _crystal_system(number: int) -> str:
    for top, name in (
        (2, "triclinic"),
        (15, "monoclinic"),
        (74, "orthorhombic"),
        (142, "tetragonal"),
        (167, "trigonal"),
        (194, "hexagonal"),
    ):
        if number <= top:
            return name
    return "cubic"
