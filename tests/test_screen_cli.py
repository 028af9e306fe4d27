"""``lam screen``: files and database queries in, the outputs written and the summary printed;
bad arguments give a one-line error, not a traceback; ``--metrics`` / ``--truth``."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pandas as pd
import pytest

from lamkit.cli.main import main
from lamkit.screen.metrics import stability_metrics
from tests.screen_common import build_db, candidates

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    db, _ = build_db(root / "db.sqlite")
    db.close()
    ase.io.write(root / "cands.extxyz", candidates()[:11])  # all valid
    return root


def test_screen_files_and_a_query(setup, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["screen", str(setup / "cands.extxyz"), "-m", "emt", "--db", str(setup / "db.sqlite")]
    args += ["--query", "only_elements=Cu,Au;nsites=1:4", "-o", str(out), "--no-progress"]
    assert main(args + ["--fmax", "0.04", "--preset", "mattergen"]) == 0
    text = capsys.readouterr().out
    assert "S.U.N." in text and "stable" in text and str(out / "results.csv") in text
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 11 + 3  # 11 file frames + the 3 database records
    assert df.source.iloc[0] == f"{setup / 'cands.extxyz'}[0]"
    assert df.source.tolist()[-3:] == ["lam-1", "lam-2", "lam-3"]
    assert (df.status == "ok").all() and not df.novel.iloc[-3:].any()
    for name in ("results.parquet", "results.json", "summary.json", "e_above_hull.png"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["fmax"] == 0.04 and summary["novelty_preset"] == "mattergen"


@pytest.mark.parametrize(
    "args, message",
    [
        (["x.cif"], "-m/--model is required"),
        (["x.cif", "-m", "emt", "--fmax", "-1"], "fmax: expected a positive number"),
        (["x.cif", "-m", "nope.pth"], "no model file 'nope.pth'"),
        (["x.cif", "-m", "ase:no.such.Calc"], "cannot build ASE calculator"),
        (["x.cif", "-m", "emt", "--db", "missing.db"], "no such file 'missing.db'"),
        (["-m", "emt"], "nothing to screen"),
        (["--query", "nsites=a:b", "-m", "emt"], "--query nsites: expected lo:hi"),
        (["--query", "elements", "-m", "emt"], "expected key=value"),
        (["x.cif", "-m", "emt", "--volume-per-atom", "5"], "--volume-per-atom: expected lo:hi"),
        (["x.cif", "-m", "emt", "--references", "Cu"], "--references: expected El=value"),
        (["x.cif", "-m", "emt", "--workers", "0"], "workers: expected a positive integer"),
        (["x.cif", "-m", "emt", "--insert"], "insert needs a database"),
        (["--metrics", "a.csv"], "go together"),
        (["x.cif", "typo.cif", "-m", "emt"], "no such file or folder: typo.cif"),
    ],
)
def test_bad_arguments_give_one_line_errors(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LAMKIT_DB_URL", raising=False)
    (tmp_path / "x.cif").write_text("")  # inputs must exist; the errors are about the rest
    assert main(["screen", *args, "-o", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("lam screen: error: ") and message in last, err


def test_engine_options_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["screen", "x.cif", "-m", "emt", "--workers", "2", "--cluster", "tcp://h:1"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_metrics_against_a_truth_table(tmp_path, capsys):
    rng = np.random.default_rng(0)
    truth = rng.normal(0.05, 0.1, 40)
    pred = truth + rng.normal(0, 0.05, 40)
    pred[3] = np.nan  # a failed structure: predicted unstable
    pd.DataFrame({"index": range(40), "e_above_hull": pred}).to_csv(tmp_path / "p.csv")
    order = rng.permutation(40)  # rows paired by index, not by position
    pd.DataFrame({"index": order, "e_above_hull": truth[order]}).to_csv(tmp_path / "t.csv")
    args = ["screen", "--metrics", str(tmp_path / "p.csv"), "--truth", str(tmp_path / "t.csv")]
    assert main(args + ["--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = stability_metrics(pred, truth, threshold=0.0)
    for key in ("F1", "DAF", "precision", "recall", "MAE", "TP", "FP", "TN", "FN"):
        assert got[key] == pytest.approx(want[key]), key
    assert main(args + ["--threshold", "0.1"]) == 0
    assert "e_above_hull <= 0.1" in capsys.readouterr().out
    pd.DataFrame({"index": range(3), "energy": [1, 2, 3]}).to_csv(tmp_path / "bad.csv")
    assert main(["screen", "--metrics", str(tmp_path / "p.csv"), "--truth",
                 str(tmp_path / "bad.csv")]) == 2  # fmt: skip
    assert "expected a column 'e_above_hull'" in capsys.readouterr().err
