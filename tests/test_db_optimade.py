"""The OPTIMADE endpoints of the service: every endpoint validated by the `optimade` package's
pydantic models, paging by ``links.next``, sorting, response fields, errors in OPTIMADE's form;
the full ``optimade-validator`` run against a live server with zero failures; and
``lam db import-optimade`` pulling from that server; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

pytest.importorskip("optimade", reason="the OPTIMADE models and validator come from `optimade`")

from optimade.models import (  # noqa: E402
    EntryInfoResponse,
    ErrorResponse,
    InfoResponse,
    LinksResponse,
    StructureResponseMany,
    StructureResponseOne,
)

from lamkit.cli.main import main  # noqa: E402
from lamkit.db import CrystalDB, synthetic  # noqa: E402
from lamkit.db.service import create_app  # noqa: E402
from tests.db_data import client_for, database_url, running_server  # noqa: E402
from tests.db_fixtures import BACKENDS, crystal_db  # noqa: E402

V1 = "/optimade/v1"
T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)


def _items() -> list[dict]:
    out = []
    for i, d in enumerate(
        synthetic.generate(30, seed=11, elements=("Na", "Cl", "Fe", "O", "Cu"), strain=0.01)
    ):
        d["submitted"] = (T0 + timedelta(minutes=13 * i)).isoformat()
        d["model"] = "m1" if i % 3 else "m2"
        if i % 5 == 0:
            d.pop("energy")
        out.append(d)
    return out


@pytest.fixture(scope="module", params=BACKENDS)
def served(request):
    with crystal_db(request.param) as db:
        rep = db.import_records(_items(), batch_size=50)
        assert rep.added == 30, rep.summary()
        yield db, client_for(create_app(db, keys_from_environment=False))


def _ok(client, path: str, model) -> dict:
    r = client.get(path)
    assert r.status_code == 200, (path, r.text[:500])
    body = r.json()
    model(**body)  # raises if the response breaks the OPTIMADE schema
    return body


def test_info_endpoints(served):
    _, c = served
    info = _ok(c, f"{V1}/info", InfoResponse)["data"]["attributes"]
    assert info["entry_types_by_format"] == {"json": ["structures"]}
    assert info["available_api_versions"][0]["url"].endswith("/optimade/v1")
    props = _ok(c, f"{V1}/info/structures", EntryInfoResponse)["data"]["properties"]
    must_and_should = {
        "elements", "nelements", "elements_ratios", "chemical_formula_reduced",
        "chemical_formula_descriptive", "chemical_formula_anonymous", "nperiodic_dimensions",
        "dimension_types", "lattice_vectors", "cartesian_site_positions", "nsites", "species",
        "species_at_sites", "structure_features", "last_modified", "immutable_id", "id", "type",
    }  # fmt: skip
    assert must_and_should <= set(props)
    for name in ("energy_per_atom", "formation_energy_per_atom", "e_above_hull", "model"):
        assert f"_lamkit_{name}" in props
    assert props["_lamkit_spacegroup_number"]["type"] == "integer"
    _ok(c, f"{V1}/links", LinksResponse)


def test_versions_and_unknown_versions(served):
    _, c = served
    r = c.get("/optimade/versions")
    assert r.status_code == 200 and r.text.split() == ["version", "1"]
    assert r.headers["content-type"].startswith("text/csv")
    for path in ("/optimade/v2/info", "/optimade/v123123/structures", "/optimade/v0.9/info"):
        r = c.get(path)
        assert r.status_code == 553, path
        ErrorResponse(**r.json())
    for path in (f"{V1}/versions", f"{V1}/references", f"{V1}/structures/lam-999999"):
        r = c.get(path)
        assert r.status_code == 404, path
        assert r.json()["errors"][0]["status"] == "404"


def test_structures_match_records(served):
    """Every served attribute equals what the record holds."""
    db, c = served
    body = _ok(c, f"{V1}/structures?page_limit=100", StructureResponseMany)
    assert body["meta"]["data_returned"] == body["meta"]["data_available"] == 30
    assert len(body["data"]) == 30 and body["links"]["next"] is None
    for entry in body["data"]:
        rec = db.get(entry["id"])
        a = entry["attributes"]
        assert a["species_at_sites"] == rec.species
        assert a["elements"] == sorted(set(rec.species)) == rec.elements
        np.testing.assert_array_equal(a["lattice_vectors"], rec.lattice)
        np.testing.assert_allclose(
            a["cartesian_site_positions"], rec.frac_coords @ rec.lattice, rtol=0, atol=1e-12
        )
        ratios = [rec.species.count(e) / rec.nsites for e in rec.elements]
        assert a["elements_ratios"] == pytest.approx(ratios)
        from pymatgen.core import Composition

        assert Composition(a["chemical_formula_reduced"]).reduced_formula == rec.formula
        assert a["_lamkit_energy_per_atom"] == rec.energy_per_atom
        assert a["_lamkit_e_above_hull"] == rec.e_above_hull
        assert a["_lamkit_model"] == rec.model
        assert a["immutable_id"] == rec.content_hash
        assert datetime.fromisoformat(a["last_modified"].replace("Z", "+00:00")) == rec.submitted
        one = _ok(c, f"{V1}/structures/{entry['id']}", StructureResponseOne)
        assert one["data"] == entry


@pytest.mark.parametrize("sort", ["", "nsites", "-_lamkit_energy_per_atom", "-last_modified"])
def test_paging_by_next_links(served, sort):
    """Following links.next visits every match exactly once, in the asked order."""
    db, c = served
    url = f"{V1}/structures?page_limit=4&filter=nsites>=1" + (f"&sort={sort}" if sort else "")
    seen, pages = [], 0
    while url:
        body = _ok(c, url, StructureResponseMany)
        assert len(body["data"]) <= 4
        assert body["meta"]["more_data_available"] == (body["links"]["next"] is not None)
        seen += [(e["id"], e["attributes"]) for e in body["data"]]
        url, pages = body["links"]["next"], pages + 1
        if url:  # sorted pages by offset, the default order by an id cursor
            assert ("page_offset=" in url, "page_cursor=" in url) == (bool(sort), not sort)
        if body["meta"].get("data_returned") is not None:
            assert body["meta"]["data_returned"] == 30
    assert pages == 8 and len({i for i, _ in seen}) == 30
    if sort:
        key = sort.lstrip("-")
        values = [a[key] for _, a in seen if a[key] is not None]
        assert values == sorted(values, reverse=sort.startswith("-"))
        assert all(a[key] is None for _, a in seen[len(values) :])  # unknowns last


def test_large_counts_are_left_out(served, monkeypatch):
    """Above COUNT_CAP matches ``data_returned`` is left out (counting would cost a scan);
    below it, it is exact, also on later pages."""
    from lamkit.db.optimade import routes

    db, c = served
    monkeypatch.setattr(routes, "COUNT_CAP", 5)
    body = _ok(c, f"{V1}/structures?page_limit=2", StructureResponseMany)
    assert "data_returned" not in body["meta"] and body["meta"]["more_data_available"]
    n = db.count(elements=["Fe", "O"])
    assert 2 < n <= 5
    flt = 'filter=elements HAS ALL "Fe","O"'
    for query in (f"page_limit=2&{flt}", f"page_limit=2&page_offset=2&{flt}"):
        body = _ok(c, f"{V1}/structures?{query}", StructureResponseMany)
        assert body["meta"]["data_returned"] == n


def test_response_fields(served):
    _, c = served
    body = _ok(
        c, f"{V1}/structures?response_fields=nsites,_lamkit_model,_other_x", StructureResponseMany
    )
    assert all(set(e["attributes"]) == {"nsites", "_lamkit_model"} for e in body["data"])
    assert "_other_x" in body["meta"]["warnings"][0]["detail"]


@pytest.mark.parametrize(
    "query,status",
    [
        ("filter=nsites HAS 1", 501),
        ("filter=crazyfield = 1", 400),
        ("filter=nsites >", 400),
        ('filter=nsites = "x"', 400),
        ("page_limit=0", 400),
        ("page_limit=abc", 400),
        ("page_limit=100000", 403),
        ("page_offset=-1", 400),
        ("sort=elements", 400),
        ("sort=nope", 400),
        ("response_fields=nope", 400),
        ("response_format=xml", 400),
        ("page_cursor=abc", 400),
        ("page_cursor=id3&sort=nsites", 400),
        ("page_cursor=id3&page_offset=2", 400),
    ],
)
def test_errors_in_optimade_form(served, query, status):
    _, c = served
    r = c.get(f"{V1}/structures?{query}")
    assert r.status_code == status, r.text[:300]
    body = r.json()
    ErrorResponse(**body)
    assert body["errors"][0]["status"] == str(status) and body["errors"][0]["detail"]


JUNK = ['"', "((((", "NOT", "nsites = 1e999999", "elements HAS ALL", 'id > "\\"', "a.b.c = 1",
        "nsites=1 OR " * 200 + "nsites=2", '_lamkit_model CONTAINS "%_"', "\u00e9 = 1"]  # fmt: skip


@pytest.mark.parametrize("text", JUNK)
def test_junk_filters_never_500(served, text):
    _, c = served
    r = c.get(f"{V1}/structures", params={"filter": text})
    assert r.status_code in (200, 400, 501), (text, r.status_code, r.text[:300])
    if r.status_code != 200:
        ErrorResponse(**r.json())


_PROPS = ["nsites", "nelements", "elements", "species_at_sites", "chemical_formula_reduced",
          "chemical_formula_anonymous", "chemical_formula_descriptive", "id", "immutable_id",
          "last_modified", "_lamkit_energy_per_atom", "_lamkit_model", "structure_features",
          "_lamkit_spacegroup_number", "dimension_types", "lattice_vectors", "species", "type",
          "nperiodic_dimensions", "elements_ratios", "_other_x", "crazy", "chemical_formula_hill",
          "a.b"]  # fmt: skip
_VALUES = ["1", "-3", "2.5", "1e999", "-1e-999", "99999999999999999999999", '"Fe"', '"O"',
           '"ClNa"', '"lam-1"', '"2024-03-01T00:00:00Z"', '"0001-01-01T00:00:00+14:00"',
           '"\\""', '"%_"', '""', '"\u00e9"', "nsites", "TRUE"]  # fmt: skip
_OPS = ["=", "!=", "<", "<=", ">", ">="]


def _comparison(rng) -> str:
    p, v, op = rng.choice(_PROPS), rng.choice(_VALUES), rng.choice(_OPS)
    vs = ",".join(rng.choice(_VALUES) for _ in range(rng.randint(1, 3)))
    return rng.choice(
        [
            f"{p} {op} {v}",
            f"{v} {op} {p}",
            f"{p} {rng.choice(['CONTAINS', 'STARTS WITH', 'STARTS', 'ENDS WITH', 'ENDS'])} {v}",
            f"{p} HAS {v}",
            f"{p} HAS {rng.choice(['ALL', 'ANY', 'ONLY'])} {vs}",
            f"{p} HAS {op} {v}",
            f"{p} LENGTH {rng.choice(_OPS + [''])} {rng.choice(['0', '2', '-1', '10' * 12])}",
            f"{p} IS {rng.choice(['KNOWN', 'UNKNOWN'])}",
        ]
    )


def _expression(rng, depth: int = 0) -> str:
    if depth >= 3 or rng.random() < 0.4:
        text = _comparison(rng)
    else:
        join = rng.choice([" AND ", " OR "])
        text = join.join(_expression(rng, depth + 1) for _ in range(rng.randint(2, 3)))
        text = f"({text})" if rng.random() < 0.5 else text
    return f"NOT {text}" if rng.random() < 0.2 else text


def test_generated_filters_never_500(served):
    """300 generated filters (every operator on every kind of property, unknown properties,
    hostile values, nesting, and truncated ones): 200, 400 or 501, never 500, and every answer
    in OPTIMADE's form."""
    import random

    _, c = served
    rng = random.Random(18)
    statuses = {}
    for i in range(300):
        text = _expression(rng)
        if i % 7 == 0:
            text = text[: rng.randint(1, len(text))]
        r = c.get(f"{V1}/structures", params={"filter": text, "page_limit": 3})
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code in (200, 400, 501), (text, r.status_code, r.text[:300])
        (StructureResponseMany if r.status_code == 200 else ErrorResponse)(**r.json())
    assert all(statuses.get(code, 0) >= 20 for code in (200, 400, 501)), statuses


