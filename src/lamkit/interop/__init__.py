"""Reading DeePMD-kit v3 PyTorch checkpoints into lamkit models."""

from .deepmd import is_deepmd_checkpoint, load_deepmd_checkpoint

__all__ = ["is_deepmd_checkpoint", "load_deepmd_checkpoint"]
