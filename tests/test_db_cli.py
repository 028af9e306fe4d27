"""``lam db``: init, import, query, hull, export, stats, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import ase.io
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from pymatgen.io.cif import CifWriter

from lamkit.cli.main import main
from tests.db_data import bcc, database_url, rocksalt, simple_cubic
from tests.db_fixtures import BACKENDS


def lam(capsys, *args) -> str:
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


@pytest.fixture
def files(tmp_path):
    frames = []
    for s, e in (
        (bcc("Na", 4.23), -2.6),
        (simple_cubic("Cl", 2.0), -1.8),
        (rocksalt("Na", "Cl", 5.64), -27.2),
        (rocksalt("Na", "Cl", 5.70), -26.0),
    ):
        atoms = s.to_ase_atoms()
        atoms.calc = SinglePointCalculator(atoms, energy=e)
        frames.append(atoms)
    ase.io.write(tmp_path / "nacl.extxyz", frames, format="extxyz")
    CifWriter(rocksalt("Mg", "O", 4.21)).write_file(tmp_path / "mgo.cif")
    (tmp_path / "bad.json").write_text(
        '{"lattice": [[0,0,0],[0,0,0],[0,0,0]], "species": ["H"], "frac_coords": [[0,0,0]]}'
    )
    return tmp_path


@pytest.mark.parametrize("kind", BACKENDS)
def test_lam_db_commands(kind, files, tmp_path, capsys, monkeypatch):
    with database_url(kind) as url:
        assert "initialised" in lam(capsys, "db", "--db", url, "init")
        out = lam(
            capsys,
            "db",
            "--db",
            url,
            "import",
            str(files / "nacl.extxyz"),
            str(files / "mgo.cif"),
            str(files / "bad.json"),
            "--model",
            "toy",
            "--submitter",
            "cli",
            "--no-progress",
        )
        assert "5 added, 0 duplicates, 1 rejected of 6" in out
        assert "bad.json [0]: cell volume" in out
        again = lam(
            capsys, "db", "--db", url, "import", str(files), "--model", "toy", "--no-progress"
        )
        assert "0 added, 5 duplicates" in again

        table = lam(capsys, "db", "--db", url, "query", "--chemsys", "Na-Cl")
        lines = table.strip().splitlines()
        assert lines[0].split()[:3] == ["id", "formula", "chemsys"] and len(lines) == 3
        page = ["db", "--db", url, "query", "--only-elements", "Na,Cl", "--order-by"]
        page += ["energy_per_atom", "--limit", "2", "--format", "json"]
        data = json.loads(lam(capsys, *page))
        epa = [r["energy_per_atom"] for r in data["records"]]
        assert epa == sorted(epa) and data["next_cursor"]
        rest = json.loads(lam(capsys, *page, "--cursor", data["next_cursor"]))
        assert len(rest["records"]) == 2 and rest["next_cursor"] is None
        ranged = json.loads(
            lam(
                capsys,
                "db",
                "--db",
                url,
                "query",
                "--energy-per-atom",
                ":-3.3",
                "--nsites",
                "2:8",
                "--format",
                "json",
            )
        )
        assert [r["formula"] for r in ranged["records"]] == ["NaCl"]

        hull = json.loads(lam(capsys, "db", "--db", url, "hull", "Na-Cl", "--format", "json"))
        stable = {e["formula"] for e in hull["stable"]}
        assert stable == {"Na", "Cl2", "NaCl"}  # pymatgen writes diatomic Cl as Cl2
        text = lam(capsys, "db", "--db", url, "hull", "Cl-Na")
        assert text.startswith("hull Cl-Na (model toy)") and "yes" in text

        out = lam(
            capsys,
            "db",
            "--db",
            url,
            "export",
            str(tmp_path / "out.parquet"),
            "--only-elements",
            "Na,Cl",
        )
        assert out.startswith("4 records written")
        assert "5 records written" in lam(
            capsys, "db", "--db", url, "export", str(tmp_path / "all.zip")
        )
        stats = json.loads(lam(capsys, "db", "--db", url, "stats"))
        assert stats["records"] == 5 and stats["by_submitter"] == {"cli": 5}

        monkeypatch.setenv("LAMKIT_DB_URL", url)
        assert json.loads(lam(capsys, "db", "stats"))["records"] == 5


def test_lam_db_errors_are_messages_not_tracebacks(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/x.db"
    lam(capsys, "db", "--db", url, "init")
    for args, message in (
        (["query", "--elements", "Xx"], "unknown element symbol 'Xx'"),
        (["query", "--order-by", "mass"], "unknown sort key"),
        (["hull", "Na-Cl"], "no records with energies"),
        (["export", str(tmp_path / "out.pdf")], "cannot tell the format"),
    ):
        capsys.readouterr()
        code = main(["db", "--db", url, *args])
        captured = capsys.readouterr()
        assert code != 0, args
        assert message in captured.err + captured.out, (args, captured)
        assert "Traceback" not in captured.err
