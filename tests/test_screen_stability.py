"""HullOracle against pymatgen PhaseDiagrams built here from the same records: formation
energies, energies above hull and decompositions of binary and ternary candidates (stable,
unstable, on the hull), declared and given references, the stated statuses of hulls that cannot
be built, and caching (one build per system; a new oracle sees a changed database), on SQLite
and PostgreSQL."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition
from sqlalchemy import event

from lamkit.db import synthetic
from lamkit.screen.stability import HullOracle, Stability
from tests.db_fixtures import BACKENDS, crystal_db, random_cell

# model "toy": (species, energy per atom eV/atom); Ag has no record (references only)
TOY = [
    (["Cu"] * 4, -3.50),
    (["Cu"] * 2, -3.40),  # bcc Cu, above fcc
    (["Au"] * 4, -3.20),
    (["Pt"] * 4, -5.00),
    (["Cu", "Cu", "Cu", "Au"], -3.60),  # on the Cu-Au hull
    (["Cu", "Au"], -3.45),  # above it
    (["Cu", "Au", "Au", "Au"], -3.25),
    (["Cu", "Pt"], -4.40),
    (["Cu", "Cu", "Cu", "Pt"], -4.10),
    (["Au", "Pt"], -4.00),
    (["Cu", "Cu", "Au", "Pt"], -4.05),  # ternary
    (["Cu", "Au", "Pt", "Pt", "Pt"], -4.50),
]
# model "other": the same compositions much lower; an oracle of "toy" must never see them
OTHER = [(["Cu"] * 4, -9.0), (["Au"] * 4, -9.0), (["Cu", "Au"], -12.0)]
SYN_POOL = ("Li", "Fe", "O", "Na", "Cl")


def _items(table, model, rng):
    return [
        dict(structure=random_cell(rng, sp), energy=e * len(sp), model=model) for sp, e in table
    ]


@pytest.fixture(scope="module", params=BACKENDS)
def db(request):
    rng = np.random.default_rng(5)
    with crystal_db(request.param) as d:
        items = _items(TOY, "toy", rng) + _items(OTHER, "other", rng)
        items += list(synthetic.generate(150, seed=3, elements=SYN_POOL, model="syn", strain=0.01))
        rep = d.import_records(items, batch_size=50)
        assert rep.added == len(items), rep.summary()
        yield d


def _direct(records, model, elements, refs=None):
    """pymatgen PhaseDiagram of the records of ``model`` made of ``elements`` (every record, not
    only the lowest per formula), plus reference points."""
    els = set(elements)
    entries = [
        PDEntry(Composition(" ".join(r.species)), r.energy, attribute=f"lam-{r.id}")
        for r in records
        if r.model == model and r.energy is not None and set(r.elements) <= els
    ]
    for el, e in (refs or {}).items():
        if el in els:
            entries.append(PDEntry(Composition(el), e, attribute=f"reference ({el})"))
    return PhaseDiagram(entries)


def _parse(decomposition: str) -> dict[str, float]:
    """{"lam-12" or "reference (Ag)": fraction} of a decomposition text."""
    out = {}
    for part in decomposition.split(" + "):
        frac, label = part.split(" ", 1)
        key = label if label.startswith("reference") else label.split(" ")[0]
        out[key] = float(frac)
    return out


def _check(oracle, pd, species, energy):
    """The oracle's answer for (species, energy) equals the direct phase diagram's."""
    st = oracle.assess(species, energy)
    assert isinstance(st, Stability)
    assert st.hull_status == "ok", st
    assert st.chemsys == "-".join(sorted(set(species)))
    entry = PDEntry(Composition(" ".join(species)), energy)
    decomp, e = pd.get_decomp_and_e_above_hull(entry, allow_negative=True, check_stable=False)
    assert st.e_above_hull == pytest.approx(e, abs=1e-9)
    if abs(e) < 1e-12:
        assert st.e_above_hull == 0.0
    assert st.formation_energy_per_atom == pytest.approx(pd.get_form_energy_per_atom(entry))
    want = {entry.attribute: frac for entry, frac in decomp.items()}
    got = _parse(st.decomposition)
    assert set(got) == set(want), (st.decomposition, want)
    for k, frac in want.items():
        assert got[k] == pytest.approx(frac, rel=1e-3)
    return st


def test_binary_and_ternary_against_phase_diagram(db):
    records = list(db.iter_query())
    oracle = HullOracle(db, model="toy")
    rng = np.random.default_rng(0)
    signs = set()
    for els in (["Cu", "Au"], ["Cu", "Pt"], ["Au", "Cu", "Pt"]):
        pd = _direct(records, "toy", els)
        for _ in range(12):
            species = list(rng.choice(els, size=int(rng.integers(2, 7))))
            if len(set(species)) < 2:
                continue
            comp = Composition(" ".join(species))
            hull = pd.get_hull_energy_per_atom(comp)
            energy = (hull + rng.uniform(-0.2, 0.3)) * len(species)
            st = _check(oracle, pd, species, energy)
            signs.add(np.sign(st.e_above_hull))
    assert signs >= {-1.0, 1.0}  # new ground states (negative) and unstable candidates


def test_on_hull_candidates_are_zero(db):
    oracle = HullOracle(db, model="toy")
    cu3au = db.query(formula="Cu3Au", model="toy").records[0]
    st = oracle.assess(["Au", "Cu", "Cu", "Cu"], -3.60 * 4)
    assert st.e_above_hull == 0.0
    assert st.decomposition == f"1 lam-{cu3au.id} (Cu3Au)"
    # on the tie line between Cu3Au and Cu (x_Au = 1/8): exactly on the hull
    species = ["Cu"] * 7 + ["Au"]
    st = oracle.assess(species, 4 * -3.60 + 4 * -3.50)
    assert st.e_above_hull == 0.0
    assert set(_parse(st.decomposition).values()) == {0.5}
    # elemental candidates: against the lowest elemental record
    st = oracle.assess(["Cu"] * 2, -3.45 * 2)
    assert st.e_above_hull == pytest.approx(0.05)
    assert st.formation_energy_per_atom == pytest.approx(0.05)


def test_every_record_agrees_with_the_stored_hull(db):
    """The oracle measures stored records as the database stores them (toy and synthetic)."""
    for model in ("toy", "syn"):
        oracle = HullOracle(db, model=model)
        recs = list(db.iter_query(model=model))
        assert len(recs) >= 12
        for r in recs:
            st = oracle.assess(r.species, r.energy)
            if r.e_above_hull is None:
                assert st.e_above_hull is None and st.hull_status.startswith("no-"), (r, st)
                continue
            assert st.hull_status == "ok"
            assert st.e_above_hull == pytest.approx(r.e_above_hull, abs=1e-9), r
            assert st.formation_energy_per_atom == pytest.approx(
                r.formation_energy_per_atom, abs=1e-9
            )


def test_synthetic_ternaries_against_phase_diagram(db):
    records = list(db.iter_query(model="syn"))
    oracle = HullOracle(db, model="syn")
    rng = np.random.default_rng(1)
    systems = sorted({r.chemsys for r in records if len(r.elements) == 3})
    assert len(systems) >= 3
    checked = 0
    for cs in systems[:5]:
        els = cs.split("-")
        try:
            pd = _direct(records, "syn", els)
        except ValueError:  # an element without an elemental record
            assert oracle.assess(els, -10.0).hull_status.startswith("no-reference: ")
            continue
        for _ in range(4):
            species = els + list(rng.choice(els, size=3))
            hull = pd.get_hull_energy_per_atom(Composition(" ".join(species)))
            _check(oracle, pd, species, (hull + rng.uniform(-0.1, 0.2)) * len(species))
            checked += 1
    assert checked >= 8


def test_given_references(db):
    records = list(db.iter_query())
    # Ag has no record: its reference alone is the hull's end point
    oracle = HullOracle(db, model="toy", references={"Ag": -2.8})
    pd = _direct(records, "toy", ["Ag", "Cu"], {"Ag": -2.8})
    st = _check(oracle, pd, ["Ag", "Cu", "Cu"], -3.4 * 3)
    assert "reference (Ag)" in st.decomposition
    assert st.formation_energy_per_atom == pytest.approx(-3.4 - (-2.8 / 3 - 3.5 * 2 / 3))
    _check(oracle, pd, ["Ag", "Ag", "Cu"], -2.0 * 3)  # unstable
    st = oracle.assess(["Ag"], -2.8)
    assert st.e_above_hull == 0.0 and st.decomposition == "1 reference (Ag)"
    # a reference below the element's records moves the hull's end point ...
    low = HullOracle(db, model="toy", references={"Au": -3.3})
    pd = _direct(records, "toy", ["Au", "Cu"], {"Au": -3.3})
    _check(low, pd, ["Au", "Cu"], -3.45 * 2)
    _check(low, pd, ["Au", "Cu", "Cu", "Cu"], -3.62 * 4)
    # ... one above them does not: the lowest record stays the end point
    high = HullOracle(db, model="toy", references={"Au": -3.0})
    st = high.assess(["Au", "Cu"], -3.45 * 2)
    assert st.e_above_hull == pytest.approx(
        HullOracle(db, "toy").assess(["Au", "Cu"], -6.9).e_above_hull
    )


def test_declared_references_and_overrides():
    rng = np.random.default_rng(2)
    with crystal_db("sqlite") as db:
        db.import_records(_items(TOY[:3], "decl", rng))
        db.set_references("decl", {"Ag": -2.7})
        records = list(db.iter_query())
        pd = _direct(records, "decl", ["Ag", "Cu"], {"Ag": -2.7})
        st = _check(HullOracle(db, model="decl"), pd, ["Ag", "Cu"], -3.3 * 2)
        assert "reference (Ag)" in st.decomposition
        # a given reference replaces the declared one
        pd = _direct(records, "decl", ["Ag", "Cu"], {"Ag": -2.9})
        _check(HullOracle(db, model="decl", references={"Ag": -2.9}), pd, ["Ag", "Cu"], -6.6)


def test_statuses_when_no_hull_can_be_built(db):
    oracle = HullOracle(db, model="toy")
    st = oracle.assess(["Ag", "Cu"], -6.0)
    assert (st.hull_status, st.e_above_hull, st.formation_energy_per_atom) == (
        "no-reference: Ag",
        None,
        None,
    )
    assert oracle.assess(["Ag", "Pd", "Cu"], -9.0).hull_status == "no-reference: Ag, Pd"
    assert oracle.assess(["Kr", "Xe"], -1.0).hull_status == "no-records"
    assert oracle.hull_status("Xe-Kr") == oracle.hull_status(["Kr", "Xe"]) == "no-records"
    assert oracle.hull_status("Au-Cu-Pt") == "ok"
    assert oracle.hull_status("Cu-Xx").startswith("error: species: unknown element")
    assert HullOracle(db, model="nothing").assess(["Cu"], -3.0).hull_status == "no-records"
    none = HullOracle(None, references={"Cu": -3.5, "Au": -3.2})
    st = none.assess(["Cu", "Au"], -7.0)
    assert st.hull_status == "no-database" and st.e_above_hull is None
    assert st.formation_energy_per_atom == pytest.approx(-3.5 + 3.35)
    assert HullOracle(None).assess(["Cu"], -3.0).formation_energy_per_atom is None


@pytest.mark.parametrize(
    "species, energy, words",
    [
        (["Cu", "Au"], math.nan, "finite"),
        (["Cu", "Au"], math.inf, "finite"),
        (["Cu", "Au"], "x", "number"),
        ([], -1.0, "non-empty"),
        (["Cu", "Xx"], -1.0, "unknown element"),
        (["Cu", "Au"], -1000.0, "below -10"),  # formation energy far below any compound
    ],
)
def test_bad_input_is_an_error_status(db, species, energy, words):
    st = HullOracle(db, model="toy").assess(species, energy)
    assert st.hull_status.startswith("error: ") and words in st.hull_status, st
    assert st.e_above_hull is None and st.decomposition is None


def test_bad_references_raise():
    with pytest.raises(ValueError, match="not an element"):
        HullOracle(None, references={"Xx": 1.0})
    with pytest.raises(ValueError, match="finite"):
        HullOracle(None, references={"Cu": math.nan})


def test_one_hull_build_per_system(db):
    oracle = HullOracle(db, model="toy")
    queries = []

    def count(*args):
        queries.append(args[2])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        first = oracle.assess(["Cu", "Au", "Pt"], -13.0)
        n_first = len(queries)
        again = [oracle.assess(["Pt", "Au", "Cu"], -13.0) for _ in range(50)]
        assert len(queries) == n_first  # no query at all once the system is cached
        oracle.assess(["Cu", "Au"], -7.2)  # a sub-system: its records are cached already
        assert sum("GROUP BY" in q for q in queries) == 1
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert all(a == first for a in again)


def test_a_new_oracle_sees_a_changed_database():
    rng = np.random.default_rng(4)
    with crystal_db("sqlite") as db:
        db.import_records(_items(TOY, "toy", rng))
        old = HullOracle(db, model="toy")
        before = old.assess(["Cu", "Au"], -3.5 * 2)
        # a new CuAu ground state lowers the hull under the candidate
        db.add(random_cell(rng, ["Cu", "Au"]), energy=-3.7 * 2, model="toy")
        assert old.assess(["Cu", "Au"], -3.5 * 2) == before  # a snapshot, as documented
        new = HullOracle(db, model="toy")
        pd = _direct(list(db.iter_query()), "toy", ["Cu", "Au"])
        after = _check(new, pd, ["Cu", "Au"], -3.5 * 2)
        assert after.e_above_hull == pytest.approx(0.2)
        assert before.e_above_hull < 0
        e, _ = db.e_above_hull(Composition("CuAu"), -7.0, model="toy")
        assert after.e_above_hull == pytest.approx(e, abs=1e-9)