def test_deep_and_long_filters(served):
    _, c = served
    deep = "(" * 400 + "nsites=1" + ")" * 400
    r = c.get(f"{V1}/structures", params={"filter": deep})
    assert r.status_code in (200, 400), r.text[:300]
    r = c.get(f"{V1}/structures", params={"filter": "nsites=1 OR " * 1000 + "nsites=2"})
    assert r.status_code == 400 and "at most 10000" in r.json()["errors"][0]["detail"]


def test_filters_equal_crystaldb_query(served):
    """The HTTP answers equal CrystalDB.query for filters it can say in both languages."""
    db, c = served
    table = [
        ('elements HAS ALL "Fe","O"', {"elements": ["Fe", "O"]}),
        ('elements HAS ONLY "Na","Cl"', {"only_elements": ["Na", "Cl"]}),
        ("nsites <= 2", {"nsites": (None, 2)}),
        ('_lamkit_model = "m2" AND _lamkit_e_above_hull <= 0.01',
         {"model": "m2", "e_above_hull_max": 0.01}),
    ]  # fmt: skip
    for text, kwargs in table:
        body = _ok(c, f"{V1}/structures?page_limit=100&filter={text}", StructureResponseMany)
        want = {r.public_id for r in db.iter_query(**kwargs)}
        assert want and {e["id"] for e in body["data"]} == want, text


