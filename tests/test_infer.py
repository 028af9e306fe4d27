"""lamkit.infer: DeepPot shapes, chunking, errors; show and freeze (tiny random models)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lamkit.infer import DeepPot, describe_model, format_description, freeze
from lamkit.model import build_model, save_model
from lamkit.model.io import atomic_save, model_payload

CONFIG = {
    "type_map": ["O", "H"],
    "descriptor": {
        "type": "se_e2_a",
        "sel": [20, 40],
        "rcut": 4.0,
        "rcut_smth": 0.5,
        "neuron": [8, 16],
        "axis_neuron": 4,
        "seed": 1,
    },
    "fitting_net": {"neuron": [32, 32], "seed": 1},
}
NATOMS = 12
BOX = 6.0


def tiny_model(seed: int = 0, config: dict = CONFIG):
    """A random se_e2_a model with non-trivial statistics and energy bias."""
    model = build_model(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        d = model.descriptor
        d.davg.copy_(0.1 * torch.rand(d.davg.shape, generator=g, dtype=d.davg.dtype))
        d.dstd.copy_(0.05 + 0.2 * torch.rand(d.dstd.shape, generator=g, dtype=d.dstd.dtype))
        model.out_bias.copy_(torch.tensor([[-93.6], [-187.2]], dtype=torch.float64)[: model.ntypes])
    return model.eval()


def frames(nf: int, seed: int = 0, natoms: int = NATOMS):
    """Jittered-grid O/H configurations in slightly different ~6 Å boxes."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (2, 2, 3)], indexing="ij"), -1)
    base = (grid.reshape(-1, 3) * [3.0, 3.0, 2.0] + 0.5)[:natoms]
    coords = base + rng.normal(scale=0.25, size=(nf, natoms, 3))
    cells = np.stack(
        [
            np.diag(BOX + rng.uniform(-0.2, 0.2, 3)) + rng.uniform(-0.1, 0.1, (3, 3))
            for _ in range(nf)
        ]
    ).reshape(nf, 9)
    types = np.array([0, 1, 1] * (natoms // 3))
    return coords, cells, types


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("infer") / "tiny.pt"
    save_model(model, path)
    return path


@pytest.fixture(scope="module")
def dp(model_file):
    return DeepPot(model_file, device="cpu")


# --- DeepPot ------------------------------------------------------------------------------
def test_helpers(dp):
    assert dp.get_type_map() == ["O", "H"]
    assert dp.get_ntypes() == 2
    assert dp.get_rcut() == 4.0
    assert dp.get_sel() == [20, 40]
    assert dp.get_dim_fparam() == 0 and dp.get_dim_aparam() == 0


@pytest.mark.parametrize("layout", ["flat", "3d"])
@pytest.mark.parametrize("pbc", [True, False])
@pytest.mark.parametrize("atomic", [False, True])
def test_eval_shapes(dp, layout, pbc, atomic):
    nf = 3
    coords, cells, types = frames(nf)
    if layout == "flat":
        coords = coords.reshape(nf, -1)
    out = dp.eval(coords, cells if pbc else None, types, atomic=atomic)
    shapes = [(nf, 1), (nf, NATOMS, 3), (nf, 9)]
    if atomic:
        shapes += [(nf, NATOMS, 1), (nf, NATOMS, 9)]
    assert [o.shape for o in out] == shapes
    assert all(o.dtype == np.float64 and np.all(np.isfinite(o)) for o in out)
    if atomic:
        np.testing.assert_allclose(out[3].sum(1), out[0], rtol=1e-12)
        np.testing.assert_allclose(out[4].sum(1), out[2], rtol=1e-10, atol=1e-10)


def test_eval_matches_model_evaluate(dp, model):
    coords, cells, types = frames(2, seed=1)
    e, f, v, ae, av = dp.eval(coords, cells, types, atomic=True)
    ref = model.evaluate(
        torch.from_numpy(coords),
        torch.from_numpy(types).expand(2, -1),
        torch.from_numpy(cells),
        do_atomic_virial=True,
    )
    for got, key in [
        (e, "energy"),
        (f, "force"),
        (v, "virial"),
        (ae, "atom_energy"),
        (av, "atom_virial"),
    ]:
        np.testing.assert_allclose(got, ref[key].detach().numpy(), rtol=1e-12, atol=1e-12)
    # a DeepPot over an in-memory model gives the same
    for a, b in zip(DeepPot(model).eval(coords, cells, types), (e, f, v)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_chunking_is_invisible(model_file):
    coords, cells, types = frames(5, seed=2)
    whole = DeepPot(model_file, auto_batch_size=10_000).eval(coords, cells, types, atomic=True)
    tiny = DeepPot(model_file, auto_batch_size=1)  # budget of 1 atom: one frame per chunk
    assert tiny.budget.frames(NATOMS) == 1
    for a, b in zip(whole, tiny.eval(coords, cells, types, atomic=True)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_chunks_bound_neighbor_data(model_file, monkeypatch):
    dp = DeepPot(model_file, auto_batch_size=2 * NATOMS)
    seen = []
    build = dp._neighbors.__call__

    def spy(coord, atype, box, *a, **k):
        seen.append(len(coord))
        return build(coord, atype, box, *a, **k)

    monkeypatch.setattr(dp, "_neighbors", spy)
    dp.eval(*frames(5, seed=3))
    assert seen == [2, 2, 1]


def test_out_of_memory_shrinks_chunks(model_file, monkeypatch):
    coords, cells, types = frames(5, seed=3)
    want = DeepPot(model_file).eval(coords, cells, types)
    dp = DeepPot(model_file, auto_batch_size=True)
    assert dp.budget.adaptive and dp.budget.frames(NATOMS) >= 5
    run = dp._eval_chunk

    def small_memory(coords, *args):
        if len(coords) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")
        return run(coords, *args)

    monkeypatch.setattr(dp, "_eval_chunk", small_memory)
    for a, b in zip(dp.eval(coords, cells, types), want):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert dp.budget.frames(NATOMS) <= 2
    fixed = DeepPot(model_file, auto_batch_size=10_000)
    monkeypatch.setattr(fixed, "_eval_chunk", small_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        fixed.eval(coords, cells, types)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(model_file):
    coords, cells, types = frames(3, seed=11)
    cpu = DeepPot(model_file, device="cpu").eval(coords, cells, types, atomic=True)
    gpu = DeepPot(model_file, device="cuda").eval(coords, cells, types, atomic=True)
    for a, b in zip(gpu, cpu):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_mixed_type_per_frame(dp):
    coords, cells, types = frames(3, seed=4)
    per_frame = np.stack([types, types[::-1], np.roll(types, 1)])
    e, f, v = dp.eval(coords, cells, per_frame, mixed_type=True)
    for k in range(3):
        ek, fk, vk = dp.eval(coords[k : k + 1], cells[k : k + 1], per_frame[k])
        np.testing.assert_allclose(e[k], ek[0], rtol=1e-12)
        np.testing.assert_allclose(f[k], fk[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(v[k], vk[0], rtol=1e-10, atol=1e-12)


def test_virtual_atoms_are_ignored(dp):
    coords, cells, types = frames(1, seed=5)
    padded_types = np.concatenate([types, [-1]])[None]
    padded = np.concatenate([coords, coords[:, :1] + 0.3], axis=1)
    e, f, v = dp.eval(padded, cells, padded_types, mixed_type=True)
    e0, f0, v0 = dp.eval(coords, cells, types)
    np.testing.assert_allclose(e, e0, rtol=1e-12)
    np.testing.assert_allclose(f[:, :-1], f0, atol=1e-12)
    np.testing.assert_array_equal(f[:, -1], 0.0)


def test_nopbc_equals_huge_box(dp):
    coords, _, types = frames(2, seed=6)
    big = np.tile(np.eye(3).reshape(1, 9) * 100.0, (2, 1))
    for a, b in zip(dp.eval(coords, None, types), dp.eval(coords, big, types)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_single_frame_inputs(dp):
    coords, cells, types = frames(1, seed=7)
    e, f, v = dp.eval(coords[0], cells[0].reshape(3, 3), list(types))
    assert e.shape == (1, 1) and f.shape == (1, NATOMS, 3) and v.shape == (1, 9)


@pytest.mark.parametrize(
    "case, match",
    [
        ("coords", r"coords: shape \(2, 35\).*12 atoms"),
        ("cells", r"cells: expected shape \[2, 9\].*\(2, 6\)"),
        ("type_range", r"atom_types: values \[2\] are out of range.*\['O', 'H'\]"),
        ("types_2d", r"atom_types: expected shape \[natoms\].*mixed_type=True"),
        ("mixed_frames", r"atom_types: 1 frames of types for 2 frames"),
        ("fparam", r"fparam: this model takes no frame parameters"),
        ("flat_cell", r"cells: zero-volume"),
    ],
)
def test_clear_errors(dp, case, match):
    coords, cells, types = frames(2, seed=8)
    args = {"coords": coords, "cells": cells, "atom_types": types}
    if case == "coords":
        args["coords"] = coords.reshape(2, -1)[:, :35]
    elif case == "cells":
        args["cells"] = cells[:, :6]
    elif case == "type_range":
        args["atom_types"] = np.where(types == 1, 2, types)
    elif case == "types_2d":
        args["atom_types"] = np.stack([types, types])
    elif case == "mixed_frames":
        args.update(atom_types=types[None], mixed_type=True)
    elif case == "fparam":
        args["fparam"] = np.zeros(2)
    elif case == "flat_cell":
        args["cells"] = cells * np.array([1, 1, 1, 1, 1, 1, 0, 0, 0])
    with pytest.raises(ValueError, match=match):
        dp.eval(**args)


# --- show ---------------------------------------------------------------------------------
def test_show_lamkit_file(model_file, model):
    d = describe_model(model_file)
    assert d["source"] == "lamkit frozen model" and not d["multi_task"]
    size = d["branches"]["Default"]["size"]
    assert size["total"] == sum(p.numel() for p in model.parameters())
    assert size["descriptor"] + size["fitting-net"] == size["total"]
    text = format_description(d)
    assert "The type_map is ['O', 'H']" in text
    assert f"Parameters in total: {size['total']:,}" in text
    assert "'neuron': [8, 16]" in text and "'neuron': [32, 32]" in text
    assert format_description(d, ["type-map"]).count("\n") == 1
    with pytest.raises(ValueError, match="unknown attribute"):
        format_description(d, ["colour"])


def _as_deepmd_state(model, head: str) -> dict:
    """A lamkit model's weights under DeePMD-kit v3 checkpoint names (for show/freeze tests)."""
    rules = [
        (r"^descriptor\.davg$", "descriptor.sea.mean"),
        (r"^descriptor\.dstd$", "descriptor.sea.stddev"),
        (r"^descriptor\.embeddings\.(.*)$", r"descriptor.sea.filter_layers.networks.\1"),
        (r"^fitting\.nets\.(.*)$", r"fitting_net.filter_layers.networks.\1"),
        (r"^fitting\.bias_atom$", "fitting_net.bias_atom_e"),
        (r"^fitting\.(.*param.*)$", r"fitting_net.\1"),
        (r"^(out_bias|out_std)$", r"\1"),
    ]
    state = {}
    for name, value in model.state_dict().items():
        if name == "min_nbor_dist":
            state[f"model.{head}.min_nbor_dist"] = value
            continue
        for pattern, template in rules:
            if re.match(pattern, name):
                state[f"model.{head}.atomic_model." + re.sub(pattern, template, name)] = value
                break
    return state


def test_show_deepmd_multitask_checkpoint(tmp_path):
    a, b = tiny_model(1), tiny_model(2, {**CONFIG, "type_map": ["H", "O"]})
    sd = {**_as_deepmd_state(a, "water"), **_as_deepmd_state(b, "other")}
    sd["_extra_state"] = {
        "model_params": {
            "model_dict": {
                "water": {**CONFIG, "model_branch_alias": ["w"], "info": {"note": "x"}},
                "other": {**CONFIG, "type_map": ["H", "O"]},
            }
        },
        "train_infos": {"lr": 1e-3, "step": 42},
    }
    path = tmp_path / "model.ckpt-42.pt"
    torch.save({"model": sd, "optimizer": {}}, path)
    d = describe_model(path)
    assert d["multi_task"] and d["step"] == 42 and list(d["branches"]) == ["water", "other"]
    text = format_description(d)
    assert "Available model branches are ['water', 'other', 'RANDOM']" in text
    assert "The type_map of branch other is ['H', 'O']" in text
    assert "Parameters in total" in text and "alias ['w']" in text
    # freezing one head of it predicts like that head
    out = freeze(path, tmp_path / "frozen.pt", head="other")
    coords, cells, types = frames(1, seed=9)
    got = DeepPot(out).eval(coords, cells, types)
    want = DeepPot(b).eval(coords, cells, types)
    for x, y in zip(got, want):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-15)


# --- freeze -------------------------------------------------------------------------------
def test_freeze_round_trip(model, tmp_path):
    run = tmp_path / "run"
    atomic_save(model_payload(model, "checkpoint", step=7, optimizer={}), run / "model.ckpt-7.pt")
    (run / "checkpoint").write_text("model.ckpt-7.pt\n")
    out = freeze(run, tmp_path / "frozen.pt")
    coords, cells, types = frames(3, seed=10)
    want = DeepPot(run / "model.ckpt-7.pt").eval(coords, cells, types, atomic=True)
    got = DeepPot(out).eval(coords, cells, types, atomic=True)
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x, y)
    d = describe_model(out)
    assert d["source"] == "lamkit frozen model" and d["step"] is None
    meta = d["metadata"]
    assert meta["step"] == 7 and meta["source"].endswith("run")
    assert {"lamkit_version", "frozen_at"} <= set(meta)
    # converting the precision keeps predictions close
    out32 = freeze(out, tmp_path / "frozen32.pt", precision="float32")
    e32 = DeepPot(out32).eval(coords, cells, types)[0]
    np.testing.assert_allclose(e32, want[0], rtol=1e-5)
