"""Type embedding: one learned vector per atom type, plus a zero vector for padding.

``A_t = EmbeddingNet(ntypes -> [tebd_dim], linear)(onehot(t))``, i.e. row ``t`` of the weight
matrix (plus the bias when ``use_tebd_bias``). Row ``ntypes`` of :meth:`TypeEmbedNet.table` is
zero and is what virtual atoms (type ``-1``, which indexes the last row) and padding get. The
single ``Dense`` layer sits at ``net.layers.0`` so reference checkpoints map one to one.
"""

from __future__ import annotations

import torch
from torch import nn

from .mlp import EmbeddingNet
from .params import RefNames, TypeRows


class TypeEmbedNet(nn.Module):
    """Embedding table ``[ntypes + 1, tebd_dim]`` of atom types (last row zero)."""

    def __init__(
        self,
        ntypes: int,
        tebd_dim: int,
        use_tebd_bias: bool = False,
        dtype: torch.dtype = torch.float64,
        generator: torch.Generator | None = None,
        trainable: bool = True,
    ):
        super().__init__()
        self.ntypes, self.tebd_dim = ntypes, tebd_dim
        # a residual connection appears when tebd_dim is ntypes or 2*ntypes, as in the reference
        self.net = EmbeddingNet(
            ntypes, [tebd_dim], "linear", False, dtype, generator, bias=use_tebd_bias
        )
        for p in self.parameters():
            p.requires_grad_(trainable)

    def table(self) -> torch.Tensor:
        """``[ntypes + 1, tebd_dim]``: the embedding of every type, then a zero row."""
        weight = self.net.layers[0].matrix
        eye = torch.eye(self.ntypes, dtype=weight.dtype, device=weight.device)
        emb = self.net(eye)
        return torch.cat([emb, emb.new_zeros(1, self.tebd_dim)], dim=0)

    def forward(self, atype: torch.Tensor) -> torch.Tensor:
        """Embedding of ``atype`` (any shape, -1 for virtual atoms) -> ``[..., tebd_dim]``."""
        return self.table()[torch.where(atype >= 0, atype, self.ntypes)]

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    TYPE_ROWS = (TypeRows("net.layers.0.matrix", "fresh"),)  # the row of each type
    REF_NAMES = RefNames(names=(("net.layers.*.*", "embedding.embedding_net.layers.*.*"),))
