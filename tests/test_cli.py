"""The ``lam`` command line end to end on the built-in example, and ``lam test`` metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from lamkit.cli.main import main
from lamkit.infer.metrics import weighted_average


@pytest.fixture()
def workdir(tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(cwd)


def test_example_train_test_freeze_show(workdir, capsys):
    assert main(["example", "ex", "--frames", "6"]) == 0
    conf = json.loads((workdir / "ex" / "input.json").read_text())
    conf["training"].update(numb_steps=4, disp_freq=2, save_freq=2)
    for sec in ("training_data", "validation_data"):
        conf["training"][sec]["systems"] = [f"ex/{s}" for s in conf["training"][sec]["systems"]]
    (workdir / "in.json").write_text(json.dumps(conf))
    assert main(["train", "in.json", "-o", "run"]) == 0
    assert (workdir / "run" / "model.ckpt-4.pt").exists()
    assert main(["freeze", "-c", "run", "-o", "frozen.pth"]) == 0
    assert main(["test", "-m", "frozen.pth", "-s", "ex/data", "-n", "3", "-d", "det"]) == 0
    e = np.loadtxt(workdir / "det.e.out")
    assert e.shape == (8, 2)  # 3 + 3 training frames and 2 validation frames; data_e pred_e
    f = np.loadtxt(workdir / "det.f.out")
    assert f.shape[1] == 6
    v = np.loadtxt(workdir / "det.v.out")
    assert v.shape == (8, 18)
    assert (workdir / "det.parity.png").stat().st_size > 1000
    header = (workdir / "det.f.out").read_text().splitlines()[0]
    assert header.endswith("data_fx data_fy data_fz pred_fx pred_fy pred_fz")
    capsys.readouterr()
    assert main(["show", "frozen.pth", "type-map", "size"]) == 0
    out = capsys.readouterr().out
    assert "Cu" in out and "Au" in out
    assert main(["show", "frozen.pth"]) == 0  # no attributes: all of them
    out = capsys.readouterr().out
    assert "Cu" in out and "Parameters in total" in out and "descriptor" in out.lower()
    assert main(["show", "frozen.pth", "typemap"]) == 2
    assert "Did you mean 'type-map'?" in capsys.readouterr().err


def test_test_metrics_agree_with_detail_files(workdir):
    from lamkit.infer.metrics import run_test

    main(["example", "ex", "--frames", "4"])
    from lamkit.model import build_model, save_model

    model = build_model(
        {
            "type_map": ["Cu", "Au"],
            "descriptor": {
                "type": "se_e2_a",
                "sel": [40, 40],
                "rcut": 4.0,
                "neuron": [4, 8],
                "axis_neuron": 2,
                "seed": 1,
            },
            "fitting_net": {"neuron": [8], "seed": 2},
        }
    )
    save_model(model, workdir / "m.pth")
    res = run_test(str(workdir / "m.pth"), "ex/data", detail_file="d")
    e = np.loadtxt(workdir / "d.e.out")
    f = np.loadtxt(workdir / "d.f.out")
    natoms = [r["natoms"] for r in res["systems"] for _ in range(r["nframes"])]
    rmse_e = np.sqrt(np.mean((e[:, 0] - e[:, 1]) ** 2))
    # weighted over systems by frames: equals the pooled RMSE of total energies
    assert res["average"]["rmse_e"] == pytest.approx(rmse_e, rel=1e-12)
    assert res["average"]["rmse_f"] == pytest.approx(
        np.sqrt(np.mean((f[:, :3] - f[:, 3:]) ** 2)), rel=1e-12
    )
    ea = (e[:, 0] - e[:, 1]) / np.array(natoms)
    assert res["average"]["mae_ea"] == pytest.approx(np.mean(np.abs(ea)), rel=1e-12)


def test_weighted_average_is_element_weighted():
    avg = weighted_average(
        [{"rmse_f": 1.0, "n_f": 30, "mae_f": 1.0}, {"rmse_f": 3.0, "n_f": 10, "mae_f": 3.0}]
    )
    assert avg["rmse_f"] == pytest.approx(np.sqrt((1 * 30 + 9 * 10) / 40))
    assert avg["mae_f"] == pytest.approx((30 + 30) / 40)


def test_bad_input_exits_with_a_clear_message(workdir, capsys):
    (workdir / "in.json").write_text(json.dumps({"model": {}, "trainig": {}}))
    assert main(["train", "in.json"]) == 2
    err = capsys.readouterr().err
    assert "trainig" in err and "Did you mean 'training'" in err
    assert main(["train", "missing.json"]) == 2
    assert "missing.json: input file not found" in capsys.readouterr().err


def test_frozen_model_loads_without_training_code(tmp_path):
    import subprocess
    import sys

    from lamkit.model import build_model, save_model

    model = build_model(
        {
            "type_map": ["O", "H"],
            "descriptor": {
                "type": "se_e2_a",
                "sel": [8, 8],
                "rcut": 3.0,
                "neuron": [4],
                "axis_neuron": 2,
                "seed": 1,
            },
            "fitting_net": {"neuron": [4], "seed": 2},
        }
    )
    save_model(model, tmp_path / "m.pth")
    code = (
        "import sys; sys.modules['lamkit.train'] = None; sys.modules['lamkit.data'] = None\n"
        "import numpy as np; from lamkit.infer.deep_pot import DeepPot\n"
        f"dp = DeepPot({str(tmp_path / 'm.pth')!r})\n"
        "box = np.eye(3).reshape(1, 9) * 5\n"
        "e, f, v = dp.eval(np.random.rand(1, 4, 3) * 3, box, [0, 1, 1, 0])\n"
        "assert 'lamkit.train' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(e.shape, f.shape, v.shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "(1, 1) (1, 4, 3) (1, 9)" in out.stdout


def test_init_dpa2_small_then_train(workdir, capsys):
    """``lam init`` writes a ready-to-run input on the built-in example data; two steps train."""
    assert main(["init", "dpa2", "--size", "small", "--steps", "2"]) == 0
    assert "lam train input.json" in capsys.readouterr().out
    conf = json.loads((workdir / "input.json").read_text())
    assert conf["model"]["type_map"] == ["Cu", "Au"]
    assert conf["model"]["descriptor"]["repformer"]["nlayers"] == 3
    assert conf["training"]["training_data"]["systems"] == [
        "lamkit-example/data/train_0",
        "lamkit-example/data/train_1",
    ]
    assert conf["training"]["numb_steps"] == 2
    assert main(["train", "input.json"]) == 0
    assert (workdir / "model.ckpt-2.pt").exists()
    assert (workdir / "dpa2.hdf5").exists()  # the preset's stat_file
    lines = (workdir / "lcurve.out").read_text().splitlines()
    assert [int(ln.split()[0]) for ln in lines if not ln.startswith("#")] == [1, 2]


def test_init_with_data_folders(workdir, capsys):
    from .conftest import need_shared

    water = need_shared("water")
    assert main(["init", "se_e3_tebd", "--data", str(water), "-o", "run/in.json"]) == 0
    assert "cd run && lam train in.json" in capsys.readouterr().out
    conf = json.loads((workdir / "run" / "in.json").read_text())
    tr = conf["training"]
    assert [p.split("/")[-1] for p in tr["training_data"]["systems"]] == [
        "data_0",
        "data_1",
        "data_2",
    ]
    valid = [Path(p).resolve() for p in tr["validation_data"]["systems"]]
    assert valid == [(water / "data_3").resolve()]  # the data path may be reached by a link
    assert conf["model"]["type_map"] == ["O", "H"]  # from type_map.raw
    assert tr["numb_steps"] == 1_000_000  # the preset's


def test_init_errors(workdir, capsys):
    assert main(["init", "dpa22"]) == 2
    assert "Did you mean 'dpa2'?" in capsys.readouterr().err
    for k in range(2):  # two systems without type_map.raw
        (workdir / "d" / f"s{k}").mkdir(parents=True)
        (workdir / "d" / f"s{k}" / "type.raw").write_text("0\n")
    assert main(["init", "dpa1", "--data", "d"]) == 2
    assert "no type_map.raw" in capsys.readouterr().err
    assert main(["init", "dpa1", "--data", "d", "--type-map", "Cu"]) == 0
    assert json.loads((workdir / "input.json").read_text())["model"]["type_map"] == ["Cu"]
