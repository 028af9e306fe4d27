"""Shared data of the service and web page tests (no tests here): a few dozen small crystals
with energies chosen so that the hull answers are known by hand, the database URLs to run
against (SQLite always, PostgreSQL when ``LAMKIT_TEST_PG_URL`` is set), the ``served`` fixture
(the filled database behind a TestClient, once per backend) and response helpers.

Energies (model "toy", eV/atom):
  Na bcc -1.30, Cl simple cubic -1.80          -> refs; NaCl rocksalt -3.40 is on the hull
  (formation -1.85), rocksalt variants at -3.40 + 0.05 k (E_hull 0.05 k, k = 1..11), NaCl in
  the CsCl structure -3.20 (E_hull 0.20).
  Cu fcc -3.50, Au fcc -3.20, Cu3Au L1_2 -3.60 (formation -0.175, on the hull), CuAu L1_0
  -3.45 (formation -0.10; the hull at x_Au = 1/2 is -0.175 * 2/3, so E_hull = 0.016667).
  Li bcc -1.90, O simple cubic -4.90, Li2O antifluorite -4.60.
  K-Br rocksalt with model "other"; Si, GaAs and MgO without energy.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

IN_CI = os.environ.get("CI", "").lower() == "true"
PG_ENV = "LAMKIT_TEST_PG_URL"

NACL_A = 5.64
N_ROCKSALT_VARIANTS = 11  # strained NaCl rocksalt cells above the ground state
CUAU_EHULL = 0.175 * 2 / 3 - 0.10


FCC = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]


def _shift(basis: list[list[float]], d: float) -> list[list[float]]:
    return [[(x + d) % 1 for x in site] for site in basis]


def rocksalt(a: str, b: str, lat: float) -> Structure:  # conventional cell, 8 sites
    return Structure(
        Lattice.cubic(lat),
        [a] * 4 + [b] * 4,
        FCC + [[(x + (0.5 if i == 0 else 0)) % 1 for i, x in enumerate(site)] for site in FCC],
    )


def zincblende(a: str, b: str, lat: float) -> Structure:  # diamond when a == b
    return Structure(Lattice.cubic(lat), [a] * 4 + [b] * 4, FCC + _shift(FCC, 0.25))


def antifluorite(anion: str, cation: str, lat: float) -> Structure:  # Li2O, 12 sites
    return Structure(
        Lattice.cubic(lat), [anion] * 4 + [cation] * 8, FCC + _shift(FCC, 0.25) + _shift(FCC, 0.75)
    )


def cscl(a: str, b: str, lat: float) -> Structure:
    return Structure(Lattice.cubic(lat), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


def bcc(el: str, lat: float) -> Structure:
    return Structure(Lattice.cubic(lat), [el, el], [[0, 0, 0], [0.5, 0.5, 0.5]])


def fcc(el: str, lat: float) -> Structure:
    return Structure(Lattice.cubic(lat), [el] * 4, FCC)


def simple_cubic(el: str, lat: float) -> Structure:
    return Structure(Lattice.cubic(lat), [el], [[0, 0, 0]])


def l12(a: str, b: str, lat: float) -> Structure:  # Cu3Au
    return Structure(
        Lattice.cubic(lat), [b, a, a, a], [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    )


def l10(a: str, b: str, lat: float) -> Structure:  # CuAu, tetragonal
    return Structure(Lattice.tetragonal(lat / 2**0.5, lat), [a, b], [[0, 0, 0], [0.5, 0.5, 0.5]])


def records() -> list[dict]:
    """Import items (``CrystalDB.import_records`` dicts) of the test database."""
    toy = {"model": "toy"}
    out = [
        dict(structure=bcc("Na", 4.23), energy=-1.30 * 2, tags=["element"], **toy),
        dict(structure=simple_cubic("Cl", 2.0), energy=-1.80, tags=["element"], **toy),
        dict(
            structure=rocksalt("Na", "Cl", NACL_A),
            energy=-3.40 * 8,
            tags=["rocksalt", "ground-state"],
            **toy,
        ),
        dict(structure=cscl("Na", "Cl", 3.4), energy=-3.20 * 2, tags=["cscl"], **toy),
    ]
    for k in range(1, N_ROCKSALT_VARIANTS + 1):
        out.append(
            dict(
                structure=rocksalt("Na", "Cl", NACL_A + 0.02 * k),
                energy=(-3.40 + 0.05 * k) * 8,
                tags=["rocksalt", "strained"],
                **toy,
            )
        )
    out += [
        dict(structure=fcc("Cu", 3.61), energy=-3.50 * 4, tags=["element"], **toy),
        dict(structure=fcc("Au", 4.08), energy=-3.20 * 4, tags=["element"], **toy),
        dict(structure=l12("Cu", "Au", 3.75), energy=-3.60 * 4, tags=["L12"], **toy),
        dict(structure=l10("Cu", "Au", 3.85), energy=-3.45 * 2, tags=["L10"], **toy),
        dict(structure=bcc("Li", 3.49), energy=-1.90 * 2, tags=["element"], **toy),
        dict(structure=simple_cubic("O", 2.0), energy=-4.90, tags=["element"], **toy),
        dict(
            structure=antifluorite("O", "Li", 4.61), energy=-4.60 * 12, tags=["antifluorite"], **toy
        ),
    ]
    for i, lat in enumerate((6.60, 6.70, 6.80)):
        out.append(
            dict(
                structure=rocksalt("K", "Br", lat),
                energy=(-3.0 + 0.1 * i) * 8,
                model="other",
                tags=["rocksalt"],
            )
        )
    out += [
        dict(structure=zincblende("Si", "Si", 5.43), tags=["no-energy"]),
        dict(structure=zincblende("Ga", "As", 5.65), tags=["no-energy"]),
        dict(structure=rocksalt("Mg", "O", 4.21), tags=["no-energy"]),
    ]
    return out


N_NACL = 2 + N_ROCKSALT_VARIANTS  # records whose chemsys is Cl-Na


def fill(db, submitter: str = "alice") -> None:
    report = db.import_records(records(), submitter=submitter)
    assert not report.rejected, report.rejected
    assert report.added == len(records())


def pg_base_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        msg = f"{PG_ENV} is not set: no PostgreSQL to test against (.ci/postgres.sh sets it)"
        if IN_CI:
            pytest.fail(f"{msg}; CI must run the PostgreSQL tests")
        pytest.skip(msg)
    return url


@contextmanager
def database_url(kind: str) -> Iterator[str]:
    """A URL of an empty database of ``kind`` ("sqlite" or "postgresql"), removed afterwards.
    PostgreSQL gets a schema of its own (via ``search_path``) so tests cannot see each other."""
    if kind == "sqlite":
        import tempfile

        with tempfile.TemporaryDirectory(prefix="lamkit-svc-") as tmp:
            yield f"sqlite:///{tmp}/service.db"
        return
    from sqlalchemy import create_engine, text

    base = pg_base_url()
    schema = f"svc_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def client_for(app):
    """Starlette's TestClient (it warns that it prefers the httpx2 package; httpx is what the
    project installs, so that one warning is ignored here)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")
        from fastapi.testclient import TestClient
    return TestClient(app)


