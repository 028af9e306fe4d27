"""`lam db show`, `delete`, `update-hulls`, `find-duplicates`, every query filter on `export`,
range filters and sorts on the command line, and energies for CIFs on import."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk

from lamkit.cli.main import main
from lamkit.db import CrystalDB


def lam(*args: str) -> int:
    return main(["db", *args])


@pytest.fixture()
def store(tmp_path):
    """Cu, Au and Cu3Au records of one model plus a strained Cu twice (two sources)."""
    from ase.calculators.emt import EMT

    path = str(tmp_path / "x.db")
    db = CrystalDB(path).init()
    items = []
    for atoms in (
        bulk("Cu", "fcc", a=3.61),
        bulk("Au", "fcc", a=4.08),
        bulk("Cu", "fcc", a=3.61, cubic=True),
        bulk("Cu", "fcc", a=3.70),
    ):
        atoms.calc = EMT()
        items.append(atoms)
    l12 = bulk("Cu", "fcc", a=3.75, cubic=True)
    l12.symbols[0] = "Au"
    l12.calc = EMT()
    items.append(l12)
    db.import_records(items, model="emt", source="set-a")
    db.import_records([items[0]], model="emt", source="set-b")  # same structure again
    db.close()
    return path


def test_show_text_and_json(store, capsys):
    assert lam("--db", store, "show", "lam-5") == 0
    out = capsys.readouterr().out
    assert "lam-5  Cu3Au" in out and "fx (eV/Å)" in out and "stress (eV/Å^3" in out
    assert "Pm-3m (221)" in out
    assert lam("--db", store, "show", "5", "--format", "json") == 0
    d = json.loads(capsys.readouterr().out)
    rec = CrystalDB(store).get(5)
    assert np.array_equal(np.array(d["forces"]), rec.forces)
    assert d["a"] == d["b"] == d["c"] == pytest.approx(3.75)
    assert lam("--db", store, "show", "lam-99") == 2
    assert "no record with id 'lam-99'" in capsys.readouterr().err


def test_delete_needs_yes_and_updates_hulls(store, capsys):
    db = CrystalDB(store)
    before = db.get(5).formation_energy_per_atom
    assert before is not None
    assert lam("--db", store, "delete", "lam-1", "lam-6") == 1  # preview only
    assert "run again with --yes" in capsys.readouterr().err and db.count() == 6
    assert lam("--db", store, "delete", "lam-1", "lam-6", "--yes") == 0
    assert "deleted 2 record(s)" in capsys.readouterr().out
    assert db.count() == 4 and db.get(1) is None
    # the Cu reference is now the next-lowest Cu record: Cu3Au's formation energy moved
    refs = db.references("emt")
    assert refs["Cu"]["record_id"] in (3, 4)
    after = db.get(5).formation_energy_per_atom
    e_cu = refs["Cu"]["energy_per_atom"]
    e_au = refs["Au"]["energy_per_atom"]
    assert after == pytest.approx(db.get(5).energy_per_atom - (3 * e_cu + e_au) / 4)
    assert lam("--db", store, "delete", "7", "--yes") == 1
    assert "no such record(s): lam-7" in capsys.readouterr().err
    # ids are never reused after a delete
    rec = db.add(bulk("Ag", "fcc", a=4.09), energy=-2.0, model="emt")
    assert rec.id == 7


def test_update_hulls(store, capsys):
    db = CrystalDB(store)
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE records SET e_above_hull = NULL, formation_energy_per_atom = NULL"
        )
    assert db.stats()["without_hull"] == 6
    assert lam("--db", store, "update-hulls", "--no-progress") == 0
    assert "phase diagrams rebuilt" in capsys.readouterr().out
    assert db.stats()["without_hull"] == 0
    assert db.get(5).formation_energy_per_atom is not None


def test_find_duplicates(store, capsys):
    assert lam("--db", store, "find-duplicates", "--no-progress", "--format", "json") == 0
    groups = json.loads(capsys.readouterr().out)["groups"]
    # the primitive Cu cell stored twice and its cubic supercell are one structure; the
    # expanded Cu cell (a = 3.70) matches too under the volume-scaling matcher, with an energy
    # per atom within the 5 % window
    assert ["lam-1", "lam-6"] in groups or any({"lam-1", "lam-6"} <= set(g) for g in groups)
    assert lam("--db", store, "find-duplicates", "--no-progress", "--elements", "Au") == 0
    assert "0 groups" in capsys.readouterr().out


def test_export_takes_every_filter(store, tmp_path, capsys):
    out = tmp_path / "cu.extxyz"
    assert lam("--db", store, "export", str(out), "--model", "emt", "--spacegroup", "Fm3m",
               "--only-elements", "Cu", "--volume", "11:12.5", "--nsites", "1:1") == 0  # fmt: skip
    import ase.io

    frames = ase.io.read(out, ":")
    assert len(frames) == 2  # the two 3.61 Å primitive Cu records, not a = 3.70 nor cubic
    assert all(np.isclose(a.get_volume(), 3.61**3 / 4) for a in frames)
    assert lam("--db", store, "export", str(tmp_path / "none.extxyz"), "--model", "dft") == 0
    assert "0 records written" in capsys.readouterr().out
    dp = tmp_path / "dp"
    assert lam("--db", store, "export", str(dp), "--format", "deepmd", "--a", "3.7:3.8") == 0
    assert sorted(p.name for p in dp.iterdir()) == ["4", "type_map.raw"]  # Cu3Au only
    assert lam("--db", store, "export", str(dp), "--format", "deepmd") == 2
    assert "is not an empty folder" in capsys.readouterr().err


def test_query_range_filters_and_sort(store, capsys):
    from lamkit.db.cli_records import RANGE_OPTIONS
    from lamkit.db.query import RANGE_FIELDS

    assert sorted(name for name, _ in RANGE_OPTIONS.values()) == sorted(RANGE_FIELDS)
    assert lam("--db", store, "query", "--order-by", "-density", "--format", "json",
               "--density", "8:", "--alpha", "59:61") == 0  # fmt: skip
    recs = json.loads(capsys.readouterr().out)["records"]
    assert [r["formula"] for r in recs] == ["Au", "Cu", "Cu", "Cu"]
    dens = [r["density"] for r in recs]
    assert dens == sorted(dens, reverse=True) and all(r["alpha"] == pytest.approx(60) for r in recs)
    assert lam("--db", store, "query", "--volume", "abc") == 2
    assert "--volume: expected lo:hi" in capsys.readouterr().err
    assert lam("--db", store, "query", "--formation-energy", "-1:-0.0001") == 0
    assert "Cu3Au" in capsys.readouterr().out


def test_import_energy_file_and_key(tmp_path, capsys):
    import ase.io

    bulk("Au", "fcc", a=4.08).write(tmp_path / "au.cif")
    bulk("Ag", "fcc", a=4.09).write(tmp_path / "ag.cif")
    cu = bulk("Cu", "fcc", a=3.6)
    cu.info["e_dft"] = -3.7
    ase.io.write(tmp_path / "cu.extxyz", cu)
    (tmp_path / "e.txt").write_text("# name energy/eV\nau.cif -3.2\nag.cif,-2.8\n")
    db = str(tmp_path / "x.db")
    assert lam("--db", db, "import", str(tmp_path / "au.cif"), str(tmp_path / "ag.cif"),
               str(tmp_path / "cu.extxyz"), "--energy-file", str(tmp_path / "e.txt"),
               "--energy-key", "e_dft", "--no-progress") == 0  # fmt: skip
    got = {r.formula: r.energy for r in CrystalDB(db).iter_query()}
    assert got == {"Au": -3.2, "Ag": -2.8, "Cu": -3.7}
    (tmp_path / "bad.txt").write_text("au.cif -3.2\nag.cif many\n")
    assert lam("--db", db, "import", str(tmp_path / "au.cif"), "--energy-file",
               str(tmp_path / "bad.txt")) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "bad.txt, line 2: energy 'many' is not a number" in err


def test_import_refuses_absurd_forces_naming_the_frame(tmp_path, capsys):
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for k, scale in enumerate((1.0, 1e6)):  # the second frame's forces are a unit slip
        atoms = bulk("Cu", "fcc", a=3.6 + 0.01 * k, cubic=True)
        forces = np.full((4, 3), 0.1 * scale)
        atoms.calc = SinglePointCalculator(atoms, energy=-14.0, forces=forces)
        frames.append(atoms)
    ase.io.write(tmp_path / "f.extxyz", frames)
    db = str(tmp_path / "x.db")
    assert lam("--db", db, "import", str(tmp_path / "f.extxyz"), "--no-progress") == 0
    out = capsys.readouterr().out
    assert "1 added" in out and "1 rejected" in out
    assert "f.extxyz [1]: forces at site 0 is 100000 eV/Å" in out and "MAX_FORCE" in out
