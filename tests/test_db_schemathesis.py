"""Schemathesis over the whole crystal-database API (``/api/v1`` and ``/optimade``): every
operation of the OpenAPI document, every check (no 5xx, status codes, content types, response
schemas and headers, schema-valid data accepted and invalid data refused, auth enforced...),
with a bounded, derandomized number of examples. The write endpoints are also fed physically
valid structures from a hypothesis strategy, so their success path is fuzzed too, not only their
refusals. Runs on SQLite, and on PostgreSQL when ``LAMKIT_TEST_PG_URL`` is set.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the fuzzing tests need schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from .db_data import API, KEY, KINDS, database_url, fill  # noqa: E402

#: Examples per operation; LAMKIT_FUZZ_EXAMPLES raises it for a longer run (CI keeps 25).
MAX_EXAMPLES = int(os.environ.get("LAMKIT_FUZZ_EXAMPLES", "25"))
AUTH = {"X-API-Key": KEY}
#: LAMKIT_FUZZ_RANDOM=1: fresh random cases each run (to hunt), instead of the fixed ones of CI.
FUZZ = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=not os.environ.get("LAMKIT_FUZZ_RANDOM"),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# What a JSON schema cannot say, so a schema-valid request may still be refused, with the
# documented status: a cursor that no page returned (400), a reversed range such as
# nsites_min > nsites_max (422), a chemical system of unknown elements (422), a structure with
# overlapping atoms, a singular cell or a file that does not parse (422), an OPTIMADE filter
# that does not parse, a cursor with `sort` or an unknown response_fields name (400).  Any
# other schema-valid request must be accepted (2xx; 401/403 without a valid key; 404 for an id
# that does not exist).
SEMANTIC_REFUSALS = {
    ("GET", f"{API}/structures"): (400, 422),
    ("GET", f"{API}/hull/{{chemsys}}"): (422,),
    ("POST", f"{API}/structures"): (422,),
    ("POST", f"{API}/import"): (422,),
    ("GET", "/optimade/v1/structures"): (400,),
    ("GET", "/optimade/v1/structures/{entry_id}"): (400,),  # an unknown response_fields name
}


def schema_valid_accepted(ctx, response, case):
    """schemathesis' positive_data_acceptance with the refusals of SEMANTIC_REFUSALS allowed
    per operation (its own configuration cannot scope them to one method of a path)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    allowed = SEMANTIC_REFUSALS.get((case.method.upper(), case.operation.path), ())
    if status < 400 or status in (401, 403, 404) or status in allowed:
        return None
    raise AssertionError(
        f"{case.method.upper()} {case.operation.path}: a schema-valid request was refused "
        f"with {status}: {response.text[:300]}"
    )


@pytest.fixture(scope="module", params=KINDS)
def api_schema(request):
    """The OpenAPI schema of the service over a seeded database, loaded in-process."""
    from lamkit.db import CrystalDB
    from lamkit.db.service import create_app

    with database_url(request.param) as url:
        db = CrystalDB(url).init()
        try:
            fill(db)
            app = create_app(db, api_keys=[f"bob:{KEY}"], keys_from_environment=False)
            yield schemathesis.openapi.from_asgi("/openapi.json", app)
        finally:
            db.close()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@FUZZ
def test_every_operation(case):
    """Every operation, every check; writes with the key (the unauthenticated and wrong-key
    answers are checked by schemathesis' own auth checks and by test_db_service_writes)."""
    case.call_and_validate(
        headers=AUTH,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[schema_valid_accepted],
    )


# ---------------------------------------------------------------------------- valid structures
ELEMENTS = ["Fe", "Ni", "Co", "Al", "Ti"]
SPREAD = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]  # fcc sites: far apart


