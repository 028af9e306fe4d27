"""Name -> class registries with aliases and "did you mean" errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: str, choices) -> str:
    """A " Did you mean 'x'?" suffix for the closest of ``choices`` to ``name``, or ""."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


class Registry(Generic[T]):
    """A named collection of classes, looked up by type name or alias.

    >>> DESCRIPTORS = Registry("descriptor")
    >>> @DESCRIPTORS.register("se_e2_a", "se_a")
    ... class SeA: ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._canonical: dict[str, str] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            for key in (name, *aliases):
                if key in self._entries:
                    raise KeyError(f"{self.kind} '{key}' is registered twice")
                self._entries[key] = obj
                self._canonical[key] = name
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(
                f"unknown {self.kind} type '{name}'; known: {', '.join(self.names())}."
                + did_you_mean(name, self._entries)
            )
        return self._entries[name]

    def canonical(self, name: str) -> str:
        self.get(name)
        return self._canonical[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