@pytest.mark.parametrize("kind,base", [("sqlite", V1), ("postgresql", V1), ("sqlite", "/optimade")])
def test_optimade_validator_full_run(kind, base):
    """The `optimade-validator` shipped with the optimade package, full run (not --minimal),
    against a live server, at the versioned and the unversioned base URL: zero failures,
    zero internal errors."""
    exe = shutil.which("optimade-validator")
    if exe is None:
        pytest.skip("optimade-validator is not on PATH")
    with crystal_db(kind) as db:
        db.import_records(_items(), batch_size=50)
        with running_server(create_app(db, keys_from_environment=False)) as url:
            r = subprocess.run(
                [exe, f"{url}{base}", "--json", "--random-seed", "0"],
                capture_output=True,
                text=True,
                timeout=120,
            )
    summary = json.loads(r.stdout)
    assert summary["failure_count"] == 0, summary.get("failure_messages")
    assert summary["internal_failure_count"] == 0, summary.get("internal_failure_messages")
    assert summary["success_count"] >= 40
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("kind", BACKENDS)
def test_optimade_client_equals_crystaldb_query(kind):
    """The `optimade` package's own client, over a live server, returns the records
    CrystalDB.query returns for the same filters (all pages: page_limit 4 forces several).
    The client (`optimade[http-client]`) pulls `httpx2`, which changes Starlette's TestClient
    for every other test, so it lives in its own environment (.ci/optimade-client.sh) and runs
    as its `optimade-get` command; in-process where that environment is this one."""
    import importlib.util

    get = os.environ.get("LAMKIT_OPTIMADE_GET")
    OptimadeClient = None
    if importlib.util.find_spec("httpx2") is not None:
        from optimade.client import OptimadeClient
    if OptimadeClient is None and get is None:
        pytest.skip("no OptimadeClient: `source .ci/optimade-client.sh` (a separate venv with "
                    "optimade[http-client]) sets LAMKIT_OPTIMADE_GET")

    def fetch(url: str, text: str) -> dict:
        if OptimadeClient is not None:
            client = OptimadeClient(base_urls=[url], use_async=False, silent=True)
            return client.get(filter=text)["structures"][text][url]
        r = subprocess.run([get, "--silent", "--no-async", "--filter", text, url],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout)["structures"][text][url]

    table = [
        ('elements HAS ALL "Fe","O"', {"elements": ["Fe", "O"]}),
        ('elements HAS ONLY "Na","Cl"', {"only_elements": ["Na", "Cl"]}),
        ('nsites <= 2 AND _lamkit_model = "m1"', {"nsites": (None, 2), "model": "m1"}),
        ("_lamkit_e_above_hull <= 0.01", {"e_above_hull_max": 0.01}),
    ]
    with crystal_db(kind) as db:
        db.import_records(_items(), batch_size=50)
        app = create_app(db, keys_from_environment=False, max_limit=4)
        with running_server(app) as url:
            for text, kwargs in table:
                got = fetch(f"{url}/optimade", text)
                want = {r.public_id for r in db.iter_query(**kwargs)}
                assert not got["errors"] and want, (text, got["errors"])
                assert {e["id"] for e in got["data"]} == want, text


