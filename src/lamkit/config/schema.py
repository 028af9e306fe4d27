"""Typed argument specifications and the validation of nested config dicts.

Each configurable part (descriptor, fitting, loss, learning rate, training, data) declares a
list of :class:`Arg`. :func:`normalize` fills defaults, resolves aliases, checks types and
rejects unknown keys with a "did you mean" suggestion, naming the full key path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..registry import did_you_mean

REQUIRED = object()


@dataclass(frozen=True)
class Arg:
    """One config key: its name, accepted types, default and aliases."""

    name: str
    types: tuple = ()
    default: Any = None
    aliases: tuple[str, ...] = ()
    doc: str = ""
    sub: tuple[Arg, ...] | None = None  # nested dict with its own spec
    choices: tuple = field(default=())

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


_TYPE_NAMES = {
    int: "int",
    float: "float",
    str: "str",
    bool: "bool",
    list: "list",
    dict: "dict",
    type(None): "null",
}


def _check_type(value, arg: Arg, path: str):
    if not arg.types:
        return value
    if float in arg.types and isinstance(value, int) and not isinstance(value, bool):
        return float(value) if int not in arg.types else value
    if bool not in arg.types and isinstance(value, bool) and int in arg.types:
        pass  # json true where an int is wanted: reject below
    elif isinstance(value, arg.types):
        return value
    wanted = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in arg.types)
    raise ConfigError(f"{path}: expected {wanted}, got {type(value).__name__} {value!r}")


def normalize(
    config: dict | None,
    spec: list[Arg] | tuple[Arg, ...],
    path: str,
    allow_extra: tuple[str, ...] = (),
) -> dict:
    """Validate ``config`` against ``spec``; return a new dict with canonical names and defaults.

    ``path`` (e.g. "model/descriptor") prefixes every error message. Keys in ``allow_extra``
    (such as "type", "_comment") are passed through unchecked.
    """
    config = dict(config or {})
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a dict, got {type(config).__name__}")
    out: dict = {}
    names: dict[str, Arg] = {}
    for arg in spec:
        names[arg.name] = arg
        for al in arg.aliases:
            names[al] = arg
    for key, value in config.items():
        if key in allow_extra or key.startswith("_comment") or key == "_comment":
            out[key] = value
            continue
        if key not in names:
            raise ConfigError(
                f"{path}: unknown key '{key}'."
                + did_you_mean(key, list(names) + list(allow_extra))
                + f" Accepted keys: {', '.join(a.name for a in spec)}."
            )
        arg = names[key]
        if arg.name in out:
            raise ConfigError(f"{path}: '{key}' and another alias of '{arg.name}' are both given")
        value = _check_type(value, arg, f"{path}/{key}")
        if arg.choices and value not in arg.choices:
            raise ConfigError(
                f"{path}/{key}: '{value}' is not one of {', '.join(map(str, arg.choices))}."
                + did_you_mean(value, arg.choices)
            )
        if arg.sub is not None and isinstance(value, dict):
            value = normalize(value, arg.sub, f"{path}/{key}")
        out[arg.name] = value
    for arg in spec:
        if arg.name in out:
            continue
        if arg.required:
            raise ConfigError(f"{path}: required key '{arg.name}' is missing. {arg.doc}".strip())
        default = arg.default
        if arg.sub is not None and default is not None:
            default = normalize(default, arg.sub, f"{path}/{arg.name}")
        out[arg.name] = list(default) if isinstance(default, list) else default
    return out
