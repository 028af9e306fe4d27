"""Data: deepmd/npy systems (standard and mixed type), ASE files, batch sizes and sampling.

Typical use::

    reqs = [DataRequirement("energy", 1, must=True), DataRequirement("force", 3, atomic=True)]
    systems = load_systems(["data/water"], type_map=["O", "H"], requirements=reqs)
    sizes = resolve_batch_sizes("auto", [s.natoms for s in systems])
    nb = [math.ceil(s.nframes / b) for s, b in zip(systems, sizes)]
    sampler = MultiSystemSampler(systems, sizes, system_probabilities(nb), seed=1)
    batch = sampler.next()   # dict of CPU tensors keyed by lamkit.keys
"""

from .ase_io import is_deepmd_dir, load_ase
from .batching import filter_systems, resolve_batch_sizes, system_probabilities
from .discover import expand_systems, load_systems
from .loader import (
    MultiSystemSampler,
    SystemLoader,
    describe_systems,
    frames_to_batch,
    iter_frames,
)
from .system import DataRequirement, System, load_system

__all__ = [
    "DataRequirement",
    "MultiSystemSampler",
    "System",
    "SystemLoader",
    "describe_systems",
    "expand_systems",
    "filter_systems",
    "frames_to_batch",
    "is_deepmd_dir",
    "iter_frames",
    "load_ase",
    "load_system",
    "load_systems",
    "resolve_batch_sizes",
    "system_probabilities",
]
