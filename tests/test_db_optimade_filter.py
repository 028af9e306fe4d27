"""OPTIMADE filters translated to SQL (lamkit.db.optimade.filter): a table of filters whose
matches equal a brute-force Python evaluation of the OPTIMADE semantics over every record, and
CrystalDB.query where it has the same filter; errors (400 / 501) for what cannot run; on SQLite
and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("optimade", reason="the OPTIMADE filter grammar comes from `optimade`")

from sqlalchemy import select  # noqa: E402

from lamkit.db import synthetic  # noqa: E402
from lamkit.db.optimade.fields import attributes_of  # noqa: E402
from lamkit.db.optimade.filter import FilterError, condition  # noqa: E402
from lamkit.db.schema import records  # noqa: E402
from tests.db_fixtures import BACKENDS, crystal_db  # noqa: E402

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
POOL = ("Li", "Na", "Fe", "O", "Cl", "Cu", "Si")


def _items() -> list[dict]:
    out = []
    for i, d in enumerate(synthetic.generate(70, seed=5, elements=POOL, strain=0.01)):
        d["submitted"] = (T0 + timedelta(hours=5 * i)).isoformat()
        d["model"] = None if i % 7 == 3 else ("m1" if i % 3 else "m2")
        if i % 6 == 0:
            d.pop("energy")
        out.append(d)
    return out


@pytest.fixture(scope="module", params=BACKENDS)
def filled(request):
    with crystal_db(request.param) as db:
        rep = db.import_records(_items(), batch_size=40)
        assert rep.added == 70, rep.summary()
        with db.engine.connect() as conn:
            rows = conn.execute(select(records)).all()
        recs = {}
        for r in rows:
            a = attributes_of(r._mapping)
            a["id"] = f"lam-{r.id}"
            recs[r.id] = a
        yield db, recs


def _cmp(x, op, y) -> bool:
    """OPTIMADE comparison: false when the property is unknown."""
    if x is None:
        return False
    return {
        "=": x == y,
        "!=": x != y,
        "<": x < y,
        "<=": x <= y,
        ">": x > y,
        ">=": x >= y,
    }[op]


def _t(a) -> datetime:
    return datetime.fromisoformat(a["last_modified"].replace("Z", "+00:00"))


P = "_lamkit_"
MID = (T0 + timedelta(hours=150)).isoformat().replace("+00:00", "Z")
#: (filter, the same filter in Python over a record's attributes)
CASES = [
    ("", lambda a: True),
    ("nsites >= 3", lambda a: a["nsites"] >= 3),
    ("nsites < 3 OR nelements = 1", lambda a: a["nsites"] < 3 or a["nelements"] == 1),
    ("NOT nsites = 2", lambda a: a["nsites"] != 2),
    ("3 <= nsites", lambda a: a["nsites"] >= 3),
    ("nelements != 2 AND nsites > 1", lambda a: a["nelements"] != 2 and a["nsites"] > 1),
    ('elements HAS "O"', lambda a: "O" in a["elements"]),
    ('elements HAS ALL "Fe","O"', lambda a: {"Fe", "O"} <= set(a["elements"])),
    ('elements HAS ANY "Na","Cu"', lambda a: bool({"Na", "Cu"} & set(a["elements"]))),
    ('elements HAS ONLY "Fe","O","Li"', lambda a: set(a["elements"]) <= {"Fe", "O", "Li"}),
    ('elements HAS "Xx"', lambda a: False),
    ('elements HAS ANY "Xx","O"', lambda a: "O" in a["elements"]),
    ('NOT elements HAS ANY "O","Cl"', lambda a: not {"O", "Cl"} & set(a["elements"])),
    ("elements LENGTH 2", lambda a: len(a["elements"]) == 2),
    ("elements LENGTH >= 2", lambda a: len(a["elements"]) >= 2),
    (
        'species_at_sites HAS "O" AND species_at_sites LENGTH 3',
        lambda a: "O" in a["species_at_sites"] and len(a["species_at_sites"]) == 3,
    ),
    ('chemical_formula_reduced = "ClNa"', lambda a: a["chemical_formula_reduced"] == "ClNa"),
    ('chemical_formula_reduced = "NaCl"', lambda a: False),
    ('"ClNa" = chemical_formula_reduced', lambda a: a["chemical_formula_reduced"] == "ClNa"),
    ('chemical_formula_reduced < "F"', lambda a: a["chemical_formula_reduced"] < "F"),
    ('chemical_formula_reduced CONTAINS "O2"', lambda a: "O2" in a["chemical_formula_reduced"]),
    (
        'chemical_formula_reduced STARTS WITH "Fe"',
        lambda a: a["chemical_formula_reduced"].startswith("Fe"),
    ),
    ('chemical_formula_anonymous = "AB2"', lambda a: a["chemical_formula_anonymous"] == "AB2"),
    ('chemical_formula_anonymous ENDS "B"', lambda a: a["chemical_formula_anonymous"][-1] == "B"),
    (
        'chemical_formula_descriptive CONTAINS "O"',
        lambda a: "O" in a["chemical_formula_descriptive"],
    ),
    (
        'chemical_formula_descriptive ENDS WITH "2"',
        lambda a: a["chemical_formula_descriptive"].endswith("2"),
    ),
    ('chemical_formula_descriptive >= "Na"', lambda a: a["chemical_formula_descriptive"] >= "Na"),
    (f"{P}energy_per_atom < -3.5", lambda a: _cmp(a[P + "energy_per_atom"], "<", -3.5)),
    (f"{P}energy_per_atom IS UNKNOWN", lambda a: a[P + "energy_per_atom"] is None),
    (
        f"NOT {P}energy_per_atom > -3.5",
        lambda a: not _cmp(a[P + "energy_per_atom"], ">", -3.5),
    ),
    (f"{P}e_above_hull <= 0.0", lambda a: _cmp(a[P + "e_above_hull"], "<=", 0.0)),
    (f"{P}e_above_hull > 0.05", lambda a: _cmp(a[P + "e_above_hull"], ">", 0.05)),
    (
        f"{P}formation_energy_per_atom IS KNOWN",
        lambda a: a[P + "formation_energy_per_atom"] is not None,
    ),
    (f"{P}spacegroup_number = 225", lambda a: a[P + "spacegroup_number"] == 225),
    (f'{P}model = "m1"', lambda a: a[P + "model"] == "m1"),
    (f'NOT {P}model = "m1"', lambda a: a[P + "model"] != "m1"),
    (f'{P}model != "m1"', lambda a: _cmp(a[P + "model"], "!=", "m1")),
    (f'{P}model STARTS "m"', lambda a: (a[P + "model"] or "").startswith("m")),
    ('id = "lam-3"', lambda a: a["id"] == "lam-3"),
    ('id != "lam-3"', lambda a: a["id"] != "lam-3"),
    ('id > "lam-2"', lambda a: a["id"] > "lam-2"),
    ('id ENDS WITH "1"', lambda a: a["id"].endswith("1")),
    ('id = "3"', lambda a: False),
    (f'last_modified >= "{MID}"', lambda a: _t(a) >= datetime.fromisoformat(MID)),
    (f'last_modified < "{MID}"', lambda a: _t(a) < datetime.fromisoformat(MID)),
    ("_other_field = 1 OR nsites = 1", lambda a: a["nsites"] == 1),
    ("NOT _other_field = 1", lambda a: True),
    ("_other_field IS UNKNOWN AND nelements = 3", lambda a: a["nelements"] == 3),
    (
        '(nsites > 1 AND elements HAS "O") OR NOT elements HAS "O"',
        lambda a: (a["nsites"] > 1 and "O" in a["elements"]) or "O" not in a["elements"],
    ),
    ("nperiodic_dimensions = 3 AND structure_features LENGTH 0", lambda a: True),
    ("dimension_types HAS 1", lambda a: True),
    ('structure_features HAS "disorder"', lambda a: False),
    ('type = "structures"', lambda a: True),
    ("elements_ratios LENGTH 2", lambda a: len(a["elements_ratios"]) == 2),
]


def _ids(db, text: str) -> set[int]:
    with db.engine.connect() as conn:
        cond, _ = condition(conn, text)
        return set(conn.execute(select(records.c.id).where(cond)).scalars())


@pytest.mark.parametrize("text,expected", CASES, ids=[c[0] or "(empty)" for c in CASES])
def test_filter_equals_python(filled, text, expected):
    db, recs = filled
    want = {i for i, a in recs.items() if expected(a)}
    assert _ids(db, text) == want


def test_cases_are_not_trivial(filled):
    """The table exercises both outcomes: most filters match some records and miss others."""
    _, recs = filled
    split = [c for c in CASES if 0 < sum(bool(c[1](a)) for a in recs.values()) < len(recs)]
    assert len(split) >= 35


def test_immutable_id_matches_one(filled):
    db, recs = filled
    rid, a = next(iter(recs.items()))
    assert _ids(db, f'immutable_id = "{a["immutable_id"]}"') == {rid}


#: (OPTIMADE filter, the same filter in CrystalDB.query's words)
QUERY_PARITY = [
    ('elements HAS ALL "Fe","O"', {"elements": ["Fe", "O"]}),
    ('elements HAS ONLY "Li","Fe","O"', {"only_elements": ["Li", "Fe", "O"]}),
    ("nsites >= 2 AND nsites <= 4", {"nsites": (2, 4)}),
    ('chemical_formula_reduced = "ClNa"', {"formula": "NaCl"}),
    (f'{P}model = "m2"', {"model": "m2"}),
    (f"{P}e_above_hull <= 0.02", {"e_above_hull_max": 0.02}),
    (f"{P}spacegroup_number = 225", {"spacegroup": 225}),
    (
        f"{P}energy_per_atom >= -5 AND {P}energy_per_atom <= -3",
        {"energy_per_atom": (-5, -3)},
    ),
    (
        f'elements HAS "O" AND {P}model = "m1" AND nsites <= 3',
        {"elements": ["O"], "model": "m1", "nsites": (None, 3)},
    ),
]


@pytest.mark.parametrize("text,kwargs", QUERY_PARITY, ids=[c[0] for c in QUERY_PARITY])
def test_filter_equals_crystaldb_query(filled, text, kwargs):
    db, _ = filled
    want = {r.id for r in db.iter_query(**kwargs)}
    assert want, f"{kwargs} matches nothing: a weak test"
    assert _ids(db, text) == want


ERRORS = [
    ("foo = 1", 400),
    (f"{P}foo = 1", 400),
    ('nsites = "a"', 400),
    ("chemical_formula_reduced = 3", 400),
    ("nsites >", 400),
    ("elements HAS", 400),
    ('last_modified > "yesterday"', 400),
    ("nsites = 1 AND", 400),
    ("nsites HAS 1", 501),
    ('elements HAS < "A"', 501),
    ("chemical_formula_reduced = nsites", 501),
    ('"a" = "b"', 501),
    ('elements:species_at_sites HAS "A":"B"', 501),
    ("nsites = TRUE", 501),
    ("lattice_vectors HAS 1", 501),
    ('nsites = "\x00"', 400),
]


@pytest.mark.parametrize("text,status", ERRORS, ids=[c[0] for c in ERRORS])
def test_errors(filled, text, status):
    db, _ = filled
    with pytest.raises(FilterError) as info:
        _ids(db, text)
    assert info.value.status == status
    assert str(info.value)


def test_huge_numbers_do_not_overflow(filled):
    db, recs = filled
    assert _ids(db, "nsites < 99999999999999999999999") == set(recs)
    assert _ids(db, f"{P}energy_per_atom > -1e400") == {
        i for i, a in recs.items() if a[P + "energy_per_atom"] is not None
    }


def test_new_formulas_are_seen():
    """The formula cache picks up records added after its first use."""
    from lamkit.db.optimade.formulas import FormulaIndex

    index = FormulaIndex()
    cu = {"lattice": [[3.6, 0, 0], [0, 3.6, 0], [0, 0, 3.6]], "frac_coords": [[0, 0, 0]]}
    with crystal_db("sqlite") as db:
        first = db.add({**cu, "species": ["Cu"]})
        for formula, want in (("Cu", [first.id]), ("Au", [])):
            with db.engine.connect() as conn:
                cond, _ = condition(conn, f'chemical_formula_reduced = "{formula}"', index)
                assert conn.execute(select(records.c.id).where(cond)).scalars().all() == want
        gold = db.add({**cu, "species": ["Au"]})
        with db.engine.connect() as conn:
            cond, _ = condition(conn, 'chemical_formula_reduced = "Au"', index)
            assert conn.execute(select(records.c.id).where(cond)).scalars().all() == [gold.id]


@pytest.mark.parametrize(
    "text,stored",
    [
        ("ClNa", "NaCl"),
        ("LiO", "Li2O2"),  # pymatgen writes the 1:1 ratio as the peroxide
        ("O", "O2"),
        ("Fe2O3", "Fe2O3"),
        ("NaCl", None),  # not alphabetical
        ("Fe2O4", None),  # not reduced
        ("Cl1Na", None),
        ("ClNa ", None),
        ("Xx", None),
        ("", None),
    ],
)
def test_reduced_formula_to_stored(text, stored):
    from lamkit.db.optimade.formulas import formulas_of_stored, stored_formula_of_reduced

    assert stored_formula_of_reduced(text) == stored
    if stored is not None:
        assert formulas_of_stored(stored)[0] == text


FORMULA_CASES = [c for c in CASES if "chemical_formula_reduced" in c[0] or "anonymous" in c[0]]


@pytest.mark.parametrize("text,expected", FORMULA_CASES, ids=[c[0] for c in FORMULA_CASES])
def test_long_formula_lists_as_one_parameter(filled, monkeypatch, text, expected):
    """Formula lists beyond _LONG_LIST go as one JSON text (SQLite) or array (PostgreSQL),
    so a filter matching 100,000 formulas stays under the databases' parameter limits."""
    from lamkit.db.optimade import props

    monkeypatch.setattr(props, "_LONG_LIST", 0)
    db, recs = filled
    assert _ids(db, text) == {i for i, a in recs.items() if expected(a)}
