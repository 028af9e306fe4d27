"""The HTTP service with the inputs and loads a new user hit (issue 18): absurd energies, a
large upload next to other requests, a write lock held too long, and the OpenAPI document
(security scheme, body schemas, enums) with OPTIONS.  On SQLite and PostgreSQL where it
matters."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from lamkit.db import CrystalDB
from lamkit.db.service import create_app

from .db_data import (
    API,
    KEY,
    KINDS,
    client_for,
    database_url,
    fails,
    fill,
    ok,
    running_server,
)

HEADERS = {"X-API-Key": KEY}


def co(i: int, energy: float | None = -7.0) -> dict:
    """A posted bcc Co cell (a distinct volume per ``i``)."""
    a = 2.80 + 0.01 * i
    item = {
        "lattice": [[a, 0, 0], [0, a, 0], [0, 0, a]],
        "species": ["Co", "Co"],
        "frac_coords": [[0, 0, 0], [0.5, 0.5, 0.5]],
        "model": "toy",
    }
    if energy is not None:
        item["energy"] = energy
    return item


@pytest.fixture(scope="module", params=KINDS)
def app_db(request):
    with database_url(request.param) as url:
        db = CrystalDB(url).init()
        fill(db)
        try:
            yield create_app(db, api_keys=[f"bob:{KEY}"], keys_from_environment=False), db
        finally:
            db.close()


def test_absurd_energies_are_refused_and_hulls_keep_working(app_db):
    app, db = app_db
    with client_for(app) as c:
        ok(c.post(f"{API}/structures", json=co(0, -14.0), headers=HEADERS), 201)
        for energy in (1e308, -1e308, -1e20):
            r = c.post(f"{API}/structures", json=co(1, energy), headers=HEADERS)
            fails(r, 422, "eV/atom over 2 sites; expected")
        r = c.post(
            f"{API}/import",
            files={"file": ("co.xyz", _extxyz([co(2, -1e300)]).encode())},
            headers=HEADERS,
        )
        fails(r, 422, "co.xyz")
        hull = ok(c.get(f"{API}/hull/Co", params={"model": "toy"}))
        assert [e["energy_per_atom"] for e in hull["entries"]] == [-7.0]


def _extxyz(items: list[dict]) -> str:
    """An extxyz text of posted-record dicts."""
    lines = []
    for it in items:
        lat = " ".join(str(x) for row in it["lattice"] for x in row)
        lines += [str(len(it["species"]))]
        lines += [
            f'Lattice="{lat}" Properties=species:S:1:pos:R:3 energy={it["energy"]!r} pbc="T T T"'
        ]
        for sp, f in zip(it["species"], it["frac_coords"]):
            cart = [sum(f[k] * it["lattice"][k][j] for k in range(3)) for j in range(3)]
            lines.append(f"{sp} {cart[0]} {cart[1]} {cart[2]}")
    return "\n".join(lines) + "\n"


def test_an_upload_does_not_hold_up_other_requests(app_db, monkeypatch):
    """The import endpoint runs in the thread pool: while it parses and writes (held here for
    2 s), the health check is answered at once."""
    import httpx

    app, db = app_db
    real = db.import_records

    def slow(*args, **kwargs):
        time.sleep(2.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(db, "import_records", slow)
    text = _extxyz([co(10 + i, -7.0 - 0.001 * i) for i in range(50)])
    with running_server(app) as base:
        done = {}

        def upload():
            with httpx.Client(timeout=60) as client:
                done["r"] = client.post(
                    f"{base}{API}/import", files={"file": ("many.xyz", text)}, headers=HEADERS
                )

        thread = threading.Thread(target=upload)
        thread.start()
        time.sleep(0.5)  # the upload is inside import_records now
        start = time.monotonic()
        with httpx.Client(timeout=60) as client:
            assert client.get(f"{base}{API}/health").status_code == 200
        waited = time.monotonic() - start
        assert thread.is_alive(), "the upload finished before the health check was answered"
        thread.join(timeout=60)
    assert waited < 1.0, f"the health check waited {waited:.1f} s for the upload"
    assert done["r"].status_code == 201 and len(done["r"].json()["added"]) == 50


def test_a_write_that_waits_too_long_for_the_lock_is_a_503(tmp_path):
    path = tmp_path / "locked.db"
    db = CrystalDB(path, busy_timeout=0.3).init()
    app = create_app(db, api_keys=[f"bob:{KEY}"], keys_from_environment=False)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        with client_for(app) as c:
            holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
            start = time.monotonic()
            r = c.post(f"{API}/structures", json=co(0), headers=HEADERS)
            assert time.monotonic() - start < 10
            fails(r, 503, "database busy", "locked", "retry later")
            assert r.headers["retry-after"] == "5"
            assert r.headers["content-type"] == "application/json"
            ok(c.get(f"{API}/structures"))  # readers are not held up (WAL)
            holder.execute("ROLLBACK")
            ok(c.post(f"{API}/structures", json=co(0), headers=HEADERS), 201)
    finally:
        holder.close()
        db.close()


# ---------------------------------------------------------------------------- OpenAPI, OPTIONS
def test_openapi_declares_security_bodies_and_enums(app_db):
    app, _ = app_db
    with client_for(app) as c:
        spec = ok(c.get("/openapi.json"))
    schemes = spec["components"]["securitySchemes"]
    assert schemes == {
        "ApiKey": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": schemes["ApiKey"]["description"],
        }
    }
    paths = spec["paths"]
    writes = [
        paths[f"{API}/structures"]["post"],
        paths[f"{API}/import"]["post"],
        paths[f"{API}/structures/{{record_id}}"]["delete"],
    ]
    for op in writes:
        assert op["security"] == [{"ApiKey": []}], op["summary"]
        assert {"401", "403", "503"} <= set(op["responses"]), op["summary"]
    reads = [op for p in paths.values() for m, op in p.items() if m == "get"]
    assert all("security" not in op for op in reads)
    body = writes[0]["requestBody"]["content"]["application/json"]["schema"]
    record, many, wrapped = body["anyOf"]
    assert {"lattice", "species", "frac_coords", "energy", "tags"} <= set(record["properties"])
    assert many["items"] == record and wrapped["properties"]["records"]["items"] == record
    orders = [p for p in paths[f"{API}/structures"]["get"]["parameters"] if p["name"] == "order_by"]
    assert set(orders[0]["schema"]["enum"]) >= {"id", "-energy_per_atom", "formula", ""}
    download = paths[f"{API}/structures/{{record_id}}/file"]["get"]["parameters"]
    (fmt,) = [p for p in download if p["name"] == "format"]
    assert fmt["schema"]["enum"] == ["cif", "poscar", "extxyz", "json"]
    ref = writes[1]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    form = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert form["properties"]["format"]["enum"] == ["", "cif", "poscar", "extxyz", "json"]


def test_options_and_405_name_every_method(app_db):
    app, _ = app_db
    with client_for(app) as c:
        for path, allow in (
            (f"{API}/structures", "GET, OPTIONS, POST"),
            (f"{API}/structures/1", "DELETE, GET, OPTIONS"),
            (f"{API}/import", "OPTIONS, POST"),
            (f"{API}/hull/Cl-Na", "GET, OPTIONS"),
        ):
            r = c.options(path)
            assert (r.status_code, r.headers["allow"], r.content) == (204, allow, b""), path
        r = c.put(f"{API}/structures", json={})
        assert r.status_code == 405 and r.headers["allow"] == "GET, OPTIONS, POST"
        assert c.options(f"{API}/nothing/here").status_code == 404
        fails(c.get(f"{API}/structures", params={"order_by": "+id"}), 422, "order_by")
        ok(c.get(f"{API}/structures", params={"order_by": ""}))
