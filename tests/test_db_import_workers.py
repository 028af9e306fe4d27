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
