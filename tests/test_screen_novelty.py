"""Novelty and uniqueness against brute force: ``NoveltyIndex.match`` equals StructureMatcher
fitted against every record (in id order) and ``find_unique`` equals pairwise matching of the
whole submission, for both presets, on a small database of prototypes with perturbed,
strained, scaled, supercell and primitive variants and near misses (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import spglib
from ase.data import atomic_numbers
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from sqlalchemy import event

from lamkit.db import RecordError
from lamkit.db.synthetic import make_structure
from lamkit.screen.novelty import PRESETS, NoveltyIndex, find_unique, probe
from tests.db_data import antifluorite, bcc, cscl, fcc, l10, l12, rocksalt, zincblende
from tests.db_fixtures import BACKENDS, crystal_db

RNG = np.random.default_rng(7)


def _synthetic(proto: str, elements: list[str]) -> Structure:
    d = make_structure(proto, elements, np.random.default_rng(0))
    return Structure(Lattice(d["lattice"]), d["species"], d["frac_coords"])


def perturbed(s: Structure, d: float, seed: int = 0) -> Structure:
    """Every site moved by ``d`` Å in a random direction."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(len(s), 3))
    v *= d / np.linalg.norm(v, axis=1, keepdims=True)
    return Structure(s.lattice, s.species, s.cart_coords + v, coords_are_cartesian=True)


def strained(s: Structure, eps: float, seed: int = 0) -> Structure:
    """The cell deformed by I + a random matrix with entries in [-eps, eps] (sites follow)."""
    rng = np.random.default_rng(seed)
    m = s.lattice.matrix @ (np.eye(3) + rng.uniform(-eps, eps, (3, 3)))
    return Structure(Lattice(m), s.species, s.frac_coords)


def rotated_shuffled(s: Structure, seed: int = 0) -> Structure:
    """The same crystal with a rotated cell and its sites in another order."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    order = rng.permutation(len(s))
    return Structure(
        Lattice(s.lattice.matrix @ q.T), [s.species[i] for i in order], s.frac_coords[order]
    )


def scaled(s: Structure, factor: float) -> Structure:
    out = s.copy()
    out.scale_lattice(s.volume * factor)
    return out


NACL = rocksalt("Na", "Cl", 5.64)
CU = fcc("Cu", 3.61)
ZNS = zincblende("Zn", "S", 5.41)
STO = _synthetic("perovskite", ["Sr", "Ti", "O"])
TOS = _synthetic("perovskite", ["Ti", "Sr", "O"])  # the A and B sites swapped

# (structure, energy per atom, model) in insertion (= id) order
STORED = [
    (NACL, -3.40, "m1"),
    (ZNS, -2.50, "m1"),
    (_synthetic("wurtzite", ["Zn", "S"]), -2.52, "m1"),  # same formula, other structure
    (cscl("Cs", "Cl", 4.12), -3.00, "m1"),
    (CU, -3.50, "m1"),
    (bcc("Fe", 2.87), -4.00, "m1"),
    (l12("Cu", "Au", 3.75), -3.60, "m1"),
    (l10("Cu", "Au", 3.85), -3.45, "m1"),
    (antifluorite("O", "Li", 4.61), -4.60, "m1"),
    (STO, -6.00, "m1"),
    (perturbed(NACL, 0.02, 1), -3.39, "m1"),  # a duplicate of the first record
    (strained(NACL, 0.03, 2), -3.30, "m1"),
    (strained(NACL, 0.08, 3), -3.20, "m2"),  # near miss for openlam
    (NACL, -3.10, "m2"),  # the same geometry as the first record, another model
    (CU * (2, 2, 2), -3.49, "m2"),  # supercell
    (cscl("Na", "Cl", 3.4), -3.20, "m1"),  # NaCl in another structure
    (bcc("Cu", 2.87), -3.40, "m1"),
    (scaled(ZNS, 1.2), -2.40, "m2"),
    (perturbed(STO, 0.15, 4), -5.90, "m1"),
    (strained(antifluorite("O", "Li", 4.61), 0.06, 5), -4.50, "m1"),
    (perturbed(NACL * (2, 1, 1), 0.3, 6), -3.00, "m1"),  # far off
    (l10("Cu", "Au", 3.6), -3.40, "m1"),  # c/a = 1.41: another tetragonal cell
]

# (name, structure, near): "near" candidates match a record (under the loose preset) while
# their space groups differ even at symprec 0.5 Å; only the formula prefilter finds those
CANDIDATES = [
    ("nacl-rattle-0.01", perturbed(NACL, 0.01, 10), False),
    ("nacl-rattle-0.05", perturbed(NACL, 0.05, 11), False),
    ("nacl-rattle-0.2", perturbed(NACL, 0.2, 12), False),
    ("nacl-strain-0.02", strained(NACL, 0.02, 13), False),
    ("nacl-strain-0.05", strained(NACL, 0.05, 14), False),
    ("nacl-strain-0.12", strained(NACL, 0.12, 15), True),
    ("nacl-primitive-rotated", rotated_shuffled(NACL.get_primitive_structure(), 16), False),
    ("nacl-supercell", NACL * (3, 1, 1), False),
    ("nacl-scaled", scaled(NACL, 0.9), False),
    ("cu-primitive", CU.get_primitive_structure(), False),
    ("cu-hcp", _synthetic("hcp", ["Cu"]), False),
    ("zns-wurtzite-rattle", perturbed(_synthetic("wurtzite", ["Zn", "S"]), 0.02, 17), False),
    ("sto-swapped", TOS, False),
    ("sto-rotated", rotated_shuffled(STO, 18), False),
    ("li2o-strain-0.04", strained(antifluorite("O", "Li", 4.61), 0.04, 19), False),
    ("cu3au-rotated", rotated_shuffled(l12("Cu", "Au", 3.75), 20), False),
    ("cuau-c/a", l10("Cu", "Au", 4.0), False),
    ("kbr-new", rocksalt("K", "Br", 6.6), False),
    ("mgo-new", rocksalt("Mg", "O", 4.21), False),
]


def _sg(s: Structure, symprec: float = 0.1) -> int | None:
    cell = (s.lattice.matrix, s.frac_coords, [atomic_numbers[sp.symbol] for sp in s.species])
    ds = spglib.get_symmetry_dataset(cell, symprec=symprec)
    return None if ds is None else int(ds.number)


def _key(s: Structure) -> set:
    """The candidate's space groups at 0.1, 0.3 and 0.5 Å."""
    return {_sg(s, p) for p in (0.1, 0.3, 0.5)}


