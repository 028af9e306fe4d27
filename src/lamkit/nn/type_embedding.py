"""Type embedding: one learned vector per atom type, plus a zero vector for padding.

``A_t = EmbeddingNet(ntypes -> [tebd_dim], linear)(onehot(t))``, i.e. row ``t`` of the weight
matrix (plus the bias when ``use_tebd_bias``). Row ``ntypes`` of :meth:`TypeEmbedNet.table` is
zero and is what virtual atoms (type ``-1``, which indexes the last row) and padding get. The
single ``Dense`` layer sits at ``net.layers.0`` so reference checkpoints map one to one.

With ``econf_type_map`` (``use_econf_tebd``) the input of a type is its electronic-configuration
vector (:mod:`lamkit.nn.econf`, 118 entries) instead of a one-hot vector; the table of those
vectors is rebuilt from the type map (never saved), so no weight is indexed by type.
"""

from __future__ import annotations

import torch
from torch import nn

from .econf import ECONF_DIM, econf_table
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
        econf_type_map: list[str] | None = None,
    ):
        super().__init__()
        self.ntypes, self.tebd_dim = ntypes, tebd_dim
        self.econf = econf_type_map is not None
        n_in = ECONF_DIM if self.econf else ntypes
        if self.econf:
            if len(econf_type_map) != ntypes:
                raise ValueError(f"econf_type_map has {len(econf_type_map)} types, not {ntypes}")
            table = torch.as_tensor(econf_table(list(econf_type_map)), dtype=dtype)
            self.register_buffer("econf_inputs", table, persistent=False)
        # a residual connection appears when tebd_dim is n_in or 2*n_in, as in the reference
        self.net = EmbeddingNet(
            n_in, [tebd_dim], "linear", False, dtype, generator, bias=use_tebd_bias
        )
        for p in self.parameters():
            p.requires_grad_(trainable)

    def table(self) -> torch.Tensor:
        """``[ntypes + 1, tebd_dim]``: the embedding of every type, then a zero row."""
        weight = self.net.layers[0].matrix
        if self.econf:
            inputs = self.econf_inputs.to(dtype=weight.dtype, device=weight.device)
        else:
            inputs = torch.eye(self.ntypes, dtype=weight.dtype, device=weight.device)
        emb = self.net(inputs)
        return torch.cat([emb, emb.new_zeros(1, self.tebd_dim)], dim=0)

    def forward(self, atype: torch.Tensor) -> torch.Tensor:
        """Embedding of ``atype`` (any shape, -1 for virtual atoms) -> ``[..., tebd_dim]``."""
        return self.table()[torch.where(atype >= 0, atype, self.ntypes)]

    # --- declarations (lamkit.nn.params): type-indexed tensors, DeePMD-kit names ----------
    @property
    def TYPE_ROWS(self) -> tuple[TypeRows, ...]:  # noqa: N802 - the declaration's name
        """The row of each type; none with econf inputs (rows per orbital, not per type)."""
        return () if self.econf else (TypeRows("net.layers.0.matrix", "fresh"),)

    REF_NAMES = RefNames(names=(("net.layers.*.*", "embedding.embedding_net.layers.*.*"),))