@contextmanager
def running_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a background thread; yields the
    base URL (``http://127.0.0.1:<port>``) and stops the server afterwards."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start within 30 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


# ---------------------------------------------------------------------------- the service
KINDS = ["sqlite", "postgresql"]
KEY = "s3cret-bob"  # the API key of the submitter "bob"
API = "/api/v1"


@dataclass
class Served:
    kind: str
    db: object  # lamkit.db.CrystalDB
    client: object  # starlette TestClient


@contextmanager
def serving(kind: str) -> Iterator[Served]:
    """The filled test database of ``kind`` and a TestClient of the service over it, with the
    write key ``KEY`` of "bob" (the tests' module-scoped ``served`` fixture, once per backend).
    Writing tests only add Fe, Ni and Co structures, so the hand-known answers about the other
    systems hold in any test order."""
    from lamkit.db import CrystalDB
    from lamkit.db.service import create_app

    with database_url(kind) as url:
        db = CrystalDB(url).init()
        fill(db)
        app = create_app(db, api_keys=[f"bob:{KEY}"], keys_from_environment=False)
        try:
            with client_for(app) as client:
                yield Served(kind, db, client)
        finally:
            db.close()  # before database_url drops the PostgreSQL schema
        db.close()


def ok(response, status: int = 200):
    assert response.status_code == status, response.text
    return response.json()


def fails(response, status: int, *words: str) -> str:
    """The 'detail' of an error response, checked for the status and the words it must name."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str), detail
    for word in words:
        assert word in detail, f"{word!r} not in {detail!r}"
    return detail


def api_ids(client, params: dict, page: int = 500) -> list[int]:
    """Ids of every match of a search, following the cursors."""
    out: list[int] = []
    cursor = None
    while True:
        query = dict(params, limit=page) | ({"cursor": cursor} if cursor else {})
        body = ok(client.get(f"{API}/structures", params=query))
        out += [r["id"] for r in body["records"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return out


def core_ids(db, **kwargs) -> list[int]:
    return [r.id for r in db.query(limit=1000, **kwargs).records]


def one(db, **filters):
    """The one record matching the filters."""
    (rec,) = db.query(limit=2, **filters).records
    return rec


def same_structure(a: Structure, b: Structure, tol: float = 1e-4) -> bool:
    """Same lattice parameters and the same species at the same fractional positions (any
    order, modulo lattice translations)."""
    if len(a) != len(b):
        return False
    if not np.allclose(a.lattice.parameters, b.lattice.parameters, atol=tol):
        return False
    left = [(s.specie.symbol, s.frac_coords) for s in b]
    for site in a:
        for i, (sym, f) in enumerate(left):
            d = site.frac_coords - f
            if sym == site.specie.symbol and np.abs(d - np.round(d)).max() < tol:
                left.pop(i)
                break
        else:
            return False
    return True
