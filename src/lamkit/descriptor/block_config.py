"""Typed descriptor-block configs: the single source of each block's keys and defaults.

A block's config is a frozen dataclass whose fields are declared with :func:`arg`; the
config schema (``ARGS``, a tuple of :class:`lamkit.config.schema.Arg` in field order) and the
block's constructor both derive from it, so every default is written once::

    @dataclass(frozen=True)
    class MyConfig(BlockConfig):
        sel: Any = arg(REQUIRED, (list, str))
        rcut: float = arg(6.0, (float,))

    MyConfig.args()            # the schema, for lamkit.config.schema.normalize
    MyConfig.of(sel=[4, 4])    # the typed config; defaults filled from the fields
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config.schema import REQUIRED, Arg


def arg(
    default: Any,
    types: tuple = (),
    *,
    aliases: tuple[str, ...] = (),
    doc: str = "",
    choices: tuple = (),
    sub: type | None = None,
) -> Any:
    """A config field: its default, accepted types, aliases, doc and choices (see :class:`Arg`).

    ``sub`` names the :class:`BlockConfig` of a nested section. A list default is copied for
    every instance."""
    meta = {"types": types, "aliases": aliases, "doc": doc, "choices": choices, "sub": sub}
    meta["default"] = default
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"arg": meta})
    return dataclasses.field(default=default, metadata={"arg": meta})


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    """Base of the typed block configs: fields declared with :func:`arg`."""

    @classmethod
    def args(cls) -> tuple[Arg, ...]:
        """The schema of this config, one :class:`Arg` per field, in field order."""
        out = []
        for f in dataclasses.fields(cls):
            meta = f.metadata.get("arg")
            if meta is None:
                continue
            sub = meta["sub"].args() if meta["sub"] is not None else None
            out.append(
                Arg(
                    f.name,
                    meta["types"],
                    meta["default"],
                    aliases=meta["aliases"],
                    doc=meta["doc"],
                    sub=sub,
                    choices=meta["choices"],
                )
            )
        return tuple(out)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``{key: default}`` of the keys that have one (not REQUIRED)."""
        return {a.name: a.default for a in cls.args() if not a.required}

    @classmethod
    def of(cls, *args, **kwargs):
        """The config from a config instance, or from keyword (and positional, in field
        order) values with the defaults of the fields; keys starting with '_' are dropped."""
        if len(args) == 1 and not kwargs and isinstance(args[0], cls):
            return args[0]
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("_")}
        return cls(*args, **kwargs)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def derive_config(
    base: type[BlockConfig], name: str, drop: tuple[str, ...] = (), defaults: dict | None = None
) -> type[BlockConfig]:
    """A config class with ``base``'s fields less ``drop``, some ``defaults`` changed."""
    defaults = defaults or {}
    fields = []
    for f in dataclasses.fields(base):
        if f.name in drop:
            continue
        meta = dict(f.metadata["arg"])
        default = defaults.get(f.name, meta.pop("default"))
        meta.pop("default", None)
        fields.append((f.name, f.type, arg(default, **meta)))
    return dataclasses.make_dataclass(name, fields, bases=(BlockConfig,), frozen=True)


__all__ = ["REQUIRED", "BlockConfig", "arg", "derive_config"]
