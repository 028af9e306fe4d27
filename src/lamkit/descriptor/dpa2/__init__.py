"""DPA-2 descriptor (not yet registered in :mod:`lamkit.descriptor`)."""

from .dpa2 import DescrptDPA2, split_neighbor_list
from .repformer_layer import RepformerLayer
from .repformers import Repformers

__all__ = ["DescrptDPA2", "RepformerLayer", "Repformers", "split_neighbor_list"]
