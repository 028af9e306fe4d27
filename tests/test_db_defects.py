"""Defects a new user hit (issue 18), each with the input that broke it: extreme energies and
hulls, ids never reused, dedupe of an energy-volume scan, concurrent ``init``, and query
values that must raise QueryError.  On SQLite and PostgreSQL where the backend matters."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import insert

from lamkit.db import QueryError, RecordError
from lamkit.db.records import ENERGY_PER_ATOM_MAX, ENERGY_PER_ATOM_MIN, make_row
from lamkit.db.schema import records
from tests.db_data import bcc, fcc, rocksalt, simple_cubic
from tests.db_fixtures import backend_param

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


# ---------------------------------------------------------------------------- init and ids
def _init_and_add(url: str, i: int, barrier, errors) -> None:
    from lamkit.db import CrystalDB

    try:
        barrier.wait(timeout=60)
        with CrystalDB(url) as d:
            d.init()
            d.add(fcc("Cu", 3.5 + 0.01 * i), energy=-14.0 - 0.01 * i, model="m")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        errors.put(f"process {i}: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_init_is_safe_when_processes_race_on_a_new_database(kind):
    import multiprocessing as mp

    import pymatgen.analysis.phase_diagram  # noqa: F401 - imported once here, not 5 times
    import tqdm.auto  # noqa: F401

    from lamkit.db import CrystalDB
    from tests.db_data import database_url

    make_row(fcc("Cu", 3.6), energy=-1.0)  # warms spglib, vesin and pymatgen up before forking
    ctx = mp.get_context("fork")
    for _ in range(3):
        with database_url(kind) as url:
            barrier, errors = ctx.Barrier(5), ctx.Queue()
            procs = [
                ctx.Process(target=_init_and_add, args=(url, i, barrier, errors)) for i in range(5)
            ]
            for p in procs:
                p.start()
            for p in procs:
                p.join(timeout=120)
            found = [errors.get(timeout=1) for _ in range(errors.qsize())]
            assert not found, found
            assert all(p.exitcode == 0 for p in procs)
            with CrystalDB(url) as d:
                assert d.count() == 5


def test_ids_are_never_reused(db):
    from lamkit.db.service.removal import delete_record

    ids = [db.add(fcc("Cu", 3.5 + 0.01 * i), energy=-14.0 - i, model="m").id for i in range(3)]
    assert delete_record(db, ids[-1])
    assert db.add(fcc("Cu", 3.6), energy=-13.0, model="m").id > ids[-1]
    for rec in db.query().records:
        delete_record(db, rec.id)
    report = db.import_records([(fcc("Cu", 3.7), -12.0), (fcc("Cu", 3.8), -11.0)], model="m")
    assert report.added_ids == [ids[-1] + 2, ids[-1] + 3]
    assert [r.id for r in db.query().records] == report.added_ids


def _old_sqlite_file(path) -> list[int]:
    """A database file as lamkit made it before ids were AUTOINCREMENT; returns its ids."""
    from sqlalchemy import MetaData, create_engine

    from lamkit.db.schema import chemsystems, elemental_refs, meta, metadata

    old = records.to_metadata(MetaData())
    old.dialect_options["sqlite"]["autoincrement"] = False
    engine = create_engine(f"sqlite:///{path}")
    metadata.create_all(engine, tables=[chemsystems, elemental_refs, meta])
    old.create(engine)
    rows = [make_row(fcc("Cu", 3.5 + 0.01 * i), energy=-14.0 - i, model="m") for i in range(4)]
    with engine.begin() as conn:
        conn.execute(meta.insert(), [{"key": "schema_version", "value": "1"}])
        conn.execute(old.insert(), rows)
        conn.execute(
            chemsystems.insert(), [dict(chemsys="Cu", nelements=1, mask_lo=1 << 28, mask_hi=0)]
        )
        conn.exec_driver_sql("DELETE FROM records WHERE id = 2")
        ids = list(conn.exec_driver_sql("SELECT id FROM records ORDER BY id").scalars())
        assert (
            "AUTOINCREMENT"
            not in conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'records'"
            ).scalar_one()
        )
    engine.dispose()
    return ids


def test_an_old_sqlite_file_is_upgraded_once(tmp_path):
    from lamkit.db import CrystalDB
    from lamkit.db.service.removal import delete_record

    ids = _old_sqlite_file(tmp_path / "old.db")
    with CrystalDB(tmp_path / "old.db") as d:
        d.init()
        assert [r.id for r in d.query().records] == ids == [1, 3, 4]
        assert d.get(3).energy == -16.0 and d.get(3).formula == "Cu"
        with d.engine.connect() as conn:
            sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'records'")
            assert "AUTOINCREMENT" in sql.scalar_one()
            names = {
                r[0]
                for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'")
            }
        assert {ix.name for ix in records.indexes} <= names
        assert d.query(formula="Cu", order_by="-energy_per_atom", limit=1).records[0].id == 1
        delete_record(d, 4)
        assert d.add(fcc("Cu", 3.9), energy=-10.0, model="m").id == 5


def test_an_interrupted_upgrade_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    from lamkit.db import CrystalDB, migrate

    ids = _old_sqlite_file(tmp_path / "old.db")

    def broken(_index):
        raise RuntimeError("killed while the indexes were made")

    monkeypatch.setattr(migrate, "CreateIndex", broken)
    with CrystalDB(tmp_path / "old.db") as d:
        with pytest.raises(RuntimeError, match="killed"):
            d.init()
        with d.engine.connect() as conn:
            tables = set(
                conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                ).scalars()
            )
            sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'records'")
            assert "AUTOINCREMENT" not in sql.scalar_one()
            assert list(conn.exec_driver_sql("SELECT id FROM records ORDER BY id").scalars()) == ids
        assert "records_upgrade" not in tables


# ---------------------------------------------------------------------------- dedupe
def _ev_scan() -> list[tuple]:
    """Five fcc Cu cells of an energy-volume scan, volumes -18 % .. +18 % (Birch-like energies)."""
    v0 = 3.61**3
    out = []
    for x in (-0.18, -0.09, 0.0, 0.09, 0.18):
        a = (v0 * (1 + x)) ** (1 / 3)
        out.append((fcc("Cu", a), 4 * (-3.5 + 2.0 * x * x)))
    return out


def test_dedupe_keeps_every_point_of_a_volume_scan(db):
    report = db.import_records(_ev_scan(), model="m", dedupe=True)
    assert (report.added, report.duplicates, report.dropped) == (5, 0, []), report.summary()
    again = db.import_records(_ev_scan(), model="m", dedupe=True)
    assert (again.added, again.duplicates) == (0, 5)


def test_dedupe_says_what_it_drops(db):
    first = db.add(fcc("Cu", 3.61), energy=-14.0, model="m")
    nudged = fcc("Cu", 3.61)
    nudged.translate_sites([1], [0.001, 0, 0])
    supercell = fcc("Cu", 3.61) * (1, 1, 2)
    items = [
        (nudged, -14.001),  # same point: drops
        (fcc("Cu", 3.70), -13.9),  # 7.7 % larger: kept
        (supercell, -28.0),  # the stored one again: drops
        (fcc("Cu", 3.70), -13.9 - 1e-4),  # same as item 1: drops
        (fcc("Cu", 3.61), -13.9),  # 25 meV/atom higher: kept
    ]
    report = db.import_records(items, model="m", dedupe=True)
    assert (report.added, report.duplicates) == (2, 3), report.summary()
    assert [str(d) for d in report.dropped] == [
        f"records [0]: duplicate of {first.public_id}",
        f"records [2]: duplicate of {first.public_id}",
        "records [3]: duplicate of records [1]",
    ]
    assert f"dropped records [0]: duplicate of {first.public_id}" in report.summary()
    assert report.to_dict()["dropped"][2] == {
        "source": "records",
        "index": 3,
        "duplicate_of": "records [1]",
    }


# ---------------------------------------------------------------------------- query values
ODD_VALUES = [
    math.nan,
    math.inf,
    -math.inf,
    1e300,
    2**70,
    -(2**70),
    -1,
    0,
    "",
    "\ud800",
    "Cu\udfff",
    "x" * 5000,
    [],
    [math.nan],
    ["\ud800"],
    (0, math.inf),
    (-math.inf, math.inf),
    (math.inf, 0),
    (math.nan, 1),
    (1, 2**70),
    ("\ud800", None),
    ("a", "b"),
    True,
    object(),
]


def test_odd_query_values_raise_query_error_or_work(db):
    from lamkit.db.query import FILTERS

    db.add(fcc("Cu", 3.61), energy=-14.0, model="m")
    failures = []
    for name in FILTERS:
        for value in ODD_VALUES:
            try:
                db.query(**{name: value})
                db.count(**{name: value})
            except QueryError as exc:
                str(exc).encode("utf-8")  # printable: no lone surrogate in the message
            except Exception as exc:  # noqa: BLE001
                failures.append(f"query({name}={value!r:.40}) raised {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)
    for order in ("\ud800", "-\udfff", "x" * 300):
        with pytest.raises(QueryError) as info:
            db.query(order_by=order)
        str(info.value).encode("utf-8")
    assert [r.id for r in db.query(nsites=(0, math.inf)).records] == [1]
    assert [r.id for r in db.query(nsites=(-math.inf, 2**70)).records] == [1]
    with pytest.raises(QueryError, match="spacegroup: expected a number 1..230"):
        db.query(spacegroup=math.nan)
    with pytest.raises(QueryError, match="submitter: .*surrogate"):
        db.query(submitter="\ud800")
