"""A model's type map changed for fine-tuning: a subset, a new order, or new elements.

Only tensors indexed by atom type change: those that the model's components declare in their
``TYPE_ROWS`` (:mod:`lamkit.nn.params`): the type-embedding rows, the environment statistics
(``davg``/``dstd``), the output bias and std and the fitting's per-type bias. Every other weight
is copied, so predictions for structures of the old elements stay exactly what they were. New
elements get what each declaration says: the freshly initialised embedding rows of a model
built for the new type map, zero mean, that model's initial spread (1; DPA-3's fix_stat_std)
and zero bias, for the fine-tuning data to set (as DeePMD-kit's ``change_type_map`` does). Type
indices in the config (``exclude_types`` and friends) follow.

Descriptors without a type embedding (se_e2_a) have one network per type (pair); their type
map stays as it is (data in any type map is mapped onto it by element name).
"""

from __future__ import annotations

import copy

import torch

from ..errors import ConfigError
from ..nn.params import TypeRows, type_rows
from ..nn.type_embedding import TypeEmbedNet
from .build import build_model


def _remap_pairs(pairs, index: dict[int, int]) -> list:
    """Type pairs (or single types) in old indices -> new ones; pairs with a dropped type go."""
    out = []
    for p in pairs:
        items = p if isinstance(p, (list, tuple)) else [p]
        if all(t in index for t in items):
            mapped = [index[t] for t in items]
            out.append(mapped if isinstance(p, (list, tuple)) else mapped[0])
    return out


def _remap_config(conf: dict, old: list[str], new: list[str]) -> dict:
    conf = copy.deepcopy(conf)
    index = {i: new.index(name) for i, name in enumerate(old) if name in new}
    conf["type_map"] = list(new)
    for key in ("pair_exclude_types", "atom_exclude_types"):
        if conf.get(key):
            conf[key] = _remap_pairs(conf[key], index)
    for section in ("descriptor", "fitting_net"):
        sub = conf.get(section) or {}
        if sub.get("exclude_types"):
            sub["exclude_types"] = _remap_pairs(sub["exclude_types"], index)
        if sub.get("type_map"):
            sub["type_map"] = list(new)
    return conf


def change_type_map(model, new_type_map: list[str]):
    """A new model for ``new_type_map`` carrying ``model``'s weights (``model`` is unchanged)."""
    old = list(model.type_map)
    new = list(new_type_map)
    if len(set(new)) != len(new):
        raise ConfigError(f"type_map {new}: an element appears twice")
    if new == old:
        return model
    added = [t for t in new if t not in old]
    conf = _remap_config(model.config, old, new)
    if not model.mixed_types:
        what = f"new elements {added}" if added else f"{new} instead of {old}"
        raise ConfigError(
            f"type_map: {what} needs a descriptor with a type embedding (dpa1, dpa2, "
            f"se_e3_tebd); '{conf['descriptor']['type']}' has one network per type and keeps "
            f"its type map {old} (data in other type maps is mapped onto it by element name)"
        )
    fresh = build_model(conf)
    src = model.state_dict()
    dst = fresh.state_dict()
    rows = [(j, old.index(name)) for j, name in enumerate(new) if name in old]
    declared = type_rows(fresh)
    state = {}
    for key, value in dst.items():
        if key not in src:
            raise ConfigError(f"type_map: the rebuilt model has an unexpected tensor '{key}'")
        old_value = src[key]
        if key in declared:
            value = _new_rows(key, declared[key], value, old_value, rows, len(old))
        elif old_value.shape != value.shape:
            raise ConfigError(
                f"type_map: '{key}' depends on the number of types in a way lamkit cannot map "
                f"({tuple(old_value.shape)} -> {tuple(value.shape)})"
            )
        else:
            value = old_value
        state[key] = value.clone()
    fresh.load_state_dict(state)
    _check_embeddings(model, fresh, rows)
    return fresh


def _check_embeddings(old_model, new_model, rows) -> None:
    """The embedding of every kept type must be unchanged. It is not when the embedding net
    has a residual connection in one model only (tebd_dim equal to ntypes or 2 ntypes)."""
    new_modules = dict(new_model.named_modules())
    for name, module in old_model.named_modules():
        if isinstance(module, TypeEmbedNet):
            with torch.no_grad():
                a, b = module.table(), new_modules[name].table()
            j, i = (list(x) for x in zip(*rows))
            if not torch.allclose(b[j], a[i], rtol=1e-12, atol=1e-14):
                raise ConfigError(
                    f"type_map: the type embedding '{name}' (tebd_dim {module.tebd_dim}) has a "
                    f"residual connection for {module.ntypes} types but not for "
                    f"{new_modules[name].ntypes} (or the reverse), so its rows cannot be kept"
                )


def _new_rows(
    key: str, decl: TypeRows, fresh_value: torch.Tensor, old_value: torch.Tensor, rows, n_old: int
) -> torch.Tensor:
    """Slices of old types copied into their new places (along ``decl.axis``); new types get
    zeros or keep the rebuilt model's initial values (``decl.init``)."""
    out = fresh_value.clone()
    if decl.init == "zero":
        out.zero_()
    n = old_value.shape[decl.axis]
    if n != n_old:
        raise ConfigError(f"type_map: '{key}' has {n} rows for {n_old} types")
    for j, i in rows:
        out.select(decl.axis, j).copy_(old_value.select(decl.axis, i))
    return out
