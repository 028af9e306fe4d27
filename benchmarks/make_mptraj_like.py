"""Generate a synthetic deepmd mixed-type dataset shaped like MPtraj (for data-scale benchmarks).

MPtraj (the Materials Project trajectory set behind the OpenLAM pretrained models) has about
1.58 M frames of 89 elements with 1 to 444 atoms a frame, stored in deepmd mixed-type format:
one system per atom count, ``type.raw`` a placeholder of zeros, the real types of every frame in
``set.*/real_atom_types.npy``.  This script writes a dataset of that shape:

- atom counts 1..444 from a log-normal spread (median 28 atoms, most frames 8-80 atoms, a long
  tail; every count gets at least one frame at full size);
- each frame: 1-4 species out of 89, atoms on a jittered, strained grid in a periodic cell with
  2.3-2.9 Å spacing (small cells see many periodic images of themselves);
- labels from a cheap analytic potential: a per-species atomic energy plus a species-dependent
  Morse pair sum over all periodic images within 4.5 Å, smoothly switched off from 3.5 Å, so
  ``force = -dE/dx`` and ``virial = -dE/dstrain`` hold exactly (float64).

Usage::

    python benchmarks/make_mptraj_like.py --out /tmp/mptraj-like            # 1.58 M frames
    python benchmarks/make_mptraj_like.py --out /tmp/small --frames 2000 --max-atoms 40

Writing is set by set through memory-mapped ``.npy`` files, ``--chunk`` frames at a time, so
memory stays bounded whatever the size; progress lines give the rate and ETA.
"""

from __future__ import annotations

import argparse
import functools
import math
import multiprocessing as mp
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap

#: Elements 1-83 (H..Bi) and 89-94 (Ac..Pu): 89 symbols, as in MPtraj.
ELEMENTS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As "
    "Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu "
    "Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Ac Th Pa U Np Pu"
).split()
NTYPES = len(ELEMENTS)
MAX_ATOMS = 444
RCUT = 4.5  # Å, pair potential cutoff
RSW = 3.5  # Å, the switch starts here
MORSE_A = 1.6  # 1/Å
FRAMES_PER_SET = 50_000
MIN_SPACING, MAX_SPACING = 2.3, 2.9  # Å between grid sites
MAX_STRAIN = 0.04  # per entry of the symmetric strain; its spectral norm is <= 3x this
MAX_JITTER = 0.15  # Å per component, uniform
# grid units beyond which two atoms are surely farther apart than RCUT
GRID_REACH = (RCUT + 2 * math.sqrt(3) * MAX_JITTER) / (MIN_SPACING * (1 - 3 * MAX_STRAIN))


@dataclass(frozen=True)
class Potential:
    """Species parameters of the analytic potential (fixed seed: the same for every dataset)."""

    e0: np.ndarray  # [ntypes] eV, atomic energy
    radius: np.ndarray  # [ntypes] Å, pair minimum at radius_i + radius_j
    depth: np.ndarray  # [ntypes] eV, well depth sqrt(depth_i depth_j)

    @classmethod
    def default(cls) -> Potential:
        rng = np.random.default_rng(20260)
        return cls(
            e0=rng.uniform(-8.0, -1.0, NTYPES),
            radius=rng.uniform(1.05, 1.45, NTYPES),
            depth=rng.uniform(0.05, 0.4, NTYPES),
        )


