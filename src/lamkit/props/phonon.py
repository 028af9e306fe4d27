"""Phonon bands and density of states with phonopy (finite displacements; the forces of all
displaced supercells in one batched evaluation).

The band path is ASE's special-point path (``cell.bandpath()``) of the primitive cell phonopy
finds (or is given), unless one is given as runs of fractional q-points with labels.
Frequencies in THz.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from .common import PropsError, check_periodic, new_figure, potential_of, save_figure


@dataclass
class PhononResult:
    """Band structure (``distances`` [nq] 1/Å-like path coordinate, ``frequencies`` [nq,
    nbands] THz, ``qpoints`` [nq, 3] fractional, ``segment_nqpoint``, ``labels`` per segment
    end), and the total DOS (``dos_frequencies`` THz, ``dos`` states/THz)."""

    qpoints: np.ndarray
    distances: np.ndarray
    frequencies: np.ndarray
    segment_nqpoint: list[int]
    labels: list[tuple[str, str]]
    dos_frequencies: np.ndarray
    dos: np.ndarray

    def to_result_json(self) -> dict:
        """phonopy's ``band.yaml`` content as JSON (APEX's phonon result), plus the DOS."""
        return {
            "nqpoint": int(len(self.qpoints)),
            "npath": len(self.segment_nqpoint),
            "segment_nqpoint": list(self.segment_nqpoint),
            "labels": [list(pair) for pair in self.labels],
            "phonon": [
                {
                    "q-position": q.tolist(),
                    "distance": float(d),
                    "band": [{"frequency": float(f)} for f in freqs],
                }
                for q, d, freqs in zip(self.qpoints, self.distances, self.frequencies)
            ],
            "dos": {
                "frequency_points": self.dos_frequencies.tolist(),
                "total_dos": self.dos.tolist(),
            },
        }

    def summary(self) -> dict:
        return {
            "min_frequency_THz": float(self.frequencies.min()),
            "max_frequency_THz": float(self.frequencies.max()),
        }

    def plot(self, path: str | Path) -> Path:
        """Bands along the path (left) and the DOS (right)."""
        fig, (ax, ax_dos) = new_figure(1, 2, size=(7.0, 4.0), width_ratios=(3, 1))
        start = 0
        ticks, names = [], []
        for n, (lo, hi) in zip(self.segment_nqpoint, self.labels):
            seg = slice(start, start + n)
            ax.plot(self.distances[seg], self.frequencies[seg], color="C0", lw=1.2)
            d0, d1 = self.distances[start], self.distances[start + n - 1]
            for d, name in ((d0, lo), (d1, hi)):
                if ticks and abs(ticks[-1] - d) < 1e-9:
                    if names[-1] != name:
                        names[-1] = f"{names[-1]}|{name}"
                    continue
                ticks.append(d)
                names.append(name)
            start += n
        for d in ticks:
            ax.axvline(d, color="gray", lw=0.5)
        ax.axhline(0.0, color="k", lw=0.5)
        ax.set_xticks(ticks, [r"$\Gamma$" if s == "G" else s for s in names])
        ax.set_xlim(self.distances[0], self.distances[-1])
        ax.set_ylabel("frequency (THz)")
        ax_dos.plot(self.dos, self.dos_frequencies, color="C1")
        ax_dos.set_xlabel("DOS")
        ax_dos.set_ylim(ax.get_ylim())
        ax_dos.tick_params(labelleft=False)
        return save_figure(fig, path)


def ase_band_path(atoms: Atoms) -> tuple[list[list[np.ndarray]], list[list[str]]]:
    """ASE's special-point path of ``atoms.cell``: connected runs of fractional q-points and
    their labels (e.g. "GXWKGLUWLK,UX" -> two runs)."""
    bp = atoms.cell.bandpath(npoints=0)
    runs, labels = [], []
    for run in bp.path.split(","):
        names = _split_labels(run)
        runs.append([np.asarray(bp.special_points[n], dtype=np.float64) for n in names])
        labels.append(names)
    return runs, labels


def _split_labels(run: str) -> list[str]:
    """ "GX1W" -> ["G", "X1", "W"] (a label is a letter and its digits)."""
    out: list[str] = []
    for ch in run:
        if ch.isdigit() and out:
            out[-1] += ch
        else:
            out.append(ch)
    return out


def compute_phonon(
    calc: BaseCalculator,
    atoms: Atoms,
    *,
    supercell: Sequence[int] | Sequence[Sequence[int]] = (3, 3, 3),
    distance: float = 0.01,
    band_path: Sequence[Sequence[Sequence[float]]] | None = None,
    band_labels: Sequence[Sequence[str]] | None = None,
    npoints: int = 51,
    mesh: Sequence[int] = (20, 20, 20),
    primitive: str | Sequence[Sequence[float]] = "auto",
) -> PhononResult:
    """Phonons of ``atoms`` (relaxed) with ``calc``: displacements of ``distance`` Å in a
    ``supercell`` (3 integers or a 3x3 matrix), bands along ``band_path`` (runs of fractional
    q-points of the primitive cell; default: ASE's path) in ``npoints`` per segment, DOS on a
    ``mesh``. ``primitive``: phonopy's primitive matrix ("auto": found by symmetry, "P": the
    input cell, or a 3x3 matrix)."""
    try:
        from phonopy import Phonopy
        from phonopy.phonon.band_structure import get_band_qpoints_and_path_connections
        from phonopy.structure.atoms import PhonopyAtoms
    except ImportError:
        raise PropsError(
            "phonon: needs phonopy (pip install 'lamkit[props]' or pip install phonopy)"
        ) from None
    check_periodic(atoms, "phonon")
    matrix = np.asarray(supercell, dtype=int)
    if matrix.shape == (3,):
        matrix = np.diag(matrix)
    if matrix.shape != (3, 3) or abs(np.linalg.det(matrix)) < 0.5:
        raise PropsError(f"phonon: supercell must be 3 integers or a 3x3 matrix, got {supercell}")
    if band_path is not None:
        runs = [[np.asarray(q, dtype=np.float64) for q in run] for run in band_path]
        labels = (
            [list(x) for x in band_labels]
            if band_labels
            else [[str(k) for k in range(len(run))] for run in runs]
        )
        if [len(r) for r in runs] != [len(x) for x in labels]:
            raise PropsError("phonon: band_labels must name every point of band_path")
    unit = PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=atoms.get_cell().array,
        scaled_positions=atoms.get_scaled_positions(),
    )
    with warnings.catch_warnings():  # phonopy 4 notes that "auto" is its new default
        warnings.filterwarnings("ignore", message=".*primitive_matrix defaulted.*")
        ph = Phonopy(unit, supercell_matrix=matrix, primitive_matrix=primitive)
    if band_path is None:
        runs, labels = ase_band_path(Atoms(cell=ph.primitive.cell, pbc=True))
    ph.generate_displacements(distance=distance)
    systems = [
        (s.positions, s.cell, np.ones(3, dtype=bool), s.numbers)
        for s in ph.supercells_with_displacements
    ]
    out = potential_of(calc).evaluate(systems)
    ph.forces = np.array([np.asarray(f) for f in out.forces])
    ph.produce_force_constants()
    qpoints, connections = get_band_qpoints_and_path_connections(runs, npoints=npoints)
    ph.run_band_structure(qpoints, path_connections=connections)
    bands = ph.band_structure
    ph.run_mesh(list(mesh), is_gamma_center=True)
    ph.run_total_dos()
    dos = ph.total_dos
    pairs = [(run[k], run[k + 1]) for run in labels for k in range(len(run) - 1)]
    return PhononResult(
        qpoints=np.concatenate(bands.qpoints),
        distances=np.concatenate(bands.distances),
        frequencies=np.concatenate(bands.frequencies),
        segment_nqpoint=[len(q) for q in bands.qpoints],
        labels=pairs,
        dos_frequencies=np.asarray(dos.frequency_points),
        dos=np.asarray(dos.dos),
    )
