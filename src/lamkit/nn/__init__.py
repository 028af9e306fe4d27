"""Small network blocks shared by descriptors and fittings."""

from .mlp import Dense, EmbeddingNet, FittingNet, activation, make_generator, to_dtype

__all__ = ["Dense", "EmbeddingNet", "FittingNet", "activation", "make_generator", "to_dtype"]
