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

from ..errors import ConfigError, ModelFileError
from ..registry import did_you_mean

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
    branch_aliases(tasks)  # aliases name one branch each
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


def case_embd_index(confs: dict[str, dict]) -> dict[str, int]:
    """Case-embedding index of every task (position in the sorted task names), or ``{}`` when
    the fittings have none (``fitting_net/dim_case_embd`` 0).

    A fitting shared by several tasks (``input_torch_sharefit.json``) tells the tasks apart by a
    one-hot vector of ``dim_case_embd`` entries appended to its input; as in the reference, task
    ``k`` of the sorted names gets entry ``k``, and every task must have the same dimension.
    """
    dims = {t: int((c.get("fitting_net") or {}).get("dim_case_embd", 0)) for t, c in confs.items()}
    if len(set(dims.values())) > 1:
        raise ConfigError(
            f"model/model_dict: every task's fitting_net/dim_case_embd must be equal; found {dims}"
        )
    if not any(dims.values()):
        return {}
    order = sorted(confs)
    if len(order) > next(iter(dims.values())):
        raise ConfigError(
            f"model/model_dict: fitting_net/dim_case_embd is {next(iter(dims.values()))} but "
            f"there are {len(order)} tasks (it must be at least the number of tasks)"
        )
    return {t: k for k, t in enumerate(order)}


def branch_aliases(model_dict: dict) -> dict[str, str]:
    """``{name or alias: branch}`` of a multi-task model section: every branch under its own
    name and under each entry of its ``model_branch_alias`` list (e.g. ``["Default", "Water"]``
    in the reference's ``input_torch_with_alias.json``). An alias used twice is an error."""
    names = {t: t for t in model_dict}
    for task, conf in model_dict.items():
        aliases = conf.get("model_branch_alias") or [] if isinstance(conf, dict) else []
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise ConfigError(
                f"model/model_dict/{task}/model_branch_alias: expected a list of names"
            )
        for alias in aliases:
            if alias in names:
                raise ConfigError(
                    f"model/model_dict/{task}/model_branch_alias: '{alias}' already names "
                    f"branch '{names[alias]}'"
                )
            names[alias] = task
    return names


def resolve_branch(model_dict: dict, name: str | None, ignore_case: bool = False) -> str | None:
    """The branch a name or alias stands for, ``None`` if none does. ``name`` None picks the
    branch aliased ``Default``, if any; ``ignore_case`` also accepts a name differing in case
    only (as the reference's ``DeepPot(head=...)`` does)."""
    names = branch_aliases(model_dict)
    if name is None:
        return names.get("Default")
    if name in names:
        return names[name]
    if ignore_case:
        for key, branch in names.items():
            if key.lower() == name.lower():
                return branch
    return None


def choose_head(
    section: dict,
    head: str | None,
    where: str = "model",
    *,
    noun: str = "head",
    ignore_case: bool = True,
    error: type[Exception] = ModelFileError,
) -> str:
    """The branch of a multi-task model section (``model_dict``, optionally ``default_head``)
    that ``head`` names: a branch, a ``model_branch_alias`` of one, or either differing in case
    only (unless ``ignore_case`` is False). ``head`` None picks the section's ``default_head``
    (set by replay fine-tuning), else the branch aliased ``Default``.

    This is the one place that chooses a head: lamkit files, DeePMD-kit checkpoints, ``lam
    freeze/test/change-bias --head`` and fine-tuning's ``--model-branch`` all come here. Raises
    ``error`` (``ModelFileError`` by default) naming the branches, with a "did you mean".
    """
    branches = section["model_dict"]
    heads = list(branches)
    if head is None:
        head = section.get("default_head") or resolve_branch(branches, None)
        if head is None:
            raise error(f"{where}: a multi-task model; choose a {noun} from {heads}")
    head = resolve_branch(branches, head, ignore_case=ignore_case) or head
    if head not in heads:
        raise error(
            f"{where} has no {noun} '{head}'; available: {heads}." + did_you_mean(head, heads)
        )
    return head