def _switch(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smooth switch s(r) (1 below RSW, 0 above RCUT, C2) and ds/dr."""
    x = np.clip((r - RSW) / (RCUT - RSW), 0.0, 1.0)
    s = 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x * x)
    ds = -30.0 * x * x * (1.0 - x) ** 2 / (RCUT - RSW)
    return s, ds


def pair_terms(pot: Potential, ti, tj, r):
    """Switched Morse pair energy phi(r) [eV] and dphi/dr [eV/Å] for types ti, tj at r Å."""
    r0 = pot.radius[ti] + pot.radius[tj]
    depth = np.sqrt(pot.depth[ti] * pot.depth[tj])
    ex = np.exp(-MORSE_A * (r - r0))
    morse = depth * ((1.0 - ex) ** 2 - 1.0)
    dmorse = 2.0 * depth * MORSE_A * (1.0 - ex) * ex
    s, ds = _switch(r)
    return morse * s, dmorse * s + morse * ds


def _grid_dims(n: int) -> tuple[int, int, int]:
    """Grid of at least ``n`` sites, as close to cubic as possible."""
    a = math.ceil(n ** (1 / 3))
    b = math.ceil(math.sqrt(n / a))
    return a, b, math.ceil(n / (a * b))


@functools.lru_cache(maxsize=8)
def candidate_pairs(dims: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Site pairs (p, q, image shift S) that can come within RCUT, each unordered pair once.

    Sites sit on an ``a x b x c`` grid; with spacing >= MIN_SPACING, strain entries <= MAX_STRAIN
    and displacements <= MAX_JITTER per component, two atoms whose sites are more than
    GRID_REACH grid units apart (over any periodic image) are beyond RCUT, so this list is exact.
    """
    dims_a = np.array(dims)
    grid = np.stack(np.meshgrid(*(np.arange(d) for d in dims), indexing="ij"), -1).reshape(-1, 3)
    reach = [math.ceil(GRID_REACH / d) + 1 for d in dims]
    shifts = np.stack(
        np.meshgrid(*(np.arange(-k, k + 1) for k in reach), indexing="ij"), -1
    ).reshape(-1, 3)
    pp, qq = np.meshgrid(np.arange(len(grid)), np.arange(len(grid)), indexing="ij")
    out_p, out_q, out_s = [], [], []
    for sv in shifts:  # one image at a time keeps memory at nsites^2
        dist = np.linalg.norm(grid[None, :] - grid[:, None] + sv * dims_a, axis=-1)
        positive = tuple(sv) > (0, 0, 0)
        keep = (dist <= GRID_REACH) & ((pp < qq) | ((pp == qq) & positive))
        out_p.append(pp[keep])
        out_q.append(qq[keep])
        out_s.append(np.broadcast_to(sv, (int(keep.sum()), 3)))
    return np.concatenate(out_p), np.concatenate(out_q), np.concatenate(out_s)


def label_pairs(pot: Potential, coord, cell, atype, i, j, shift, fid):
    """Energy [nf], force [nf, n, 3], virial [nf, 9] from a half list of candidate pairs.

    ``i``, ``j`` index flattened atoms (frame * n + atom), ``shift`` [npair, 3] Å the image
    displacement of atom j, ``fid`` the frame of each pair.  Pairs beyond RCUT add exactly zero.
    """
    nf, n, _ = coord.shape
    pos = coord.reshape(-1, 3)
    d = pos[j] - pos[i] + shift
    r = np.sqrt((d * d).sum(axis=1))
    near = r < RCUT
    d, r, i, j, fid = d[near], r[near], i[near], j[near], fid[near]
    flat_t = atype.reshape(-1)
    phi, dphi = pair_terms(pot, flat_t[i], flat_t[j], r)
    g = d * (dphi / r)[:, None]  # dE/d(d_ij), d_ij = r_j - r_i + shift
    energy = np.bincount(fid, weights=phi, minlength=nf) + pot.e0[atype].sum(axis=1)
    force = np.empty((nf * n, 3))
    for c in range(3):
        force[:, c] = np.bincount(i, weights=g[:, c], minlength=nf * n) - np.bincount(
            j, weights=g[:, c], minlength=nf * n
        )
    virial = np.empty((nf, 9))
    for a in range(3):
        for b in range(3):
            virial[:, 3 * a + b] = -np.bincount(fid, weights=d[:, a] * g[:, b], minlength=nf)
    return energy, force.reshape(nf, n, 3), virial


def label_frames(pot: Potential, coord, cell, atype, sites, dims):
    """Labels of frames made by :func:`make_frames` (atoms on grid ``sites`` [nf, n])."""
    nf, n, _ = coord.shape
    p, q, shift = candidate_pairs(dims)
    images, sid = np.unique(shift, axis=0, return_inverse=True)
    image_xyz = np.einsum("sk,fkl->fsl", images.astype(np.float64), cell)  # [nf, nimg, 3] Å
    atom_at = np.full((nf, int(np.prod(dims))), -1, dtype=np.int64)
    np.put_along_axis(atom_at, sites, np.arange(n)[None, :] + n * np.arange(nf)[:, None], axis=1)
    i, j = atom_at[:, p], atom_at[:, q]
    ok = (i >= 0) & (j >= 0)
    fid, pair = np.nonzero(ok)
    xyz = image_xyz[fid, sid.reshape(-1)[pair]]
    return label_pairs(pot, coord, cell, atype, i[ok], j[ok], xyz, fid)


def make_frames(rng: np.random.Generator, nf: int, n: int, species_weights: np.ndarray):
    """Random periodic frames of ``n`` atoms on a jittered, strained grid.

    Returns coord [nf, n, 3] Å, cell [nf, 3, 3] Å, atype [nf, n], sites [nf, n] (grid site of each
    atom) and the grid dims.
    """
    dims = _grid_dims(n)
    grid = np.stack(np.meshgrid(*(np.arange(d) for d in dims), indexing="ij"), -1)
    grid = grid.reshape(-1, 3).astype(np.float64)
    sites = np.argsort(rng.random((nf, len(grid))), axis=1)[:, :n]
    spacing = rng.uniform(MIN_SPACING, MAX_SPACING, (nf, 1, 1))
    strain = rng.uniform(-MAX_STRAIN, MAX_STRAIN, (nf, 3, 3))
    strain = 0.5 * (strain + strain.transpose(0, 2, 1))
    deform = np.eye(3) + strain
    cell = np.diag(np.array(dims, dtype=np.float64)) * spacing @ deform
    coord = np.einsum("fni,fij->fnj", (grid[sites] + 0.5) * spacing, deform)
    coord += rng.uniform(-MAX_JITTER, MAX_JITTER, coord.shape)
    nspec = rng.integers(1, 5, nf)
    species = rng.choice(NTYPES, size=(nf, 4), p=species_weights)
    which = np.floor(rng.random((nf, n)) * nspec[:, None]).astype(np.int64)
    atype = np.take_along_axis(species, which, axis=1)
    return coord, cell, atype, sites, dims


def frame_counts(frames: int, min_atoms: int, max_atoms: int) -> dict[int, int]:
    """Frames per atom count: log-normal weights (median 28, sigma 0.75), largest remainder.

    When there are at least as many frames as atom counts, every count gets one frame or more.
    """
    n = np.arange(min_atoms, max_atoms + 1, dtype=np.float64)
    w = np.exp(-0.5 * (np.log(n / 28.0) / 0.75) ** 2) / n
    w /= w.sum()
    floor = 1 if frames >= len(n) else 0
    spare = frames - floor * len(n)
    exact = spare * w
    counts = np.floor(exact).astype(np.int64)
    rest = spare - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:rest]] += 1
    counts += floor
    return {int(k): int(v) for k, v in zip(n, counts) if v > 0}


