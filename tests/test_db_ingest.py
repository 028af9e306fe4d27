"""Import: every file format, bulk and file by file, idempotent re-runs, rejections with reasons
(never an exception), on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry
from pymatgen.io.cif import CifWriter

from tests.db_data import cscl, fcc, rocksalt, zincblende
from tests.db_fixtures import backend_param

db = backend_param()


def _structures() -> list[Structure]:
    return [
        rocksalt("Na", "Cl", 5.64),
        cscl("Cs", "Cl", 4.12),
        zincblende("Ga", "As", 5.65),
        fcc("Cu", 3.61),
        Structure(
            Lattice.from_parameters(4.1, 5.3, 6.2, 80, 95, 101),
            ["Li", "Fe", "O", "O"],
            [[0.1, 0.2, 0.3], [0.6, 0.5, 0.7], [0.35, 0.8, 0.05], [0.85, 0.15, 0.55]],
        ),
    ]


def _same(rec, s: Structure, atol=1e-6) -> bool:
    return (
        rec.species == [sp.symbol for sp in s.species]
        and np.allclose(rec.lattice, s.lattice.matrix, atol=atol)
        and np.allclose(rec.frac_coords, s.frac_coords, atol=atol)
    )


def _all(db):
    return list(db.iter_query())


def test_cif_files_and_folder(db, tmp_path):
    structs = _structures()
    for i, s in enumerate(structs):
        CifWriter(s).write_file(tmp_path / f"s{i}.cif")
    (tmp_path / "notes.txt").write_text("not a structure")  # unknown suffix: ignored
    rep = db.import_files([tmp_path], submitter="bob", progress=False)
    assert (rep.added, rep.duplicates, len(rep.rejected)) == (len(structs), 0, 0), rep.summary()
    recs = sorted(_all(db), key=lambda r: r.source)
    for i, (rec, s) in enumerate(zip(recs, structs)):
        assert rec.source == f"s{i}.cif" and rec.submitter == "bob"
        assert rec.formula == s.composition.reduced_formula
        assert _same(rec, s)
    again = db.import_files([tmp_path], submitter="bob", progress=False)
    assert (again.added, again.duplicates) == (0, len(structs))
    assert db.count() == len(structs)


def test_poscar_extxyz_and_other_ase_formats(db, tmp_path):
    structs = _structures()
    ase.io.write(tmp_path / "POSCAR", structs[0].to_ase_atoms(), format="vasp", direct=True)
    frames = []
    for k, s in enumerate(structs):
        atoms = s.to_ase_atoms()
        atoms.calc = SinglePointCalculator(atoms, energy=-1.25 * len(s) - k)
        frames.append(atoms)
    ase.io.write(tmp_path / "frames.extxyz", frames, format="extxyz")
    ase.io.write(tmp_path / "frames.traj", frames[:2])  # ASE's own trajectory format
    rep = db.import_files(
        [tmp_path / "POSCAR", tmp_path / "frames.extxyz", tmp_path / "frames.traj"],
        model="m",
        progress=False,
    )
    assert rep.added == 1 + len(structs) + 2 and not rep.rejected, rep.summary()
    poscar = db.query(formula="NaCl", submitter=None, model="m").records
    assert any(r.source == "POSCAR" and r.energy is None and _same(r, structs[0]) for r in poscar)
    xyz = sorted((r for r in _all(db) if r.source == "frames.extxyz"), key=lambda r: r.id)
    for k, (rec, s) in enumerate(zip(xyz, structs)):
        assert rec.energy == pytest.approx(-1.25 * len(s) - k, abs=1e-9)
        assert rec.model == "m"
        assert _same(rec, s, atol=1e-8)
    traj = [r for r in _all(db) if r.source == "frames.traj"]
    assert sorted(r.energy for r in traj) == pytest.approx(sorted([-10.0, -3.5]))


def test_pymatgen_json_and_computed_entries(db, tmp_path):
    structs = _structures()
    (tmp_path / "one.json").write_text(json.dumps(structs[0].as_dict()))
    (tmp_path / "many.json").write_text(json.dumps([s.as_dict() for s in structs[1:3]]))
    entry = ComputedStructureEntry(structs[4], energy=-20.5)
    (tmp_path / "entry.json").write_text(json.dumps(entry.as_dict()))
    rep = db.import_files(sorted(tmp_path.iterdir()), progress=False)
    assert rep.added == 4 and not rep.rejected, rep.summary()
    by_source = {}
    for r in _all(db):
        by_source.setdefault(r.source, []).append(r)
    assert _same(by_source["one.json"][0], structs[0], atol=1e-12)
    assert by_source["entry.json"][0].energy == -20.5
    assert _same(by_source["entry.json"][0], structs[4], atol=1e-12)


def test_public_api_record_json(db, tmp_path):
    """The public service's record JSON: the pymatgen dict is a JSON string."""
    structs = _structures()
    recs = [
        {
            "id": 100 + i,
            "formula": s.composition.reduced_formula,
            "structure": json.dumps(s.as_dict()),
            "energy": -2.0 * len(s) - i,
            "submissionTime": f"2023-0{i + 1}-02T03:04:05Z",
        }
        for i, s in enumerate(structs)
    ]
    (tmp_path / "list.json").write_text(json.dumps(recs[:2]))
    (tmp_path / "page.json").write_text(json.dumps({"items": recs[2:3], "nextStartId": 0}))
    (tmp_path / "lines.jsonl").write_text("\n".join(json.dumps(r) for r in recs[3:]) + "\n\n")
    rep = db.import_files(sorted(tmp_path.iterdir()), submitter="api", progress=False)
    assert rep.added == len(structs) and not rep.rejected, rep.summary()
    stored = {r.energy: r for r in _all(db)}
    for i, (d, s) in enumerate(zip(recs, structs)):
        rec = stored[d["energy"]]
        assert _same(rec, s, atol=1e-12) and rec.formula == d["formula"]
        assert rec.submitted.isoformat() == f"2023-0{i + 1}-02T03:04:05+00:00"
        assert rec.submitter == "api"


