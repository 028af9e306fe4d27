"""Neighbour lists, ghost images, switching function and environment matrix."""

from .env import environment_matrix, smooth_switch
from .neighbor import NeighborBuilder, build_frame_neighbors, collate_neighbors

__all__ = [
    "NeighborBuilder",
    "build_frame_neighbors",
    "collate_neighbors",
    "environment_matrix",
    "smooth_switch",
]
