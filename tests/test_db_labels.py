"""Labelled data in the crystal database: forces, stress and magnetic moments stored bit-exact,
bad labels refused, old files upgraded, range filters and sorts, and the training round trip
(EMT labels -> `lam db import` -> `lam db export --format deepmd` -> `lam train` / `lam test`
gives the metrics of the same data written directly as deepmd/npy)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lamkit.db import CrystalDB, RecordError
from tests.db_fixtures import backend_param

db = backend_param()


def _emt_frames(n: int, seed: int, repeat=(1, 1, 1)):
    """Rattled, strained Cu3Au fcc cells labelled with ASE's EMT (energy, forces, stress)."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.65, cubic=True).repeat(repeat)
        atoms.symbols[rng.permutation(len(atoms))[: len(atoms) // 4]] = "Au"
        strain = np.eye(3) + rng.normal(0.0, 0.01, (3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.06, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        atoms.get_stress()
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def frames():
    return _emt_frames(4, 1) + _emt_frames(3, 2, (2, 1, 1))


def test_labels_survive_bit_exact(db, frames):
    rep = db.import_records(frames, model="emt")
    assert rep.added == len(frames) and not rep.rejected
    for rid, atoms in zip(rep.added_ids, frames):
        rec = db.get(rid)
        assert np.array_equal(rec.forces, atoms.get_forces())
        assert np.array_equal(rec.stress, atoms.get_stress(voigt=False))
        assert rec.magmoms is None
        a, b, c, alpha, beta, gamma = atoms.cell.cellpar()
        assert np.allclose([rec.a, rec.b, rec.c], [a, b, c], rtol=1e-13)
        assert np.allclose([rec.alpha, rec.beta, rec.gamma], [alpha, beta, gamma], rtol=1e-12)
        d = json.loads(json.dumps(rec.to_dict()))
        assert np.array_equal(np.array(d["forces"]), atoms.get_forces())
        assert np.array_equal(np.array(d["stress"]), atoms.get_stress(voigt=False))


def test_magmoms_and_extxyz_labels_round_trip(tmp_path):
    import ase.io
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = bulk("Fe", "bcc", a=2.87, cubic=True)
    forces = np.array([[0.1, -0.2, 0.3], [-0.1, 0.2, -0.3]])
    stress = np.array([0.01, 0.02, 0.03, 0.001, 0.002, 0.003])  # Voigt xx yy zz yz xz xy
    atoms.calc = SinglePointCalculator(
        atoms, energy=-16.5, forces=forces, stress=stress, magmoms=np.array([2.2, 2.3])
    )
    ase.io.write(tmp_path / "fe.extxyz", atoms)
    db = CrystalDB(tmp_path / "x.db").init()
    rep = db.import_files([tmp_path / "fe.extxyz"], progress=False)
    assert rep.added == 1, rep.summary()
    rec = db.get(rep.added_ids[0])
    assert np.array_equal(rec.forces, forces)
    assert np.array_equal(rec.magmoms, [2.2, 2.3])
    assert np.array_equal(rec.stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]], stress)
    assert np.array_equal(rec.stress, rec.stress.T)
    # extxyz export carries the labels back to ASE's calculator
    assert db.export(tmp_path / "out.extxyz", "extxyz") == 1
    back = ase.io.read(tmp_path / "out.extxyz")
    assert np.array_equal(back.get_forces(), forces)
    assert np.array_equal(back.get_magnetic_moments(), [2.2, 2.3])
    assert np.allclose(back.get_stress(), stress, rtol=0, atol=1e-15)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"forces": [[0, 0, np.nan], [0, 0, 0]]}, "forces at site 0 is nan"),
        ({"forces": [[0, 0, 0], [2e4, 0, 0]]}, "forces at site 1 is 20000 eV/Å"),
        ({"forces": [[0, 0, 0]]}, "forces: expected shape (2, 3)"),
        ({"stress": np.full((3, 3), 5e3)}, "stress is 5000 eV/Å^3"),
        ({"stress": [1, 2, 3, 4]}, "stress: expected a 3x3 matrix or 6 Voigt"),
        ({"magmoms": [1.0, np.inf]}, "magmoms at site 1 is inf"),
        ({"magmoms": [1.0, 500.0]}, "MAX_MAGMOM"),
        ({"charges": [0, 0]}, "unknown label(s) ['charges']"),
    ],
)
def test_bad_labels_refused(tmp_path, labels, message):
    from ase.build import bulk

    atoms = bulk("Fe", "bcc", a=2.87, cubic=True)
    db = CrystalDB(tmp_path / "x.db").init()
    with pytest.raises(RecordError) as err:
        db.add(atoms, energy=-16.0, labels=labels)
    assert message in str(err.value)
    if "charges" in labels:
        return  # a record dict may carry other keys; only labels it names are read
    rep = db.import_records(
        [
            {
                "lattice": atoms.cell.array,
                "species": list(atoms.symbols),
                "frac_coords": atoms.get_scaled_positions(),
                "energy": -16.0,
                **labels,
            }
        ]
    )
    assert rep.added == 0 and message in rep.rejected[0].reason


