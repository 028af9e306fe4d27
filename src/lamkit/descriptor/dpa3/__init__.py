"""DPA-3 descriptor (registered as ``dpa3``): type embedding + repflow layers."""

from .config import DPA3_ARGS, REPFLOW_ARGS
from .dpa3 import DescrptDPA3
from .repflow_layer import RepFlowLayer
from .repflows import Repflows

__all__ = ["DPA3_ARGS", "REPFLOW_ARGS", "DescrptDPA3", "RepFlowLayer", "Repflows"]