@pytest.mark.parametrize("kind", BACKENDS)
def test_import_optimade_round_trip(kind, capsys):
    """`lam db import-optimade` pulls from our own server into a second database: the same
    structures bit for bit, energies and models; a second pull adds nothing."""
    with crystal_db(kind) as src, database_url("sqlite") as dest_url:
        src.import_records(_items(), batch_size=50)
        originals = {r.public_id: r for r in src.iter_query() if "O" in r.elements or r.nsites == 1}
        with running_server(create_app(src, keys_from_environment=False)) as url:
            args = ["db", "--db", dest_url, "import-optimade", f"{url}{V1}"]
            args += ["--filter", 'elements HAS "O" OR nsites = 1']
            capsys.readouterr()
            assert main([*args, "--page-limit", "3"]) == 0
            out = capsys.readouterr().out
            assert main(args) == 0  # again: everything is already stored
            again = capsys.readouterr().out
        with CrystalDB(dest_url) as dest:
            copies = list(dest.iter_query())
    n = len(originals)
    assert n > 5 and len(copies) == n
    assert f"{n} structures fetched in {-(-n // 3)} pages" in out and f"{n} added" in out
    assert f"0 added, {n} duplicates" in again
    for copy in copies:
        orig = originals[copy.source.rsplit("/", 1)[-1]]
        assert copy.species == orig.species
        np.testing.assert_array_equal(copy.lattice, orig.lattice)
        np.testing.assert_allclose(copy.frac_coords, orig.frac_coords, rtol=0, atol=1e-12)
        assert copy.energy == orig.energy and copy.model == orig.model