def test_old_file_gets_label_and_lattice_columns(db, frames):
    db.import_records(frames[:3], model="emt")
    with db.engine.begin() as conn:  # make it a schema-1 database: no label or lattice columns
        conn.exec_driver_sql("DROP INDEX ix_records_formation_energy")
        for col in ("forces", "stress", "magmoms", "a", "b", "c", "alpha", "beta", "gamma"):
            conn.exec_driver_sql(f"ALTER TABLE records DROP COLUMN {col}")
        conn.exec_driver_sql("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    db.close()
    db = CrystalDB(db.url).init()
    assert db.count() == 3
    for rec, atoms in zip(db.iter_query(), frames[:3]):
        assert rec.forces is None and rec.stress is None
        assert np.allclose([rec.a, rec.b, rec.c, rec.alpha], atoms.cell.cellpar()[:4], rtol=1e-12)
    rec = db.add(frames[3], model="emt")  # new records carry labels again
    assert np.array_equal(rec.forces, frames[3].get_forces())
    assert db.query(a=(rec.a, rec.a)).records[0].id == rec.id
    with db.engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version.scalar_one() == "2"
    db.close()


def test_range_filters_and_sorts(db, frames):
    db.import_records(frames, model="emt")
    recs = list(db.iter_query())
    for name in ("volume", "density", "a", "c", "alpha", "gamma"):
        values = sorted(getattr(r, name) for r in recs)
        lo, hi = values[1], values[-2]
        got = {r.id for r in db.iter_query(**{name: (lo, hi)})}
        assert got == {r.id for r in recs if lo <= getattr(r, name) <= hi}, name
        page = db.query(order_by=f"-{name}", limit=3)
        assert [getattr(r, name) for r in page.records] == values[::-1][:3]
        rest = db.query(order_by=f"-{name}", limit=3, cursor=page.next_cursor)
        assert [getattr(r, name) for r in rest.records] == values[::-1][3:6]
    # formation energies exist once elemental references do
    db.set_references("emt", {"Cu": 0.0, "Au": 0.0})
    form = sorted(r.formation_energy_per_atom for r in db.iter_query())
    assert form == sorted(r.energy_per_atom for r in recs)
    hits = db.query(formation_energy_per_atom=(None, form[2]), order_by="formation_energy_per_atom")
    assert [r.formation_energy_per_atom for r in hits.records] == form[:3]


def test_deepmd_folder_import_keeps_forces_and_virial(tmp_path, frames):
    from lamkit.data.writer import write_deepmd_system

    group = frames[:4]
    types = {"Cu": 0, "Au": 1}
    for k, atoms in enumerate(group):  # one standard system per frame (orders differ)
        write_deepmd_system(
            tmp_path / f"sys{k}",
            atoms.positions[None],
            np.array([types[s] for s in atoms.symbols]),
            ["Cu", "Au"],
            atoms.cell.array.reshape(1, 9),
            {
                "energy": [atoms.get_potential_energy()],
                "force": atoms.get_forces()[None],
                "virial": (-atoms.get_stress(voigt=False) * atoms.get_volume()).reshape(1, 9),
            },
        )
    db = CrystalDB(tmp_path / "x.db").init()
    rep = db.import_files([tmp_path / f"sys{k}" for k in range(4)], progress=False)
    assert rep.added == 4, rep.summary()
    for rid, atoms in zip(rep.added_ids, group):
        rec = db.get(rid)
        assert np.array_equal(rec.forces, atoms.get_forces())
        assert np.allclose(rec.stress, atoms.get_stress(voigt=False), rtol=1e-12, atol=1e-16)


def test_energy_key_and_energy_file(tmp_path):
    import ase.io
    from ase.build import bulk

    cu = bulk("Cu", "fcc", a=3.6)
    cu.info["dft_energy"] = -3.75
    ase.io.write(tmp_path / "cu.extxyz", cu)
    bulk("Au", "fcc", a=4.08).write(tmp_path / "au.cif")
    bulk("Ag", "fcc", a=4.09).write(tmp_path / "ag.cif")
    db = CrystalDB(tmp_path / "x.db").init()
    rep = db.import_files(
        [tmp_path / "cu.extxyz", tmp_path / "au.cif", tmp_path / "ag.cif"],
        energy_key="dft_energy",
        energies={"au.cif": -3.2, "nothere.cif": 1.0},
        progress=False,
    )
    assert rep.added == 3 and rep.unused_energies == ["nothere.cif"]
    energies = {r.formula: r.energy for r in db.iter_query()}
    assert energies == {"Cu": -3.75, "Au": -3.2, "Ag": None}
    # a missing key is the item's error, naming the key
    cu.info.pop("dft_energy")
    ase.io.write(tmp_path / "cu2.extxyz", cu)
    rep = db.import_files([tmp_path / "cu2.extxyz"], energy_key="dft_energy", progress=False)
    assert rep.added == 0 and "no info key 'dft_energy'" in rep.rejected[0].reason


def _write_direct(frames, folder):
    """The frames as standard deepmd/npy systems (one per atom count), written directly."""
    from lamkit.data.writer import write_deepmd_system

    by_n: dict[int, list] = {}
    for atoms in frames:
        by_n.setdefault(len(atoms), []).append(atoms)
    for n, group in by_n.items():
        # standard type needs one type vector per system: reorder atoms so types agree
        order = [np.argsort([s != "Cu" for s in a.symbols], kind="stable") for a in group]
        write_deepmd_system(
            folder / f"n{n}",
            np.stack([a.positions[o] for a, o in zip(group, order)]),
            np.array([0 if s == "Cu" else 1 for s in group[0].symbols[order[0]]]),
            ["Cu", "Au"],
            np.stack([a.cell.array.reshape(9) for a in group]),
            {
                "energy": [a.get_potential_energy() for a in group],
                "force": np.stack([a.get_forces()[o] for a, o in zip(group, order)]),
                "virial": np.stack(
                    [(-a.get_stress(voigt=False) * a.get_volume()).reshape(9) for a in group]
                ),
            },
        )


def _train_and_test(tmp_path, name: str, systems: list[str], descriptor: dict) -> str:
    """`lam train` 3 steps of a tiny model on ``systems``, `lam freeze`, `lam test` on the
    first folder; returns the frozen model's path."""
    from lamkit.cli.main import main
    from lamkit.examples import example_input

    conf = example_input(systems, systems[:1], 3)
    conf["training"].update(disp_freq=1, save_freq=3)
    conf["model"]["descriptor"] = {**conf["model"]["descriptor"], **descriptor}
    conf["model"]["fitting_net"]["neuron"] = [8, 8]
    (tmp_path / f"{name}.json").write_text(json.dumps(conf))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["train", f"{name}.json", "-o", f"run_{name}"]) == 0
        assert main(["freeze", "-c", f"run_{name}", "-o", f"{name}.pth"]) == 0
        assert main(["test", "-m", f"{name}.pth", "-s", systems[0], "-d", name]) == 0
    finally:
        os.chdir(cwd)
    assert np.loadtxt(tmp_path / f"{name}.e.out").ndim == 2
    return str(tmp_path / f"{name}.pth")