@st.composite
def valid_records(draw) -> dict:
    """A physically valid posted record: a cell of edges 3-7 Å with a mild shear, 1-4 atoms of
    a small element set on well separated sites (jittered by at most 0.04 of a cell edge, so
    no two atoms come closer than ~1.5 Å), a total energy of -9..-1 eV/atom."""
    edges = [draw(st.floats(3.0, 7.0)) for _ in range(3)]
    shear = [draw(st.floats(-0.15, 0.15)) for _ in range(3)]
    lattice = [
        [edges[0], 0.0, 0.0],
        [shear[0] * edges[1], edges[1], 0.0],
        [shear[1] * edges[2], shear[2] * edges[2], edges[2]],
    ]
    n = draw(st.integers(1, 4))
    species = [draw(st.sampled_from(ELEMENTS)) for _ in range(n)]
    jitter = st.floats(-0.04, 0.04)
    frac = [[(x + draw(jitter)) % 1.0 for x in site] for site in SPREAD[:n]]
    return {
        "lattice": lattice,
        "species": species,
        "frac_coords": frac,
        "energy": n * draw(st.floats(-9.0, -1.0)),
        "model": draw(st.sampled_from(["toy", "fuzz"])),
        "tags": ["fuzzed"],
    }


def _checked(case, status: int):
    """Send ``case`` with every check and the key; the answer must have ``status``."""
    response = case.call_and_validate(
        headers=AUTH,
        excluded_checks=[positive_data_acceptance],
        additional_checks=[schema_valid_accepted],
    )
    assert response.status_code == status, response.text
    return response.json()


def _stored_as_posted(api_schema, record_id: int, record: dict) -> None:
    """GET /structures/{id} gives back the posted species, cell and energy (schema-checked)."""
    get = api_schema[f"{API}/structures/{{record_id}}"]["GET"]
    body = _checked(get.Case(path_parameters={"record_id": record_id}), 200)
    assert sorted(s["species"] for s in body["sites"]) == sorted(record["species"])
    assert np.allclose(body["lattice"]["matrix"], record["lattice"], atol=1e-6)
    assert body["energy"] == pytest.approx(record["energy"], rel=1e-9)
    assert body["model"] == record["model"] and body["submitter"] == "bob"


def test_post_valid_structures(api_schema):
    """POST /structures with valid bodies (one record, a list, {'records': [...]}): 201, every
    check passes, each record is stored as posted; posting it again is a duplicate."""
    post = api_schema[f"{API}/structures"]["POST"]

    @given(records=st.lists(valid_records(), min_size=1, max_size=3), shape=st.integers(0, 2))
    @FUZZ
    def check(records, shape):
        body = records[0] if shape == 0 and len(records) == 1 else records
        if shape == 2:
            body = {"records": records}
        answer = _checked(post.Case(body=body, media_type="application/json"), 201)
        assert not answer["rejected"], answer
        assert len(answer["added"]) + answer["duplicates"] == len(records)
        assert answer["submitter"] == "bob"
        if len(answer["added"]) == len(records):
            for rid, rec in zip(answer["added"], records):
                _stored_as_posted(api_schema, rid, rec)
        again = _checked(post.Case(body=body, media_type="application/json"), 201)
        assert again["added"] == [] and again["duplicates"] == len(records)

    check()


def _poscar(record: dict) -> str:
    from pymatgen.core import Structure
    from pymatgen.io.vasp import Poscar

    structure = Structure(record["lattice"], record["species"], record["frac_coords"])
    return Poscar(structure).get_str(significant_figures=12)


def test_import_valid_files(api_schema):
    """POST /import with a valid POSCAR and its energy as a form number: 201, every check
    passes, the structure is stored with that energy."""
    upload = api_schema[f"{API}/import"]["POST"]

    @given(record=valid_records())
    @FUZZ
    def check(record):
        form = {
            "file": _poscar(record).encode(),
            "format": "poscar",
            "energy": record["energy"],
            "model": record["model"],
            "tags": "fuzzed,file",
        }
        answer = _checked(upload.Case(body=form, media_type="multipart/form-data"), 201)
        assert not answer["rejected"], answer
        assert len(answer["added"]) + answer["duplicates"] == 1
        for rid in answer["added"]:
            _stored_as_posted(api_schema, rid, record)

    check()