def _write_deepmd(folder, nframes=3, energy=True, type_map=True, mixed_box=None):
    folder.mkdir()
    s = rocksalt("Na", "Cl", 5.64)
    (folder / "type.raw").write_text(
        "\n".join("0" if sp.symbol == "Na" else "1" for sp in s.species)
    )
    if type_map:
        (folder / "type_map.raw").write_text("Na\nCl\n")
    box = np.stack([s.lattice.matrix.reshape(-1) * (1 + 0.01 * f) for f in range(nframes)])
    if mixed_box is not None:
        box[1] = mixed_box
    coord = np.stack([(s.frac_coords @ b.reshape(3, 3)).reshape(-1) for b in box])
    sets = folder / "set.000"
    sets.mkdir()
    np.save(sets / "box.npy", box)
    np.save(sets / "coord.npy", coord)
    if energy:
        np.save(sets / "energy.npy", -27.0 - np.arange(nframes, dtype=float))
    return s, box


def test_deepmd_npy_system(db, tmp_path):
    s, box = _write_deepmd(tmp_path / "sys", nframes=3)
    rep = db.import_files([tmp_path / "sys"], model="dp", progress=False)
    assert rep.added == 3 and not rep.rejected, rep.summary()
    recs = sorted(_all(db), key=lambda r: -r.energy)
    for f, rec in enumerate(recs):
        assert rec.energy == -27.0 - f and rec.formula == "NaCl" and rec.model == "dp"
        assert np.allclose(rec.lattice.reshape(-1), box[f], atol=1e-12)
        assert np.allclose(rec.frac_coords, s.frac_coords, atol=1e-12)


def test_deepmd_problems_are_rejections(db, tmp_path):
    _write_deepmd(tmp_path / "no_map", type_map=False)
    _write_deepmd(tmp_path / "flat", nframes=3, mixed_box=np.zeros(9))
    _write_deepmd(tmp_path / "good", nframes=2)
    rep = db.import_files(
        [tmp_path / "no_map", tmp_path / "flat", tmp_path / "good"], progress=False
    )
    reasons = {r.source.rsplit("/", 1)[-1]: r.reason for r in rep.rejected}
    assert "type_map" in reasons["no_map"]
    assert "degenerate box" in reasons["flat"]  # the data loader refuses the whole system
    assert rep.added == 2


