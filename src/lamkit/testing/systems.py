"""Small atomic configurations for physics tests: random clusters, cubic and skewed cells.

All functions are deterministic for a given ``seed`` and return plain numpy data (float64),
so the same systems can be fed to any model with lamkit's ``evaluate`` interface.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch


@dataclass
class System:
    """One frame: ``coord`` [nloc, 3] Å, ``atype`` [nloc] (-1 = virtual atom), ``cell`` [3, 3]
    with cell vectors as rows (Å) or None for a non-periodic system."""

    coord: np.ndarray
    atype: np.ndarray
    cell: np.ndarray | None = None

    def __post_init__(self):
        self.coord = np.asarray(self.coord, dtype=np.float64).reshape(-1, 3)
        self.atype = np.asarray(self.atype, dtype=np.int64).reshape(-1)
        if self.cell is not None:
            self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        if len(self.coord) != len(self.atype):
            raise ValueError(
                f"System: coord has {len(self.coord)} atoms but atype has {len(self.atype)}"
            )

    @property
    def nloc(self) -> int:
        return len(self.atype)

    @property
    def periodic(self) -> bool:
        return self.cell is not None

    def copy(self, **changes) -> System:
        """A deep copy, with fields replaced by ``changes``."""
        base = replace(
            self,
            coord=self.coord.copy(),
            atype=self.atype.copy(),
            cell=None if self.cell is None else self.cell.copy(),
        )
        return replace(base, **changes) if changes else base

    def tensors(
        self, dtype: torch.dtype = torch.float64
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(coord [1, nloc, 3], atype [1, nloc], box [1, 9] or None) as torch tensors."""
        coord = torch.as_tensor(self.coord, dtype=dtype).reshape(1, -1, 3)
        atype = torch.as_tensor(self.atype, dtype=torch.int64).reshape(1, -1)
        box = None if self.cell is None else torch.as_tensor(self.cell, dtype=dtype).reshape(1, 9)
        return coord, atype, box


def cell_from_parameters(
    a: float, b: float, c: float, alpha: float, beta: float, gamma: float
) -> np.ndarray:
    """Cell [3, 3] (rows a, b, c) from lengths (Å) and angles (degrees), ``a`` along x."""
    al, be, ga = (math.radians(x) for x in (alpha, beta, gamma))
    cx = c * math.cos(be)
    cy = c * (math.cos(al) - math.cos(be) * math.cos(ga)) / math.sin(ga)
    cz2 = c * c - cx * cx - cy * cy
    if cz2 <= 0:
        raise ValueError(f"angles ({alpha}, {beta}, {gamma}) do not describe a cell")
    return np.array(
        [[a, 0.0, 0.0], [b * math.cos(ga), b * math.sin(ga), 0.0], [cx, cy, math.sqrt(cz2)]]
    )


