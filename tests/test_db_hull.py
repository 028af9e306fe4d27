"""Convex hulls against a direct pymatgen PhaseDiagram, hulls kept up to date on insert, energy
above hull of new structures, duplicates, symmetry against spglib, and exports that read back,
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import zipfile

import ase.io
import numpy as np
import pyarrow.parquet as pq
import pytest
import spglib
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Structure

from lamkit.db import QueryError, synthetic
from tests.db_data import CUAU_EHULL, N_NACL, fcc, fill, l10, rocksalt
from tests.db_fixtures import BACKENDS, crystal_db

POOL = ("Li", "Fe", "O", "Na", "Cl")


@pytest.fixture(scope="module", params=BACKENDS)
def hulls(request):
    """The hand-made set (known answers) plus ~150 synthetic Li-Fe-O-Na-Cl structures."""
    with crystal_db(request.param) as db:
        fill(db)
        items = list(synthetic.generate(150, seed=11, elements=POOL, model="syn", strain=0.01))
        rep = db.import_records(items, batch_size=40)
        assert rep.added == 150
        yield db


def _direct_hull(records, model: str) -> dict[int, tuple[float, float]]:
    """id -> (formation energy, e_above_hull) per record from one pymatgen PhaseDiagram per
    chemical system (the records of that model whose system is a subset)."""
    mine = [r for r in records if r.model == model and r.energy is not None]
    out = {}
    for cs in {r.chemsys for r in mine}:
        els = set(cs.split("-"))
        entries = [
            PDEntry(Composition(" ".join(r.species)), r.energy, attribute=r.id)
            for r in mine
            if set(r.elements) <= els
        ]
        try:
            pd = PhaseDiagram(entries)
        except ValueError:  # no elemental entry for some element: no hull for this system
            for r in mine:
                if r.chemsys == cs:
                    out[r.id] = (None, None)
            continue
        for e in entries:
            rec = next(r for r in mine if r.id == e.attribute)
            if rec.chemsys == cs:
                out[rec.id] = (pd.get_form_energy_per_atom(e), pd.get_e_above_hull(e))
    return out


def test_stored_hull_energies_match_pymatgen(hulls):
    records = list(hulls.iter_query())
    for model in ("toy", "syn", "other"):
        want = _direct_hull(records, model)
        assert len(want) >= 3
        for r in records:
            if r.id in want:
                form, ehull = want[r.id]
                if ehull is None:
                    assert r.e_above_hull is None, r
                    continue
                assert r.formation_energy_per_atom == pytest.approx(form, abs=1e-9), r
                assert r.e_above_hull == pytest.approx(ehull, abs=1e-9), r
    no_energy = [r for r in records if r.energy is None]
    assert no_energy and all(r.e_above_hull is None for r in no_energy)


def test_known_answers(hulls):
    h = hulls.hull("Cu-Au")
    by_formula = {}
    for e in h.entries:
        by_formula.setdefault(e["formula"], []).append(e)
    assert by_formula["CuAu"][0]["e_above_hull"] == pytest.approx(CUAU_EHULL, abs=1e-9)
    cu3au = Composition("Cu3Au").reduced_formula
    assert by_formula[cu3au][0]["stable"]
    assert {e["formula"] for e in h.stable} == {"Cu", "Au", cu3au}
    nacl = hulls.hull("Na-Cl", model="toy")
    assert sum(e["chemsys"] == "Cl-Na" for e in nacl.entries) == N_NACL
    cscl = [e for e in nacl.entries if e["formula"] == "NaCl"]
    assert sorted(round(e["e_above_hull"], 9) for e in cscl)[-1] == pytest.approx(0.55)
    assert json.loads(json.dumps(h.to_dict()))["chemsys"] == "Au-Cu"


def test_hull_errors(hulls):
    with pytest.raises(QueryError, match="several models"):
        hulls.hull("Na-Cl")
    with pytest.raises(QueryError, match="no energies of model 'nope'"):
        hulls.hull("Na-Cl", model="nope")
    with pytest.raises(QueryError, match="no records with energies"):
        hulls.hull("Si")
    with pytest.raises(QueryError, match="unknown element"):
        hulls.hull("Na-Zz")


def test_e_above_hull_of_a_new_structure(hulls):
    records = list(hulls.iter_query(model="syn", only_elements=["Li", "Fe", "O"]))
    entries = [PDEntry(Composition(" ".join(r.species)), r.energy) for r in records]
    pd = PhaseDiagram(entries)
    for formula, epa in (("Li2FeO3", -5.0), ("LiFeO2", -3.0), ("FeO", -9.0)):
        comp = Composition(formula)
        e, decomp = hulls.e_above_hull(comp, epa * comp.num_atoms, model="syn")
        direct = pd.get_e_above_hull(PDEntry(comp, epa * comp.num_atoms), allow_negative=True)
        assert e == pytest.approx(direct, abs=1e-9)
        assert sum(p["fraction"] for p in decomp) == pytest.approx(1.0)
        assert all(p["id"] is None or hulls.get(p["id"]).model == "syn" for p in decomp)
    s = rocksalt("Na", "Cl", 5.64)
    e, decomp = hulls.e_above_hull(s, -3.0 * 8, model="toy")
    assert e == pytest.approx(0.40, abs=1e-9)
    assert [p["formula"] for p in decomp] == ["NaCl"]


@pytest.mark.parametrize("kind", BACKENDS)
def test_hulls_follow_inserts_and_declared_references(kind):
    with crystal_db(kind) as db:
        fill(db)
        cuau = db.query(formula="CuAu").records[0]
        assert cuau.e_above_hull == pytest.approx(CUAU_EHULL)
        # a new ground state at CuAu: the old L1_0 record is now 0.05 eV/atom above it
        new = db.add(l10("Cu", "Au", 3.80), energy=(-3.45 - 0.05) * 2, model="toy")
        assert new.e_above_hull == pytest.approx(0.0, abs=1e-12)
        assert db.get(cuau.id).e_above_hull == pytest.approx(0.05)
        # Cu3Au has not moved: the hull at x_Au = 1/4 still passes through it
        l12 = db.query(formula="Cu3Au").records[0]
        assert l12.e_above_hull == pytest.approx(0.0, abs=1e-12)
        # a declared reference below the elemental records moves every formation energy
        db.set_references("toy", {"Cu": -3.60})
        assert db.references("toy")["Cu"]["source"] == "declared"
        cu = db.query(chemsys="Cu").records[0]
        assert cu.e_above_hull == pytest.approx(0.10)
        assert db.get(l12.id).formation_energy_per_atom == pytest.approx(
            -3.60 - (0.75 * -3.60 + 0.25 * -3.20)
        )
        assert db.update_hulls() > 0


@pytest.mark.parametrize("kind", BACKENDS)
def test_inserts_above_the_hull_take_the_shortcut_and_agree_with_a_full_update(kind, monkeypatch):
    from lamkit.db import hull as hull_module

    with crystal_db(kind) as db:
        fill(db)
        calls = []
        full = hull_module.update_hulls

        def spy(*args, **kwargs):
            calls.append(args[1])
            return full(*args, **kwargs)

        monkeypatch.setattr(hull_module, "update_hulls", spy)
        # above the hull: a strained NaCl, a Cu above the reference, a batch of two
        a = db.add(rocksalt("Na", "Cl", 5.9), energy=-3.0 * 8, model="toy")
        b = db.add(fcc("Cu", 3.7), energy=-3.4 * 4, model="toy")
        rep = db.import_records(
            [(l10("Cu", "Au", 3.9), -3.3 * 2), (rocksalt("Na", "Cl", 6.0), -2.9 * 8)],
            model="toy",
        )
        assert calls == [] and rep.added == 2
        assert a.e_above_hull == pytest.approx(0.40) and b.e_above_hull == pytest.approx(0.10)
        # a new ground state goes the long way
        db.add(l10("Cu", "Au", 3.82), energy=-3.5 * 2, model="toy")
        assert len(calls) == 1
        before = {r.id: (r.e_above_hull, r.formation_energy_per_atom) for r in db.iter_query()}
        monkeypatch.setattr(hull_module, "update_hulls", full)
        db.update_hulls()
        after = {r.id: (r.e_above_hull, r.formation_energy_per_atom) for r in db.iter_query()}
        assert after.keys() == before.keys()
        for rid, (e, f) in before.items():
            if e is None:
                assert after[rid][0] is None
            else:
                assert after[rid] == pytest.approx((e, f), abs=1e-12)
        records = list(db.iter_query())
        for rid, (form, ehull) in _direct_hull(records, "toy").items():
            got = db.get(rid)
            assert got.e_above_hull == pytest.approx(ehull, abs=1e-9)
            assert got.formation_energy_per_atom == pytest.approx(form, abs=1e-9)


# ------------------------------------------------------------------ duplicates and symmetry
@pytest.mark.parametrize("kind", BACKENDS)
def test_match_and_find_duplicates(kind):
    with crystal_db(kind) as db:
        base = rocksalt("Na", "Cl", 5.64)
        a = db.add(base, energy=-27.2, model="m")
        nudged = base.copy()
        nudged.perturb(0.02)
        b = db.add(nudged, energy=-27.3, model="m")
        c = db.add(base * (1, 1, 2), energy=-54.4, model="m")  # supercell
        d = db.add(rocksalt("Na", "Cl", 5.64), energy=-20.0, model="m")  # energy 26 % off
        e = db.add(rocksalt("K", "Cl", 6.29), energy=-27.2, model="m")
        groups = db.find_duplicates()
        assert groups == [sorted([a.id, b.id, c.id])]
        assert sorted(r.id for r in db.match(base, energy=-27.2)) == [a.id, b.id, c.id]
        assert [r.id for r in db.match(base)] == [a.id, b.id, c.id, d.id]
        assert db.match(rocksalt("Na", "Cl", 5.64 * 1.0), energy=-27.2, model="x") == []
        assert [r.id for r in db.match(rocksalt("K", "Cl", 6.29))] == [e.id]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_symmetry_matches_spglib(seed):
    items = list(synthetic.generate(8, seed=seed, strain=0.005))
    with crystal_db("sqlite") as db:
        rep = db.import_records(items)
        for rid in rep.added_ids:
            rec = db.get(rid)
            sym = db.symmetry(rid)
            cell = (
                rec.lattice,
                rec.frac_coords,
                [Structure(rec.lattice, [el], [[0, 0, 0]]).species[0].Z for el in rec.species],
            )
            ds = spglib.get_symmetry_dataset(cell, symprec=0.1)
            assert sym["number"] == ds.number == rec.spacegroup_number
            assert sym["symbol"] == ds.international == rec.spacegroup_symbol
            assert sym["wyckoffs"] == list(ds.wyckoffs)
            assert sym["equivalent_atoms"] == [int(i) for i in ds.equivalent_atoms]
            assert sym["n_operations"] == len(ds.rotations)
            assert len(sym["primitive"]["species"]) <= rec.nsites
            tight = db.symmetry(rid, symprec=1e-5)
            assert tight["number"] <= sym["number"]


# ------------------------------------------------------------------ export
def _sites(rec) -> list:
    frac = np.round(rec.frac_coords % 1.0, 5) % 1.0
    return sorted((el, *map(float, f)) for el, f in zip(rec.species, frac))


def test_exports_read_back(hulls, tmp_path):
    flt = {"only_elements": ["Na", "Cl", "Cu", "Au"]}
    recs = list(hulls.iter_query(**flt))
    n = len(recs)
    assert hulls.export(tmp_path / "a.zip", "cif-zip", **flt) == n
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        names = sorted(x for x in zf.namelist() if x.endswith(".cif"))
        index = [json.loads(line) for line in zf.read("index.jsonl").decode().splitlines()]
        assert len(names) == n and [d["id"] for d in index] == [r.id for r in recs]
        zf.extractall(tmp_path / "cifs", members=names)
    with crystal_db("sqlite") as other:
        rep = other.import_files([tmp_path / "cifs"], progress=False)
        assert rep.added == n and not rep.rejected
        back = {r.source: r for r in other.iter_query()}
        for r in recs:
            b = back[f"{r.public_id}_{r.formula}.cif"]
            # CifWriter groups sites by element: compare the sets of (species, position)
            assert np.allclose(b.structure.lattice.abc, r.structure.lattice.abc, atol=1e-5)
            assert np.allclose(b.structure.lattice.angles, r.structure.lattice.angles, atol=1e-5)
            assert _sites(b) == _sites(r)

    assert hulls.export(tmp_path / "a.extxyz", "extxyz", **flt) == n
    frames = ase.io.read(tmp_path / "a.extxyz", index=":")
    assert len(frames) == n
    for f, r in zip(frames, recs):
        assert f.get_chemical_symbols() == r.species
        # extxyz writes 8 decimals
        assert np.allclose(f.cell.array, r.lattice, atol=1e-7)
        assert np.allclose(f.get_scaled_positions(wrap=False), r.frac_coords, atol=1e-7)
        if r.energy is not None:
            assert f.get_potential_energy() == pytest.approx(r.energy, abs=1e-10)

    assert hulls.export(tmp_path / "a.parquet", "parquet", **flt) == n
    table = pq.read_table(tmp_path / "a.parquet").to_pylist()
    for row, r in zip(table, recs):
        assert row["id"] == r.id and row["formula"] == r.formula
        assert np.array(row["lattice"]).tobytes() == r.lattice.reshape(-1).tobytes()
        assert np.array(row["frac_coords"]).tobytes() == r.frac_coords.reshape(-1).tobytes()
        assert row["e_above_hull"] == r.e_above_hull and row["submitted"] == r.submitted

    with pytest.raises(QueryError, match="not one of"):
        hulls.export(tmp_path / "x", "pdf")
    assert hulls.export(tmp_path / "none.parquet", "parquet", formula="Au7O3") == 0


def test_hull_entries_are_exactly_on_the_hull(tmp_path):
    """Every stable record (elemental references included) stores e_above_hull == 0, so that
    ``e_above_hull_max=0`` selects the whole hull (rounding of the facet planes is snapped);
    both for a bulk import (one hull update) and for single inserts."""
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from lamkit.db import CrystalDB

    cases = ((bulk("NaCl", "rocksalt", a=5.6), -6.8), (bulk("Na", "bcc", a=4.2), -1.3),
             (bulk("Cl", "fcc", a=5.0), -1.8))  # fmt: skip
    files = []
    for k, (atoms, e) in enumerate(cases):
        atoms.calc = SinglePointCalculator(atoms, energy=e * len(atoms))
        files.append(tmp_path / f"s{k}.extxyz")
        write(files[-1], atoms)
    bulk_db = CrystalDB(tmp_path / "bulk.db").init()
    bulk_db.import_files(files, model="m")
    one_db = CrystalDB(tmp_path / "one.db").init()
    for atoms, e in cases:
        one_db.add(atoms, energy=e * len(atoms), model="m")
    for db in (bulk_db, one_db):
        recs = db.query(limit=10).records
        assert sorted(r.e_above_hull for r in recs) == [0.0, 0.0, 0.0]
        assert len(db.query(e_above_hull_max=0).records) == 3
