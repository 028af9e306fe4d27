"""The crystal database's HTTP service, on SQLite and on PostgreSQL (same tests, both backends).

Every answer is checked against the Python API (``CrystalDB.query``, ``hull``, ``get``) of the
same database, and the hull answers against values known by hand (tests/test_db_service_data.py).
Hostile input (malformed parameters and records, bad files, oversized bodies, SQL metacharacters)
must get a 4xx naming what is wrong and leave the database as it was.
"""

from __future__ import annotations

import io
import json
import math
import threading
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pytest
from pymatgen.core import Structure

from lamkit.db import CrystalDB
from lamkit.db.service import create_app

from .test_db_service_data import (
    CUAU_EHULL,
    N_NACL,
    N_ROCKSALT_VARIANTS,
    NACL_A,
    bcc,
    client_for,
    database_url,
    fcc,
    fill,
    running_server,
)

KINDS = ["sqlite", "postgresql"]
KEY = "s3cret-bob"  # the API key of the submitter "bob"
API = "/api/v1"


@dataclass
class Served:
    kind: str
    db: CrystalDB
    client: object  # starlette TestClient


@pytest.fixture(scope="module", params=KINDS)
def served(request):
    """The filled test database and a TestClient of the service over it, once per backend.
    Writing tests only add Fe, Ni and Co structures, so the hand-known answers about the
    other systems hold in any test order."""
    with database_url(request.param) as url:
        db = CrystalDB(url).init()
        fill(db)
        app = create_app(db, api_keys=[f"bob:{KEY}"], keys_from_environment=False)
        with client_for(app) as client:
            yield Served(request.param, db, client)
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


# ---------------------------------------------------------------------------- reading
def test_index_health_and_openapi(served):
    health = ok(served.client.get(f"{API}/health"))
    assert health["status"] == "ok"
    assert health["database"] == served.kind
    assert health["records"] == served.db.count()
    spec = ok(served.client.get("/openapi.json"))
    paths = spec["paths"]
    expected = {
        f"{API}/structures": {"get", "post"},
        f"{API}/structures/{{record_id}}": {"get", "delete"},
        f"{API}/structures/{{record_id}}/file": {"get"},
        f"{API}/hull/{{chemsys}}": {"get"},
        f"{API}/import": {"post"},
        f"{API}/stats": {"get"},
    }
    for path, methods in expected.items():
        assert path in paths, sorted(paths)
        assert methods <= set(paths[path]), (path, sorted(paths[path]))
    search = {p["name"] for p in paths[f"{API}/structures"]["get"]["parameters"]}
    for name in (
        "elements",
        "only_elements",
        "chemsys",
        "formula",
        "spacegroup",
        "nsites_min",
        "nsites_max",
        "e_min",
        "e_max",
        "e_above_hull_max",
        "submitter",
        "submitted_from",
        "submitted_to",
        "order_by",
        "limit",
        "cursor",
    ):
        assert name in search
    for code in ("401", "403", "413", "422"):
        assert code in paths[f"{API}/structures"]["post"]["responses"]
    page = served.client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert ok(served.client.get(f"{API}/stats"))["records"] == served.db.count()


T0, T1 = datetime(2000, 1, 1, tzinfo=timezone.utc), datetime(2999, 12, 31, tzinfo=timezone.utc)
#: (query string of GET /structures, the same search as CrystalDB.query keywords)
SEARCHES = [
    ({"elements": "Na"}, dict(elements=["Na"])),
    ({"elements": "Cl,Na"}, dict(elements=["Cl", "Na"])),
    ({"elements": ["Na", "Cl"]}, dict(elements=["Cl", "Na"])),  # repeated parameter
    ({"only_elements": "Cu,Au"}, dict(only_elements=["Au", "Cu"])),
    ({"only_elements": "O,Li,Mg"}, dict(only_elements=["Li", "Mg", "O"])),
    ({"chemsys": "Na-Cl"}, dict(chemsys="Cl-Na")),
    ({"formula": "Cl2Na2"}, dict(formula="NaCl")),
    ({"spacegroup": "225"}, dict(spacegroup=225)),
    ({"spacegroup": "Fm-3m"}, dict(spacegroup="Fm-3m")),
    ({"nsites_min": 4, "nsites_max": 8}, dict(nsites=(4, 8))),
    ({"nsites_min": 12}, dict(nsites=(12, None))),
    ({"e_min": -3.5, "e_max": -3.0}, dict(energy_per_atom=(-3.5, -3.0))),
    ({"e_above_hull_max": 0.1}, dict(e_above_hull_max=0.1)),
    ({"submitter": "alice"}, dict(submitter="alice")),
    ({"submitter": "nobody"}, dict(submitter="nobody")),
    ({"model": "other"}, dict(model="other")),
    ({"tags": "strained"}, dict(tags=["strained"])),
    (
        {"submitted_from": "2000-01-01", "submitted_to": "2999-12-31T00:00:00Z"},
        dict(submitted=(T0, T1)),
    ),
    ({"submitted_to": "2000-01-01"}, dict(submitted=(None, T0))),
    (
        {
            "elements": "Na",
            "e_above_hull_max": 0.3,
            "nsites_max": 8,
            "order_by": "-energy_per_atom",
        },
        dict(elements=["Na"], e_above_hull_max=0.3, nsites=(None, 8), order_by="-energy_per_atom"),
    ),
    (
        {"only_elements": "Na,Cl,Cu,Au", "order_by": "e_above_hull"},
        dict(only_elements=["Au", "Cl", "Cu", "Na"], order_by="e_above_hull"),
    ),
    ({"order_by": "formula"}, dict(order_by="formula")),
    ({"order_by": "-nsites"}, dict(order_by="-nsites")),
    ({"order_by": "-submitted"}, dict(order_by="-submitted")),
]