@pytest.fixture(scope="module", params=BACKENDS)
def db(request):
    with crystal_db(request.param) as d:
        items = [
            dict(structure=s, energy=e * len(s), model=m, source=f"s{i}")
            for i, (s, e, m) in enumerate(STORED)
        ]
        rep = d.import_records(items, update_hull=False)
        assert rep.added == len(STORED), rep.summary()
        yield d


@pytest.fixture(scope="module")
def stored(db):
    recs = list(db.iter_query())
    return [(r.id, r.structure, r.energy_per_atom, r.model, _sg(r.structure)) for r in recs]


def _brute(structure, stored, preset, *, model=None, sgs=None, epa=None, window=None):
    """Lowest id of a record that StructureMatcher fits ``structure`` onto, trying every one
    (of ``model``, with a space group in ``sgs``, with an energy in the window, when given)."""
    sm = StructureMatcher(**PRESETS[preset])
    for rid, s, e, m, rec_sg in stored:
        if model is not None and m != model:
            continue
        if sgs is not None and rec_sg not in sgs:
            continue
        if window is not None and epa is not None and abs(e - epa) > window * max(abs(e), abs(epa)):
            continue
        if sm.fit(structure, s):
            return rid
    return None


@pytest.mark.parametrize("preset", list(PRESETS))
def test_match_equals_brute_force(db, stored, preset):
    exact = NoveltyIndex(db, preset, prefilter="formula")
    keyed = NoveltyIndex(db, preset, prefilter="spacegroup")
    strict = NoveltyIndex(db, preset, prefilter="spacegroup", symprecs=(0.1,))  # the db's only
    auto = NoveltyIndex(db, preset)  # no formula has more than 16 records here: exhaustive
    small = NoveltyIndex(db, preset, auto_limit=3)  # keyed for formulas of more than 3
    per_formula = Counter(s.composition.reduced_formula for _, s, *_ in stored)
    found = new = rescued = 0
    for name, s, near in CANDIDATES:
        want = _brute(s, stored, preset)
        assert exact.match(s) == auto.match(s) == want, name
        got = keyed.match(s)
        assert got == _brute(s, stored, preset, sgs=_key(s)), name
        if not (near and preset == "mattergen"):
            assert got == want, name
        assert small.match(s) == (got if per_formula[s.composition.reduced_formula] > 3 else want)
        only = strict.match(s)
        assert only == _brute(s, stored, preset, sgs={_sg(s)}), name
        rescued += only != want
        found += want is not None
        new += want is None
    assert found >= 10 and new >= 4
    assert rescued >= 2  # distorted candidates found thanks to the looser tolerances
    assert keyed.fits < exact.fits  # the space-group key saves matcher calls
    assert max(per_formula.values()) > 3


def test_presets_differ_on_near_misses(db):
    strong = NoveltyIndex(db, "openlam", prefilter="formula")
    loose = NoveltyIndex(db, "mattergen", prefilter="formula")
    near = [s for _, s, n in CANDIDATES if n]
    assert all(strong.match(s) is None and loose.match(s) is not None for s in near)
    # a match across space groups: only the exhaustive prefilter finds it
    keyed = NoveltyIndex(db, "mattergen", prefilter="spacegroup")
    assert all(keyed.match(s) is None for s in near)


