"""``lam show MODEL [attributes...]``: what a model file holds, like ``dp --pt show``.

:func:`describe_model` reads a lamkit frozen model or checkpoint, or a DeePMD-kit v3 checkpoint,
into a plain dict; :func:`format_description` turns the attributes asked for into text.
"""

from __future__ import annotations

from pathlib import Path

from ..model.io import FORMAT, model_from_payload, read_file, reader_of

ATTRIBUTES = ("model-branch", "type-map", "descriptor", "fitting-net", "size")


def parameter_counts(model) -> dict[str, int]:
    """Trainable-parameter counts: ``descriptor``, ``fitting-net`` and their ``total``."""
    named = dict(model.named_parameters())
    desc = sum(p.numel() for k, p in named.items() if k.startswith("descriptor."))
    fit = sum(p.numel() for k, p in named.items() if k.startswith("fitting."))
    return {"descriptor": desc, "fitting-net": fit, "total": desc + fit}


def describe_model(path: str | Path) -> dict:
    """Facts about a model file.

    Returns a dict with ``path``, ``source`` (``"lamkit frozen model"``, ``"lamkit checkpoint"``
    or ``"DeePMD-kit checkpoint"``), ``multi_task``, ``branches`` and, per branch name (a
    single-task model has the one branch ``"Default"``), ``type_map``, ``descriptor``,
    ``fitting_net``, ``size`` (see :func:`parameter_counts`) and ``alias``/``info``; plus
    ``metadata`` (lamkit files: what ``freeze`` recorded) and ``step`` when known.
    """
    obj = read_file(path)
    reader = reader_of(obj, str(path))
    params = reader.config(obj)
    extra = {"metadata": {}, "step": reader.step(obj)}
    if reader.name == FORMAT:
        kind = obj.get("kind", "frozen")
        source = f"lamkit {'frozen model' if kind == 'frozen' else kind}"
        extra["metadata"] = dict(obj.get("metadata") or {})
    else:
        source = "DeePMD-kit checkpoint" if reader.name == "deepmd" else reader.name
    multi = "model_dict" in params
    confs = params["model_dict"] if multi else {"Default": params}
    branches = {}
    for name, conf in confs.items():
        try:
            size = parameter_counts(model_from_payload(obj, str(path), head=name))
        except Exception as exc:  # noqa: BLE001 - show what we can even if a branch won't build
            size = {"error": str(exc)}
        branches[name] = {
            "type_map": list(conf.get("type_map", [])),
            "descriptor": conf.get("descriptor"),
            "fitting_net": conf.get("fitting_net"),
            "alias": list(conf.get("model_branch_alias", [])),
            "info": dict(conf.get("info") or {}),
            "size": size,
        }
    return {"path": str(path), "source": source, "multi_task": multi, "branches": branches, **extra}


def format_description(d: dict, attributes: list[str] | tuple[str, ...] | None = None) -> str:
    """Text for ``lam show``: one paragraph per attribute (default: all of :data:`ATTRIBUTES`)."""
    attributes = list(ATTRIBUTES if not attributes else attributes)
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"show: unknown attribute(s) {unknown}; choose from {list(ATTRIBUTES)}")
    multi = d["multi_task"]
    branches = d["branches"]
    lines = [f"{d['path']}: {d['source']}, {'a multi-task' if multi else 'a single-task'} model"]
    if d.get("step") is not None:
        lines.append(f"Training step: {d['step']}")

    def per_branch(label: str, key: str) -> None:
        for name, b in branches.items():
            where = f" of branch {name}" if multi else ""
            lines.append(f"The {label}{where} is {b[key]}")

    for attr in attributes:
        if attr == "model-branch":
            if not multi:
                lines.append("Model branches: none (a single-task model)")
                continue
            names = [*branches, "RANDOM"]
            lines.append(
                f"Available model branches are {names}, where 'RANDOM' means using a "
                "randomly initialized fitting net."
            )
            for name, b in branches.items():
                lines.append(f"  {name}: alias {b['alias']}, info {b['info']}")
        elif attr == "type-map":
            per_branch("type_map", "type_map")
        elif attr == "descriptor":
            per_branch("descriptor parameter", "descriptor")
        elif attr == "fitting-net":
            per_branch("fitting_net parameter", "fitting_net")
        elif attr == "size":
            for name, b in branches.items():
                head = f"Parameter counts of branch {name}:" if multi else "Parameter counts:"
                lines.append(head)
                if "error" in b["size"]:
                    lines.append(f"  unavailable ({b['size']['error']})")
                    continue
                for k in sorted(b["size"]):
                    lines.append(f"  Parameters in {k}: {b['size'][k]:,}")
    return "\n".join(lines)