@pytest.mark.parametrize("params,kwargs", SEARCHES, ids=[str(p) for p, _ in SEARCHES])
def test_search_matches_query(served, params, kwargs):
    want = core_ids(served.db, **kwargs)
    assert api_ids(served.client, params) == want
    assert api_ids(served.client, params, page=3) == want


def test_search_results_known_by_hand(served):
    c = served.client
    assert len(api_ids(c, {"chemsys": "Cl-Na"})) == N_NACL
    assert len(api_ids(c, {"model": "other"})) == 3
    assert len(api_ids(c, {"tags": "no-energy"})) == 3
    assert api_ids(c, {"submitter": "nobody"}) == []
    # rocksalt NaCl (ground state and strained), KBr and MgO are in Fm-3m
    assert (
        len(
            api_ids(
                c,
                {
                    "spacegroup": "225",
                    "only_elements": "Na,Cl,K,Br,Mg,O",
                    "nsites_min": 8,
                    "nsites_max": 8,
                },
            )
        )
        == 1 + N_ROCKSALT_VARIANTS + 3 + 1
    )
    rows = ok(
        c.get(
            f"{API}/structures",
            params={"tags": "strained", "order_by": "e_above_hull", "limit": 100},
        )
    )["records"]
    assert [r["e_above_hull"] for r in rows] == pytest.approx(
        [0.05 * k for k in range(1, N_ROCKSALT_VARIANTS + 1)], abs=1e-6
    )
    # the summary rows carry the core's values
    core = {r.id: r for r in served.db.query(tags=["strained"], limit=100).records}
    for row in rows:
        rec = core[row["id"]]
        for key in (
            "formula",
            "chemsys",
            "nsites",
            "energy",
            "energy_per_atom",
            "model",
            "formation_energy_per_atom",
            "e_above_hull",
            "submitter",
            "spacegroup_number",
            "spacegroup_symbol",
        ):
            assert row[key] == pytest.approx(getattr(rec, key)), key


