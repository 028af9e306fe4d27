"""Resumable screening: a run killed with SIGKILL and run again ends with the same table as an
uninterrupted run; changed settings are refused (or restart); changed thresholds reuse the
stored relaxations; ``--insert`` is idempotent on resume (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import ase.io
import pandas as pd
import pytest

from lamkit.screen import ScreenConfig, ScreenError, screen
from lamkit.screen.store import STATE_FILE, StateStore
from tests.db_fixtures import BACKENDS, crystal_db
from tests.screen_common import build_db, candidates, varied, write_slow_calculator

pytestmark = pytest.mark.usefixtures("one_thread")


def _relaxed_rows(state) -> int:
    if not state.exists():
        return 0
    conn = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT count(*) FROM rows WHERE relaxed IS NOT NULL").fetchone()[0]
    except sqlite3.OperationalError:  # the tables are not created yet
        return 0
    finally:
        conn.close()


def test_killed_screening_resumes_to_the_same_table(tmp_path, monkeypatch):
    write_slow_calculator(tmp_path)
    structures = varied(10)
    ase.io.write(tmp_path / "cands.extxyz", structures)
    db, _ = build_db(tmp_path / "db.sqlite")
    db.close()
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")
    out = tmp_path / "killed"
    command = [
        sys.executable, "-m", "lamkit", "screen", str(tmp_path / "cands.extxyz"),
        "-m", "ase:slowcalc.SlowEMT", "--model-name", "emt", "--db", str(tmp_path / "db.sqlite"),
        "-o", str(out), "--chunk-size", "4", "--no-progress", "--parse-workers", "0",
    ]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _relaxed_rows(out / STATE_FILE) < 3:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the screening did not start"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _relaxed_rows(out / STATE_FILE)
    assert 3 <= killed_at < len(structures), "the screening finished before it was killed"
    assert not (out / "results.csv").exists()

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"({killed_at} resumed from the store)" in again.stdout
    # the same screening, uninterrupted (here: the same calculator class, slowcalc.SlowEMT)
    monkeypatch.syspath_prepend(str(tmp_path))
    from slowcalc import SlowEMT

    fresh = screen(
        [tmp_path / "cands.extxyz"], SlowEMT(), tmp_path / "fresh", db=tmp_path / "db.sqlite",
        config=ScreenConfig(chunk_size=4, parse_workers=0), model_name="emt", progress=False,
    )  # fmt: skip
    resumed = pd.read_parquet(out / "results.parquet")
    assert (resumed.status == "ok").sum() == len(structures)
    pd.testing.assert_frame_equal(resumed, fresh.table, check_exact=True)
    assert (out / "relaxed.extxyz").read_text() == fresh.paths["relaxed.extxyz"].read_text()


def test_thresholds_reuse_relaxations_and_other_settings_are_refused(tmp_path):
    cands = varied(4) + [candidates()[13]]  # 4 to relax, 1 rejected
    out = tmp_path / "out"
    first = screen(cands, "emt", out_dir=out, progress=False)
    assert first.summary["timing"]["computed"] == 5
    looser = ScreenConfig(require_converged=False, sun_threshold=0.3)
    second = screen(cands, "emt", out_dir=out, config=looser, progress=False)
    assert second.summary["timing"]["computed"] == 0
    assert second.summary["timing"]["resumed"] == 5
    assert second.screen_id == first.screen_id
    same = ["index", "energy", "relax_steps", "unique", "reason"]
    pd.testing.assert_frame_equal(first.table[same], second.table[same])
    with pytest.raises(ScreenError, match=r"other settings \(config.fmax: 0.05 -> 0.02\)"):
        screen(cands, "emt", out_dir=out, config=ScreenConfig(fmax=0.02), progress=False)
    restarted = screen(
        cands, "emt", out_dir=out, config=ScreenConfig(fmax=0.02), progress=False, restart=True
    )
    assert restarted.summary["timing"]["computed"] == 5
    assert restarted.screen_id != first.screen_id
    # one changed input: only that structure is screened again
    cands[1] = cands[1].copy()
    cands[1].positions[0, 0] += 0.01
    changed = screen(cands, "emt", out_dir=out, config=ScreenConfig(fmax=0.02), progress=False)
    assert changed.summary["timing"]["computed"] == 1


def test_one_run_per_output_folder(tmp_path):
    with StateStore(tmp_path, {"a": 1}):
        with pytest.raises(ScreenError, match="in use by another screening"):
            StateStore(tmp_path, {"a": 1})
    with StateStore(tmp_path, {"a": 1}) as store:  # released
        assert store.screen_id


@pytest.mark.parametrize("kind", BACKENDS)
def test_insert_writes_passing_structures_once(kind, tmp_path):
    with crystal_db(kind) as db:
        build_db(db)
        before = db.count()
        cands = candidates()
        kw = dict(db=db, insert=True, model_name="emt", submitter="tester", progress=False)
        res = screen(cands, "emt", out_dir=tmp_path, **kw)
        df = res.table
        tag = f"screen:{res.screen_id}"
        passing = df[(df.status == "ok") & df.converged.fillna(False)]
        assert len(passing) > 5
        assert df.db_id.notna().tolist() == df["index"].isin(passing["index"]).tolist()
        stored = list(db.iter_query(tags=[tag]))
        assert len(stored) == len(set(passing.db_id)) == db.count() - before
        rec = db.get(int(passing.db_id.iloc[0]))
        assert rec.model == "emt" and rec.submitter == "tester" and tag in rec.tags
        assert rec.energy == pytest.approx(passing.energy.iloc[0])
        again = screen(cands, "emt", out_dir=tmp_path, **kw)
        assert again.summary["timing"]["computed"] == 0
        assert db.count() - before == len(stored)
        assert again.table.db_id.tolist() == df.db_id.tolist()
        # only the stable ones, in a new screening
        stable = screen(
            cands, "emt", out_dir=tmp_path / "stable",
            config=ScreenConfig(insert_when="stable"), **kw,
        )  # fmt: skip
        ids = stable.table.db_id
        assert ids.notna().tolist() == stable.table.stable.fillna(False).tolist()