def species_weights() -> np.ndarray:
    """How often each element appears: O, then common cations, more often than the rest."""
    w = np.ones(NTYPES)
    for sym, extra in (("O", 12.0), ("Li", 3.0), ("Fe", 2.0), ("Mn", 2.0), ("F", 2.0)):
        w[ELEMENTS.index(sym)] += extra
    return w / w.sum()


def write_system(args: tuple) -> int:
    """Write the system of ``natoms``-atom frames; returns the number of frames written."""
    out, natoms, nframes, seed, chunk = args
    root = Path(out) / f"natoms_{natoms:03d}"
    root.mkdir(parents=True, exist_ok=True)
    (root / "type.raw").write_text("0\n" * natoms)
    (root / "type_map.raw").write_text("\n".join(ELEMENTS) + "\n")
    rng = np.random.default_rng(np.random.SeedSequence([seed, natoms]))
    pot, sw = Potential.default(), species_weights()
    for s, start in enumerate(range(0, nframes, FRAMES_PER_SET)):
        nset = min(FRAMES_PER_SET, nframes - start)
        set_dir = root / f"set.{s:03d}"
        set_dir.mkdir(exist_ok=True)
        arrays = {
            "coord": open_memmap(set_dir / "coord.npy", "w+", np.float64, (nset, natoms * 3)),
            "box": open_memmap(set_dir / "box.npy", "w+", np.float64, (nset, 9)),
            "energy": open_memmap(set_dir / "energy.npy", "w+", np.float64, (nset,)),
            "force": open_memmap(set_dir / "force.npy", "w+", np.float64, (nset, natoms * 3)),
            "virial": open_memmap(set_dir / "virial.npy", "w+", np.float64, (nset, 9)),
            "real_atom_types": open_memmap(
                set_dir / "real_atom_types.npy", "w+", np.int64, (nset, natoms)
            ),
        }
        step = max(1, chunk // natoms)
        for lo in range(0, nset, step):
            hi = min(nset, lo + step)
            coord, cell, atype, sites, dims = make_frames(rng, hi - lo, natoms, sw)
            energy, force, virial = label_frames(pot, coord, cell, atype, sites, dims)
            arrays["coord"][lo:hi] = coord.reshape(hi - lo, -1)
            arrays["box"][lo:hi] = cell.reshape(hi - lo, 9)
            arrays["energy"][lo:hi] = energy
            arrays["force"][lo:hi] = force.reshape(hi - lo, -1)
            arrays["virial"][lo:hi] = virial
            arrays["real_atom_types"][lo:hi] = atype
        del arrays
    return nframes


def generate(
    out: Path, frames: int, min_atoms: int, max_atoms: int, seed: int, workers: int, chunk: int
) -> None:
    counts = frame_counts(frames, min_atoms, max_atoms)
    natoms_total = sum(n * f for n, f in counts.items())
    est_gb = (natoms_total * (6 * 8 + 8) + frames * 19 * 8) / 1e9
    free_gb = shutil.disk_usage(out.parent if out.parent.exists() else ".").free / 1e9
    print(
        f"{frames} frames in {len(counts)} systems, {natoms_total} atoms "
        f"(mean {natoms_total / max(frames, 1):.1f}/frame), about {est_gb:.2f} GB; "
        f"{free_gb:.0f} GB free",
        flush=True,
    )
    if est_gb > 0.9 * free_gb:
        sys.exit(f"error: {out} needs about {est_gb:.1f} GB but only {free_gb:.1f} GB are free")
    out.mkdir(parents=True, exist_ok=True)
    # biggest systems first so that the workers finish together
    jobs = [
        (str(out), n, f, seed, chunk) for n, f in sorted(counts.items(), key=lambda x: -x[0] * x[1])
    ]
    t0, done_atoms, done_frames = time.perf_counter(), 0, 0
    weight = {n: n * f for n, f in counts.items()}
    pool = mp.get_context("fork").Pool(workers) if workers > 1 else None
    results = pool.imap_unordered(_run_job, jobs) if pool else map(_run_job, jobs)
    try:
        for k, (natoms, nf) in enumerate(results, 1):
            done_atoms += weight[natoms]
            done_frames += nf
            dt = time.perf_counter() - t0
            eta = dt * (natoms_total - done_atoms) / max(done_atoms, 1)
            if k % 10 == 0 or k == len(jobs):
                print(
                    f"[{k}/{len(jobs)} systems] {done_frames} frames, "
                    f"{done_frames / dt:.0f} frames/s, {done_atoms / dt:.0f} atoms/s, "
                    f"elapsed {dt:.0f} s, ETA {eta:.0f} s",
                    flush=True,
                )
    finally:
        if pool:
            pool.close()
            pool.join()
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s", flush=True)


def _run_job(job: tuple) -> tuple[int, int]:
    return job[1], write_system(job)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")
    p.add_argument("--frames", type=int, default=1_580_000, help="total frames (default 1.58 M)")
    p.add_argument("--min-atoms", type=int, default=1)
    p.add_argument("--max-atoms", type=int, default=MAX_ATOMS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--chunk", type=int, default=100_000, help="atoms labelled per numpy batch")
    a = p.parse_args(argv)
    if not 1 <= a.min_atoms <= a.max_atoms or a.frames <= 0:
        p.error("need 1 <= --min-atoms <= --max-atoms and --frames > 0")
    generate(a.out, a.frames, a.min_atoms, a.max_atoms, a.seed, a.workers, a.chunk)


if __name__ == "__main__":
    main()
