"""deepmd/npy loading: real example data, sorting, remapping and every bad-data error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lamkit.data import DataRequirement, load_system
from lamkit.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

ENERGY = DataRequirement("energy", 1, must=True)
FORCE = DataRequirement("force", 3, atomic=True)
VIRIAL = DataRequirement("virial", 9)
ENER_REQS = [ENERGY, FORCE, VIRIAL]


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared example data not found at {path}")
    return path


def write_system(
    root: Path,
    types,
    nframes: int = 3,
    type_map: list[str] | None = None,
    mixed_types: np.ndarray | None = None,
    periodic: bool = True,
    nsets: int = 1,
    seed: int = 0,
    dtype=np.float64,
) -> Path:
    """A tiny random deepmd/npy system with energy and force labels in ``nsets`` sets."""
    rng = np.random.default_rng(seed)
    natoms = len(types)
    root.mkdir(parents=True, exist_ok=True)
    (root / "type.raw").write_text("".join(f"{t}\n" for t in types))
    if type_map is not None:
        (root / "type_map.raw").write_text("\n".join(type_map) + "\n")
    if not periodic:
        (root / "nopbc").touch()
    for k in range(nsets):
        d = root / f"set.{k:03d}"
        d.mkdir()
        np.save(d / "coord.npy", rng.uniform(0, 5, (nframes, natoms * 3)).astype(dtype))
        if periodic:
            np.save(d / "box.npy", np.tile(np.eye(3).reshape(9) * 5.0, (nframes, 1)).astype(dtype))
        np.save(d / "energy.npy", rng.normal(size=nframes).astype(dtype))
        np.save(d / "force.npy", rng.normal(size=(nframes, natoms * 3)).astype(dtype))
        if mixed_types is not None:
            np.save(d / "real_atom_types.npy", mixed_types[k * nframes : (k + 1) * nframes])
    return root


# --- real example data ---------------------------------------------------------------------


@pytest.mark.parametrize("name,nframes", [("data_0", 80), ("data_1", 160), ("data_3", 80)])
def test_water_systems(name, nframes):
    s = load_system(shared("water", name), ["O", "H"], ENER_REQS)
    assert (s.nframes, s.natoms, s.ntypes) == (nframes, 192, 2)
    assert s.coords.shape == (nframes, 192, 3) and s.coords.dtype == np.float64
    assert s.box.shape == (nframes, 9) and s.pbc and not s.mixed_type
    assert s.atype.shape == (nframes, 192) and s.atype.dtype == np.int64
    assert (s.atype[:, :64] == 0).all() and (s.atype[:, 64:] == 1).all()
    np.testing.assert_array_equal(s.natoms_vec, np.tile([192, 192, 64, 128], (nframes, 1)))
    assert s.labels["energy"].shape == (nframes, 1) and s.labels["energy"].dtype == np.float64
    assert -29946.0 < s.labels["energy"].min() and s.labels["energy"].max() < -29941.0
    assert s.labels["force"].shape == (nframes, 192, 3)
    assert s.find == {"energy": 1.0, "force": 1.0, "virial": 0.0}
    assert s.labels["virial"].shape == (nframes, 9) and not s.labels["virial"].any()
    np.testing.assert_allclose(s.box[:, [0, 4, 8]], 12.444661, atol=1e-5)


def test_water_sets_are_concatenated_in_order():
    root = shared("water", "data_1")
    s = load_system(root, None, [ENERGY])
    second = np.load(root / "set.001" / "coord.npy").astype(np.float64)
    np.testing.assert_array_equal(s.coords[80:].reshape(80, -1), second)
    np.testing.assert_array_equal(s.labels["energy"][:80, 0], np.load(root / "set.000/energy.npy"))
    assert s.type_map == ["O", "H"]  # from type_map.raw when no model type_map is given


def test_water_remap_to_model_type_map_sorts_by_new_index():
    root = shared("water", "data_0")
    s = load_system(root, ["H", "O"], [ENERGY, FORCE])
    assert (s.atype[:, :128] == 0).all() and (s.atype[:, 128:] == 1).all()
    coord = np.load(root / "set.000" / "coord.npy").astype(np.float64).reshape(80, 192, 3)
    np.testing.assert_array_equal(s.coords[:, 0], coord[:, 64])  # first H of the file
    np.testing.assert_array_equal(s.to_file_order(s.coords), coord)
    np.testing.assert_array_equal(s.natoms_vec[0], [192, 192, 128, 64])


def test_property_mixed_type_nopbc_remap_by_name():
    root = shared("property", "data_0")
    req = DataRequirement("band_prop", 3, must=True)
    s = load_system(root, ["O", "N", "C", "H"], [req])
    assert s.mixed_type and not s.pbc and s.box is None
    file_types = np.load(root / "set.000000" / "real_atom_types.npy")
    assert file_types[0, 0] == 0 and file_types[0, 19] == 3  # H first, O last, in [H, C, N, O]
    assert s.atype[0, 0] == 3 and s.atype[0, 19] == 0  # no sorting for mixed type
    np.testing.assert_array_equal(s.atype[0], np.array([3, 2, 1, 0])[file_types[0]])
    np.testing.assert_array_equal(s.natoms_vec[0], [20, 20, 2, 1, 6, 11])  # O N C H
    assert s.labels["band_prop"].shape == (80, 3) and s.find["band_prop"] == 1.0
    np.testing.assert_array_equal(
        s.labels["band_prop"], np.load(root / "set.000000" / "property.npy")
    )


def test_pt_test_property_single_frame():
    s = load_system(
        shared("pt_test_property", "single"), None, [DataRequirement("band_property", 3)]
    )
    assert (s.nframes, s.natoms, s.type_map) == (1, 20, ["H", "C", "N", "O"])
    assert s.find["band_property"] == 1.0


# --- tiny built-in fixtures ----------------------------------------------------------------


def test_sort_permutes_every_atomic_array(tmp_path):
    root = write_system(tmp_path / "sys", [1, 0, 1, 0], type_map=["A", "B"])
    coord = np.load(root / "set.000" / "coord.npy").reshape(3, 4, 3)
    force = np.load(root / "set.000" / "force.npy").reshape(3, 4, 3)
    pref = DataRequirement("atom_pref", 1, atomic=True, default=1.0, repeat=3)
    s = load_system(root, None, [FORCE, pref])
    np.testing.assert_array_equal(s.atom_order, [1, 3, 0, 2])
    np.testing.assert_array_equal(s.atype[0], [0, 0, 1, 1])
    np.testing.assert_array_equal(s.coords, coord[:, [1, 3, 0, 2]])
    np.testing.assert_array_equal(s.labels["force"], force[:, [1, 3, 0, 2]])
    np.testing.assert_array_equal(s.to_file_order(s.labels["force"]), force)
    assert s.labels["atom_pref"].shape == (3, 4, 3) and (s.labels["atom_pref"] == 1.0).all()
    assert s.find["atom_pref"] == 0.0
    unsorted = load_system(root, None, [FORCE], sort_atoms=False)
    np.testing.assert_array_equal(unsorted.coords, coord)


def test_atomic_label_with_repeat_present(tmp_path):
    root = write_system(tmp_path / "sys", [0, 1], nframes=2)
    np.save(root / "set.000" / "atom_pref.npy", np.array([[1.0, 2.0], [3.0, 4.0]]))
    pref = DataRequirement("atom_pref", 1, atomic=True, repeat=3)
    s = load_system(root, None, [pref])
    np.testing.assert_array_equal(s.labels["atom_pref"][1], [[3.0] * 3, [4.0] * 3])


def test_float32_and_float64_files_agree(tmp_path):
    a = load_system(write_system(tmp_path / "a", [0, 1, 1], dtype=np.float32), None, ENER_REQS)
    b = load_system(write_system(tmp_path / "b", [0, 1, 1]), None, ENER_REQS)
    assert a.coords.dtype == np.float64
    np.testing.assert_allclose(a.coords, b.coords, rtol=1e-6)
    assert a.type_map is None and a.ntypes == 2


def test_mixed_type_with_virtual_atoms(tmp_path):
    mixed = np.array([[1, 0, 0, -1], [0, 1, -1, -1], [1, 1, 1, 0]])
    root = write_system(tmp_path / "mix", [0] * 4, type_map=["O", "H"], mixed_types=mixed)
    s = load_system(root, ["H", "X", "O"], [ENERGY])
    np.testing.assert_array_equal(s.atype, np.array([2, 0, -1])[mixed])  # O->2, H->0, -1 stays
    np.testing.assert_array_equal(s.atom_order, np.arange(4))
    np.testing.assert_array_equal(s.natoms_vec, [[4, 4, 1, 0, 2], [4, 4, 1, 0, 1], [4, 4, 3, 0, 1]])


def test_nopbc_ignores_missing_box(tmp_path):
    s = load_system(write_system(tmp_path / "mol", [0, 0], periodic=False), None, [ENERGY])
    assert s.box is None and not s.pbc


# --- errors: each names the file and the key fact ------------------------------------------


def _expect(match_all: list[str], root, type_map=None, reqs=ENER_REQS):
    with pytest.raises(DataError) as info:
        load_system(root, type_map, reqs)
    msg = str(info.value)
    for part in match_all:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def test_error_missing_type_raw(tmp_path):
    (tmp_path / "sys" / "set.000").mkdir(parents=True)
    _expect(["type.raw", "sys"], tmp_path / "sys")


def test_error_missing_sets(tmp_path):
    root = tmp_path / "sys"
    root.mkdir()
    (root / "type.raw").write_text("0\n1\n")
    _expect(["set.", str(root)], root)


def test_error_empty_set(tmp_path):
    root = write_system(tmp_path / "sys", [0, 1])
    np.save(root / "set.000" / "coord.npy", np.zeros((0, 6)))
    _expect(["coord.npy", "0 frames"], root)


def test_error_coord_columns_vs_type_raw(tmp_path):
    root = write_system(tmp_path / "sys", [0] * 190)
    np.save(root / "set.000" / "coord.npy", np.zeros((3, 576)))
    _expect(["coord.npy", "576", "190", "type.raw", "570"], root)


def test_error_frame_count_mismatch(tmp_path):
    root = write_system(tmp_path / "sys", [0, 1], nframes=4)
    np.save(root / "set.000" / "force.npy", np.zeros((3, 6)))
    _expect(["force.npy", "3 frames", "coord.npy", "4"], root)


def test_error_force_columns(tmp_path):
    root = write_system(tmp_path / "sys", [0, 1])
    np.save(root / "set.000" / "force.npy", np.zeros((3, 5)))
    _expect(["force.npy", "5 values", "2 atoms", "6"], root)


@pytest.mark.parametrize(
    "fname,shape",
    [("coord.npy", (3, 6)), ("box.npy", (3, 9)), ("energy.npy", (3,)), ("force.npy", (3, 6))],
)
def test_error_non_finite(tmp_path, fname, shape):
    root = write_system(tmp_path / "sys", [0, 1])
    arr = np.load(root / "set.000" / fname).reshape(3, -1)
    arr[1, -1] = np.nan if fname != "energy.npy" else np.inf
    np.save(root / "set.000" / fname, arr.reshape(shape))
    _expect([fname, "frame 1", f"column {arr.shape[1] - 1}"], root)


def test_error_element_not_in_model_type_map(tmp_path):
    root = write_system(tmp_path / "sys", [0, 1], type_map=["O", "H"])
    msg = _expect(["element 'H'", "type_map.raw", "['O', 'He']"], root, type_map=["O", "He"])
    assert "Did you mean 'He'" in msg


def test_error_type_index_out_of_range(tmp_path):
    root = write_system(tmp_path / "sys", [0, 2], type_map=["O", "H"])
    _expect(["type.raw", "type index 2", "type_map.raw"], root)


def test_error_mixed_type_index_out_of_range(tmp_path):
    mixed = np.array([[0, 1], [0, 5], [1, 1]])
    root = write_system(tmp_path / "sys", [0, 0], type_map=["O", "H"], mixed_types=mixed)
    _expect(["real_atom_types.npy", "type index 5", "frame 1"], root)


def test_error_negative_type_in_standard_system(tmp_path):
    _expect(["type.raw", "-1"], write_system(tmp_path / "sys", [0, -1]))


def test_error_missing_required_label(tmp_path):
    root = write_system(tmp_path / "sys", [0, 1])
    (root / "set.000" / "energy.npy").unlink()
    _expect(["energy.npy", "required"], root)


def test_error_label_in_some_sets_only(tmp_path):
    root = write_system(tmp_path / "sys", [0, 1], nsets=2)
    (root / "set.001" / "force.npy").unlink()
    _expect(["force.npy", "set.001"], root)


def test_error_box_missing_for_periodic_system(tmp_path):
    root = write_system(tmp_path / "sys", [0, 1])
    (root / "set.000" / "box.npy").unlink()
    _expect(["box.npy", "periodic", "nopbc"], root)


def test_error_degenerate_box(tmp_path):
    root = write_system(tmp_path / "sys", [0, 1])
    box = np.load(root / "set.000" / "box.npy")
    box[2, 8] = 0.0  # flat cell
    np.save(root / "set.000" / "box.npy", box)
    _expect(["box.npy", "frame 2", "degenerate"], root)


def test_error_mixed_type_in_some_sets_only(tmp_path):
    mixed = np.zeros((6, 2), dtype=np.int64)
    root = write_system(tmp_path / "sys", [0, 0], type_map=["O"], mixed_types=mixed, nsets=2)
    (root / "set.001" / "real_atom_types.npy").unlink()
    _expect(["real_atom_types.npy", "set.001"], root)


def test_error_mixed_type_without_type_map(tmp_path):
    mixed = np.zeros((3, 2), dtype=np.int64)
    root = write_system(tmp_path / "sys", [0, 0], mixed_types=mixed)
    _expect(["type_map.raw", "mixed-type"], root)


def test_error_unreadable_file(tmp_path):
    root = write_system(tmp_path / "sys", [0, 1])
    (root / "set.000" / "energy.npy").write_text("not numpy")
    _expect(["energy.npy", "cannot read"], root)


@pytest.mark.parametrize("kwargs", [{"key": "coord", "ndof": 3}, {"key": "x", "ndof": 0}])
def test_bad_requirement(kwargs):
    with pytest.raises(ValueError):
        DataRequirement(**kwargs)