def test_bulk_python_objects_and_batches(db):
    """Structures, Atoms, (structure, energy) pairs and dicts; batches of 2 (several
    transactions); a re-run adds nothing."""
    structs = _structures()
    atoms = structs[1].to_ase_atoms()
    atoms.info["energy"] = -7.0
    atoms.info["tags"] = "x,y"
    items = [
        structs[0],
        atoms,
        (structs[2], -9.5),
        {"structure": structs[3].as_dict(), "energy": -14.0, "model": "own", "tags": ["t"]},
        {
            "lattice": structs[4].lattice.matrix.tolist(),
            "species": ["Li", "Fe", "O", "O"],
            "frac_coords": structs[4].frac_coords.tolist(),
            "energy": -20.0,
            "submitted": "2020-01-01T00:00:00",
        },
    ]
    rep = db.import_records(items, submitter="s", model="default", batch_size=2)
    assert rep.added == 5 and rep.seen == 5 and len(rep.added_ids) == 5
    got = {r.id: r for r in _all(db)}
    assert sorted(got) == sorted(rep.added_ids)
    recs = [got[i] for i in rep.added_ids]
    assert [r.energy for r in recs] == [None, -7.0, -9.5, -14.0, -20.0]
    assert [r.model for r in recs] == ["default", "default", "default", "own", "default"]
    assert recs[1].tags == ["x", "y"] and recs[3].tags == ["t"]
    assert recs[4].submitted.year == 2020
    again = db.import_records(items, submitter="s", model="default", batch_size=3)
    assert (again.added, again.duplicates) == (0, 5)
    assert db.count() == 5


def _bad_items():
    good = rocksalt("Na", "Cl", 5.64)
    lat = np.eye(3) * 4.0
    return [
        (good, -27.0),
        {"lattice": lat, "species": ["Na", "Cl"], "frac_coords": [[0, 0, 0], [0.01, 0, 0]]},
        {"lattice": lat, "species": ["Na"], "frac_coords": [[np.nan, 0, 0]]},
        {"lattice": np.zeros((3, 3)), "species": ["Na"], "frac_coords": [[0, 0, 0]]},
        {"lattice": lat, "species": ["Qq"], "frac_coords": [[0, 0, 0]]},
        {"lattice": lat, "species": ["Na"], "frac_coords": [[0, 0, 0]], "energy": float("nan")},
        {"lattice": lat, "species": ["Na"], "frac_coords": [[0, 0, 0]], "energy": "high"},
        {"lattice": "abc", "species": ["Na"], "frac_coords": [[0, 0, 0]]},
        {"structure": "{not json"},
        {"what": 1},
        Structure(Lattice.cubic(4), [{"Na": 0.5, "K": 0.5}], [[0, 0, 0]]),
        {"lattice": lat, "species": ["Na"], "frac_coords": [[0, 0, 0]], "submitted": "yesterday"},
        {"lattice": lat, "species": ["Na"], "frac_coords": [[0, 0, 0]], "tags": ["x" * 101]},
        42,
    ]


REASONS = [
    "overlapping atoms",
    "NaN or infinite",
    "cell volume",
    "unknown element",
    "finite number",
    "must be a number",
    "not numbers",
    "not valid JSON",
    "unrecognised record dict",
    "disordered",
    "ISO 8601",
    "at most 100",
    "expected a pymatgen Structure",
]


def test_each_invalid_item_is_rejected_with_its_reason(db):
    rep = db.import_records(_bad_items(), batch_size=3)
    assert rep.added == 1 and rep.seen == len(_bad_items())
    assert [r.index for r in rep.rejected] == list(range(1, len(_bad_items())))
    for rej, reason in zip(rep.rejected, REASONS):
        assert reason in rej.reason, (rej, reason)
    text = rep.summary()
    assert f"1 added, 0 duplicates, {len(REASONS)} rejected of {len(_bad_items())}" in text
    assert "rejected records [1]: overlapping atoms" in text
    assert rep.to_dict()["rejected"][0]["reason"].startswith("overlapping atoms")
    assert db.count() == 1


