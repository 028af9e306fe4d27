"""The ``lam learn`` study of docs/active-learning.md: EMT as ground truth, a small multi-task
se_e2_a model pretrained on bulk Cu, Ni, Au and Cu-Au frames, fine-tuned for Cu and Cu3Ni
properties (lattice constants, Cij, vacancy, intrinsic SFE, EOS); deviation-based selection
against random selection of the same number of frames per iteration.

    python benchmarks/learn_cuni.py prepare OUT      # EMT data, pretraining, two configs
                                                     # (--device cuda: pretrain on the GPU)
    python benchmarks/learn_cuni.py configs OUT PRE.pt [--reduced]  # the configs only
    lam learn OUT/learn-devi.json -o OUT/devi        # (both runs can go side by side)
    lam learn OUT/learn-random.json -o OUT/random
    python benchmarks/learn_cuni.py plot OUT docs/active-learning-study.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import write

from lamkit.data.writer import write_deepmd_system

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_device import add_device_argument, resolve_device  # noqa: E402

TYPE_MAP = ["Cu", "Ni", "Au"]
#: the descriptor and fitting sizes: the first study's 8x16 / [32, 32] model had Cu's C11
#: 76 % soft after pretraining whatever the fine-tuning did; this one is within 15 %
SE_A = {"type": "se_e2_a", "sel": [60, 60, 60], "rcut": 5.0, "rcut_smth": 1.0,
        "neuron": [16, 32], "axis_neuron": 8, "seed": 1}
FITTING = [64, 64]
PRETRAIN_STEPS = 6000
FRAMES = 40  # EMT frames per pretraining system
#: pretraining loss: the virial and energy weigh more than DeePMD-kit's defaults (0.02 -> 1)
PRETRAIN_LOSS = {"type": "ener", "start_pref_e": 0.2, "limit_pref_e": 5, "start_pref_f": 1000,
                 "limit_pref_f": 1, "start_pref_v": 0.2, "limit_pref_v": 20}


def l12(a: float, major: str, minor: str) -> Atoms:
    """The L1_2 A3B crystal (4-atom cubic cell), B at the corner."""
    cell = bulk(major, "fcc", a=a, cubic=True)
    cell[0].symbol = minor
    return cell


def _frames(make, n: int, rng) -> dict:
    out: dict[str, list] = {"coord": [], "box": [], "energy": [], "force": [], "virial": []}
    for _ in range(n):
        at = make(rng)
        strain = rng.uniform(-0.03, 0.03, (3, 3))
        at.set_cell(at.cell.array @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
        at.positions += rng.normal(0, 0.08, at.positions.shape)
        at.calc = EMT()
        out["energy"].append(at.get_potential_energy())
        out["force"].append(at.get_forces())
        out["virial"].append(-at.get_stress(voigt=False).reshape(9) * at.get_volume())
        out["coord"].append(at.positions.copy())
        out["box"].append(at.cell.array.reshape(9))
    out["types"] = [TYPE_MAP.index(s) for s in at.get_chemical_symbols()]
    return out


def _system(path: Path, data: dict) -> str:
    write_deepmd_system(
        path, np.stack(data["coord"]), np.array(data["types"]), TYPE_MAP,
        box=np.stack(data["box"]),
        labels={k: np.asarray(data[k]) for k in ("energy", "force", "virial")},
    )
    return str(path)


def prepare(out: Path, device: str = "cpu") -> None:
    from lamkit.train import Trainer

    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    pure = [
        _system(out / "pre" / s, _frames(lambda r, s=s, a=a: bulk(s, "fcc", a=a, cubic=True)
                                         .repeat((2, 2, 2)), FRAMES, rng))
        for s, a in (("Cu", 3.59), ("Ni", 3.52), ("Au", 4.07))
    ]

    def random_alloy(minor: str, a: float):
        def make(r):
            at = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 2))
            for k in r.choice(len(at), size=len(at) // 2, replace=False):
                at[k].symbol = minor
            return at
        return make

    # the alloy branch (named CuAu for the first study): Cu3Au, random CuAu and random CuNi
    # (a nearby composition; Cu3Ni itself is never seen)
    alloys = [
        _system(out / "pre" / "Cu3Au", _frames(lambda r: l12(3.75, "Cu", "Au").repeat((2, 2, 2)),
                                               FRAMES, rng)),
        _system(out / "pre" / "CuAu_random", _frames(random_alloy("Au", 3.8), FRAMES, rng)),
        _system(out / "pre" / "CuNi_random", _frames(random_alloy("Ni", 3.55), FRAMES, rng)),
    ]
    fitting = {"neuron": FITTING}
    conf = {
        "model": {
            "shared_dict": {"tm": TYPE_MAP, "desc": SE_A},
            "model_dict": {
                "pure": {"type_map": "tm", "descriptor": "desc",
                         "fitting_net": {**fitting, "seed": 2}},
                "CuAu": {"type_map": "tm", "descriptor": "desc",
                         "fitting_net": {**fitting, "seed": 3}},
            },
        },
        "learning_rate": {"type": "exp", "start_lr": 2e-3, "stop_lr": 3e-5,
                          "decay_steps": PRETRAIN_STEPS // 20},
        "loss_dict": {"pure": PRETRAIN_LOSS, "CuAu": PRETRAIN_LOSS},
        "training": {
            "data_dict": {
                "pure": {"training_data": {"systems": pure, "batch_size": 1}},
                "CuAu": {"training_data": {"systems": alloys, "batch_size": 1}},
            },
            "numb_steps": PRETRAIN_STEPS, "seed": 1, "disp_freq": 500,
            "save_freq": PRETRAIN_STEPS,
        },
    }
    ckpt = Trainer(conf, out / "pre" / "train", device=device).run()
    configs(out, Path(ckpt))


#: fine-tuning loss: energies and virials weigh more than in pretraining. Cu's elastic
#: constants live in the virials of strained cells (0.25 eV/atom at 2 % strain) and in
#: energy differences of 3 meV/atom; with the default force-dominated loss (start_pref_f 1000)
#: fine-tuning on such frames left C11 60 % soft, this loss brought it within 20 % (one
#: member, docs/active-learning.md).
LOSS = {"start_pref_e": 1, "limit_pref_e": 10, "start_pref_f": 100, "limit_pref_f": 1,
        "start_pref_v": 10, "limit_pref_v": 100}


#: EMT's intrinsic SFE of Cu is -5.4 mJ/m^2: 10 % of it (0.5 mJ/m^2, 0.2 meV per (111) cell)
#: is below what any fit resolves; 5 mJ/m^2 is about 10 % of Cu's measured SFE
SFE_TOLERANCE = "5 mJ/m^2"


def configs(out: Path, ckpt: Path, reduced: bool = False) -> None:
    """learn-devi.json and learn-random.json in ``out`` for the pretrained ``ckpt``;
    ``reduced``: 2 members, shorter MD (for a busy machine)."""
    write(out / "Cu3Ni.extxyz", l12(3.56, "Cu", "Ni"))
    props = [
        {"name": "lattice", "structure": "Cu", "tolerance": "0.5 %"},
        {"name": "elastic", "structure": "Cu", "tolerance": "10 %"},
        {"name": "vacancy", "structure": "Cu", "tolerance": "0.1 eV"},
        {"name": "sfe", "structure": "Cu", "tolerance": SFE_TOLERANCE},
        {"name": "lattice", "structure": "Cu3Ni", "tolerance": "0.5 %"},
        {"name": "eos", "structure": "Cu3Ni", "tolerance": {"V0": "1.5 %", "B0": "10 %"}},
    ]
    for method in ("devi", "random"):
        learn = {
            "model": str(Path(ckpt).resolve()),
            "head": "pure",
            "structures": {"Cu": {"bulk": "Cu", "crystalstructure": "fcc", "a": 3.6,
                                  "cubic": True},
                           "Cu3Ni": "Cu3Ni.extxyz"},
            "properties": props,
            "labeller": {"type": "emt"},
            "train": {"members": 2 if reduced else 3, "numb_steps": 3000,
                      "start_lr": 1e-3, "stop_lr": 3e-5, "loss": LOSS, "init_frames": 2,
                      "init_pool": True},
            "explore": {"temperatures": [300, 800], "pressures": [0],
                        "steps": 30 if reduced else 60, "traj_freq": 10 if reduced else 6,
                        "pool": True, "pool_rattle": 0.01},
            "select": {"method": "fixed" if method == "devi" else "random",
                       "lo": "0.03 eV/Å", "hi": "0.3 eV/Å", "lo_v": "0.01 eV", "hi_v": "1 eV",
                       "max_select": 30},
            "converge": {"accurate_ratio": 0.9, "max_iterations": 3},
        }
        (out / f"learn-{method}.json").write_text(json.dumps(learn, indent=1))


def _records(run: Path) -> list[dict]:
    return [r for r in json.loads((run / "report.json").read_text())["records"]
            if "properties" in r]


SHOWN = ("elastic:Cu:C11", "vacancy:Cu:Ef", "sfe:Cu:intrinsic", "eos:Cu3Ni:B0", "worst")


def plot(out: Path, png: Path) -> None:
    """|error| / tolerance of some quantities and the worst of all, and the accurate ratio of
    the explored frames, against the labelled frames each iteration trained on; prints every
    quantity."""
    from lamkit.props.common import new_figure, save_figure

    fig, axes = new_figure(1, 2, size=(10.0, 3.8))
    for name, style in (("devi", "-"), ("random", "--")):
        recs = _records(out / name)
        labels = [r["labels_before_train"] for r in recs]
        errs = [{f"{k}:{q}": abs(e["error"]) / e["allowed"] for k, p in r["properties"].items()
                 for q, e in p.items()} for r in recs]
        for e in errs:
            e["worst"] = max(e.values())
        for k, key in enumerate(SHOWN):
            axes[0].plot(labels, [e[key] for e in errs], style, marker="os^vd"[k],
                         color="k" if key == "worst" else f"C{k}", label=f"{name} {key}")
        axes[1].plot(labels, [r["ratios"]["accurate"] for r in recs], style, marker="o",
                     label=name)
        print(name, "labels", labels)
        for key in errs[0]:
            print(f"  {key:18s} |error|/tolerance", " ".join(f"{e[key]:6.2f}" for e in errs))
    axes[0].axhline(1.0, color="k", ls=":")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("|error| / tolerance")
    axes[0].legend(fontsize=5, ncol=2)
    axes[1].set_ylabel("accurate ratio of explored frames")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_xlabel("labelled frames used for training")
    save_figure(fig, png)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage", choices=("prepare", "configs", "plot"))
    ap.add_argument("out", type=Path)
    ap.add_argument("png", type=Path, nargs="?",
                    help="plot: the figure to write; configs: the pretrained checkpoint")
    ap.add_argument("--reduced", action="store_true",
                    help="configs: 2 members, shorter MD")
    add_device_argument(ap)
    args = ap.parse_args()
    if args.stage == "prepare":
        prepare(args.out, str(resolve_device(args.device)))
    elif args.png is None:
        ap.error(f"{args.stage} needs a second path (plot: PNG; configs: PRETRAINED.pt)")
    elif args.stage == "configs":
        configs(args.out, args.png, args.reduced)
    else:
        plot(args.out, args.png)
