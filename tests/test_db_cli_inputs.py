"""``lam db`` with the inputs a new user tried (issue 18): negative option values, bad values
and database paths (one-line errors, no tracebacks), a closed output pipe, missing files and
the files ASE reads, left-handed cells, Hermann-Mauguin symbols as typed, element case hints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator

from lamkit.cli.main import main
from lamkit.db import CrystalDB, QueryError
from tests.db_data import database_url, fcc, rocksalt
from tests.db_fixtures import BACKENDS

ASE_VASP_DATA = Path(ase.__file__).parent / "test" / "testdata" / "vasp"


def run(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["db", *args])
    out = capsys.readouterr()
    assert "Traceback" not in out.err, out.err
    return code, out.out, out.err


def _fill(url: str) -> None:
    with CrystalDB(url) as db:
        db.add(fcc("Cu", 3.61), energy=-14.0, model="m")  # Fm-3m, -3.5 eV/atom
        db.add(rocksalt("Na", "Cl", 5.64), energy=-27.2, model="m")  # Fm-3m, -3.4
        db.add(rocksalt("Mg", "O", 4.21), energy=-47.0, model="m")  # Fm-3m, -5.875
        hcp = bulk("Mg", "hcp", a=3.21, c=5.21)
        db.add(hcp, energy=-3.0, model="m")  # P6_3/mmc, -1.5


@pytest.mark.parametrize("kind", BACKENDS)
def test_negative_values_and_symbols_as_typed(kind, capsys):
    with database_url(kind) as url:
        _fill(url)

        def ids(*args) -> list[int]:
            code, out, err = run(capsys, "--db", url, "query", *args, "--format", "json")
            assert code == 0, err
            return [r["id"] for r in json.loads(out)["records"]]

        assert ids("--order-by", "-energy_per_atom") == [4, 2, 1, 3]
        assert ids("--energy-per-atom", "-5:-3") == [1, 2]
        assert ids("--energy-per-atom", "-3.45") == [] and ids("--energy-per-atom", "-6:") == [
            1,
            2,
            3,
            4,
        ]
        for symbol in ("Fm-3m", "Fm3m", "F m -3 m", "F 4/m -3 2/m", "225"):
            assert ids("--spacegroup", symbol) == [1, 2, 3], symbol
        for symbol in ("P6_3/mmc", "P63/mmc", "P 63/m m c", "194"):
            assert ids("--spacegroup", symbol) == [4], symbol
        with CrystalDB(url) as db:
            assert db.count(spacegroup=["Fm3m", "P63/mmc"]) == 4
            with pytest.raises(QueryError, match="unknown Hermann-Mauguin symbol 'Fm4m'"):
                db.query(spacegroup="Fm4m")


def test_bad_values_are_one_line_errors(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/x.db"
    _fill(url)
    (tmp_path / "notes.txt").write_text("not a database, just some text\n" * 50)
    for args, words in (
        (["query", "--nsites", "abc"], "--nsites: expected lo:hi with integers"),
        (["query", "--energy-per-atom", "1:x"], "--energy-per-atom: expected lo:hi"),
        (["query", "--elements", "cu"], "Did you mean 'Cu'? Symbols are case-sensitive"),
        (["query", "--chemsys", "cu-o"], "Did you mean 'Cu'?"),
        (["query", "--spacegroup", "Fm4m"], "unknown Hermann-Mauguin symbol"),
        (["--db", str(tmp_path / "notes.txt"), "query"], "file is not a database"),
        (["--db", str(tmp_path / "no" / "such" / "x.db"), "query"], "unable to open"),
        (["--db", str(tmp_path), "stats"], "expected a lamkit database"),
    ):
        if args[0] != "--db":
            args = ["--db", url, *args]
        code, out, err = run(capsys, *args)
        assert code == 2, (args, out, err)
        (line,) = [x for x in err.splitlines() if x.startswith("lam db: error: ")]
        assert words in line, (args, err)


def test_a_closed_pipe_ends_quietly(tmp_path):
    url = f"sqlite:///{tmp_path}/x.db"
    _fill(url)
    for fmt in ("table", "json"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "lamkit", "db", "--db", url, "query", "--format", fmt],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, PYTHONWARNINGS="ignore"),
        )
        proc.stdout.close()  # the reader is gone before anything is written
        err = proc.stderr.read().decode()
        proc.stderr.close()
        assert proc.wait(timeout=120) == 141, err
        assert err == "", err


def test_missing_files_are_errors_and_ase_formats_are_read(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/x.db"
    folder = tmp_path / "in"
    folder.mkdir()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    atoms.calc = SinglePointCalculator(atoms, energy=-14.0)
    ase.io.write(folder / "cu.traj", atoms)
    code, out, err = run(capsys, "--db", url, "import", str(folder), str(tmp_path / "gone.cif"))
    assert code == 2 and "no such file or folder: " in err and "gone.cif" in err, err
    assert "nothing was imported" in err
    vasp = [ASE_VASP_DATA / "OUTCAR_example_1", ASE_VASP_DATA / "vasprun_pstress.xml"]
    if all(p.is_file() for p in vasp):  # ASE's own test files, where it installs them
        shutil.copy(vasp[0], folder / "OUTCAR")
        shutil.copy(vasp[1], folder / "vasprun.xml")
    code, out, err = run(capsys, "--db", url, "import", str(folder), "--no-progress")
    assert code == 0, err
    with CrystalDB(url) as db:
        sources = {r.source for r in db.iter_query()}
    assert "cu.traj" in sources
    if (folder / "OUTCAR").exists():
        assert {"OUTCAR", "vasprun.xml"} <= sources
    (folder / "OUTCAR2").write_text("garbage\n")
    code, out, err = run(capsys, "--db", url, "import", str(folder / "OUTCAR2"), "--no-progress")
    assert code == 1 and "could not read" in err and "OUTCAR2" in out, (out, err)


def test_a_left_handed_cell_is_stored_as_given(tmp_path):
    s = rocksalt("Na", "Cl", 5.64)
    right = {"lattice": s.lattice.matrix, "species": [x.symbol for x in s.species]}
    right["frac_coords"] = s.frac_coords
    left = {
        "lattice": s.lattice.matrix[[1, 0, 2]],
        "species": right["species"],
        "frac_coords": s.frac_coords[:, [1, 0, 2]],
    }
    assert np.linalg.det(left["lattice"]) < 0
    with CrystalDB(tmp_path / "x.db") as db:
        report = db.import_records([(left, -27.0), (right, -27.2)])
        assert report.added == 2 and not report.rejected, report.summary()
        a, b = db.get(1), db.get(2)
        assert np.array_equal(a.lattice, left["lattice"])  # bit-exact, as given
        assert a.volume == pytest.approx(5.64**3) and a.volume == pytest.approx(b.volume)
        assert a.density == pytest.approx(b.density) and a.density > 0
        assert (a.spacegroup_number, a.formula) == (225, "NaCl")
        assert db.query(formula="NaCl", order_by="-energy_per_atom").records[0].id == 1
