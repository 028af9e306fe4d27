"""Public helpers to test atomistic models: reference neighbour search, test geometries and
physics checks (finite-difference forces and virials, invariances, periodic images, smoothness
at the cutoff, batching and virtual atoms).

``lamkit.testing.suite.ModelPhysicsTests`` bundles the checks into a pytest mixin (it imports
pytest, so it is not imported here). ``lamkit.testing.factories`` builds tiny models of every
descriptor kind and ``lamkit.testing.learn`` the fixtures of the active-learning tests (both
import the model and training code, so they are not imported here either).
"""

from .models import copy_weights, randomize_statistics
from .neighbors import (
    Pairs,
    brute_force_pairs,
    check_frame_neighbors,
    check_sel_not_saturated,
    neighbor_counts,
)
from .outputs import (
    check_output_padding,
    check_output_permutation,
    check_output_rotation,
    check_output_translation,
    predict_outputs,
)
from .physics import (
    assert_close,
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
    cutoff_crossing_path,
    finite_difference_atom_virial,
    finite_difference_forces,
    finite_difference_virial,
    predict,
    predict_batch,
)
from .systems import (
    System,
    cell_from_parameters,
    make_supercell,
    pad_with_virtual,
    random_rotation,
    random_system,
    standard_system,
    strain_system,
)

__all__ = [
    "Pairs",
    "System",
    "assert_close",
    "brute_force_pairs",
    "cell_from_parameters",
    "check_atom_virial",
    "check_atomic_sums",
    "check_batch",
    "check_cutoff_smoothness",
    "check_forces",
    "check_frame_neighbors",
    "check_output_padding",
    "check_output_permutation",
    "check_output_rotation",
    "check_output_translation",
    "check_periodic_images",
    "check_permutation",
    "check_precision",
    "check_rotation",
    "check_sel_not_saturated",
    "check_separable",
    "check_supercell",
    "check_translation",
    "check_virial",
    "check_virtual_atoms",
    "copy_weights",
    "cutoff_crossing_path",
    "finite_difference_atom_virial",
    "finite_difference_forces",
    "finite_difference_virial",
    "make_supercell",
    "neighbor_counts",
    "pad_with_virtual",
    "predict",
    "predict_batch",
    "predict_outputs",
    "random_rotation",
    "random_system",
    "randomize_statistics",
    "standard_system",
    "strain_system",
]
