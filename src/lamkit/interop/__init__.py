"""DeePMD-kit v3 PyTorch checkpoints: reading them into lamkit models, writing lamkit models as
such checkpoints (``to_deepmd``) and ``lam convert`` between the two file formats
(``lamkit.interop.convert.convert``)."""

from .deepmd import is_deepmd_checkpoint, load_deepmd_checkpoint
from .to_deepmd import deepmd_checkpoint

__all__ = ["deepmd_checkpoint", "is_deepmd_checkpoint", "load_deepmd_checkpoint"]
