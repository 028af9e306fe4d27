"""Shared helpers of the crystal database tests (no tests here): the backends to run against
and small structures whose derived fields are known.

Every test module parametrises over :data:`BACKENDS`; the PostgreSQL case uses a fresh schema
of ``$LAMKIT_TEST_PG_URL`` (``source .ci/postgres.sh`` sets it), is skipped with the reason when
that is unset, and fails instead when ``CI=true``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from tests.db_data import database_url

BACKENDS = ["sqlite", "postgresql"]


@contextmanager
def crystal_db(kind: str) -> Iterator:
    """An empty, initialised CrystalDB of ``kind``, dropped afterwards."""
    from lamkit.db import CrystalDB

    with database_url(kind) as url:
        db = CrystalDB(url).init()
        try:
            yield db
        finally:
            db.close()


def backend_param(scope: str = "function"):
    """A ``db`` fixture (empty database) parametrised over the backends."""

    @pytest.fixture(params=BACKENDS, scope=scope)
    def db(request):
        with crystal_db(request.param) as d:
            yield d

    return db


def random_cell(rng: np.random.Generator, species: list[str], a: float = 4.0) -> dict:
    """A triclinic cell with full-precision random numbers and atoms far enough apart: a dict of
    lattice, species and frac_coords (sites on a jittered grid)."""
    n = len(species)
    lattice = a * np.eye(3) * np.array([n, 1, 1])[:, None] + rng.uniform(-0.3, 0.3, (3, 3))
    frac = np.array([[(i + 0.5) / n, 0.5, 0.5] for i in range(n)]) + rng.uniform(
        -0.02, 0.02, (n, 3)
    )
    return {"lattice": lattice, "species": list(species), "frac_coords": frac}
