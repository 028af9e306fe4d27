"""System sampling on a many-system set follows the reference's rules.

30 small mixed-type systems (1..30 atoms, 1 to ~60 frames each) from the MPtraj-like generator:
``batch_size: "auto:128"`` gives ceil(128 / natoms) per system, ``prob_sys_size`` draws system i
with probability nbatch_i / sum(nbatch) where nbatch_i = ceil(nframes_i / bs_i) (the reference's
PyTorch loader counts its DataLoader's batches, drop_last=False), and the empirical frequencies of
many draws agree with those probabilities (chi-square).  Where DeePMD-kit is installed its own
functions give the same batch sizes and probabilities.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from lamkit.data import DataRequirement, load_systems, resolve_batch_sizes
from lamkit.train.tasks import make_sampler

ROOT = Path(__file__).resolve().parents[1]
AUTO_PROBS = ["prob_sys_size", "prob_uniform", "prob_sys_size;0:10:0.2;10:30:0.8"]
# chi-square 0.9999 quantile with 29 degrees of freedom (scipy.stats.chi2.ppf(0.9999, 29))
CHI2_29_Q9999 = 67.98


def _generator():
    spec = importlib.util.spec_from_file_location(
        "make_mptraj_like", ROOT / "benchmarks" / "make_mptraj_like.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    gen = _generator()
    out = tmp_path_factory.mktemp("mptraj_tiny")
    gen.main(["--out", str(out), "--frames", "700", "--max-atoms", "30", "--workers", "1"])
    reqs = [DataRequirement("energy", 1, must=True), DataRequirement("force", 3, atomic=True)]
    systems = load_systems(str(out), gen.ELEMENTS, reqs)
    return out, gen.ELEMENTS, systems


def _closed_form(systems, auto_prob):
    bs = [math.ceil(128 / s.natoms) for s in systems]
    nb = np.array([math.ceil(s.nframes / b) for s, b in zip(systems, bs)], dtype=float)
    if auto_prob == "prob_uniform":
        return bs, np.full(len(systems), 1 / len(systems))
    if auto_prob == "prob_sys_size":
        return bs, nb / nb.sum()
    p = np.zeros(len(systems))
    p[:10] = 0.2 * nb[:10] / nb[:10].sum()
    p[10:] = 0.8 * nb[10:] / nb[10:].sum()
    return bs, p


def test_the_set_is_varied(many):
    _, _, systems = many
    assert len(systems) == 30
    assert sorted(s.natoms for s in systems) == list(range(1, 31))
    nframes = {s.nframes for s in systems}
    assert len(nframes) > 10 and min(nframes) >= 1
    assert len({math.ceil(128 / s.natoms) for s in systems}) > 10


@pytest.mark.parametrize("auto_prob", AUTO_PROBS)
def test_batch_sizes_and_probabilities_closed_form(many, auto_prob):
    _, _, systems = many
    sizes = resolve_batch_sizes("auto:128", [s.natoms for s in systems])
    sampler = make_sampler(systems, sizes, {"auto_prob": auto_prob}, seed=3)
    bs, p = _closed_form(systems, auto_prob)
    assert sizes == bs
    np.testing.assert_allclose(sampler.probs, p, rtol=1e-12, atol=0)


@pytest.mark.parametrize("auto_prob", AUTO_PROBS)
def test_matches_reference_functions(many, auto_prob):
    pytest.importorskip("deepmd", reason="DeePMD-kit (the reference) is not installed")
    dl = pytest.importorskip("deepmd.pt.utils.dataloader", reason="reference PyTorch backend")
    from deepmd.utils.data_system import prob_sys_size_ext

    _, type_map, systems = many
    paths = [s.path for s in systems]
    ref = dl.DpLoaderSet(paths, "auto:128", type_map, seed=1, shuffle=True)
    sizes = resolve_batch_sizes("auto:128", [s.natoms for s in systems])
    assert sizes == [int(b) for b in ref.batch_sizes]
    nb = [math.ceil(s.nframes / b) for s, b in zip(systems, sizes)]
    assert nb == [int(i) for i in ref.index]
    if auto_prob == "prob_uniform":
        ref_p = np.full(len(systems), 1 / len(systems))
    else:
        style = "prob_sys_size;0:30:1.0" if auto_prob == "prob_sys_size" else auto_prob
        ref_p = np.asarray(prob_sys_size_ext(style, len(systems), ref.index))
    sampler = make_sampler(systems, sizes, {"auto_prob": auto_prob}, seed=3)
    np.testing.assert_allclose(sampler.probs, ref_p, rtol=1e-12, atol=1e-15)


def test_sys_probs_match_reference(many):
    pytest.importorskip("deepmd", reason="DeePMD-kit (the reference) is not installed")
    from deepmd.utils.data_system import process_sys_probs

    _, _, systems = many
    sizes = resolve_batch_sizes("auto:128", [s.natoms for s in systems])
    nb = np.array([math.ceil(s.nframes / b) for s, b in zip(systems, sizes)])
    sys_probs = [-1.0] * 30
    sys_probs[0], sys_probs[7], sys_probs[29] = 0.1, 0.25, 0.05
    sampler = make_sampler(
        systems, sizes, {"auto_prob": "prob_sys_size", "sys_probs": sys_probs}, 3
    )
    np.testing.assert_allclose(sampler.probs, process_sys_probs(sys_probs, nb), rtol=1e-12)


@pytest.mark.parametrize("auto_prob", ["prob_sys_size", "prob_sys_size;0:10:0.2;10:30:0.8"])
def test_empirical_frequencies_and_batches(many, auto_prob):
    _, _, systems = many
    sizes = resolve_batch_sizes("auto:128", [s.natoms for s in systems])
    sampler = make_sampler(systems, sizes, {"auto_prob": auto_prob}, seed=11)
    _, p = _closed_form(systems, auto_prob)
    ndraw = 12_000
    counts = np.zeros(len(systems))
    seen: list[list[int]] = [[] for _ in systems]
    for _ in range(ndraw):
        sid = int(sampler.rng.choice(len(systems), p=sampler.probs))
        counts[sid] += 1
        idx = sampler.loaders[sid].next_indices()
        # a batch holds bs frames, except the last one of a pass (drop_last=False)
        nf, bs = systems[sid].nframes, sizes[sid]
        done = len(seen[sid]) % nf
        assert len(idx) == min(bs, nf - done)
        seen[sid].extend(int(i) for i in idx)
    chi2 = float(((counts - ndraw * p) ** 2 / (ndraw * p)).sum())
    assert chi2 < CHI2_29_Q9999, (chi2, counts, ndraw * p)
    for sid, s in enumerate(systems):  # every full pass is a permutation of the frames
        full = len(seen[sid]) // s.nframes * s.nframes
        passes = np.array(seen[sid][:full]).reshape(-1, s.nframes)
        assert (np.sort(passes, axis=1) == np.arange(s.nframes)).all()
    # the sampler's own next() draws systems by the same generator: its stream is this one
    again = make_sampler(systems, sizes, {"auto_prob": auto_prob}, seed=11)
    sids = [again.next()["sid"] for _ in range(200)]
    rng = np.random.default_rng(np.random.SeedSequence(11).spawn(len(systems) + 1)[0])
    assert sids == [int(rng.choice(len(systems), p=again.probs)) for _ in range(200)]
