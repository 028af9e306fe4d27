"""``lam convert``: lamkit model files to DeePMD-kit v3 checkpoints and back.

* lamkit -> DeePMD-kit: every head of a multi-task model (or only ``head``, written as a
  single-task checkpoint) through :mod:`lamkit.interop.to_deepmd`.
* DeePMD-kit -> lamkit: the reader of :mod:`lamkit.interop.deepmd`; a multi-task checkpoint keeps
  every head (or only ``head``). The reference ``model_params`` travel along in the lamkit file
  (``deepmd_model_params``), so converting back writes the same config as well as the same
  tensors.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ..config.multitask import choose_head
from ..errors import ConfigError, ModelFileError
from ..model.io import atomic_save, model_from_payload, model_payload, read_file, reader_of
from .deepmd import load_deepmd_checkpoint
from .to_deepmd import deepmd_checkpoint

TARGETS = ("deepmd", "lamkit")


def _is_torchscript(path: Path) -> bool:
    """True for a TorchScript archive (``dp freeze``'s ``.pth``): a zip with a ``code/`` folder."""
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def source_format(obj, where: str) -> str:
    """``"lamkit"`` or ``"deepmd"`` for a loaded model file."""
    kind = reader_of(obj, where).name
    if kind not in TARGETS:
        raise ModelFileError(f"{where}: a {kind} file; lam convert reads {TARGETS}")
    return kind


def _lamkit_to_deepmd(obj: dict, head: str | None, where: str) -> dict:
    conf = obj["model_config"]
    params = obj.get("deepmd_model_params")
    # a converted DeePMD-kit file's record, else a training checkpoint's step
    infos = obj.get("deepmd_train_infos") or {"lr": 0.0, "step": int(obj.get("step", 0))}
    if "model_dict" not in conf:
        branches = {"Default": model_from_payload(obj, where)}
        return deepmd_checkpoint(branches, False, where, params=params, train_infos=infos)
    heads = list(conf["model_dict"])
    if head is not None:
        head = choose_head(conf, head, where)  # a branch name, alias or case variant
        model = model_from_payload(obj, where, head=head)
        sub = params["model_dict"][head] if params else None
        return deepmd_checkpoint({head: model}, False, where, params=sub, train_infos=infos)
    branches = {h: model_from_payload(obj, where, head=h) for h in heads}
    return deepmd_checkpoint(branches, True, where, params=params, train_infos=infos)


def _deepmd_to_lamkit(obj: dict, head: str | None, where: str) -> dict:
    params = obj["model"]["_extra_state"]["model_params"]
    infos = obj["model"]["_extra_state"].get("train_infos")
    if "model_dict" not in params or head is not None:
        head = choose_head(params, head, where) if "model_dict" in params else head
        model = load_deepmd_checkpoint(obj, head=head)
        sub = params["model_dict"][head] if "model_dict" in params else params
        return model_payload(
            model,
            "frozen",
            metadata={"source": where},
            deepmd_model_params=sub,
            deepmd_train_infos=infos,
        )
    branches = {h: load_deepmd_checkpoint(obj, head=h) for h in params["model_dict"]}
    state = {
        f"{h}.{k}": v.detach().cpu() for h, m in branches.items() for k, v in m.state_dict().items()
    }
    payload = model_payload(branches[next(iter(branches))], "frozen")
    payload.update(
        model_config={"model_dict": {h: m.config for h, m in branches.items()}, "shared_links": []},
        model_state=state,
        metadata={"source": where},
        deepmd_model_params=params,
        deepmd_train_infos=infos,
    )
    return payload


def convert(
    src: str | Path, dst: str | Path, to: str | None = None, head: str | None = None
) -> tuple[str, str]:
    """Convert the model file ``src`` into ``dst``; returns ``(from_format, to_format)``.

    Args:
        to: ``"deepmd"`` or ``"lamkit"``; default: the other format than ``src``'s.
        head: one branch of a multi-task model (default: every branch).
    """
    where = str(src)
    if _is_torchscript(Path(src)):
        raise ModelFileError(
            f"{where}: a TorchScript frozen model (dp freeze, lam freeze --format pth); it has no "
            "config and weights to convert: convert the checkpoint it was frozen from"
        )
    obj = read_file(src)
    kind = source_format(obj, where)
    to = to or ("deepmd" if kind == "lamkit" else "lamkit")
    if to not in TARGETS:
        raise ConfigError(f"--to: expected one of {TARGETS}, got '{to}'")
    if to == kind:
        raise ConfigError(f"{where}: already a {kind} file; choose --to {TARGETS}")
    if kind == "lamkit":
        out = _lamkit_to_deepmd(obj, head, where)
    else:
        out = _deepmd_to_lamkit(obj, head, where)
    atomic_save(out, dst)
    return kind, to


def add_arguments(p) -> None:
    """``lam convert IN OUT [--to deepmd|lamkit] [--head H]``."""
    p.add_argument("input", help="a lamkit model/checkpoint or a DeePMD-kit v3 .pt checkpoint")
    p.add_argument("output", help="file to write")
    p.add_argument("--to", choices=TARGETS, default=None,
                   help="target format (default: the other one)")
    p.add_argument("--head", default=None,
                   help="convert only this branch of a multi-task model (default: all)")


def run(a) -> int:
    kind, to = convert(a.input, a.output, to=a.to, head=a.head)
    print(f"lam convert: {a.input} ({kind}) -> {a.output} ({to})")
    return 0
