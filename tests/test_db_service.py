"""The crystal database's HTTP service, reading: every search filter, keyset pages, records,
downloads and hulls against the Python API (``CrystalDB.query``, ``hull``, ``get``) and values
known by hand (tests/db_data.py); malformed parameters get a 4xx naming them, SQL
metacharacters are plain values. On SQLite and on PostgreSQL (same tests, both backends).
"""

from __future__ import annotations

import io
import json
import warnings
from datetime import datetime, timezone

import numpy as np
import pytest
from pymatgen.core import Structure

from .db_data import (
    API,
    CUAU_EHULL,
    KEY,
    KINDS,
    N_NACL,
    N_ROCKSALT_VARIANTS,
    NACL_A,
    api_ids,
    core_ids,
    fails,
    ok,
    one,
    same_structure,
    serving,
)


@pytest.fixture(scope="module", params=KINDS)
def served(request):
    with serving(request.param) as s:
        yield s


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


def test_record_detail(served):
    db, c = served.db, served.client
    nacl = one(db, tags=["ground-state"])
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

    cuau = one(db, tags=["L10"])
    body = ok(c.get(f"{API}/structures/{cuau.id}"))
    assert body["e_above_hull"] == pytest.approx(CUAU_EHULL, abs=1e-6)
    assert body["symmetry"]["crystal_system"] == "tetragonal"
    parts = {p["id"]: p["fraction"] for p in body["decomposition"]}
    cu3au, au = one(db, tags=["L12"]), one(db, formula="Au")
    assert parts == pytest.approx({cu3au.id: 2 / 3, au.id: 1 / 3})

    si = one(db, formula="Si")  # no energy: no hull, still a full record
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


@pytest.mark.parametrize("fmt", ["cif", "poscar", "extxyz", "json"])
def test_downloads_parse_back(served, fmt):
    db = served.db
    for rec in [
        one(db, tags=["ground-state"]),
        one(db, tags=["L10"]),
        one(db, tags=["antifluorite"]),
        one(db, formula="GaAs"),
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
        one(db, formula="Na").id,
        one(db, formula="Cl2").id,
        one(db, tags=["ground-state"]).id,
    }
    assert {e["id"] for e in nacl["stable"]} == stable
    assert np.allclose(nacl["plot"]["hull"], [[0, 0], [0.5, -1.85], [1, 0]])
    cscl = one(db, tags=["cscl"])
    (entry,) = [e for e in nacl["entries"] if e["id"] == cscl.id]
    assert entry["e_above_hull"] == pytest.approx(0.20)
    aucu = ok(c.get(f"{API}/hull/Au-Cu"))
    (entry,) = [e for e in aucu["entries"] if e["id"] == one(db, tags=["L10"]).id]
    assert entry["e_above_hull"] == pytest.approx(CUAU_EHULL, abs=1e-6)
    # energies without elemental references: 400, naming what is missing
    fails(c.get(f"{API}/hull/Br-K", params={"model": "other"}), 400, "no elemental reference")
    fails(c.get(f"{API}/hull/Br-K"), 400, "no elemental reference")
    fails(c.get(f"{API}/hull/Mg-O"), 400, "no elemental reference", "Mg")  # MgO has none
    fails(c.get(f"{API}/hull/Xx-Na"), 422, "chemsys", "Xx")


@pytest.mark.parametrize(
    "chemsys,model,words",
    [
        ("Ga-As", None, ["hull As-Ga", "no energies are stored for As-Ga or its subsystems"]),
        ("As-Ga", None, ["nothing to build a hull of"]),
        ("Si", None, ["hull Si", "no energies"]),
        ("Pt-Zr", None, ["hull Pt-Zr", "no energies"]),  # nothing stored at all
        ("Cl-Na", "nope", ["no energies of model 'nope'", "other models are stored"]),
        ("As-Ga", "toy", ["no energies of model 'toy'", "As-Ga"]),
    ],
)
def test_hull_without_energies_is_404(served, chemsys, model, words):
    """No stored energies (of the model) in the system or its subsystems: no hull, 404."""
    params = {"model": model} if model else {}
    detail = fails(served.client.get(f"{API}/hull/{chemsys}", params=params), 404, *words)
    if model == "toy":
        assert "other models" not in detail


def test_stats_count_records_without_model_apart(served):
    db = served.db
    rows = db.query(limit=1000).records
    body = ok(served.client.get(f"{API}/stats"))
    assert body["records"] == db.count() == len(rows)
    by_model: dict[str, int] = {}
    for r in rows:
        if r.model is not None:
            by_model[r.model] = by_model.get(r.model, 0) + 1
    assert body["by_model"] == by_model
    assert "None" not in body["by_model"] and "null" not in body["by_model"]
    # Si, GaAs and MgO carry no energy and no model (plus what writing tests added)
    assert body["without_model"] == sum(r.model is None for r in rows) >= 3
    assert body["without_submitter"] == sum(r.submitter is None for r in rows)
    assert sum(body["by_model"].values()) + body["without_model"] == body["records"]
    assert sum(body["by_submitter"].values()) + body["without_submitter"] == body["records"]


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
    ({"nsites_max": 10**30}, 422, ["nsites_max", "1000000"]),
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
            if name == "spacegroup":  # not a symbol of any space group: said so
                fails(r, 400, "spacegroup: unknown Hermann-Mauguin symbol")
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