def _same_metrics(model: str, exported, direct) -> dict:
    from lamkit.infer.metrics import run_test

    got = run_test(model, str(exported))["average"]
    want = run_test(model, str(direct))["average"]
    assert set(got) == set(want) and {"rmse_e", "rmse_f", "rmse_v"} <= set(got)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    return got


def test_round_trip_train_and_test(tmp_path, frames):
    import ase.io

    from lamkit.cli.main import main

    ase.io.write(tmp_path / "emt.extxyz", frames)
    # extxyz text keeps 8 decimals: the file as read is the original the database must keep
    frames = ase.io.read(tmp_path / "emt.extxyz", ":")
    dbpath = str(tmp_path / "x.db")
    assert (
        main(
            [
                "db",
                "--db",
                dbpath,
                "import",
                str(tmp_path / "emt.extxyz"),
                "--model",
                "emt",
                "--no-progress",
            ]
        )
        == 0
    )
    mixed, standard = tmp_path / "mixed", tmp_path / "standard"
    for out, fmt in ((mixed, "deepmd"), (standard, "deepmd-standard")):
        args = ["db", "--db", dbpath, "export", str(out), "--format", fmt, "--model", "emt"]
        assert main(args) == 0
    assert sorted(p.name for p in mixed.iterdir()) == ["4", "8", "type_map.raw"]
    assert sorted(p.name for p in standard.iterdir()) == ["Cu3Au1", "Cu6Au2", "type_map.raw"]
    assert (mixed / "type_map.raw").read_text().split() == ["Cu", "Au"]
    # the exported labels are the stored ones, in import order within each atom count
    force = np.load(mixed / "4" / "set.000" / "force.npy").reshape(-1, 4, 3)
    assert np.array_equal(force, np.stack([a.get_forces() for a in frames[:4]]))
    virial = np.load(mixed / "8" / "set.000" / "virial.npy")
    want = np.stack([(-a.get_stress(voigt=False) * a.get_volume()).reshape(9) for a in frames[4:]])
    assert np.allclose(virial, want, rtol=1e-13, atol=1e-15)
    types = np.load(mixed / "8" / "set.000" / "real_atom_types.npy")
    assert np.array_equal(types, [[0 if s == "Cu" else 1 for s in a.symbols] for a in frames[4:]])

    direct = tmp_path / "direct"
    _write_direct(frames, direct)
    # se_e2_a reads the standard export; a type-embedding descriptor reads the mixed one
    se = _train_and_test(
        tmp_path,
        "se",
        [str(standard / "Cu3Au1"), str(standard / "Cu6Au2")],
        {"neuron": [4, 8], "axis_neuron": 4},
    )
    metrics = _same_metrics(se, standard, direct)
    assert metrics["rmse_f"] > 0
    dpa1 = _train_and_test(
        tmp_path,
        "dpa1",
        [str(mixed / "4"), str(mixed / "8")],
        {
            "type": "dpa1",
            "neuron": [4, 8],
            "axis_neuron": 4,
            "tebd_dim": 4,
            "attn": 4,
            "attn_layer": 1,
            "type_one_side": True,
        },
    )
    _same_metrics(dpa1, mixed, direct)