# ---------------------------------------------------------------------------- found by fuzzing
@pytest.mark.parametrize(
    "path, query, status",
    [
        # only separators: once a 400 about the core's 'only_elements', now chemsys' own 422
        (f"{API}/hull/,", {}, 422),
        (f"{API}/hull/-", {}, 422),
        # empty parameters are absent, like OPTIMADE's other parameters (was 400 / a schema
        # violation: response_format allowed only 'json' in the schema but '' in the code)
        ("/optimade/v1/structures", {"page_cursor": "", "page_limit": "2"}, 200),
        ("/optimade/v1/structures", {"response_format": ""}, 200),
        ("/optimade/v1/structures/lam-1", {"response_format": "json"}, 200),
        ("/optimade/v1/structures", {"response_format": "xml"}, 400),
    ],
)
def test_found_by_fuzzing(api_schema, path, query, status):
    """The inputs Schemathesis found refused wrongly or answered off-schema, checked again
    with every check."""
    template = f"{API}/hull/{{chemsys}}" if path.startswith(f"{API}/hull/") else path
    template = template.replace("/lam-1", "/{entry_id}")
    operation = api_schema[template]["GET"]
    params = {}
    if "{chemsys}" in template:
        params = {"chemsys": path.rsplit("/", 1)[1]}
    elif "{entry_id}" in template:  # a record the fuzzed DELETEs left
        listing = api_schema["/optimade/v1/structures"]["GET"]
        found = _checked(listing.Case(query={"page_limit": "1"}), 200)["data"]
        assert found, "no record left to fetch"
        params = {"entry_id": found[0]["id"]}
    case = operation.Case(path_parameters=params, query=query)
    body = _checked(case, status)
    if status == 422:
        assert body["detail"].startswith("chemsys:"), body
    if status == 400:
        assert "response_format" in body["errors"][0]["detail"], body


@pytest.mark.parametrize(
    "path, query",
    [
        (f"{API}/structures", "formation_energy_min=true&formation_energy_min=0.0"),
        (f"{API}/structures", "limit=1&limit=2"),
        (f"{API}/hull/{{chemsys}}", "model=toy&model=other"),
    ],
)
def test_repeated_scalar_parameter(api_schema, path, query):
    """A one-value parameter given twice was read as its last value (schemathesis:
    'schema-violating request accepted'); now a 422 naming it.  List parameters may repeat."""
    from urllib.parse import parse_qsl

    pairs = parse_qsl(query)
    params = {"chemsys": "Cl-Na"} if "{chemsys}" in path else {}
    case = api_schema[path]["GET"].Case(
        path_parameters=params, query={pairs[0][0]: [v for _, v in pairs]}
    )
    name = pairs[0][0]
    assert _checked(case, 422)["detail"] == f"{name}: given 2 times; give it once"
    listing = api_schema[f"{API}/structures"]["GET"].Case(query={"elements": ["Na", "Cl"]})
    assert all(r["elements"] == ["Cl", "Na"] for r in _checked(listing, 200)["records"])


def test_form_energy_is_a_number(api_schema):
    """A multipart form cannot carry JSON null: POST /import's optional 'energy' is declared
    a number (a client following the old anyOf[number, null] sent the text 'null': 422)."""
    doc = api_schema.raw_schema
    body = doc["paths"][f"{API}/import"]["post"]["requestBody"]["content"]
    ref = body["multipart/form-data"]["schema"]["$ref"]
    energy = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"]["energy"]
    assert energy["type"] == "number" and "anyOf" not in energy


def test_response_format_is_an_enum(api_schema):
    """OPTIMADE's response_format declares what is served ('json', or empty for the default):
    with a bare string in the schema, 'xml' was a schema-valid request answered 400."""
    for path in ("/optimade/v1/structures", "/optimade/v1/structures/{entry_id}"):
        params = api_schema.raw_schema["paths"][path]["get"]["parameters"]
        (fmt,) = [p for p in params if p["name"] == "response_format"]
        assert sorted(fmt["schema"]["enum"]) == ["", "json"], path
