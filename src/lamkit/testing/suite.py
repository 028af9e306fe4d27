"""A pytest mixin that runs every physics check of :mod:`lamkit.testing.physics` on a model.

Use it from a test module by subclassing and providing a ``model_factory`` fixture::

    class TestMyModel(ModelPhysicsTests):
        @pytest.fixture(params=[...])
        def model_factory(self, request):
            def make(precision: str = "float64"):
                return randomize_statistics(build_model(config_for(precision, request.param)))
            return make

``make("float64")`` and ``make("float32")`` must build the same architecture; the weights of
the float32 model are copied from the float64 one.  The model's ``sel`` must leave room for
every neighbour in the test geometries (:func:`lamkit.testing.standard_system`), which is
checked first.  Set ``reflection_invariant = False`` for models that are not O(3) invariant.
"""

from __future__ import annotations

import numpy as np
import pytest

from .models import copy_weights
from .neighbors import check_sel_not_saturated
from .physics import (
    check_atom_virial,
    check_atomic_sums,
    check_batch,
    check_cutoff_smoothness,
    check_forces,
    check_periodic_images,
    check_permutation,
    check_precision,
    check_rotation,
    check_separable,
    check_supercell,
    check_translation,
    check_virial,
    check_virtual_atoms,
)
from .systems import System, random_rotation, standard_system, strain_system

SYSTEMS = ("cluster", "cubic", "triclinic")


class ModelPhysicsTests:
    """Physics tests of the model given by the ``model_factory`` fixture (see module doc)."""

    reflection_invariant = True
    low_precision = "float32"
    low_precision_rtol = 1e-4

    @pytest.fixture
    def model(self, model_factory):
        return model_factory("float64")

    @pytest.fixture(params=[s for s in SYSTEMS if s != "cluster"])
    def periodic_system(self, request, model):
        return standard_system(request.param, len(model.type_map), model.rcut, seed=7)

    @pytest.fixture(params=SYSTEMS)
    def system(self, request, model):
        sys_ = standard_system(request.param, len(model.type_map), model.rcut, seed=7)
        check_sel_not_saturated(sys_, model.rcut, model.sel, len(model.type_map))
        return sys_

    # --- derivatives ----------------------------------------------------------------------
    def test_forces_finite_difference(self, model, system):
        check_forces(model, system)

    def test_virial_finite_difference(self, model, system):
        check_virial(model, system)

    def test_atomic_sums(self, model, system):
        check_atomic_sums(model, system)

    def test_atom_virial_finite_difference(self, model):
        # only for a non-periodic system: per-image derivatives are not reachable by moving atoms
        check_atom_virial(
            model, standard_system("cluster", len(model.type_map), model.rcut, seed=7)
        )

    def test_locality(self, model):
        """Distant fragments do not interact; a lone atom and a one-species fragment work."""
        ntypes, rcut = len(model.type_map), model.rcut
        cluster = standard_system("cluster", ntypes, rcut, seed=7)
        lone = System(np.zeros((1, 3)), np.array([ntypes - 1]))
        one_species = cluster.copy(atype=np.zeros(cluster.nloc, dtype=np.int64))
        check_separable(model, cluster, lone)
        check_separable(model, one_species, cluster)

    # --- symmetries -----------------------------------------------------------------------
    def test_rotation(self, model, system):
        rng = np.random.default_rng(11)
        check_rotation(model, system, random_rotation(rng))
        if self.reflection_invariant:
            check_rotation(model, system, random_rotation(rng, proper=False))

    def test_translation(self, model, system):
        check_translation(model, system, np.random.default_rng(12).normal(scale=3.0, size=3))

    def test_permutation(self, model, system):
        check_permutation(model, system, np.random.default_rng(13).permutation(system.nloc))

    # --- periodic boundary conditions -----------------------------------------------------
    def test_periodic_images(self, model, periodic_system):
        check_periodic_images(model, periodic_system, np.random.default_rng(14))

    @pytest.mark.parametrize("reps", [(2, 1, 1), (2, 2, 1)])
    def test_supercell(self, model, periodic_system, reps):
        check_supercell(model, periodic_system, reps)

    # --- smoothness -----------------------------------------------------------------------
    def test_cutoff_smoothness(self, model, system):
        check_cutoff_smoothness(model, system, np.random.default_rng(15))

    # --- batching, padding, virtual atoms, precision --------------------------------------
    def test_batch_periodic(self, model):
        ntypes, rcut = len(model.type_map), model.rcut
        cubic = standard_system("cubic", ntypes, rcut, seed=7)
        frames = [
            cubic,
            standard_system("triclinic", ntypes, rcut, seed=7),
            strain_system(cubic, np.random.default_rng(16), 0.05),
            standard_system("cubic", ntypes, rcut, seed=8),
        ]
        check_batch(model, frames, rng=np.random.default_rng(17))

    def test_batch_nonperiodic(self, model):
        ntypes, rcut = len(model.type_map), model.rcut
        frames = [standard_system("cluster", ntypes, rcut, seed=s) for s in (7, 8, 9)]
        frames[1] = frames[1].copy(coord=frames[1].coord[:7], atype=frames[1].atype[:7])
        check_batch(model, frames, rng=np.random.default_rng(18))

    def test_virtual_atoms(self, model, system):
        check_virtual_atoms(model, system, np.random.default_rng(19))

    def test_low_precision(self, model, model_factory, system):
        low = copy_weights(model, model_factory(self.low_precision))
        check_precision(low, model, system, rtol=self.low_precision_rtol)
