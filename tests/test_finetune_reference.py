"""Fine-tuning parity with the reference: DeePMD-kit v3 pretrained checkpoints (two-task and
single-task DPA-2 made here with ``dp --pt train``) fine-tuned by lamkit and by
``dp --pt train --finetune`` with the same input give the same model before the first optimizer
step: same weights, same refit energy bias, same energies and forces on water data_3."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lamkit.interop.deepmd import load_deepmd_checkpoint
from lamkit.train import Trainer

from . import reference_finetune as rf
from .conftest import require_reference

pytestmark = pytest.mark.usefixtures("one_thread")
NEVAL = 2  # frames of data_3 compared


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    require_reference()
    root = tmp_path_factory.mktemp("ref_ft")
    return {
        "root": root,
        "multi": rf.make_reference_multitask(root / "multi", steps=4),
        "single": rf.make_reference_single(root / "single", steps=4),
        "data": rf.subset_system(rf.water(2), root / "data_2", rf.NFRAMES),
    }


def lamkit_predictions(model):
    system = rf.water(3)
    coord = np.load(system / "set.000" / "coord.npy")[:NEVAL]
    box = torch.as_tensor(np.load(system / "set.000" / "box.npy")[:NEVAL])
    names = (system / "type_map.raw").read_text().split()
    types = [model.type_map.index(names[t]) for t in np.loadtxt(system / "type.raw", dtype=int)]
    atype = torch.as_tensor(types)[None].expand(NEVAL, -1)
    out = model.evaluate(torch.as_tensor(coord).reshape(NEVAL, -1, 3), atype, box)
    return out["energy"].detach().reshape(-1).numpy(), out["force"].detach().reshape(NEVAL, -1)


def both_finetune(work, name, config, pretrained, branch=None, use_pretrain_script=False):
    """The same fine-tuning set-up by the reference (its ``model.ckpt-0.pt``) and by lamkit
    (the model before the first step)."""
    ref_ckpt = rf.reference_finetune(
        work["root"] / f"ref_{name}", pretrained, config, branch, use_pretrain_script
    )
    trainer = Trainer(
        copy.deepcopy(config),
        work["root"] / f"lam_{name}",
        finetune=str(pretrained),
        model_branch=branch,
        use_pretrain_script=use_pretrain_script,
    )
    return ref_ckpt, trainer.model


def ref_bias(ref_ckpt) -> torch.Tensor:
    return rf.branch_tensors(rf.load_state(ref_ckpt))["out_bias"].reshape(-1)


def compare(work, name, config, pretrained, branch=None, use_pretrain_script=False):
    ref_ckpt, model = both_finetune(work, name, config, pretrained, branch, use_pretrain_script)
    torch.testing.assert_close(model.out_bias.reshape(-1), ref_bias(ref_ckpt), rtol=1e-10, atol=0)
    e_ref, f_ref = rf.reference_energies(ref_ckpt, rf.water(3), NEVAL)
    e, f = lamkit_predictions(model)
    np.testing.assert_allclose(e, e_ref, rtol=1e-10, atol=0)
    np.testing.assert_allclose(f.numpy(), f_ref, rtol=0, atol=1e-8)
    return model


def test_branch_of_a_reference_multitask_checkpoint(work):
    config = rf.finetune_input(True, work["data"], branch="water_b")
    compare(work, "branch", config, work["multi"], branch="water_b")


def test_reference_single_task_checkpoint(work):
    config = rf.finetune_input(False, work["data"])
    compare(work, "single", config, work["single"])


def test_use_pretrain_script_with_another_descriptor_in_the_input(work):
    other = copy.deepcopy(rf.DESCRIPTOR)
    other["repformer"]["nlayers"] = 1
    config = rf.finetune_input(True, work["data"], branch="water_a", descriptor=other)
    model = compare(work, "script", config, work["multi"], "water_a", True)
    assert model.config["descriptor"]["repformer"]["nlayers"] == 2


def test_random_fitting_bias_and_descriptor(work):
    config = rf.finetune_input(True, work["data"], branch="water_a")
    ref_ckpt, model = both_finetune(work, "random", config, work["multi"], "RANDOM")
    torch.testing.assert_close(model.out_bias.reshape(-1), ref_bias(ref_ckpt), rtol=1e-10, atol=0)
    # the descriptor is the pretrained one in both (the fittings are random in both)
    ref_model = load_deepmd_checkpoint(ref_ckpt)
    ours = model.state_dict()
    for key, value in ref_model.state_dict().items():
        if key.startswith("descriptor."):
            torch.testing.assert_close(ours[key], value, rtol=0, atol=0)


def test_multitask_lcurve_columns_match_the_reference(work, tmp_path):
    config = rf.multitask_input(work["data"], work["data"], steps=2)
    config["training"]["disp_freq"] = 1
    Trainer(config, tmp_path).run()
    ours = (tmp_path / "lcurve.out").read_text().splitlines()[0][1:].split()
    assert ours == rf.lcurve_header(work["multi"].parent)


def test_new_element_keeps_old_element_forces_as_the_reference(work):
    """Fine-tuning onto data with an element the pretrained model never saw: the new type's
    embedding rows are random in both tools (the reference draws them from torch's global
    generator), so the models differ on frames with the new element and, through the bias
    refit, by a constant per type; on O/H frames the forces are the reference's exactly."""
    from .train_inputs import water_subset as subset

    data = subset(rf.water(2), work["root"] / "na_water", rf.NFRAMES, retype=0)
    config = rf.finetune_input(True, data, type_map=["O", "H", "Na"], branch="water_a")
    ref_ckpt, model = both_finetune(work, "na", config, work["multi"], "water_a")
    assert model.type_map == ["O", "H", "Na"]
    _, f_ref = rf.reference_energies(ref_ckpt, rf.water(3), NEVAL)
    _, f = lamkit_predictions(model)
    np.testing.assert_allclose(f.numpy(), f_ref, rtol=0, atol=1e-8)
    torch.testing.assert_close(model.out_bias.reshape(-1), ref_bias(ref_ckpt), rtol=1e-3, atol=0)
