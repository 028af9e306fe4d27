"""Queries against a brute-force Python filter, keyset pages, result kinds, the public client's
compatibility layer, and hostile filter values, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from pymatgen.core import Composition, Structure

from lamkit.db import QueryError, synthetic
from lamkit.db.compat import CrystalStructure, query_by_offset, record_json
from tests.db_fixtures import BACKENDS, crystal_db

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
POOL = ("Li", "Na", "Fe", "O", "Cl", "Cu", "Au", "Si")
SUBMITTERS = ("alice", "bob", "o'brien")


def _items() -> list[dict]:
    """~160 strained prototypes over 8 elements; a few without energy, three submitters, a
    submission time per record and tags."""
    out = []
    for i, d in enumerate(synthetic.generate(160, seed=3, elements=POOL, strain=0.01)):
        d["submitter"] = SUBMITTERS[i % 3]
        d["submitted"] = (T0 + timedelta(hours=7 * i)).isoformat()
        d["model"] = "m1" if i % 4 else "m2"
        d["tags"] = d["tags"] + (["100%_sure"] if i % 5 == 0 else [])
        if i % 9 == 0:
            d.pop("energy")
        out.append(d)
    return out


@pytest.fixture(scope="module", params=BACKENDS)
def filled(request):
    with crystal_db(request.param) as db:
        rep = db.import_records(_items(), batch_size=50)
        assert rep.added == 160 and not rep.rejected, rep.summary()
        yield db, list(db.iter_query(page_size=37))


def _ids(recs) -> list[int]:
    return sorted(r.id for r in recs)


def _in(lo, hi, x) -> bool:
    return x is not None and (lo is None or x >= lo) and (hi is None or x <= hi)


CASES = [
    ({"elements": ["O"]}, lambda r: "O" in r.elements),
    ({"elements": "Fe-O"}, lambda r: {"Fe", "O"} <= set(r.elements)),
    ({"only_elements": ["Li", "Fe", "O"]}, lambda r: set(r.elements) <= {"Li", "Fe", "O"}),
    ({"only_elements": "Na,Cl"}, lambda r: set(r.elements) <= {"Na", "Cl"}),
    (
        {"elements": ["Cu"], "only_elements": ["Cu", "Au", "O"]},
        lambda r: "Cu" in r.elements and set(r.elements) <= {"Cu", "Au", "O"},
    ),
    ({"chemsys": "O-Fe"}, lambda r: r.chemsys == "Fe-O"),
    ({"chemsys": ["Si"]}, lambda r: r.chemsys == "Si"),
    ({"spacegroup": 225}, lambda r: r.spacegroup_number == 225),
    ({"spacegroup": [221, "Fm-3m"]}, lambda r: r.spacegroup_number in (221, 225)),
    ({"nsites": (2, 4)}, lambda r: 2 <= r.nsites <= 4),
    ({"nsites": (None, 1)}, lambda r: r.nsites <= 1),
    ({"energy_per_atom": (-5.0, -3.0)}, lambda r: _in(-5.0, -3.0, r.energy_per_atom)),
    ({"energy_per_atom": (None, -6)}, lambda r: _in(None, -6, r.energy_per_atom)),
    ({"e_above_hull_max": 0.1}, lambda r: r.e_above_hull is not None and r.e_above_hull <= 0.1),
    ({"submitter": "o'brien"}, lambda r: r.submitter == "o'brien"),
    ({"submitter": ["alice", "bob"]}, lambda r: r.submitter in ("alice", "bob")),
    (
        {"submitted": (T0 + timedelta(days=10), T0 + timedelta(days=20))},
        lambda r: T0 + timedelta(days=10) <= r.submitted <= T0 + timedelta(days=20),
    ),
    (
        {"submitted": ("2024-01-30T00:00:00Z", None)},
        lambda r: r.submitted >= datetime(2024, 1, 30, tzinfo=timezone.utc),
    ),
    ({"tags": "100%_sure"}, lambda r: "100%_sure" in r.tags),
    ({"tags": ["rocksalt", "100%_sure"]}, lambda r: {"rocksalt", "100%_sure"} <= set(r.tags)),
    ({"tags": "100%"}, lambda r: "100%" in r.tags),  # LIKE wildcards match only themselves
    ({"model": "m2"}, lambda r: r.model == "m2"),
    (
        {"elements": ["O"], "energy_per_atom": (-6, None), "submitter": "bob", "nsites": (1, 6)},
        lambda r: (
            "O" in r.elements
            and _in(-6, None, r.energy_per_atom)
            and r.submitter == "bob"
            and 1 <= r.nsites <= 6
        ),
    ),
]


@pytest.mark.parametrize("filters, keep", CASES, ids=[str(c[0])[:60] for c in CASES])
def test_filters_match_brute_force(filled, filters, keep):
    db, everything = filled
    want = _ids(r for r in everything if keep(r))
    got = _ids(db.iter_query(page_size=11, **filters))
    assert got == want
    assert db.count(**filters) == len(want)
    page = db.query(**filters, limit=1000, with_total=True)
    assert page.total == len(want) and _ids(page.records) == want


def test_formula_filter_normalises(filled):
    db, everything = filled
    formula = next(r.formula for r in everything if len(r.elements) == 2)
    comp = Composition(formula)
    doubled = "".join(f"{el}{int(n * 2)}" for el, n in reversed(list(comp.items())))
    want = _ids(r for r in everything if r.formula == formula)
    assert want and _ids(db.iter_query(formula=doubled)) == want
    both = [formula, everything[0].formula]
    assert _ids(db.iter_query(formula=both)) == _ids(r for r in everything if r.formula in both)


def _sort_key(name: str, desc: bool):
    def key(r):
        v = getattr(r, name)
        # NULLs last in either direction, ties broken by id in the sort direction
        return (v is None, (-v if desc else v) if v is not None else 0, -r.id if desc else r.id)

    return key


@pytest.mark.parametrize(
    "order_by",
    [
        "id",
        "-id",
        "energy_per_atom",
        "-energy_per_atom",
        "e_above_hull",
        "nsites",
        "-nsites",
        "submitted",
        "-submitted",
        "formula",
        "-formula",
    ],
)
def test_keyset_pages_cover_all_matches_once_in_order(filled, order_by):
    db, everything = filled
    filters = {"only_elements": ["Li", "Na", "Fe", "O", "Cl", "Cu"]}
    seen, cursor, pages = [], None, 0
    while True:
        page = db.query(**filters, order_by=order_by, limit=7, cursor=cursor)
        seen += page.records
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    ids = [r.id for r in seen]
    assert len(ids) == len(set(ids))
    subset = [r for r in everything if set(r.elements) <= set(filters["only_elements"])]
    assert sorted(ids) == _ids(subset)
    assert pages == -(-len(subset) // 7)
    name, desc = order_by.lstrip("-"), order_by.startswith("-")
    if name == "formula":
        vals = [r.formula for r in seen]
        assert vals == sorted(vals, reverse=desc)
    elif name == "submitted":
        vals = [r.submitted for r in seen]
        assert vals == sorted(vals, reverse=desc)
    else:
        assert seen == sorted(seen, key=_sort_key(name, desc))


@pytest.mark.parametrize("kind", BACKENDS)
def test_pages_neither_repeat_nor_skip_when_records_arrive_between_pages(kind):
    with crystal_db(kind) as db:
        items = list(synthetic.generate(30, seed=5, elements=("Na", "Cl", "K")))
        db.import_records(items[:20])
        first = db.query(order_by="energy_per_atom", limit=8)
        db.import_records(items[20:])  # lands before and after the cursor
        rest = list(first.records)
        cursor = first.next_cursor
        while cursor:
            page = db.query(order_by="energy_per_atom", limit=8, cursor=cursor)
            rest += page.records
            cursor = page.next_cursor
        ids = [r.id for r in rest]
        assert len(ids) == len(set(ids))
        epa = [r.energy_per_atom for r in rest]
        assert epa == sorted(epa)
        last_first = first.records[-1].energy_per_atom
        later = [r for r in db.iter_query() if r.energy_per_atom > last_first]
        assert {r.id for r in later} <= set(ids)


def test_result_kinds(filled):
    db, everything = filled
    rec = db.query(limit=1, as_="record").records[0]
    (s,) = db.query(limit=1, as_="structure").records
    (atoms,) = db.query(limit=1, as_="atoms").records
    (d,) = db.query(limit=1, as_="dict").records
    assert isinstance(s, Structure) and np.array_equal(s.frac_coords, rec.frac_coords)
    assert np.array_equal(atoms.cell.array, rec.lattice) and atoms.info["id"] == rec.id
    assert json.loads(json.dumps(d)) == d and d["id"] == rec.id
    assert d["structure"]["lattice"] == rec.lattice.tolist()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"elements": ["Oo"]}, "unknown element symbol 'Oo'"),
        ({"elements": []}, "at least one"),
        ({"chemsys": "Na-Xq"}, "unknown element"),
        ({"formula": "NaCl; DROP TABLE records"}, "not a chemical formula"),
        ({"spacegroup": 231}, "1..230"),
        ({"spacegroup": True}, "spacegroup"),
        ({"nsites": (5, 2)}, "lower bound"),
        ({"nsites": "1-5"}, "expected (lo, hi)"),
        ({"energy_per_atom": ("a", None)}, "expected a number"),
        ({"e_above_hull_max": float("nan")}, "NaN"),
        ({"submitted": ("last week", None)}, "ISO 8601"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"order_by": "energy_per_atm"}, "Did you mean 'energy_per_atom'"),
        ({"order_by": "id; DROP TABLE records"}, "unknown sort key"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"as_": "xml"}, "as_"),
    ],
)
def test_invalid_queries_say_what_is_wrong(filled, kwargs, message):
    db, _ = filled
    with pytest.raises(QueryError, match=message.replace("(", r"\(").replace(")", r"\)")):
        db.query(**kwargs)


def test_unknown_filter_and_nul_characters(filled):
    db, _ = filled
    with pytest.raises(QueryError, match="Did you mean 'elements'"):
        db.count(elemnts=["O"])
    for key in ("submitter", "model", "tags"):
        with pytest.raises(QueryError, match="NUL"):
            db.count(**{key: "a\u0000"})


def _forge(payload: dict) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "order_by, payload",
    [
        ("formula", {"o": "formula", "v": "Na\u0000", "i": 1}),
        ("nsites", {"o": "nsites", "v": {"x": 1}, "i": 1}),
        ("energy_per_atom", {"o": "energy_per_atom", "v": "1; DROP", "i": 1}),
        ("submitted", {"o": "submitted", "v": "yesterday", "i": 1}),
        ("id", {"o": "id", "v": 1, "i": 10**30}),
        ("id", {"o": "id", "v": 1}),
    ],
)
def test_forged_cursors_are_query_errors(filled, order_by, payload):
    db, _ = filled
    with pytest.raises(QueryError, match="cursor"):
        db.query(order_by=order_by, cursor=_forge(payload))


def test_cursor_of_another_order_is_refused(filled):
    db, _ = filled
    cursor = db.query(order_by="nsites", limit=2).next_cursor
    with pytest.raises(QueryError, match="made for order_by='nsites'"):
        db.query(order_by="-nsites", cursor=cursor)


@pytest.mark.parametrize(
    "value",
    ["' OR '1'='1", "%", "_", "\\", "alice' --", '"; DELETE FROM records; --', "*", "[a-z]"],
)
def test_sql_metacharacters_in_filters_are_harmless(filled, value):
    db, everything = filled
    assert db.count(submitter=value) == 0
    assert db.count(model=value) == 0
    assert db.count(tags=value) == 0
    assert db.count(submitter=[value, "alice"]) == sum(r.submitter == "alice" for r in everything)
    assert db.count() == len(everything)


# ------------------------------------------------------------------ public client compatibility
def test_compat_query_by_offset_shape_and_pages(filled):
    db, everything = filled
    with_energy = [r for r in everything if r.energy is not None]
    formula = max(
        {r.formula for r in with_energy}, key=lambda f: sum(r.formula == f for r in with_energy)
    )
    want = [r for r in with_energy if r.formula == formula]
    assert len(want) >= 3
    first = CrystalStructure.query_by_offset(formula=formula, offset=0, limit=2, db=db)
    assert set(first) == {"items", "nextStartId"}
    assert len(first["items"]) == 2 and all(isinstance(x, CrystalStructure) for x in first["items"])
    item = first["items"][0]
    assert isinstance(item.structure, Structure) and item.formula == formula
    assert isinstance(item.submission_time, datetime)
    assert first["nextStartId"] == sorted(r.id for r in want)[1]
    everything_back = CrystalStructure.query(formula=formula, db=db)
    assert sorted(x.energy for x in everything_back) == sorted(r.energy for r in want)
    last = query_by_offset(db, formula=formula, offset=max(r.id for r in want) - 1, limit=5)
    assert len(last["items"]) == 1 and last["nextStartId"] == 0
    none = query_by_offset(db, formula="Au3O7", offset=0, limit=5)
    assert none == {"items": None, "nextStartId": 0}


def test_compat_energy_and_time_filters(filled):
    db, everything = filled
    lo, hi = -40.0, -10.0
    t0, t1 = T0 + timedelta(days=5), T0 + timedelta(days=25)
    got = CrystalStructure.query(
        min_energy=lo, max_energy=hi, min_submission_time=t0, max_submission_time=t1, db=db
    )
    want = [
        r
        for r in everything
        if r.energy is not None and lo <= r.energy <= hi and t0 <= r.submitted <= t1
    ]
    assert sorted((x.energy, x.submission_time) for x in got) == sorted(
        (r.energy, r.submitted) for r in want
    )
    with pytest.raises(QueryError, match="limit"):
        query_by_offset(db, limit=0)
    with pytest.raises(QueryError, match="offset"):
        query_by_offset(db, offset=-1)


def test_compat_record_json_is_the_public_api_form(filled):
    db, everything = filled
    rec = everything[1]
    d = record_json(rec)
    assert set(d) == {"id", "formula", "structure", "energy", "submissionTime"}
    s = Structure.from_dict(json.loads(d["structure"]))
    assert np.allclose(s.lattice.matrix, rec.lattice) and s.formula == rec.structure.formula
    raw = query_by_offset(db, offset=rec.id - 1, limit=1, raw=True)
    assert raw["items"] == [d]
    assert datetime.fromisoformat(d["submissionTime"]) == rec.submitted
