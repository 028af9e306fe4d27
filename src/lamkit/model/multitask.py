"""Multi-task models: one branch (an :class:`AtomicModel`) per task, blocks shared by aliasing.

Sharing follows the reference's levels:

* descriptor level 0: the whole descriptor (every weight and its davg/dstd);
* descriptor level 1: the type embedding only (dpa1, dpa2, se_e3_tebd);
* fitting level 0: every weight of the fitting net but its per-type ``bias_atom``.

A shared block is one module object reachable from several branches, so the optimizer sees its
parameters once and every branch's ``state_dict`` is complete on its own (a branch can be
frozen or fine-tuned alone). Before sharing, the descriptor statistics of the tasks that share a
descriptor are summed (:func:`merge_descriptor_stats`), as DeePMD-kit does.
"""

from __future__ import annotations

from torch import nn

from ..config.multitask import SharedLink
from ..descriptor.env_stat import EnvStat
from ..errors import ConfigError
from .atomic_model import AtomicModel


class MultiTaskModel(nn.ModuleDict):
    """``{task: AtomicModel}`` with the shared blocks aliased; state keys ``<task>.<name>``."""

    def __init__(
        self, branches: dict[str, AtomicModel], links: list[SharedLink] = (), share: bool = True
    ):
        super().__init__(branches)
        self.links = list(links)
        if share:  # the trainer shares after computing (and merging) the statistics
            self.share()

    @property
    def tasks(self) -> list[str]:
        return list(self.keys())

    @property
    def config(self) -> dict:
        return {
            "model_dict": {t: m.config for t, m in self.items()},
            "shared_links": [link.to_dict() for link in self.links],
        }

    def share(self) -> None:
        """Alias the shared blocks of every linked branch to its base branch's."""
        for link in self.links:
            base = self[link.base]
            for task, level in link.links[1:]:
                share_block(self[task], base, link.kind, level, f"{link.name} ({task})")

    def shared_descriptor_groups(self) -> list[list[str]]:
        """Groups of tasks (base first) whose whole descriptor is one module (level 0)."""
        return [
            [t for t, level in link.links if level == 0]
            for link in self.links
            if link.kind == "descriptor" and sum(level == 0 for _, level in link.links) > 1
        ]


def share_block(model: AtomicModel, base: AtomicModel, kind: str, level: int, where: str):
    if kind == "descriptor":
        if type(model.descriptor) is not type(base.descriptor):
            raise ConfigError(f"{where}: only descriptors of the same type can be shared")
        if level == 0:
            model.descriptor = base.descriptor
        elif level == 1:
            model.descriptor.share_type_embedding(base.descriptor.type_embedding)
        else:
            raise ConfigError(
                f"{where}: descriptor sharing level {level} is not defined (0: everything, "
                "1: the type embedding)"
            )
        return
    if level != 0:
        raise ConfigError(f"{where}: fitting sharing level {level} is not defined (0 only)")
    fit, bfit = model.fitting, base.fitting
    if type(fit) is not type(bfit):
        raise ConfigError(f"{where}: only fitting nets of the same type can be shared")
    if getattr(fit, "numb_fparam", 0) or getattr(fit, "numb_aparam", 0):
        raise ConfigError(
            f"{where}: sharing a fitting net with fparam/aparam is not supported (their "
            "normalisation would have to be merged across tasks)"
        )
    for name in list(fit._modules):
        fit._modules[name] = bfit._modules[name]
    for name in list(fit._parameters):
        fit._parameters[name] = bfit._parameters[name]


def merge_descriptor_stats(stats: list) -> EnvStat | dict[str, EnvStat]:
    """The sum of several tasks' descriptor statistics (each an ``EnvStat`` or a dict of them
    per block, as ``compute_descriptor_stat`` returns)."""
    first = stats[0]
    if isinstance(first, dict):
        return {k: merge_descriptor_stats([s[k] for s in stats]) for k in first}
    total = EnvStat(first.ntypes)
    for s in stats:
        total.merge(s)
    return total