def test_service_record_view_and_range_params(db, frames):
    from lamkit.db.service import create_app
    from tests.db_data import API, client_for, ok

    rep = db.import_records(frames, model="emt")
    app = create_app(db, api_keys=[], keys_from_environment=False)
    with client_for(app) as client:
        rid = rep.added_ids[0]
        detail = ok(client.get(f"{API}/structures/{rid}"))
        assert np.array_equal(np.array(detail["labels"]["forces"]), frames[0].get_forces())
        assert np.array_equal(
            np.array(detail["labels"]["stress"]), frames[0].get_stress(voigt=False)
        )
        assert detail["labels"]["magmoms"] is None
        volumes = sorted(r.volume for r in db.iter_query())
        lo, hi = volumes[1], volumes[-2]
        page = ok(
            client.get(
                f"{API}/structures",
                params={"volume_min": lo, "volume_max": hi, "order_by": "-volume"},
            )
        )
        got = [r["volume"] for r in page["records"]]
        assert got == volumes[1:-1][::-1]
        bad = client.get(f"{API}/structures", params={"density_min": 9, "density_max": 1})
        assert bad.status_code == 422 and "density_min/density_max" in bad.text


def test_parquet_export_carries_labels(tmp_path, frames):
    import pyarrow.parquet as pq

    db = CrystalDB(tmp_path / "x.db").init()
    db.import_records(frames[:2])
    assert db.export(tmp_path / "x.parquet", "parquet") == 2
    rows = pq.read_table(tmp_path / "x.parquet").to_pylist()
    for row, atoms in zip(rows, frames[:2]):
        assert np.array_equal(np.array(row["forces"]).reshape(-1, 3), atoms.get_forces())
        assert np.array_equal(np.array(row["stress"]), atoms.get_stress(voigt=False).reshape(9))
        assert row["magmoms"] is None and row["a"] == pytest.approx(atoms.cell.cellpar()[0])


def test_deepmd_export_in_several_sets_reads_back(tmp_path, frames, monkeypatch):
    from lamkit.data.system import DataRequirement, load_system
    from lamkit.db import deepmd_export

    monkeypatch.setattr(deepmd_export, "SET_SIZE", 3)
    db = CrystalDB(tmp_path / "x.db").init()
    db.import_records(frames[:4])
    db.add(frames[0].copy())  # a copy has no calculator: no energy, so it is left out
    assert db.count() == 5
    assert db.export(tmp_path / "dp", "deepmd") == 4
    assert sorted(p.name for p in (tmp_path / "dp" / "4").glob("set.*")) == ["set.000", "set.001"]
    reqs = [DataRequirement("energy", 1), DataRequirement("force", 3, atomic=True)]
    system = load_system(tmp_path / "dp" / "4", ["Au", "Cu"], reqs, sort_atoms=False)
    assert system.mixed_type and system.nframes == 4
    for f, atoms in enumerate(frames[:4]):
        assert system.labels["energy"][f, 0] == atoms.get_potential_energy()
        assert np.array_equal(system.labels["force"][f], atoms.get_forces())
        assert np.allclose(system.coords[f], atoms.positions, rtol=0, atol=1e-12)
        names = [["Au", "Cu"][t] for t in system.atype[f]]
        assert names == list(atoms.symbols)
