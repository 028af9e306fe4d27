"""Screening on a local Dask.distributed cluster: the same table as in-process; a shard whose
worker keeps dying becomes failed rows (tried again by a re-run), not a crashed screening."""

from __future__ import annotations

import pandas as pd
import pytest

from lamkit.screen import ScreenConfig, screen
from tests.conftest import IN_CI
from tests.screen_common import FlakyEMT, KillerEMT, build_db, candidates

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]


@pytest.fixture(autouse=True)
def need_dask():
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("CI must install dask[distributed] (the screen extra)")
        pytest.skip("dask.distributed is not installed")


def test_two_workers_give_the_in_process_table(tmp_path):
    db, _ = build_db(tmp_path / "db.sqlite")
    try:
        kw = dict(db=db, model_name="emt", progress=False, config=ScreenConfig(chunk_size=4))
        here = screen(candidates(), FlakyEMT(), tmp_path / "here", **kw)
        there = screen(candidates(), FlakyEMT(), tmp_path / "there", workers=2, **kw)
    finally:
        db.close()
    pd.testing.assert_frame_equal(here.table, there.table)
    assert here.paths["relaxed"].read_text() == there.paths["relaxed"].read_text()
    assert there.summary["engine"] == "dask local cluster, 2 worker(s)"
    assert (there.table.status == "failed").sum() == 1  # FlakyEMT's NaN, on a worker


def test_a_shard_that_keeps_failing_becomes_failed_rows(tmp_path):
    import dask

    cands = candidates()[:12]  # index 11 (three atoms) kills its worker
    config = ScreenConfig(chunk_size=4, retries=0)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        res = screen(cands, KillerEMT(), tmp_path, workers=2, config=config, progress=False)
    df = res.table
    lost = df[df["index"].between(8, 11)]  # the shard of index 11
    assert (lost.status == "failed").all()
    assert lost.reason.str.contains("shard failed after 0 retries").all()
    assert (df.status[:8] == "ok").all()
    # a re-run tries the lost shard again (here it fails again: same calculator)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        again = screen(cands, KillerEMT(), tmp_path, workers=2, config=config, progress=False)
    assert again.summary["timing"]["computed"] == 4