def random_rotation(rng: np.random.Generator, proper: bool = True) -> np.ndarray:
    """A uniformly random orthogonal 3x3 matrix; det = +1 if ``proper`` else -1."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q[:, 0] = -q[:, 0]
    return q


def plane_spacings(cell: np.ndarray) -> np.ndarray:
    """Distances between lattice planes spanned by (b, c), (c, a) and (a, b), Å."""
    vol = abs(np.linalg.det(cell))
    cross = np.stack(
        [np.cross(cell[1], cell[2]), np.cross(cell[2], cell[0]), np.cross(cell[0], cell[1])]
    )
    return vol / np.linalg.norm(cross, axis=1)


def image_offsets(cell: np.ndarray | None, reach: float) -> np.ndarray:
    """Integer image vectors [nimg, 3] enough to find every partner within ``reach`` Å of an
    atom when both lie inside the cell (all zeros for a non-periodic system)."""
    if cell is None:
        return np.zeros((1, 3), dtype=np.int64)
    nmax = np.ceil(reach / plane_spacings(cell)).astype(int) + 1
    axes = [np.arange(-n, n + 1) for n in nmax]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.int64)


def wrap_offsets(coord: np.ndarray, cell: np.ndarray | None) -> np.ndarray:
    """Integer offsets [nloc, 3] such that ``coord + offsets @ cell`` lies inside the cell."""
    if cell is None:
        return np.zeros((len(coord), 3), dtype=np.int64)
    return -np.floor(coord @ np.linalg.inv(cell)).astype(np.int64)


def _min_distance_to(
    points: np.ndarray, new: np.ndarray, cell: np.ndarray | None, reach: float
) -> float:
    if len(points) == 0:
        return math.inf
    diff = points - new
    if cell is not None:
        diff = diff - np.round(diff @ np.linalg.inv(cell)) @ cell
        diff = diff[:, None, :] + (image_offsets(cell, reach) @ cell)[None]
    return float(np.sqrt((diff * diff).sum(-1)).min())


def random_system(
    natoms: int,
    ntypes: int,
    cell: np.ndarray | None = None,
    extent: float = 6.0,
    min_dist: float = 1.0,
    seed: int = 0,
) -> System:
    """Random atoms at least ``min_dist`` Å apart (periodic images included).

    With ``cell`` the atoms fill that cell, otherwise a cube of side ``extent`` Å.  Types cycle
    through ``0..ntypes-1`` (shuffled) so that every type appears when ``natoms >= ntypes``.
    """
    rng = np.random.default_rng(seed)
    box = np.eye(3) * extent if cell is None else np.asarray(cell, dtype=np.float64)
    coord = np.zeros((0, 3))
    for _ in range(natoms):
        for _attempt in range(10_000):
            new = rng.random(3) @ box
            if _min_distance_to(coord, new, cell, min_dist) >= min_dist:
                coord = np.vstack([coord, new])
                break
        else:
            raise ValueError(
                f"random_system: cannot place {natoms} atoms {min_dist} Å apart in {box.tolist()}"
            )
    atype = rng.permutation(np.arange(natoms) % ntypes)
    return System(coord, atype, cell)


def standard_system(name: str, ntypes: int, rcut: float, seed: int = 0) -> System:
    """Named test geometries scaled by the model cutoff ``rcut`` (Å).

    * ``cluster``: 10 atoms in a cube of side 1.3 rcut, non-periodic (some pairs beyond rcut);
    * ``cubic``: 12 atoms in a cube of side 1.6 rcut, unwrapped coordinates;
    * ``triclinic``: 4 atoms in a strongly skewed, randomly oriented cell with edges of about
      0.85 rcut, so every atom sees several periodic images of itself.
    """
    rng = np.random.default_rng(seed + 1000)
    if name == "cluster":
        return random_system(10, ntypes, None, extent=1.3 * rcut, min_dist=1.0, seed=seed)
    if name == "cubic":
        sys_ = random_system(12, ntypes, np.eye(3) * 1.6 * rcut, min_dist=1.0, seed=seed)
        # atoms outside the cell exercise the wrapping done by the neighbour search
        sys_.coord = sys_.coord + rng.integers(-1, 2, size=(sys_.nloc, 3)) @ sys_.cell
        return sys_
    if name == "triclinic":
        s = 0.85 * rcut
        cell = cell_from_parameters(s, 0.9 * s, 1.1 * s, 62.0, 72.0, 48.0)
        cell = cell @ random_rotation(rng).T
        return random_system(4, ntypes, cell, min_dist=1.0, seed=seed)
    raise ValueError(f"unknown standard system '{name}'; known: cluster, cubic, triclinic")


def make_supercell(system: System, reps: tuple[int, int, int]) -> System:
    """Replicate a periodic system ``reps`` times along a, b, c (image blocks in C order)."""
    if system.cell is None:
        raise ValueError("make_supercell needs a periodic system")
    grid = np.stack(np.meshgrid(*[np.arange(r) for r in reps], indexing="ij"), -1).reshape(-1, 3)
    coord = (system.coord[None] + (grid @ system.cell)[:, None]).reshape(-1, 3)
    atype = np.tile(system.atype, len(grid))
    return System(coord, atype, np.diag(reps).astype(np.float64) @ system.cell)


def pad_with_virtual(system: System, nloc: int, rng: np.random.Generator) -> System:
    """Append virtual atoms (type -1) at random places until the system has ``nloc`` atoms."""
    extra = nloc - system.nloc
    if extra < 0:
        raise ValueError(f"cannot pad a system of {system.nloc} atoms to {nloc}")
    pos = rng.normal(scale=5.0, size=(extra, 3))
    return system.copy(
        coord=np.vstack([system.coord, pos]),
        atype=np.concatenate([system.atype, -np.ones(extra, dtype=np.int64)]),
    )


def strain_system(
    system: System, rng: np.random.Generator, amount: float = 0.05, rattle: float = 0.05
) -> System:
    """A randomly deformed copy: ``R -> R (I + eps)``, cell likewise, with ``|eps_ab|`` up to
    ``amount``, and every atom displaced by up to ``rattle`` Å."""
    deform = np.eye(3) + rng.uniform(-amount, amount, size=(3, 3))
    coord = system.coord @ deform + rng.uniform(-rattle, rattle, size=system.coord.shape)
    cell = None if system.cell is None else system.cell @ deform
    return system.copy(coord=coord, cell=cell)
