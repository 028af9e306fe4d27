"""Multi-task model sections: ``model.shared_dict`` + ``model.model_dict`` (DeePMD-kit v3).

A multi-task input names reusable blocks once in ``shared_dict`` and refers to them from each
task (branch) of ``model_dict`` by name, optionally with a sharing level
(``"descriptor": "dpa2_desc:1"``)::

    "model": {
      "shared_dict": {"type_map_all": ["O", "H"], "dpa2_desc": {"type": "dpa2", ...}},
      "model_dict": {
        "water":  {"type_map": "type_map_all", "descriptor": "dpa2_desc", "fitting_net": {...}},
        "alloy":  {"type_map": "type_map_all", "descriptor": "dpa2_desc", "fitting_net": {...}}
      }
    }

:func:`expand_model_dict` turns this into one complete model config per task plus the sharing
links; keys at the top of ``model`` other than the two dicts apply to every task (a task's own
value wins), as in the reference.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..errors import ConfigError

SHAREABLE = ("descriptor", "fitting_net")
RESERVED_TASK_NAMES = ("RANDOM",)


@dataclass
class SharedLink:
    """One shared block: the tasks that use it, the first (lowest level) is the base."""

    name: str
    kind: str  # "descriptor" or "fitting_net"
    links: list[tuple[str, int]] = field(default_factory=list)  # (task, level), sorted

    @property
    def base(self) -> str:
        return self.links[0][0]

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "links": [list(x) for x in self.links]}

    @classmethod
    def from_dict(cls, d: dict) -> SharedLink:
        return cls(d["name"], d["kind"], [(str(t), int(level)) for t, level in d["links"]])


def is_multitask(model_section: dict) -> bool:
    return isinstance(model_section, dict) and "model_dict" in model_section


def _parse_ref(value: str, where: str, shared: dict) -> tuple[str, int]:
    name, _, level = value.partition(":")
    if name not in shared:
        from ..registry import did_you_mean

        raise ConfigError(
            f"{where}: '{name}' is not in model/shared_dict (it has {sorted(shared)})."
            + did_you_mean(name, list(shared))
        )
    if level and not level.isdigit():
        raise ConfigError(f"{where}: the sharing level in '{value}' must be an integer")
    return name, int(level or 0)


def expand_model_dict(model_section: dict) -> tuple[dict[str, dict], list[SharedLink]]:
    """Complete per-task model configs (shared blocks copied in) and the sharing links.

    Raises ``ConfigError`` for an empty ``model_dict``, a reserved task name, a reference to a
    missing shared block, or tasks with different type maps.
    """
    section = copy.deepcopy(model_section)
    shared = section.pop("shared_dict", None) or {}
    tasks = section.pop("model_dict")
    if not isinstance(tasks, dict) or not tasks:
        raise ConfigError("model/model_dict: expected a non-empty mapping of task names")
    if not isinstance(shared, dict):
        raise ConfigError("model/shared_dict: expected a mapping of block names")
    defaults = section  # model-wide keys, lowered into every task
    links: dict[str, SharedLink] = {}
    out: dict[str, dict] = {}
    for task, conf in tasks.items():
        where = f"model/model_dict/{task}"
        if task in RESERVED_TASK_NAMES:
            raise ConfigError(f"{where}: '{task}' is reserved (it selects a random fitting)")
        if not isinstance(conf, dict):
            raise ConfigError(f"{where}: expected a model section (a mapping)")
        conf = {**copy.deepcopy(defaults), **conf}
        for key in ("type_map", *SHAREABLE):
            value = conf.get(key)
            if not isinstance(value, str):
                continue
            name, level = _parse_ref(value, f"{where}/{key}", shared)
            conf[key] = copy.deepcopy(shared[name])
            if key == "type_map":
                if level:
                    raise ConfigError(f"{where}/type_map: a type map has no sharing levels")
                continue
            link = links.setdefault(name, SharedLink(name, key))
            if link.kind != key:
                raise ConfigError(
                    f"{where}/{key}: shared block '{name}' is used as a {link.kind} elsewhere"
                )
            link.links.append((task, level))
        out[task] = conf
    maps = {task: tuple(c.get("type_map") or ()) for task, c in out.items()}
    if len(set(maps.values())) > 1:
        raise ConfigError(
            "model/model_dict: every task must use the same type_map (share it through "
            f"shared_dict); found { ({t: list(m) for t, m in maps.items()}) }"
        )
    result = []
    for link in links.values():
        link.links.sort(key=lambda x: x[1])  # stable: equal levels keep the input order
        result.append(link)
    return out, result
