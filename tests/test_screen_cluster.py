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


def test_a_running_two_worker_cluster_gives_the_in_process_table(tmp_path):
    import logging

    from dask.distributed import LocalCluster

    db, _ = build_db(tmp_path / "db.sqlite")
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=None, silence_logs=logging.ERROR
    )
    try:
        kw = dict(db=db, model_name="emt", progress=False, config=ScreenConfig(chunk_size=4))
        here = screen(candidates(), FlakyEMT(), tmp_path / "here", **kw)
        address = cluster.scheduler_address
        there = screen(candidates(), FlakyEMT(), tmp_path / "there", cluster=address, **kw)
    finally:
        cluster.close()
        db.close()
    pd.testing.assert_frame_equal(here.table, there.table, check_exact=True)
    assert here.paths["relaxed.extxyz"].read_text() == there.paths["relaxed.extxyz"].read_text()
    assert there.summary["engine"] == f"dask cluster {address}"
    assert (there.table.status == "failed").sum() == 1  # FlakyEMT's NaN, on a worker


def test_an_unreachable_scheduler_is_a_screen_error(tmp_path, monkeypatch):
    from lamkit.screen import ScreenError, cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 2)
    with pytest.raises(ScreenError, match="cannot reach the Dask scheduler"):
        screen(candidates()[:2], "emt", tmp_path, cluster="tcp://127.0.0.1:1", progress=False)


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


def test_a_model_file_is_loaded_by_the_workers_with_the_same_results(tmp_path):
    from tests.screen_common import tiny_model_file

    path = tiny_model_file(tmp_path / "tiny.pth")
    cands = candidates()[:11]
    config = ScreenConfig(fmax=1e-3, steps=15, chunk_size=3)
    here = screen(cands, path, tmp_path / "here", config=config, progress=False)
    there = screen(cands, path, tmp_path / "there", config=config, workers=2, progress=False)
    assert (here.table.relax_steps > 0).all()
    pd.testing.assert_frame_equal(here.table, there.table, check_exact=True)