def test_import_optimade_max_and_errors(capsys, tmp_path):
    with crystal_db("sqlite") as src:
        src.import_records(_items(), batch_size=50)
        with running_server(create_app(src, keys_from_environment=False)) as url:
            dest = f"sqlite:///{tmp_path}/d.db"
            assert main(["db", "--db", dest, "import-optimade", f"{url}/optimade", "--max", "7",
                         "--page-limit", "5"]) == 0  # fmt: skip
            with CrystalDB(dest) as d:
                assert d.count() == 7
            code = main(["db", "--db", dest, "import-optimade", f"{url}/optimade/v1",
                         "--filter", "crazyfield = 1"])  # fmt: skip
            err = capsys.readouterr().err
            assert code == 2 and "400" in err and "crazyfield" in err
            assert "Traceback" not in err


def test_openapi_documents_optimade(served):
    """The OpenAPI document lists the OPTIMADE endpoints with every status they answer, and
    adding them renamed none of the service's own schemas."""
    _, c = served
    spec = c.get("/openapi.json").json()
    paths = spec["paths"]
    assert set(paths[f"{V1}/structures"]["get"]["responses"]) >= {"200", "400", "403", "501"}
    assert set(paths[f"{V1}/structures/{{entry_id}}"]["get"]["responses"]) >= {"200", "404"}
    for p in ("/optimade/versions", f"{V1}/info", f"{V1}/info/structures", f"{V1}/links"):
        assert "get" in paths[p], p
    assert "text/csv" in paths["/optimade/versions"]["get"]["responses"]["200"]["content"]
    assert not [n for n in spec["components"]["schemas"] if "__" in n]
    assert c.options(f"{V1}/structures").headers["allow"] == "GET, OPTIONS"


def test_entry_conversion_and_skips():
    """An OPTIMADE entry from any provider becomes lattice, species and fractional
    coordinates; what lamkit cannot store is refused with the reason."""
    from lamkit.db.optimade.importer import entry_item, structures_url

    lat = [[4.0, 0.0, 0.0], [0.5, 4.0, 0.0], [0.0, 0.3, 5.0]]
    frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.25, 0.75]])
    attrs = {
        "lattice_vectors": lat,
        "cartesian_site_positions": (frac @ np.array(lat)).tolist(),
        "species_at_sites": ["Ga1", "N"],
        "species": [
            {"name": "Ga1", "chemical_symbols": ["Ga"], "concentration": [1.0]},
            {"name": "N", "chemical_symbols": ["N"], "concentration": [1.0]},
        ],
        "nperiodic_dimensions": 3,
        "_prov_energy": -12.5,
    }
    item = entry_item({"id": "x1", "attributes": attrs}, "src", "_prov_energy", "pbe")
    assert item["structure"]["species"] == ["Ga", "N"]
    np.testing.assert_allclose(item["structure"]["frac_coords"], frac, atol=1e-14)
    assert (item["energy"], item["model"], item["source"]) == (-12.5, "pbe", "src")
    bad = [
        ({"nperiodic_dimensions": 2}, "not periodic"),
        ({"lattice_vectors": None}, "missing"),
        (
            {
                "species": [
                    {"name": "Ga1", "chemical_symbols": ["Ga", "Al"], "concentration": [0.5, 0.5]}
                ]
            },
            "disordered",
        ),  # fmt: skip
        ({"species_at_sites": ["X", "N"], "species": []}, "not chemical elements"),
        ({"lattice_vectors": [[1, 0, 0], [2, 0, 0], [0, 0, 1]]}, "degenerate"),
    ]
    for change, reason in bad:
        with pytest.raises(ValueError, match=reason):
            entry_item({"id": "x", "attributes": {**attrs, **change}}, "src")
    assert structures_url("https://h/optimade/") == "https://h/optimade/v1/structures"
    assert structures_url("https://h/optimade/v1.2") == "https://h/optimade/v1.2/structures"
    assert structures_url("http://h/o/v1/structures") == "http://h/o/v1/structures"


def test_import_optimade_unreachable(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["db", "--db", str(tmp_path / "d.db"), "import-optimade",
                 f"http://127.0.0.1:{port}/optimade/v1", "--timeout", "5"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "import-optimade" in err and "Connect" in err
    assert "Traceback" not in err
