"""lam db import --workers: rows made in worker processes give the same database (ids, derived
fields, space groups) and the same rejections as one process."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sqlalchemy", reason="the crystal database needs lamkit[db]")

from lamkit.db import CrystalDB  # noqa: E402


def items(n: int = 600) -> list:
    rng = np.random.default_rng(4)
    out = []
    for i in range(n):
        k = int(rng.integers(1, 9))
        lattice = np.diag(rng.uniform(3.0, 6.0, 3)) + rng.normal(0, 0.1, (3, 3))
        species = list(rng.choice(["Cu", "Au", "Ni", "Al"], k))
        frac = rng.random((k, 3))
        energy = float(-4.0 * k + rng.normal())
        if i % 97 == 5:
            frac[0] = frac[-1] if k > 1 else frac[0]  # overlapping atoms (k>1): rejected
        if i % 131 == 7:
            energy = float("nan")  # rejected
        out.append({"lattice": lattice, "species": species, "frac_coords": frac,
                    "energy": energy, "model": "m"})
    return out


def snapshot(db: CrystalDB) -> list[tuple]:
    from sqlalchemy import select

    from lamkit.db.schema import records

    c = records.c
    with db.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(c.id, c.content_hash, c.formula, c.spacegroup_number, c.energy, c.nsites,
                   c.density).order_by(c.id))]


def test_workers_give_the_same_database(tmp_path):
    data = items()
    one = CrystalDB(f"sqlite:///{tmp_path / 'one.db'}").init()
    two = CrystalDB(f"sqlite:///{tmp_path / 'two.db'}").init()
    r1 = one.import_records(data, batch_size=100, workers=1)
    r2 = two.import_records(data, batch_size=100, workers=2)
    assert r1.added == r2.added > 500 and r1.added + len(r1.rejected) == len(data)
    assert [(x.index, x.reason) for x in r1.rejected] == [(x.index, x.reason)
                                                          for x in r2.rejected]
    assert len(r1.rejected) >= 8
    assert snapshot(one) == snapshot(two)


def test_workers_must_be_positive(tmp_path):
    db = CrystalDB(f"sqlite:///{tmp_path / 'x.db'}").init()
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        db.import_records(items(3), workers=0)


@pytest.mark.parametrize("workers", [1, 2])
def test_deferred_symmetry_is_pending_then_indexed_as_an_import_would(tmp_path, workers):
    from lamkit.db.records import SYMMETRY_PENDING
    from lamkit.db.symindex import count_pending

    data = items(300)
    now = CrystalDB(f"sqlite:///{tmp_path / 'now.db'}").init()
    later = CrystalDB(f"sqlite:///{tmp_path / 'later.db'}").init()
    now.import_records(data, batch_size=100)
    rep = later.import_records(data, batch_size=100, workers=workers, defer_symmetry=True)
    assert rep.added > 250 and count_pending(later) == rep.added
    rec = later.get(rep.added_ids[0])
    assert (rec.spacegroup_number, rec.spacegroup_symbol) == (None, SYMMETRY_PENDING)
    # queries work meanwhile; a space-group filter does not match pending records
    assert len(later.query(formula=rec.formula, limit=500).records) >= 1
    sg = snapshot(now)[0][3]
    assert later.query(spacegroup=sg).records == []
    assert snapshot(later) != snapshot(now)
    done = later.index_symmetry(workers=workers, batch_size=64)
    assert done.indexed == rep.added and count_pending(later) == 0
    assert snapshot(later) == snapshot(now)  # ids, hashes, formulas, space groups alike
    symbols = {(r.id, r.spacegroup_symbol) for r in later.iter_query()}
    assert symbols == {(r.id, r.spacegroup_symbol) for r in now.iter_query()}
    assert later.index_symmetry().indexed == 0  # nothing left: a re-run is a no-op


def test_deferred_symmetry_refuses_dedupe(tmp_path):
    db = CrystalDB(f"sqlite:///{tmp_path / 'x.db'}").init()
    with pytest.raises(ValueError, match="dedupe compares space groups"):
        db.import_records(items(3), dedupe=True, defer_symmetry=True)


def test_cli_defer_symmetry_then_index(tmp_path, capsys):
    import json

    from lamkit.cli.main import main

    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(json.dumps({
        "lattice": np.asarray(d["lattice"]).tolist(), "species": [str(s) for s in d["species"]],
        "frac_coords": np.asarray(d["frac_coords"]).tolist(), "energy": d["energy"]})
        for d in items(40) if np.isfinite(d["energy"])))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    assert main(["db", "--db", url, "import", str(path), "--defer-symmetry", "--no-progress"]) == 0
    added = int(capsys.readouterr().out.split()[0])
    assert added > 30
    assert main(["db", "--db", url, "index", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith(f"{added} space groups in")
    db = CrystalDB(url)
    assert all(r.spacegroup_number is not None for r in db.iter_query())
    assert main(["db", "--db", url, "import", str(path), "--defer-symmetry", "--dedupe"]) != 0
    assert "cannot be used with --defer-symmetry" in capsys.readouterr().err
