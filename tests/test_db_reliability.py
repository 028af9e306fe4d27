"""Reliability: a bulk import killed with SIGKILL and re-run stores exactly the input; readers
and writers run concurrently without errors or torn pages; hostile files get clear rejections.
On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from lamkit.db import CrystalDB, synthetic
from tests.db_data import database_url
from tests.db_fixtures import BACKENDS, backend_param

db = backend_param()
N_KILL = 10000
BATCH = 100


def _write_jsonl(path, items) -> None:
    with open(path, "w") as fh:
        for d in items:
            d = dict(d, lattice=d["lattice"].tolist(), frac_coords=d["frac_coords"].tolist())
            fh.write(json.dumps(d) + "\n")


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env


@pytest.mark.parametrize("kind", BACKENDS)
def test_killed_import_then_rerun_stores_exactly_the_input(kind, tmp_path):
    items = list(synthetic.generate(N_KILL, seed=21, elements=("Li", "Na", "K", "Cl", "Br", "O")))
    path = tmp_path / "bulk.jsonl"
    _write_jsonl(path, items)
    with database_url(kind) as url:
        CrystalDB(url).init().close()
        code = (
            "import sys; from lamkit.db import CrystalDB; "
            f"CrystalDB(sys.argv[1]).import_files([sys.argv[2]], batch_size={BATCH}, "
            "progress=False)"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, url, str(path)],
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        with CrystalDB(url) as db:
            deadline = time.monotonic() + 120
            while db.count() < 3 * BATCH:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "the import did not start"
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
            assert proc.returncode == -signal.SIGKILL
            killed_at = db.count()
            assert 0 < killed_at < N_KILL, "the import finished before it could be killed"
            assert killed_at % BATCH == 0  # whole transactions only
            rep = db.import_files([path], batch_size=BATCH, progress=False)
            assert (rep.added, rep.duplicates, len(rep.rejected)) == (
                N_KILL - killed_at,
                killed_at,
                0,
            )
            stored = list(db.iter_query(page_size=1000))
            assert len(stored) == N_KILL
            want = sorted((d["energy"], tuple(d["species"])) for d in items)
            assert sorted((r.energy, tuple(r.species)) for r in stored) == want
            # the re-run brought every hull up to date: a full recomputation changes nothing
            before = {r.id: r.e_above_hull for r in stored}
            db.update_hulls()
            after = {r.id: r.e_above_hull for r in db.iter_query(page_size=1000)}
            assert after == before
            assert sum(v is not None for v in after.values()) > N_KILL // 2


def test_concurrent_readers_and_writers(db):
    elements = ("Li", "Na", "Cl", "O")
    base = list(synthetic.generate(100, seed=1, elements=elements))
    new = list(synthetic.generate(400, seed=2, elements=elements))
    db.import_records(base)
    errors: list[BaseException] = []
    done = threading.Event()
    counts: list[list[int]] = [[] for _ in range(3)]

    def reader(k: int) -> None:
        try:
            while not done.is_set():
                n = db.count()
                counts[k].append(n)
                ids = [r.id for r in db.iter_query(page_size=50, only_elements=elements)]
                assert len(ids) == len(set(ids)) and len(ids) >= n
                page = db.query(elements=["Cl"], order_by="energy_per_atom", limit=20)
                epa = [r.energy_per_atom for r in page.records]
                assert epa == sorted(epa)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def writer(items) -> None:
        try:
            rep = db.import_records(items, batch_size=40)
            assert not rep.rejected
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    readers = [threading.Thread(target=reader, args=(k,)) for k in range(3)]
    # two writers with overlapping input: the overlap is stored once
    writers = [
        threading.Thread(target=writer, args=(new[:250],)),
        threading.Thread(target=writer, args=(new[150:],)),
    ]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join(timeout=300)
    done.set()
    for t in readers:
        t.join(timeout=60)
    assert not errors, errors
    for c in counts:
        assert c and c == sorted(c)  # a reader never sees the count go down
    assert db.count() == 500
    before = {r.id: r.e_above_hull for r in db.iter_query()}
    db.update_hulls()
    assert {r.id: r.e_above_hull for r in db.iter_query()} == before


def test_a_second_process_reads_while_this_one_writes(db, tmp_path):
    items = list(synthetic.generate(300, seed=4, elements=("Cu", "Au", "Ag")))
    db.import_records(items[:50])
    code = (
        "import sys, time; from lamkit.db import CrystalDB\n"
        "db = CrystalDB(sys.argv[1]); seen = []\n"
        "t = time.monotonic()\n"
        "while time.monotonic() - t < 4:\n"
        "    seen.append(db.count(only_elements=['Cu', 'Au', 'Ag']))\n"
        "assert seen == sorted(seen), seen\n"
        "print(min(seen), max(seen))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, db.url],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    db.import_records(items[50:], batch_size=25)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    lo, hi = map(int, out.split())
    assert 50 <= lo <= hi <= 300


def test_hostile_files(db, tmp_path):
    huge = tmp_path / "many_sites.json"
    huge.write_text(
        json.dumps(
            {
                "lattice": [[100, 0, 0], [0, 100, 0], [0, 0, 100]],
                "species": ["H"] * 6000,
                "frac_coords": [[i / 6000, 0, 0] for i in range(6000)],
            }
        )
    )
    (tmp_path / "nested.json").write_text('{"structure": ' * 50000 + "1" + "}" * 50000)
    (tmp_path / "binary.extxyz").write_bytes(os.urandom(4096))
    (tmp_path / "text.cif").write_text("data_x\n_cell_length_a 'DROP TABLE records'\n")
    (tmp_path / "inf.jsonl").write_text(
        '{"lattice": [[1e308, 0, 0], [0, 1e308, 0], [0, 0, 1e308]], "species": ["H"], '
        '"frac_coords": [[0, 0, 0]]}\n'
        '{"lattice": [[4, 0, 0], [0, 4, 0], [0, 0, 4]], "species": ["H"], '
        '"frac_coords": [[0, 0, 0]], "energy": 1e400}\n'
    )
    rep = db.import_files(sorted(tmp_path.iterdir()), progress=False)
    assert rep.added == 0 and len(rep.rejected) >= 5
    reasons = {r.source.rsplit("/", 1)[-1]: r.reason for r in rep.rejected}
    assert "6000 sites" in reasons["many_sites.json"]
    assert reasons["nested.json"]
    inf = [r.reason for r in rep.rejected if r.source.endswith("inf.jsonl")]
    assert any("NaN or infinite" in r or "volume" in r for r in inf), inf
    assert any("finite" in r for r in inf), inf
    assert db.count() == 0
