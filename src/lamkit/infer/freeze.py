"""``lam freeze``: a training checkpoint -> a self-contained, inference-only lamkit model file.

Unlike ``dp --pt freeze`` the result is not TorchScript: it is the model config plus its
weights (see :mod:`lamkit.model.io`), loadable by :class:`~lamkit.infer.DeepPot` and
:func:`lamkit.model.load_model` without the training code.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

from ..errors import ConfigError
from ..model import EnergyModel, build_model, save_model
from ..model.io import model_from_payload, read_file, reader_of


def _lamkit_version() -> str:
    try:
        from importlib.metadata import version

        return version("lamkit")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def _with_precision(model: EnergyModel, precision: str) -> EnergyModel:
    """The same model rebuilt with descriptor and fitting in ``precision``."""
    conf = copy.deepcopy(model.config)
    for section in ("descriptor", "fitting_net"):
        if isinstance(conf.get(section), dict):
            conf[section]["precision"] = precision
    out = build_model(conf)
    out.load_state_dict(model.state_dict())  # copies convert the dtype
    return out


def freeze(
    checkpoint: str | Path,
    output: str | Path,
    head: str | None = None,
    precision: str | None = None,
    format: str | None = None,
    images: int = 1,
    periodic: bool = True,
) -> Path:
    """Write the model of ``checkpoint`` to ``output`` as a lamkit frozen model.

    Args:
        checkpoint: a lamkit checkpoint file or training folder (its ``checkpoint`` file names
            the latest one), a DeePMD-kit v3 ``model.ckpt-*.pt`` (or its folder), or a lamkit
            frozen model.
        output: destination file (written atomically).
        head: branch to keep from a multi-task checkpoint.
        precision: ``"float64"``/``"float32"`` to convert the weights; default: keep the
            trained precision (predictions then match the checkpoint exactly).
        format: ``"lamkit"`` (default) or ``"pt2"``: an AOTInductor package that torch alone
            loads (:mod:`lamkit.infer.export_pt2`; ``images`` and ``periodic`` are its
            options); default ``"pt2"`` when ``output`` ends in ``.pt2``. ``"pth"``:
            TorchScript for DeePMD-kit's C++ inference and ``pair_style deepmd``
            (:mod:`lamkit.infer.export_pth`).

    Returns the output path. The file records ``source``, ``head``, ``step``, the lamkit
    version and the time of freezing in its ``metadata``.
    """
    obj = read_file(checkpoint)
    model = model_from_payload(obj, str(checkpoint), head=head)
    if precision is not None:
        model = _with_precision(model, precision)
    output = Path(output)
    format = format or ("pt2" if output.suffix == ".pt2" else "lamkit")
    if format in ("pt2", "pth") and getattr(model, "extra_inputs", ()):
        raise ConfigError(
            f"freeze: {checkpoint} is a spin model; the '{format}' export does not take atomic "
            "spins yet (freeze it in the lamkit format)"
        )
    if format == "pt2":
        from .export_pt2 import export_pt2

        return export_pt2(model.eval(), output, periodic=periodic, images=images)
    if format == "pth":
        from .export_pth import export_pth

        return export_pth(model.eval(), output)
    if format != "lamkit":
        raise ConfigError(
            f"freeze: unknown format {format!r} (expected 'lamkit', 'pt2' or 'pth')"
        )
    step = reader_of(obj, str(checkpoint)).step(obj)
    save_model(
        model.eval(),
        output,
        source=str(Path(checkpoint).resolve()),
        head=head,
        step=step,
        lamkit_version=_lamkit_version(),
        frozen_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    return output