def test_model_filter_and_energy_window(db, stored):
    s = perturbed(NACL, 0.01, 30)
    first = stored[0][0]
    assert NoveltyIndex(db, "openlam").match(s) == first
    m2 = NoveltyIndex(db, "openlam", model="m2")
    assert m2.match(s) == _brute(s, stored, "openlam", model="m2") != first
    assert NoveltyIndex(db, "openlam", model="none-such").match(s) is None
    windowed = NoveltyIndex(db, "openlam", prefilter="formula", energy_window=0.05)
    for epa in (-3.40, -3.30, -3.15, -3.05, -2.0, None):
        want = _brute(s, stored, "openlam", epa=epa, window=0.05)
        assert windowed.match(s, energy_per_atom=epa) == want, epa
    assert windowed.match(s, energy_per_atom=-2.0) is None


def test_inputs_and_caching(db, stored):
    from ase import Atoms

    s = perturbed(NACL, 0.01, 31)
    atoms = Atoms(
        [sp.symbol for sp in s.species],
        scaled_positions=s.frac_coords,
        cell=s.lattice.matrix,
        pbc=True,
    )
    index = NoveltyIndex(db, "openlam")
    assert index.match(atoms) == index.match(s) == index.match(probe(s)) == stored[0][0]
    statements = []

    def count(*args):
        statements.append(args[2])

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        fits = index.fits
        index.match(perturbed(NACL, 0.01, 32))
        selects = [q for q in statements if q.lstrip().upper().startswith("SELECT")]
        assert len(selects) == 1  # the prefilter's ids; structures come from the cache
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert index.fits == fits + 1  # one fit: the first record matches
    with pytest.raises(RecordError):
        index.match({"lattice": [[1, 0, 0]], "species": ["Na"], "frac_coords": [[0, 0]]})
    p = probe(s)
    assert NoveltyIndex(db, "openlam", prefilter="spacegroup").match(p) == stored[0][0]
    assert p.spacegroups() == {225} and p.spacegroups((0.1,)) == {_sg(s)}
    assert find_unique([p, p]) == [None, 0]
    assert NoveltyIndex(None).match(s) is None
    with pytest.raises(ValueError, match="symprecs"):
        NoveltyIndex(db, symprecs=())
    with pytest.raises(ValueError, match="preset"):
        NoveltyIndex(db, "loose")
    with pytest.raises(ValueError, match="prefilter"):
        NoveltyIndex(db, prefilter="hash")


def _pairwise(probes, preset, same_sg):
    """dups[i] of brute-force pairwise matching (StructureMatcher on the original
    structures); with ``same_sg``, only pairs whose space-group keys intersect."""
    sm = StructureMatcher(**PRESETS[preset])
    structures = [Structure(Lattice(p.lattice), p.species, p.frac_coords) for p in probes]
    keys = [_key(s) for s in structures]
    out = []
    for i, s in enumerate(structures):
        hit = None
        for j in range(i):
            if same_sg and not keys[i] & keys[j]:
                continue
            if sm.fit(s, structures[j]):
                hit = j
                break
        out.append(hit)
    return out


@pytest.mark.parametrize("preset", list(PRESETS))
def test_find_unique_equals_pairwise(preset):
    structures = [s for s, _, _ in STORED] + [s for _, s, _ in CANDIDATES]
    order = np.random.default_rng(3).permutation(len(structures))
    structures = [probe(structures[i]) for i in order]  # reduced once for the four calls
    exact = _pairwise(structures, preset, same_sg=False)
    keyed = _pairwise(structures, preset, same_sg=True)
    assert find_unique(structures, preset, prefilter="formula") == exact
    assert find_unique(structures, preset) == exact  # no formula has more than 16 structures here
    assert find_unique(structures, preset, prefilter="spacegroup") == keyed
    sizes = Counter(p.formula for p in structures)
    mixed = find_unique(structures, preset, auto_limit=5)
    for i, p in enumerate(structures):
        assert mixed[i] == (keyed[i] if sizes[p.formula] > 5 else exact[i]), i
    assert sum(d is not None for d in exact) >= 15 and exact != keyed
    assert all(d is None or d < i for i, d in enumerate(exact))


def test_find_unique_energies_and_bad_entries():
    a, b = perturbed(NACL, 0.01, 40), perturbed(NACL, 0.01, 41)
    assert find_unique([a, b, a]) == [None, 0, 0]
    assert find_unique([a, b], energies_per_atom=[-3.4, -3.0], energy_window=0.05) == [None, None]
    assert find_unique([a, b], energies_per_atom=[-3.4, -3.3], energy_window=0.05) == [None, 0]
    assert find_unique([None, a, {"bad": 1}, b]) == [None, None, None, 1]
    with pytest.raises(ValueError, match="expected 2 values"):
        find_unique([a, b], energies_per_atom=[-3.4])
