"""Screening end to end with EMT against a small database: the table's columns, flags and
files agree with each other and with what is known about the candidates."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from lamkit.screen import ScreenConfig, ScreenError, screen
from lamkit.screen.report import COLUMNS
from tests.screen_common import (
    EXPECTED_DUPLICATES,
    EXPECTED_NOT_OK,
    FlakyEMT,
    build_db,
    candidates,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    db, ids = build_db(root / "db.sqlite")
    res = screen(
        candidates(), FlakyEMT(), out_dir=root / "out", db=db, model_name="emt", progress=False
    )
    yield res, db, ids
    db.close()


def test_table_has_one_row_per_input_and_the_pinned_columns(screened):
    res, _, _ = screened
    df = res.table
    assert list(df.columns) == list(COLUMNS)
    assert df["index"].tolist() == list(range(20))
    assert df.source.tolist() == [f"atoms[{i}]" for i in range(20)]
    for i, (status, fragment) in EXPECTED_NOT_OK.items():
        assert df.status[i] == status, (i, df.reason[i])
        assert fragment in df.reason[i]
    ok = df[df.status == "ok"]
    assert len(ok) == 20 - len(EXPECTED_NOT_OK)
    assert ok.valid.all() and ok.converged.all() and ok.energy.notna().all()
    assert (df.valid[df.status == "failed"]).all()  # valid, then exploded
    assert df.relax_status[11] == "exploded"
    assert not df.valid[df.status == "rejected"].any()
    assert df.reason[df.status != "ok"].notna().all()


def test_flags_are_consistent(screened):
    df = screened[0].table
    ok = df[df.status == "ok"]
    assert (ok.hull_status == "ok").all()
    for _, r in ok.iterrows():
        e = r["e_above_hull"]
        assert math.isclose(r["energy_per_atom"], r["energy"] / r["nsites"])
        assert bool(r["stable"]) == (e <= 0.0)
        assert bool(r["metastable"]) == (e <= 0.1)
        assert bool(r["sun"]) == (bool(r["unique"]) and bool(r["novel"]) and e <= 0.1)
        assert bool(r["novel"]) == pd.isna(r["matched_id"])
    not_ok = df[df.status != "ok"]
    for col in ("stable", "metastable", "unique", "novel", "sun"):
        assert not not_ok[col].any()


def test_novelty_against_the_database_and_uniqueness_within_the_submission(screened):
    df, ids = screened[0].table, screened[2]
    # the database's own structures are not novel, and match their record
    assert [df.matched_id[i] for i in (0, 1, 2)] == ids
    assert not df.novel[[0, 1, 2, 10, 18, 19]].any()
    assert df.novel[[3, 6, 7, 8, 17]].all()
    for i, j in EXPECTED_DUPLICATES.items():
        assert df.duplicate_of[i] == j and not df.unique[i]
        assert df.formula[i] == df.formula[j]
    firsts = df[(df.status == "ok") & df.duplicate_of.isna()]
    assert firsts.unique.all()


def test_energies_above_hull_match_the_database(screened):
    res, db, ids = screened
    df = res.table
    # the same input relaxed the same way: the same energy and hull distance as the record
    for i, rid in zip((0, 1, 2), ids):
        rec = db.get(rid)
        assert df.energy[i] == pytest.approx(rec.energy, abs=1e-9)
        assert df.e_above_hull[i] == pytest.approx(rec.e_above_hull, abs=1e-9)
    # Cu3Au lies below the database's hull (a new ground state): stable and S.U.N.
    assert df.e_above_hull[3] < 0 and df.stable[3] and df.sun[3]
    assert df.decomposition[3] and "lam-" in df.decomposition[3]
    assert df.e_above_hull[7] > 0.01 and not df.stable[7]  # bcc Cu
    assert df.spacegroup_symbol[0] == "Fm-3m" and df.spacegroup_number[3] == 221


def test_summary_counts_match_the_table(screened):
    res = screened[0]
    df, s = res.table, res.summary
    c = s["counts"]
    assert c["inputs"] == 20
    assert c["rejected"] == 5 and c["failed"] == 1 and c["relaxed"] == 14
    for key in ("stable", "metastable", "unique", "novel", "sun"):
        assert c[key] == int(df[key].fillna(False).sum())
        assert s["rates"][key] == pytest.approx(c[key] / 20)
    assert s["reasons"]["distance"] == 1 and s["reasons"]["relax: exploded"] == 1
    assert s["thresholds"]["sun"] == 0.1
    assert s["diversity"]["spacegroups"] == df.spacegroup_number[df.status == "ok"].nunique()
    # prototypes: (AB3, Pm-3m) twice-counted formulas collapse: Cu3Au and CuAu3 are one
    assert s["diversity"]["prototypes"] < len(
        set(zip(df.formula[df.status == "ok"], df.spacegroup_number[df.status == "ok"]))
    )
    assert "screening" in res.report() and "S.U.N." in res.report()


def test_output_files(screened):
    import ase.io

    res = screened[0]
    p = res.paths
    assert list(p) == [
        "results.csv",
        "results.parquet",
        "results.json",
        "summary.json",
        "e_above_hull.png",
        "relaxed.extxyz",
    ]
    pd.testing.assert_frame_equal(pd.read_parquet(p["results.parquet"]), res.table)
    csv = pd.read_csv(p["results.csv"])
    assert list(csv.columns) == list(COLUMNS) and len(csv) == 20
    assert csv.e_above_hull.tolist() == pytest.approx(res.table.e_above_hull.tolist(), nan_ok=True)
    rows = json.loads(p["results.json"].read_text())
    assert len(rows) == 20 and rows[12]["status"] == "rejected" and rows[12]["e_above_hull"] is None
    assert json.loads(p["summary.json"].read_text())["counts"] == res.summary["counts"]
    assert p["e_above_hull.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    frames = ase.io.read(p["relaxed.extxyz"], index=":")
    ok = res.table[res.table.status == "ok"]
    assert [f.info["index"] for f in frames] == ok["index"].tolist()
    assert frames[0].get_potential_energy() == pytest.approx(ok.energy.iloc[0])


def test_without_a_database_novelty_is_unknown_not_false(tmp_path):
    from ase.build import bulk

    res = screen([bulk("Cu", "fcc", a=3.6)], "emt", out_dir=tmp_path, progress=False)
    df = res.table
    assert df.status[0] == "ok" and df.hull_status[0] == "no-database"
    assert pd.isna(df.e_above_hull[0]) and pd.isna(df.stable[0])
    assert pd.isna(df.novel[0]) and pd.isna(df.sun[0]) and df.unique[0]
    assert any("novelty not assessed" in n for n in res.summary["notes"])


def test_unusable_arguments_raise_screen_errors(tmp_path):
    from ase.build import bulk

    cu = [bulk("Cu")]
    with pytest.raises(ScreenError, match="needs a database"):
        screen(cu, "emt", out_dir=tmp_path, insert=True, progress=False)
    with pytest.raises(ScreenError, match="not both"):
        screen(cu, "emt", out_dir=tmp_path, workers=2, cluster="tcp://x:1", progress=False)
    with pytest.raises(ScreenError, match="no such file"):
        screen(cu, "emt", out_dir=tmp_path, db=tmp_path / "missing.db", progress=False)
    with pytest.raises(ScreenError, match="no model file"):
        screen(cu, tmp_path / "missing.pth", out_dir=tmp_path, progress=False)
    with pytest.raises(ScreenError, match="fmax"):
        ScreenConfig(fmax=0)
    with pytest.raises(ScreenError, match="volume_per_atom"):
        ScreenConfig(volume_per_atom=(10, 1))


def test_a_lamkit_model_file(tmp_path):
    from tests.screen_common import tiny_model_file

    path = tiny_model_file(tmp_path / "tiny.pth")
    config = ScreenConfig(fmax=1e-3, steps=15, chunk_size=4)
    res = screen(candidates(), path, tmp_path / "out", config=config, progress=False)
    df = res.table
    assert res.summary["model"] == "tiny"
    assert df.status[14] == "rejected"
    assert "Pt not in the model's type map (Au, Cu)" in df.reason[14]
    assert (df.status[:12] == "ok").all()
    assert (df.relax_steps[:12] > 0).all() and set(df.relax_status[:12]) <= {
        "converged",
        "unconverged",
    }
    assert not df.converged[df.relax_status == "unconverged"].any()
    again = screen(candidates(), path, tmp_path / "out", config=config, progress=False)
    assert again.summary["timing"]["computed"] == 0
    # another model under the same file name is another screening
    import torch

    from lamkit.model.io import load_model, save_model

    model = load_model(path)
    with torch.no_grad():
        model.out_bias.add_(0.1)
    save_model(model, path)
    with pytest.raises(ScreenError, match="potential.sha256"):
        screen(candidates(), path, tmp_path / "out", config=config, progress=False)
