"""Batches, the per-system loader and the multi-system sampler (determinism, restart)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lamkit import keys
from lamkit.data import (
    DataRequirement,
    MultiSystemSampler,
    SystemLoader,
    describe_systems,
    iter_frames,
    load_system,
    load_systems,
    resolve_batch_sizes,
    system_probabilities,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REQS = [
    DataRequirement("energy", 1, must=True),
    DataRequirement("force", 3, atomic=True),
    DataRequirement("virial", 9),
    DataRequirement("atom_pref", 1, atomic=True, default=1.0, repeat=3),
]


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared example data not found at {path}")
    return path


@pytest.fixture(scope="module")
def water():
    return load_systems(shared("water"), ["O", "H"], REQS)[:3]  # data_0..2 (training)


def test_batch_layout(water):
    batch = SystemLoader(water[1], 3, seed=0, sid=1).next_batch()
    assert batch[keys.COORD].shape == (3, 192, 3) and batch[keys.COORD].dtype == torch.float64
    assert batch[keys.ATYPE].shape == (3, 192) and batch[keys.ATYPE].dtype == torch.int64
    assert batch[keys.BOX].shape == (3, 9) and batch[keys.BOX].dtype == torch.float64
    assert batch[keys.ENERGY].shape == (3, 1) and batch[keys.ENERGY].dtype == torch.float64
    assert batch[keys.FORCE].shape == (3, 192, 3) and batch[keys.VIRIAL].shape == (3, 9)
    assert batch[keys.ATOM_PREF].shape == (3, 192, 3) and (batch[keys.ATOM_PREF] == 1).all()
    assert batch[keys.NATOMS].dtype == torch.int64
    assert batch[keys.NATOMS].tolist() == [[192, 192, 64, 128]] * 3
    assert batch["find_energy"] == 1.0 and batch["find_virial"] == 0.0
    assert isinstance(batch["find_force"], float)
    assert batch[keys.SID] == 1 and len(batch[keys.FID]) == 3
    fid = batch[keys.FID][0]
    np.testing.assert_array_equal(batch[keys.COORD][0].numpy(), water[1].coords[fid])


def test_loader_passes_cover_all_frames_and_reshuffle(water):
    loader = SystemLoader(water[0], 7, seed=3)
    assert len(loader) == math.ceil(80 / 7) == 12
    passes = []
    for _ in range(2):
        fids = [loader.next_batch()[keys.FID] for _ in range(len(loader))]
        assert [len(f) for f in fids] == [7] * 11 + [3]  # drop_last=False
        flat = sum(fids, [])
        assert sorted(flat) == list(range(80))
        passes.append(flat)
    assert passes[0] != passes[1] and passes[0] != list(range(80))


def test_iter_frames_is_sequential(water):
    batches = list(iter_frames(water[0], 32, sid=5))
    assert [b[keys.FID] for b in batches] == [
        list(range(0, 32)),
        list(range(32, 64)),
        list(range(64, 80)),
    ]
    assert batches[0][keys.SID] == 5
    coords = torch.cat([b[keys.COORD] for b in batches]).numpy()
    np.testing.assert_array_equal(coords, water[0].coords)


def test_nopbc_batch_has_no_box():
    s = load_system(
        shared("property", "data_1"),
        ["O", "N", "C", "H"],
        [DataRequirement("band_prop", 3, must=True)],
    )
    batch = next(iter_frames(s, 4))
    assert keys.BOX not in batch
    assert batch["band_prop"].shape == (4, 3) and batch["find_band_prop"] == 1.0
    assert batch[keys.NATOMS][0].tolist() == [22, 22, 1, 1, 7, 13]  # O N C H of H13C7NO


def _sampler(systems, seed):
    sizes = resolve_batch_sizes(1, [s.natoms for s in systems])
    nb = [math.ceil(s.nframes / b) for s, b in zip(systems, sizes)]
    return MultiSystemSampler(systems, sizes, system_probabilities(nb), seed=seed)


def _key(batch):
    return batch[keys.SID], tuple(batch[keys.FID])


def test_sampler_is_deterministic_and_follows_probabilities(water):
    s1, s2, s3 = _sampler(water, 7), _sampler(water, 7), _sampler(water, 8)
    seq1 = [_key(s1.next()) for _ in range(400)]
    assert seq1 == [_key(s2.next()) for _ in range(400)]
    assert seq1 != [_key(s3.next()) for _ in range(400)]
    counts = np.bincount([sid for sid, _ in seq1], minlength=3) / 400
    np.testing.assert_allclose(counts, [0.25, 0.5, 0.25], atol=0.08)


def test_sampler_state_dict_round_trip(water):
    reference = _sampler(water, 11)
    for _ in range(123):  # stop in the middle of every system's pass
        reference.next()
    state = reference.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)  # the state must survive a checkpoint loaded with weights_only
    buffer.seek(0)
    restored_state = torch.load(buffer, weights_only=True)
    expected = [reference.next() for _ in range(300)]
    restored = _sampler(water, 999)  # a different seed: everything comes from the state
    restored.load_state_dict(restored_state)
    for want, got in zip(expected, (restored.next() for _ in range(300))):
        assert _key(want) == _key(got)
        assert torch.equal(want[keys.COORD], got[keys.COORD])


def test_mixed_type_and_standard_give_identical_batches():
    """Acceptance: the same 4 frames in both layouts must produce the same batches."""
    root = shared("mixed_type_small")
    for type_map in (["O", "H"], None):
        mixed = load_system(root / "data_mixed_type", type_map, REQS)
        standard = load_system(root / "data_standard", type_map, REQS)
        assert mixed.mixed_type and not standard.mixed_type
        samplers = [MultiSystemSampler([s], [3], [1.0], seed=5) for s in (mixed, standard)]
        for _ in range(6):  # two passes of batch sizes 3, 1
            bm, bs = samplers[0].next(), samplers[1].next()
            assert bm[keys.FID] == bs[keys.FID]
            for key in (keys.COORD, keys.ATYPE, keys.BOX, keys.ENERGY, keys.FORCE, keys.NATOMS):
                assert torch.equal(bm[key], bs[key]), key
            assert bm["find_force"] == bs["find_force"] == 1.0


def test_describe_systems(water):
    sampler = _sampler(water, 0)
    text = sampler.describe()
    assert text == describe_systems(water, [1, 1, 1], [0.25, 0.5, 0.25])
    lines = text.splitlines()
    assert len(lines) == 5 and "3 system(s)" in lines[0]
    assert str(water[1].path) in lines[3] and "160" in lines[3] and "5.000e-01" in lines[3]
    assert lines[2].rstrip().endswith("T")


def test_sampler_argument_errors(water):
    with pytest.raises(ValueError, match="3 systems but 2 batch sizes"):
        MultiSystemSampler(water, [1, 1], [0.3, 0.3, 0.4])
    with pytest.raises(ValueError, match="sum to 1"):
        MultiSystemSampler(water, [1, 1, 1], [0.3, 0.3, 0.3])
