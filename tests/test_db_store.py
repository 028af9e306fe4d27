"""The crystal database store: exact round trips, derived fields, provenance, idempotent adds,
schema and indexes, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from ase.data import atomic_masses, atomic_numbers
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from lamkit.db import CrystalDB, DBError, QueryError, RecordError, parse_id
from tests.db_data import antifluorite, l10, rocksalt
from tests.db_fixtures import backend_param, random_cell

db = backend_param()


def test_structure_round_trips_bit_exact(db):
    rng = np.random.default_rng(7)
    cell = random_cell(rng, ["Fe", "O", "O", "Li"])
    rec = db.add(cell, energy=-21.123456789012345, model="m")
    back = db.get(rec.id)
    assert back.lattice.tobytes() == np.asarray(cell["lattice"], "<f8").tobytes()
    assert back.frac_coords.tobytes() == np.asarray(cell["frac_coords"], "<f8").tobytes()
    assert back.species == cell["species"]
    assert back.energy == -21.123456789012345
    assert back.energy_per_atom == -21.123456789012345 / 4
    # the pymatgen and ASE views carry the same numbers
    s = back.structure
    assert np.array_equal(s.lattice.matrix, cell["lattice"])
    assert np.array_equal(s.frac_coords, cell["frac_coords"])
    atoms = back.to_atoms()
    assert np.array_equal(atoms.cell.array, cell["lattice"])
    assert np.allclose(atoms.get_scaled_positions(wrap=False), cell["frac_coords"], atol=1e-14)
    assert atoms.info["energy"] == -21.123456789012345


def test_inputs_pymatgen_ase_and_dict_agree(db):
    s = Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    a = db.add(s, energy=-10.0, source="pmg")
    b = db.add(s.to_ase_atoms(), energy=-10.0, source="ase")
    c = db.add(s.as_dict(), energy=-10.0, source="pmg-dict")
    d = db.add(db.get(a.id).to_dict(), energy=-10.0, source="record-dict")
    assert len({a.id, b.id, c.id, d.id}) == 4
    for r in (a, b, c, d):
        assert np.allclose(r.lattice, s.lattice.matrix, atol=1e-12)
        assert np.allclose(r.frac_coords, s.frac_coords, atol=1e-12)
        assert r.species == ["Mg", "O"]
        assert (r.formula, r.chemsys, r.spacegroup_number) == ("MgO", "Mg-O", 221)


@pytest.mark.parametrize(
    "structure",
    [
        rocksalt("Na", "Cl", 5.64),
        antifluorite("O", "Li", 4.61),
        l10("Cu", "Au", 3.85),
        Structure(
            Lattice.hexagonal(3.2, 5.2), ["Zn", "Zn"], [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5]]
        ),
    ],
    ids=["rocksalt", "antifluorite", "L10", "hcp"],
)
def test_derived_fields_match_pymatgen_and_spglib(db, structure):
    rec = db.add(structure, energy=-1.5 * len(structure))
    assert rec.formula == structure.composition.reduced_formula
    assert rec.elements == sorted({el.symbol for el in structure.composition.elements})
    assert rec.chemsys == "-".join(rec.elements)
    assert rec.nsites == len(structure)
    assert rec.volume == pytest.approx(structure.volume, rel=1e-12)
    # density from ASE's standard atomic masses (pymatgen's differ in the 4th digit for some)
    mass = sum(atomic_masses[atomic_numbers[sp.symbol]] for sp in structure.species)
    assert rec.density == pytest.approx(mass / structure.volume * 1.66053906660, rel=1e-12)
    assert rec.density == pytest.approx(float(structure.density), rel=1e-3)
    sga = SpacegroupAnalyzer(structure, symprec=0.1)
    assert rec.spacegroup_number == sga.get_space_group_number()
    assert rec.spacegroup_symbol == sga.get_space_group_symbol()
    assert rec.energy_per_atom == pytest.approx(-1.5)


def test_provenance_time_and_tags(db):
    t = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    s = rocksalt("K", "Br", 6.6)
    rec = db.add(
        s,
        energy=-24.0,
        model="dpa2",
        submitter="alice",
        source="x.cif",
        tags=["b", "a", "b", " "],
        submitted=t,
    )
    assert rec.submitted == t  # same instant, returned in UTC
    assert rec.submitted.tzinfo is not None and rec.submitted.utcoffset() == timedelta(0)
    assert rec.submitted.hour == 5 and rec.submitted.microsecond == 123456
    assert (rec.model, rec.submitter, rec.source) == ("dpa2", "alice", "x.cif")
    assert rec.tags == ["a", "b"]
    iso = db.add(s, energy=-24.0, source="iso", submitted="2024-05-06T05:08:09Z")
    assert iso.submitted == datetime(2024, 5, 6, 5, 8, 9, tzinfo=timezone.utc)
    now = db.add(s, energy=-24.0, source="now")
    assert abs(now.submitted - datetime.now(timezone.utc)) < timedelta(minutes=5)


def test_adding_the_same_record_twice_is_idempotent(db):
    s = rocksalt("Na", "Cl", 5.64)
    a = db.add(s, energy=-27.2, model="m")
    b = db.add(s, energy=-27.2, model="m")
    assert a.id == b.id and db.count() == 1
    # a different energy, model or source is a different record
    assert db.add(s, energy=-27.3, model="m").id != a.id
    assert db.add(s, energy=-27.2, model="other").id != a.id
    assert db.add(s, energy=-27.2, model="m", source="y").id != a.id
    assert db.count() == 4
    st = db.stats()
    assert st["records"] == 4 and st["chemsys"] == 1 and st["element_list"] == ["Cl", "Na"]
    assert st["by_model"] == {"m": 3, "other": 1}


def test_ids_and_public_ids(db):
    rec = db.add(rocksalt("Na", "Cl", 5.64))
    assert rec.public_id == f"lam-{rec.id}"
    assert db.get(rec.public_id).id == rec.id
    assert db.get(str(rec.id)).id == rec.id
    assert db.get(rec.id + 1000) is None
    assert parse_id("lam-12") == 12
    for bad in ("lam-x", "12; DROP TABLE records", True, "1" * 30, "-3"):
        with pytest.raises(QueryError, match="record id"):
            parse_id(bad)


@pytest.mark.parametrize(
    "cell, reason",
    [
        (
            {
                "lattice": np.eye(3) * 4,
                "species": ["Na", "Cl"],
                "frac_coords": [[0, 0, 0], [0.05, 0, 0]],
            },
            "overlapping atoms",
        ),
        (
            {"lattice": np.eye(3) * 4, "species": ["Na"], "frac_coords": [[np.nan, 0, 0]]},
            "NaN or infinite",
        ),
        (
            {
                "lattice": [[4, 0, 0], [np.inf, 4, 0], [0, 0, 4]],
                "species": ["Na"],
                "frac_coords": [[0, 0, 0]],
            },
            "lattice contains NaN",
        ),
        (
            {
                "lattice": [[4, 0, 0], [8, 0, 0], [0, 0, 4]],
                "species": ["Na"],
                "frac_coords": [[0, 0, 0]],
            },
            "cell volume",
        ),
        (
            {"lattice": np.eye(3) * 4, "species": ["Xx"], "frac_coords": [[0, 0, 0]]},
            "unknown element",
        ),
        (
            {"lattice": np.eye(3) * 4, "species": ["Na", "Cl"], "frac_coords": [[0, 0, 0]]},
            "mismatched lengths",
        ),
        ({"lattice": np.eye(2), "species": ["Na"], "frac_coords": [[0, 0, 0]]}, "3x3"),
        ({"lattice": np.eye(3) * 4, "species": [], "frac_coords": np.zeros((0, 3))}, "no sites"),
    ],
    ids=[
        "overlap",
        "nan-coords",
        "inf-lattice",
        "zero-volume",
        "unknown-element",
        "lengths",
        "lattice-shape",
        "empty",
    ],
)
def test_invalid_structures_are_refused_with_the_reason(db, cell, reason):
    with pytest.raises(RecordError, match=reason):
        db.add(cell, energy=-1.0)
    assert db.count() == 0


def test_invalid_energy_is_refused(db):
    s = rocksalt("Na", "Cl", 5.64)
    for bad, reason in ((float("nan"), "finite"), ("abc", "number"), (float("inf"), "finite")):
        with pytest.raises(RecordError, match=reason):
            db.add(s, energy=bad)


def test_schema_indexes_and_idempotent_init(db):
    from sqlalchemy import inspect

    db.init()  # twice is fine
    names = {ix["name"] for ix in inspect(db.engine).get_indexes("records")}
    for ix in (
        "ix_records_chemsys",
        "ix_records_formula",
        "ix_records_spacegroup",
        "ix_records_energy_per_atom",
        "ix_records_e_above_hull",
        "ix_records_submitted",
    ):
        assert ix in names
    uniques = inspect(db.engine).get_unique_constraints("records")
    unique_cols = [c for u in uniques for c in u["column_names"]]
    unique_idx = [
        c
        for ix in inspect(db.engine).get_indexes("records")
        if ix["unique"]
        for c in ix["column_names"]
    ]
    assert "content_hash" in unique_cols + unique_idx


def test_uninitialised_database_and_bad_urls(tmp_path):
    fresh = CrystalDB(tmp_path / "empty.db")
    with pytest.raises(DBError, match="init"):
        fresh.get(1)
    with pytest.raises(DBError, match="init"):
        fresh.query(formula="NaCl")
    fresh.close()
    with pytest.raises(DBError, match="expected sqlite"):
        CrystalDB("mysql://user@host/db")
    with pytest.raises(DBError, match="not valid"):
        CrystalDB("postgresql+psycopg://:::")
