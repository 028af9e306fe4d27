"""DPA-2 descriptor (registered as ``dpa2``): repinit + three-body + repformer layers."""

from .dpa2 import REPFORMER_ARGS, REPINIT_ARGS, DescrptDPA2, split_neighbor_list
from .repformer_layer import RepformerLayer
from .repformers import Repformers

__all__ = [
    "REPFORMER_ARGS",
    "REPINIT_ARGS",
    "DescrptDPA2",
    "RepformerLayer",
    "Repformers",
    "split_neighbor_list",
]
