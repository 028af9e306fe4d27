"""Defects a new user hit (issue 18), each with the input that broke it: extreme energies and
hulls, ids never reused, dedupe of an energy-volume scan, concurrent ``init``, and query
values that must raise QueryError.  On SQLite and PostgreSQL where the backend matters."""

from __future__ import annotations

import pytest
from sqlalchemy import insert

from lamkit.db import QueryError, RecordError
from lamkit.db.records import ENERGY_PER_ATOM_MAX, ENERGY_PER_ATOM_MIN, make_row
from lamkit.db.schema import records
from tests.db_fixtures import backend_param
from tests.test_db_service_data import bcc, fcc, rocksalt, simple_cubic

db = backend_param()


def _na_cl(db) -> None:
    db.add(bcc("Na", 4.23), energy=-2.6, model="m")
    db.add(simple_cubic("Cl", 2.0), energy=-1.8, model="m")
    db.add(rocksalt("Na", "Cl", 5.64), energy=-27.2, model="m")


# ---------------------------------------------------------------------------- energies
@pytest.mark.parametrize("energy", [1e308, -1e308, -1e20, 8 * ENERGY_PER_ATOM_MAX * 1.01])
def test_energy_outside_the_window_is_refused(db, energy):
    _na_cl(db)
    with pytest.raises(RecordError, match="eV/atom over 8 sites; expected"):
        db.add(rocksalt("Na", "Cl", 5.70), energy=energy, model="m")
    report = db.import_records([(rocksalt("Na", "Cl", 5.70), energy)], model="m")
    assert report.added == 0 and "eV/atom" in report.rejected[0].reason
    assert db.count() == 3
    assert len(db.hull("Na-Cl", model="m").entries) == 3


def test_the_window_keeps_real_energies(db):
    # an all-electron total energy of a heavy element and a large positive one still go in
    for i, epa in enumerate((ENERGY_PER_ATOM_MIN, -1.5e6, ENERGY_PER_ATOM_MAX)):
        rec = db.add(fcc("U", 6.0 + i), energy=4 * epa, model="ae")
        assert rec.energy_per_atom == epa


def test_a_stored_absurd_energy_never_breaks_a_hull(db, caplog):
    """A record written before the window existed (here: directly) is left out of hulls with
    a warning; hulls, later imports and update_hulls all keep working."""
    _na_cl(db)
    row = make_row(rocksalt("Na", "Cl", 5.70), energy=-27.0, model="m")
    row.update(energy=-1e308, energy_per_atom=-1.25e307, content_hash="x" * 64)
    with db.engine.begin() as conn:
        bad_id = conn.execute(insert(records).returning(records.c.id), [row]).scalar_one()
    caplog.set_level("WARNING", logger="lamkit.db")
    hull = db.hull("Na-Cl", model="m")
    assert sorted(e["id"] for e in hull.entries) == [1, 2, 3]
    assert "outside the accepted window" in caplog.text and f"record {bad_id}" in caplog.text
    assert db.update_hulls() >= 1
    new = db.add(rocksalt("Na", "Cl", 5.60), energy=-28.0, model="m")
    assert new.e_above_hull == 0.0
    assert db.get(bad_id).e_above_hull is None


def test_a_failing_phase_diagram_spoils_only_its_own_system(db, monkeypatch):
    from pymatgen.analysis import phase_diagram

    _na_cl(db)
    class Flaky(phase_diagram.PhaseDiagram):
        def __init__(self, entries, elements, *a, **k):
            if len(elements) > 1:
                raise RuntimeError("QH6154 Qhull precision error: Initial simplex is flat")
            super().__init__(entries, elements, *a, **k)

    monkeypatch.setattr(phase_diagram, "PhaseDiagram", Flaky)
    db.update_hulls()
    assert db.get(1).e_above_hull == 0.0 and db.get(2).e_above_hull == 0.0
    assert db.get(3).e_above_hull is None
    assert db.get(3).formation_energy_per_atom == pytest.approx(-27.2 / 8 - (-1.3 - 1.8) / 2)
    with pytest.raises(QueryError, match="hull Cl-Na .*Qhull precision error"):
        db.hull("Na-Cl", model="m")
    db.add(rocksalt("Na", "Cl", 5.60), energy=-28.0, model="m")  # no exception
