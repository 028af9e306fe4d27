"""Small network blocks shared by descriptors and fittings; :mod:`lamkit.nn.params` holds the
declarations components make about their tensors (type-indexed rows, DeePMD-kit names)."""

from .mlp import Dense, EmbeddingNet, FittingNet, activation, make_generator, to_dtype

__all__ = ["Dense", "EmbeddingNet", "FittingNet", "activation", "make_generator", "to_dtype"]
