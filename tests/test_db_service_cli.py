"""``lam db serve`` itself: the command started as a subprocess (``python -m lamkit db --db
<file> serve``) on a free loopback port over a new SQLite file, with the write key given in an
environment variable; the test waits for ``/api/v1/health``, reads, posts a record with the
key, stops the server with SIGTERM (a graceful shutdown) and finds the record in the file.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lamkit.db import CrystalDB

START_S = 30  # generous: two cores shared with other jobs
STOP_S = 15
SECRET = "s3cret-carol"
NACL = {
    "lattice": [[5.64, 0, 0], [0, 5.64, 0], [0, 0, 5.64]],
    "species": ["Na", "Cl"],
    "frac_coords": [[0, 0, 0], [0.5, 0.5, 0.5]],
    "energy": -6.8,
    "model": "toy",
}
#: the environment variables that may hold the keys; none may leak in from the caller's shell
KEY_VARIABLES = ("LAMKIT_API_KEYS", "LAMKIT_DB_API_KEYS", "LAMKIT_DB_API_KEYS_FILE")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, base: str, log: Path) -> dict:
    """The first 200 answer of /api/v1/health; fails with the server's log if the process
    exits or does not answer within START_S."""
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"lam db serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            r = httpx.get(f"{base}/api/v1/health", timeout=2)
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    pytest.fail(f"lam db serve did not answer within {START_S} s:\n{log.read_text()}")


@pytest.mark.parametrize("variable", ["LAMKIT_API_KEYS", "LAMKIT_DB_API_KEYS"])
def test_lam_db_serve(tmp_path, variable):
    db_file = tmp_path / "served.db"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES + ("LAMKIT_DB_URL",)}
    env[variable] = f"carol:{SECRET}"
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "lamkit", "db", "--db", str(db_file), "serve"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        health = wait_healthy(proc, base, log)
        assert health["status"] == "ok" and health["records"] == 0
        assert health["database"] == "sqlite"
        assert httpx.get(f"{base}/api/v1").json()["writes"] is True
        page = httpx.get(f"{base}/")
        assert page.status_code == 200 and "lamkit crystal database" in page.text

        url = f"{base}/api/v1/structures"
        assert httpx.post(url, json=NACL).status_code == 401
        assert httpx.post(url, json=NACL, headers={"X-API-Key": "wrong"}).status_code == 403
        r = httpx.post(url, json=NACL, headers={"X-API-Key": SECRET})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["submitter"] == "carol" and len(body["added"]) == 1
        (rid,) = body["added"]
        found = httpx.get(url, params={"submitter": "carol", "chemsys": "Na-Cl"}).json()
        assert [x["id"] for x in found["records"]] == [rid]
        assert httpx.get(f"{base}/api/v1/health").json()["records"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"lam db serve did not stop within {STOP_S} s of SIGTERM")
    text = log.read_text()
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells of it
    assert code in (0, -signal.SIGTERM), text
    assert "Application shutdown complete" in text, text
    assert "Traceback" not in text, text
    # the record is in the file given with --db (and no default lamkit.db was made)
    with CrystalDB(str(db_file)) as db:
        (rec,) = db.query(limit=5).records
        assert (rec.id, rec.submitter, rec.formula, rec.model) == (rid, "carol", "NaCl", "toy")
        assert rec.energy == pytest.approx(-6.8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serve.log", "served.db"]