@pytest.mark.parametrize("order_by", ["id", "energy_per_atom", "-e_above_hull", "formula"])
def test_keyset_pages(served, order_by):
    want = core_ids(served.db, elements=["Na"], order_by=order_by)
    seen: list[int] = []
    cursor = None
    while True:
        params = {"elements": "Na", "order_by": order_by, "limit": 4, "count": "true"}
        body = ok(
            served.client.get(
                f"{API}/structures", params=params | ({"cursor": cursor} if cursor else {})
            )
        )
        page = served.db.query(elements=["Na"], order_by=order_by, limit=4, cursor=cursor)
        assert [r["id"] for r in body["records"]] == [r.id for r in page.records]
        assert body["next_cursor"] == page.next_cursor
        assert body["count"] == len(want) and body["limit"] == 4
        seen += [r["id"] for r in body["records"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == want and len(set(seen)) == len(seen)
    # a cursor belongs to its sort order
    first = ok(
        served.client.get(
            f"{API}/structures", params={"elements": "Na", "limit": 2, "order_by": order_by}
        )
    )
    other = "energy_per_atom" if order_by == "id" else "id"
    fails(
        served.client.get(
            f"{API}/structures",
            params={
                "elements": "Na",
                "limit": 2,
                "order_by": other,
                "cursor": first["next_cursor"],
            },
        ),
        400,
        "cursor",
    )


def _one(db, **filters):
    (rec,) = db.query(limit=2, **filters).records
    return rec


def test_record_detail(served):
    db, c = served.db, served.client
    nacl = _one(db, tags=["ground-state"])
    body = ok(c.get(f"{API}/structures/{nacl.id}"))
    for key in (
        "formula",
        "nsites",
        "energy",
        "energy_per_atom",
        "model",
        "submitter",
        "formation_energy_per_atom",
    ):
        assert body[key] == pytest.approx(getattr(nacl, key)), key
    lat = body["lattice"]
    assert [lat["a"], lat["b"], lat["c"]] == pytest.approx([NACL_A] * 3)
    assert [lat["alpha"], lat["beta"], lat["gamma"]] == pytest.approx([90] * 3)
    assert lat["volume"] == pytest.approx(NACL_A**3)
    assert len(body["sites"]) == 8
    assert sorted(s["species"] for s in body["sites"]) == ["Cl"] * 4 + ["Na"] * 4
    assert np.allclose([s["frac_coords"] for s in body["sites"]], nacl.frac_coords)
    sym = body["symmetry"]
    assert (sym["number"], sym["symbol"], sym["crystal_system"]) == (225, "Fm-3m", "cubic")
    assert {s["wyckoff"] for s in body["sites"]} == {"a", "b"}
    assert body["e_above_hull"] == pytest.approx(0, abs=1e-8)
    assert body["formation_energy_per_atom"] == pytest.approx(-1.85)
    assert set(body["downloads"]) == {"cif", "poscar", "extxyz", "json"}
    assert set(body["styles"]) == {"Na", "Cl"}
    assert all(s["color"].startswith("#") for s in body["styles"].values())

    cuau = _one(db, tags=["L10"])
    body = ok(c.get(f"{API}/structures/{cuau.id}"))
    assert body["e_above_hull"] == pytest.approx(CUAU_EHULL, abs=1e-6)
    assert body["symmetry"]["crystal_system"] == "tetragonal"
    parts = {p["id"]: p["fraction"] for p in body["decomposition"]}
    cu3au, au = _one(db, tags=["L12"]), _one(db, formula="Au")
    assert parts == pytest.approx({cu3au.id: 2 / 3, au.id: 1 / 3})

    si = _one(db, formula="Si")  # no energy: no hull, still a full record
    body = ok(c.get(f"{API}/structures/{si.id}"))
    assert body["energy"] is None and body["e_above_hull"] is None
    assert body["symmetry"]["number"] == 227

    fails(c.get(f"{API}/structures/999999"), 404, "999999")
    fails(c.get(f"{API}/structures/abc"), 422, "record_id")
    fails(c.get(f"{API}/structures/0"), 422, "record_id")


def _parse_download(fmt: str, text: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen's CIF reader warns about rounding
        if fmt == "cif":
            from pymatgen.io.cif import CifParser

            return CifParser(io.StringIO(text)).parse_structures(primitive=False)[0]
        if fmt == "poscar":
            from pymatgen.io.vasp import Poscar

            return Poscar.from_str(text).structure
        if fmt == "extxyz":
            from ase.io import read
            from pymatgen.io.ase import AseAtomsAdaptor

            return AseAtomsAdaptor.get_structure(read(io.StringIO(text), format="extxyz"))
    d = json.loads(text)["structure"]
    return Structure(d["lattice"], d["species"], d["frac_coords"])


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


@pytest.mark.parametrize("fmt", ["cif", "poscar", "extxyz", "json"])
def test_downloads_parse_back(served, fmt):
    db = served.db
    for rec in [
        _one(db, tags=["ground-state"]),
        _one(db, tags=["L10"]),
        _one(db, tags=["antifluorite"]),
        _one(db, formula="GaAs"),
    ]:
        r = served.client.get(f"{API}/structures/{rec.id}/file", params={"format": fmt})
        assert r.status_code == 200, r.text
        assert r.headers["content-disposition"].startswith("attachment; filename=")
        assert str(rec.id) in r.headers["content-disposition"]
        parsed = _parse_download(fmt, r.text)
        assert same_structure(parsed, rec.structure), (fmt, rec.formula)
        if fmt == "extxyz" and rec.energy is not None:
            from ase.io import read

            atoms = read(io.StringIO(r.text), format="extxyz")  # ASE moves it to .calc
            assert atoms.get_potential_energy() == rec.energy
    fails(
        served.client.get(f"{API}/structures/1/file", params={"format": "exe"}),
        422,
        "format",
        "cif",
    )


@pytest.mark.parametrize("chemsys", ["Cl-Na", "Na-Cl", "Au-Cu", "Li-O"])
def test_hull_matches_core(served, chemsys):
    body = ok(served.client.get(f"{API}/hull/{chemsys}"))
    core = served.db.hull(chemsys).to_dict()
    assert body["chemsys"] == core["chemsys"] == "-".join(sorted(chemsys.split("-")))
    assert body["model"] == "toy"
    by_id = {e["id"]: e for e in core["entries"]}
    assert {e["id"] for e in body["entries"]} == set(by_id)
    for e in body["entries"]:
        for key in ("energy_per_atom", "formation_energy_per_atom", "e_above_hull", "stable"):
            assert e[key] == pytest.approx(by_id[e["id"]][key]), key
    assert {e["id"] for e in body["stable"]} == {e["id"] for e in core["entries"] if e["stable"]}
    plot = body["plot"]
    assert plot["kind"] == "binary" and plot["axes"] == body["elements"]
    xs = [x for x, _ in plot["hull"]]
    assert xs == sorted(xs) and xs[0] == 0 and xs[-1] == 1


def test_hull_known_by_hand(served):
    db, c = served.db, served.client
    nacl = ok(c.get(f"{API}/hull/Cl-Na"))
    stable = {
        _one(db, formula="Na").id,
        _one(db, formula="Cl2").id,
        _one(db, tags=["ground-state"]).id,
    }
    assert {e["id"] for e in nacl["stable"]} == stable
    assert np.allclose(nacl["plot"]["hull"], [[0, 0], [0.5, -1.85], [1, 0]])
    cscl = _one(db, tags=["cscl"])
    (entry,) = [e for e in nacl["entries"] if e["id"] == cscl.id]
    assert entry["e_above_hull"] == pytest.approx(0.20)
    aucu = ok(c.get(f"{API}/hull/Au-Cu"))
    (entry,) = [e for e in aucu["entries"] if e["id"] == _one(db, tags=["L10"]).id]
    assert entry["e_above_hull"] == pytest.approx(CUAU_EHULL, abs=1e-6)
    # no elemental references, another model, a system without energies, bad input
    fails(c.get(f"{API}/hull/Br-K", params={"model": "other"}), 400, "no elemental reference")
    fails(c.get(f"{API}/hull/Cl-Na", params={"model": "nope"}), 400, "nope")
    fails(c.get(f"{API}/hull/Xx-Na"), 422, "chemsys", "Xx")
    fails(c.get(f"{API}/hull/Ga-As"), 400, "As-Ga")


# ---------------------------------------------------------------------------- hostile reads
#: (query string, status, words the message must contain)
BAD_SEARCHES = [
    ({"elements": "Xx"}, 422, ["elements", "'Xx'"]),
    ({"elements": "na"}, 422, ["elements", "did you mean Na"]),
    ({"only_elements": "Li,Qq"}, 422, ["only_elements", "Qq"]),
    ({"chemsys": "Na-Zz"}, 422, ["chemsys", "Zz"]),
    ({"formula": "Na;DROP"}, 422, ["formula", "not a chemical formula"]),
    ({"spacegroup": "999"}, 422, ["spacegroup", "1..230"]),
    ({"spacegroup": "x" * 40}, 422, ["spacegroup", "32 characters"]),
    ({"nsites_min": "abc"}, 422, ["nsites_min", "integer"]),
    ({"nsites_min": 9, "nsites_max": 3}, 422, ["nsites_min/nsites_max", "empty range"]),
    ({"e_min": 1, "e_max": 0}, 422, ["e_min/e_max", "empty range"]),
    ({"e_min": "nan"}, 422, ["e_min", "finite"]),
    ({"e_max": "inf"}, 422, ["e_max", "finite"]),
    ({"e_above_hull_max": -1}, 422, ["e_above_hull_max"]),
    ({"e_above_hull_max": "lots"}, 422, ["e_above_hull_max", "number"]),
    ({"submitted_from": "yesterday"}, 422, ["submitted_from", "ISO 8601"]),
    ({"submitted_from": "2025-01-02", "submitted_to": "2025-01-01"}, 422, ["submitted_from"]),
    ({"submitter": "a\x00b"}, 422, ["submitter", "control character"]),
    ({"submitter": "x" * 300}, 422, ["submitter", "255"]),
    ({"order_by": "password"}, 422, ["order_by", "energy_per_atom"]),
    ({"order_by": "id; DROP TABLE records"}, 422, ["order_by"]),
    ({"limit": 0}, 422, ["limit"]),
    ({"limit": "ten"}, 422, ["limit", "integer"]),
    ({"cursor": "garbage"}, 400, ["cursor", "not a cursor"]),
    ({"cursor": "A" * 3000}, 422, ["cursor", "2000"]),
    ({"count": "maybe"}, 422, ["count"]),
]


@pytest.mark.parametrize(
    "params,status,words", BAD_SEARCHES, ids=[str(p)[:40] for p, *_ in BAD_SEARCHES]
)
def test_bad_search_parameters(served, params, status, words):
    fails(served.client.get(f"{API}/structures", params=params), status, *words)


HOSTILE = [
    "alice' OR '1'='1",
    "x'; DROP TABLE records; --",
    '"; DELETE FROM records; --',
    "%",
    "_",
    "\\",
    "alice%",
    "') OR 1=1 UNION SELECT * FROM records --",
    "Robert'); DROP TABLE chemsystems;--",
]


def test_sql_metacharacters_are_plain_values(served):
    db, c = served.db, served.client
    before = db.count()
    for text in HOSTILE:
        for name in ("submitter", "model", "tags", "spacegroup"):
            r = c.get(f"{API}/structures", params={name: text, "count": "true"})
            if name == "spacegroup" and len(text) > 32:
                fails(r, 422, "spacegroup", "at most 32 characters")
                continue
            body = ok(r)
            assert body["records"] == [] and body["count"] == 0, (name, text)
    # nothing was damaged: the same records, every search still works
    assert db.count() == before == ok(c.get(f"{API}/health"))["records"]
    assert len(api_ids(c, {"chemsys": "Cl-Na"})) == N_NACL
    assert len(api_ids(c, {"submitter": "alice"})) == len(records_of(db, "alice"))
    # stored as given and found again by exactly that value
    item = {
        "lattice": [[2.87, 0, 0], [0, 2.87, 0], [0, 0, 2.87]],
        "species": ["Fe", "Fe"],
        "frac_coords": [[0, 0, 0], [0.5, 0.5, 0.5]],
        "energy": -16.5,
        "model": HOSTILE[1],
        "source": HOSTILE[2],
        "tags": HOSTILE[3:6],
    }
    added = ok(c.post(f"{API}/structures", json=item, headers={"X-API-Key": KEY}), 201)["added"]
    assert len(added) == 1
    rec = db.get(added[0])
    assert (rec.model, rec.source, sorted(rec.tags)) == (
        HOSTILE[1],
        HOSTILE[2],
        sorted(HOSTILE[3:6]),
    )
    assert api_ids(c, {"model": HOSTILE[1]}) == added
    assert api_ids(c, {"tags": ["%", "_"]}) == added
    assert api_ids(c, {"tags": "%%"}) == []
    assert db.count() == before + 1


def records_of(db, submitter: str) -> list[int]:
    return core_ids(db, submitter=submitter)


# ---------------------------------------------------------------------------- writing
def fe_ni(i: int, energy: float | None = None) -> dict:
    """A distinct Fe-Ni cell as a posted record."""
    a = 3.50 + 0.01 * i
    item = {
        "lattice": [[a, 0, 0], [0, a, 0], [0, 0, a]],
        "species": ["Fe", "Ni", "Ni", "Ni"],
        "frac_coords": [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        "model": "toy",
        "tags": ["posted"],
    }
    if energy is not None:
        item["energy"] = energy
    return item


def test_writes_need_a_valid_key(served):
    db, c = served.db, served.client
    before = db.count()
    r = c.post(f"{API}/structures", json=fe_ni(0))
    fails(r, 401, "X-API-Key")
    assert r.headers["www-authenticate"] == "X-API-Key"
    fails(
        c.post(f"{API}/structures", json=fe_ni(0), headers={"X-API-Key": "wrong"}),
        403,
        "not hold a valid key",
    )
    fails(c.post(f"{API}/structures", json=fe_ni(0), headers={"X-API-Key": KEY + "x"}), 403)
    fails(c.post(f"{API}/import", files={"file": ("a.cif", b"data_x\n")}), 401)
    fails(c.delete(f"{API}/structures/1"), 401)
    fails(c.delete(f"{API}/structures/1", headers={"X-API-Key": "wrong"}), 403)
    # a server started without keys refuses every write
    closed = create_app(db, keys_from_environment=False)
    with client_for(closed) as c2:
        fails(
            c2.post(f"{API}/structures", json=fe_ni(0), headers={"X-API-Key": KEY}),
            403,
            "without API keys",
        )
        assert ok(c2.get(API))["writes"] is False
    assert db.count() == before and db.get(1) is not None


def test_posted_records_land_in_the_database(served):
    db, c = served.db, served.client
    key = {"X-API-Key": KEY}
    body = ok(
        c.post(
            f"{API}/structures", json={"records": [fe_ni(1, -30.0), fe_ni(2, -29.0)]}, headers=key
        ),
        201,
    )
    assert body["submitter"] == "bob" and body["duplicates"] == 0 and body["rejected"] == []
    ids = body["added"]
    assert len(ids) == 2
    for rid, energy in zip(ids, (-30.0, -29.0)):
        rec = db.get(rid)
        assert (rec.submitter, rec.energy, rec.model, rec.formula) == (
            "bob",
            energy,
            "toy",
            "FeNi3",
        )
        assert rec.tags == ["posted"]
        assert ok(c.get(f"{API}/structures/{rid}"))["energy"] == energy
    assert api_ids(c, {"submitter": "bob", "chemsys": "Fe-Ni"}) == ids
    # posting the same again stores nothing new
    again = ok(
        c.post(f"{API}/structures", json=[fe_ni(1, -30.0), fe_ni(2, -29.0)], headers=key), 201
    )
    assert again["added"] == [] and again["duplicates"] == 2
    # a bare single record, the record JSON of GET /structures/{id}
    record_json = json.loads(c.get(f"{API}/structures/{ids[0]}/file?format=json").text)
    record_json["structure"]["lattice"][0][0] += 0.2  # a new structure
    record_json["energy"] = -28.0
    one = ok(c.post(f"{API}/structures", json=record_json, headers=key), 201)["added"]
    assert db.get(one[0]).lattice[0][0] == pytest.approx(3.71)
    # delete
    assert ok(c.delete(f"{API}/structures/{one[0]}", headers=key)) == {"deleted": one[0]}
    assert db.get(one[0]) is None
    fails(c.get(f"{API}/structures/{one[0]}"), 404)
    fails(c.delete(f"{API}/structures/{one[0]}", headers=key), 404)


def _cif(structure: Structure) -> bytes:
    from pymatgen.io.cif import CifWriter

    return str(CifWriter(structure)).encode()


def test_uploaded_files_land_in_the_database(served):
    from ase.io import write
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.vasp import Poscar

    db, c = served.db, served.client
    key = {"X-API-Key": KEY}
    fe = bcc("Fe", 2.87)
    body = ok(
        c.post(
            f"{API}/import",
            files={"file": ("fe.cif", _cif(fe), "chemical/x-cif")},
            data={"energy": "-16.6", "model": "toy", "tags": "upload,cif"},
            headers=key,
        ),
        201,
    )
    (rid,) = body["added"]
    rec = db.get(rid)
    assert same_structure(rec.structure, fe)
    assert (rec.energy, rec.model, rec.source, sorted(rec.tags)) == (
        -16.6,
        "toy",
        "fe.cif",
        ["cif", "upload"],
    )
    ni = fcc("Ni", 3.52)
    poscar = Poscar(ni).get_str().encode()
    (rid,) = ok(c.post(f"{API}/import", files={"file": ("POSCAR", poscar)}, headers=key), 201)[
        "added"
    ]
    assert same_structure(db.get(rid).structure, ni)
    frames = []
    for i in range(3):
        atoms = AseAtomsAdaptor.get_atoms(bcc("Fe", 2.80 + 0.02 * i))
        atoms.info["energy"] = -16.0 - i
        frames.append(atoms)
    buf = io.StringIO()
    write(buf, frames, format="extxyz")
    added = ok(
        c.post(
            f"{API}/import",
            files={"file": ("fe.extxyz", buf.getvalue().encode())},
            data={"model": "toy"},
            headers=key,
        ),
        201,
    )["added"]
    assert [db.get(i).energy for i in added] == [-16.0, -17.0, -18.0]


BAD_FILES = [
    ("bad.cif", b"data_x\n_cell_length_a 3\nloop_\n_atom_site_label\n", ["bad.cif"]),
    ("empty.cif", b"", ["empty.cif"]),
    ("words.cif", b"this is not a crystal\n" * 20, ["words.cif"]),
    (
        "atoms.cif",
        b"data_x\n_cell_length_a 3\n_cell_length_b 3\n_cell_length_c 3\n"
        b"_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
        b"loop_\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n"
        b"_atom_site_fract_z\nQq 0 0 0\n",
        ["atoms.cif"],
    ),
    ("bin.cif", b"\xff\xfe\x00\x01garbage", ["bin.cif", "UTF-8"]),
    ("POSCAR", b"Fe\n1.0\n1 0 0\n0 1 0\n", ["POSCAR"]),
    ("x.json", b"{not json", ["x.json", "JSON"]),
    ("x.exe", b"MZ", ["x.exe", "format"]),
]


@pytest.mark.parametrize("name,content,words", BAD_FILES, ids=[n for n, *_ in BAD_FILES])
def test_bad_files_are_refused(served, name, content, words):
    before = served.db.count()
    fails(
        served.client.post(
            f"{API}/import", files={"file": (name, content)}, headers={"X-API-Key": KEY}
        ),
        422,
        *words,
    )
    assert served.db.count() == before


GOOD = {"lattice": [[3, 0, 0], [0, 3, 0], [0, 0, 3]], "species": ["Co"], "frac_coords": [[0] * 3]}
#: (posted JSON, words of the 422 message)
BAD_RECORDS = [
    (GOOD | {"energy": "NaN"}, ["body.energy", "number"]),
    (GOOD | {"energy": True}, ["body.energy"]),
    (GOOD | {"species": ["Qq"]}, ["body.species[0]", "'Qq'"]),
    (GOOD | {"species": ["Co", "Co"]}, ["body.frac_coords", "2 rows"]),
    (GOOD | {"lattice": [[3, 0, 0], [0, 3, 0], [3, 3, 0]]}, ["body.lattice", "coplanar"]),
    (GOOD | {"lattice": [[3, 0], [0, 3, 0], [0, 0, 3]]}, ["body.lattice[0]", "3 numbers"]),
    (GOOD | {"frac_coords": [["a", 0, 0]]}, ["body.frac_coords[0][0]", "number"]),
    (GOOD | {"species": ["Co", "Co"], "frac_coords": [[0, 0, 0], [0, 0, 0.0001]]}, ["overlapping"]),
    (GOOD | {"tags": "one"}, ["body.tags", "list of strings"]),
    (GOOD | {"model": 5}, ["body.model", "string"]),
    (GOOD | {"model": "a\x00b"}, ["body.model", "control character"]),
    ({"lattice": GOOD["lattice"]}, ["body", "expected 'structure'"]),
    ({"records": [GOOD, GOOD | {"species": ["Xx"]}]}, ["records[1].species[0]", "Xx"]),
    ({"structure": "{oops"}, ["body.structure", "not valid JSON"]),
    ({"structure": {"lattice": GOOD["lattice"], "sites": []}}, ["body.structure.sites"]),
    ([], ["body", "non-empty"]),
    ("just text", ["body", "JSON object"]),
]


@pytest.mark.parametrize("item,words", BAD_RECORDS, ids=[str(i)[:50] for i, _ in BAD_RECORDS])
def test_bad_records_are_refused(served, item, words):
    before = served.db.count()
    fails(
        served.client.post(f"{API}/structures", json=item, headers={"X-API-Key": KEY}), 422, *words
    )
    assert served.db.count() == before


def test_invalid_json_body(served):
    r = served.client.post(
        f"{API}/structures",
        content=b"{not json",
        headers={"X-API-Key": KEY, "Content-Type": "application/json"},
    )
    fails(r, 422, "body", "not valid JSON")


def test_oversized_requests_get_413(served):
    db = served.db
    app = create_app(
        db,
        api_keys=[f"bob:{KEY}"],
        keys_from_environment=False,
        max_body_bytes=20_000,
        max_atoms=50,
        max_records_per_post=3,
    )
    key = {"X-API-Key": KEY}
    before = db.count()
    with client_for(app) as c:
        big = {"records": [GOOD | {"source": "x" * 30_000}]}
        fails(c.post(f"{API}/structures", json=big, headers=key), 413, "20000 bytes")
        fails(c.post(f"{API}/structures", json=big), 413)  # refused before the key is read

        def chunks():  # no Content-Length: cut off while streaming
            for _ in range(10):
                yield b" " * 5000

        fails(
            c.post(
                f"{API}/structures",
                content=chunks(),
                headers=key | {"Content-Type": "application/json"},
            ),
            413,
            "20000 bytes",
        )
        fails(c.post(f"{API}/import", files={"file": ("big.cif", b"#" * 30_000)}, headers=key), 413)
        fails(
            c.post(f"{API}/structures", json=[GOOD] * 4, headers=key), 413, "4 records", "at most 3"
        )
        n = 60
        many = {
            "lattice": [[30, 0, 0], [0, 30, 0], [0, 0, 30]],
            "species": ["Co"] * n,
            "frac_coords": [[i / n, 0, 0] for i in range(n)],
        }
        fails(c.post(f"{API}/structures", json=many, headers=key), 413, "60 atoms", "at most 50")
        # within the limits all is well
        assert ok(c.get(f"{API}/structures", params={"limit": 100000}))["limit"] == 500
    assert db.count() == before


# ---------------------------------------------------------------------------- concurrency
def test_concurrent_readers_and_a_writer(served):
    """A real server (uvicorn) with four reading threads and one writing thread: every read
    answers 200 with a consistent page, and every write lands."""
    import httpx

    db = served.db
    app = create_app(db, api_keys=[f"bob:{KEY}"], keys_from_environment=False)
    n_writes = 12
    errors: list[str] = []
    done = threading.Event()
    nacl_ids = core_ids(db, chemsys="Cl-Na")
    hull_stable = {e["id"] for e in db.hull("Cl-Na").to_dict()["entries"] if e["stable"]}

    def writer(base: str) -> None:
        try:
            with httpx.Client(base_url=base, timeout=60) as h:
                for i in range(n_writes):
                    a = 2.40 + 0.01 * i
                    item = {
                        "lattice": [[a, 0, 0], [0, a, 0], [0, 0, a]],
                        "species": ["Co"],
                        "frac_coords": [[0, 0, 0]],
                        "energy": -7.0 - 0.01 * i,
                        "model": "conc",
                    }
                    r = h.post(f"{API}/structures", json=item, headers={"X-API-Key": KEY})
                    if r.status_code != 201 or len(r.json()["added"]) != 1:
                        errors.append(f"write {i}: {r.status_code} {r.text[:200]}")
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"writer: {exc!r}")
        finally:
            done.set()

    def reader(base: str, k: int) -> None:
        last = 0
        rounds = 0
        try:
            with httpx.Client(base_url=base, timeout=60) as h:
                while not done.is_set() or rounds < 2:
                    rounds += 1
                    seen, cursor = [], None
                    while True:  # walk the growing Co set page by page
                        params = {"model": "conc", "limit": 3, "order_by": "energy_per_atom"}
                        r = h.get(
                            f"{API}/structures",
                            params=params | ({"cursor": cursor} if cursor else {}),
                        )
                        if r.status_code != 200:
                            errors.append(f"reader {k}: {r.status_code} {r.text[:200]}")
                            return
                        body = r.json()
                        seen += [x["id"] for x in body["records"]]
                        if any(x["chemsys"] != "Co" for x in body["records"]):
                            errors.append(f"reader {k}: a non-Co record in {body['records']}")
                        cursor = body["next_cursor"]
                        if cursor is None:
                            break
                    if len(seen) != len(set(seen)):
                        errors.append(f"reader {k}: a record twice in one walk: {seen}")
                    if len(seen) < last:
                        errors.append(f"reader {k}: records went missing ({last} -> {seen})")
                    last = len(seen)
                    got = [
                        x["id"]
                        for x in h.get(
                            f"{API}/structures", params={"chemsys": "Cl-Na", "limit": 100}
                        ).json()["records"]
                    ]
                    if got != nacl_ids:
                        errors.append(f"reader {k}: Cl-Na changed: {got}")
                    hull = h.get(f"{API}/hull/Cl-Na").json()
                    if {e["id"] for e in hull["stable"]} != hull_stable:
                        errors.append(f"reader {k}: Cl-Na hull changed")
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(f"reader {k}: {exc!r}")

    with running_server(app) as base:
        threads = [threading.Thread(target=reader, args=(base, k)) for k in range(4)]
        threads.append(threading.Thread(target=writer, args=(base,)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "a client thread hung"
        assert not errors, "\n".join(errors[:10])
        with httpx.Client(base_url=base) as h:
            body = h.get(f"{API}/structures", params={"model": "conc", "count": "true"}).json()
    assert body["count"] == n_writes == db.count(model="conc")
    # the writes updated the Co hull as they landed: the lowest energy is the reference
    rows = db.query(model="conc", order_by="energy_per_atom", limit=100).records
    assert rows[0].e_above_hull == pytest.approx(0, abs=1e-9)
    assert rows[-1].e_above_hull == pytest.approx(0.01 * (n_writes - 1), abs=1e-9)
    assert math.isclose(rows[-1].energy, -7.0)