def test_bad_files_are_rejections_not_crashes(db, tmp_path):
    (tmp_path / "garbage.cif").write_bytes(b"\x00\xff data_ nonsense \x89PNG")
    (tmp_path / "broken.json").write_text('{"items": [{"structure": 5}, 3, ')
    (tmp_path / "lines.jsonl").write_text('{"x": 1}\nnot json\n[1, 2]\n')
    (tmp_path / "deep.json").write_text("[" * 100000 + "]" * 100000)
    (tmp_path / "bad.extxyz").write_text('3\nLattice="1 0 0 0 1 0 0 0 1"\nNa 0 0\n')
    (tmp_path / "POSCAR").write_text("this is not a POSCAR\n1.0\n")
    paths = sorted(tmp_path.iterdir()) + [tmp_path / "missing.cif"]
    rep = db.import_files(paths, progress=False)
    assert rep.added == 0
    sources = {r.source.rsplit("/", 1)[-1] for r in rep.rejected}
    assert sources == {p.name for p in paths}
    for r in rep.rejected:
        assert r.reason  # every rejection says why
    missing = [r for r in rep.rejected if r.source.endswith("missing.cif")]
    assert missing[0].reason == "no such file or folder"
    lines = [r for r in rep.rejected if r.source.endswith("lines.jsonl")]
    assert [r.index for r in lines] == [0, 1, 2]


def test_dedupe_skips_matching_structures(db):
    base = rocksalt("Na", "Cl", 5.64)
    db.add(base, energy=-27.0)
    nudged = base.copy()
    nudged.perturb(0.01, min_distance=0.005)
    supercell = base * (2, 1, 1)
    other = rocksalt("Na", "Cl", 6.4)  # 13 % larger: StructureMatcher scales volumes, so use
    other.replace(0, "K")  # a different formula-preserving change instead: K substituted
    rep = db.import_records(
        [(nudged, -27.01), (supercell, -54.0), (rocksalt("Na", "Cl", 5.64), -27.0), (other, -26)],
        dedupe=True,
    )
    assert rep.duplicates == 3 and rep.added == 1, rep.summary()
    rep2 = db.import_records([(nudged, -27.01)], dedupe=False)
    assert rep2.added == 1  # without dedupe, only identical records are skipped


def test_hostile_strings_are_stored_verbatim(db):
    nasty = "x'); DROP TABLE records; --\\%_\"\u202e"
    rec = db.add(
        rocksalt("Na", "Cl", 5.64),
        submitter=nasty,
        tags=[nasty, "a\u0000b"],
        source=nasty,
        model="m'--",
    )
    back = db.get(rec.id)
    assert (back.submitter, back.source, back.model) == (nasty, nasty, "m'--")
    assert back.tags == sorted([nasty, "a\u0000b"])
    assert db.count() == 1


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("submitter", "a\u0000b", "NUL"),
        ("source", "x" * 1025, "at most 1024"),
        ("model", "m" * 256, "at most 255"),
    ],
)
def test_provenance_strings_are_checked_alike_on_every_backend(db, field, value, reason):
    rep = db.import_records([{"structure": rocksalt("Na", "Cl", 5.64).as_dict(), field: value}])
    assert rep.added == 0 and reason in rep.rejected[0].reason


def test_min_distance_agrees_with_a_neighbour_list():
    """The numpy path (small cells) against vesin, on random, skewed and tiny cells."""
    import math

    from lamkit.db import distances as D

    rng = np.random.default_rng(7)
    checked = direct = 0
    for t in range(400):
        n = int(rng.integers(1, 10))
        lattice = np.diag(rng.uniform(0.3, 4.0, 3)) + rng.normal(0, 1.0 if t % 3 else 0.2, (3, 3))
        if abs(np.linalg.det(lattice)) < 0.05:
            continue
        frac = rng.uniform(-1.5, 2.5, (n, 3))
        cutoff = float(rng.choice([0.5, 1.0, 2.5]))
        got = D.shortest_distance(lattice, frac, cutoff)
        if n == 1 and cutoff <= min(np.linalg.norm(lattice, axis=1)):
            want = math.inf
        else:
            want = D._min_distance_vesin(lattice, frac @ lattice, cutoff)
        assert got == want or abs(got - want) < 1e-9, (t, got, want)
        checked += 1
        direct += math.isfinite(got)
    assert checked > 350 and direct > 100  # many cells have a pair inside the cutoff
