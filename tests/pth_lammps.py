"""LAMMPS with DeePMD-kit's ``pair_style deepmd`` plugin (``.ci/dp-lmp.sh``) for the tests of
``lam freeze --format pth``: the ``lmp`` fixture and a ``run 0`` helper."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

NKTV2P = 1.6021765e6  # LAMMPS metal units: eV/Å^3 -> bar


@pytest.fixture(scope="module")
def lmp() -> tuple[str, dict[str, str]]:
    """The ``lmp`` command of the environment with deepmd-kit[lmp] and its process env."""
    import os

    from .conftest import IN_CI

    exe = os.environ.get("LAMKIT_DP_LMP") or str(Path.home() / ".cache/lamkit-dp-lmp/venv/bin/lmp")
    if not Path(exe).is_file():
        if IN_CI:
            pytest.fail("CI must provide LAMMPS with deepmd-kit[lmp] (.ci/dp-lmp.sh)")
        pytest.skip("no LAMMPS with deepmd-kit[lmp] (run .ci/dp-lmp.sh)")
    libs = os.environ.get("LAMKIT_DP_LMP_LIBS") or str(
        next(Path(exe).parent.parent.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    )
    env = {
        "PATH": f"{Path(exe).parent}:/usr/bin:/bin",
        "OMP_NUM_THREADS": "1",
        "LD_LIBRARY_PATH": libs,
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    return exe, env


def run_lammps(
    lmp, pth, coord, atype, cell, names, tmp, extra: str = "", ranks: int = 1, atom_map=True
) -> tuple[float, np.ndarray, np.ndarray]:
    """Energy, forces [n, 3] and virial (Voigt: xx yy zz xy xz yz, eV) of ``pair_style
    deepmd pth`` with ``pair_coeff * * names`` (LAMMPS type k + 1 is element ``names[k]``;
    ``atype`` indexes ``names``; ``extra``: more pair_style arguments; ``ranks`` MPI ranks;
    ``atom_map``: ``atom_modify map yes``, with which DeePMD-kit's C++ side hands a model
    the ghost atoms' mapping on one rank).
    ``cell`` rows must form a lower-triangular matrix."""
    assert abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) == 0

    def r(x) -> str:
        return repr(float(x))  # all the digits of a float

    lines = [
        "lamkit test",
        "",
        f"{len(coord)} atoms",
        f"{len(names)} atom types",
        "",
        f"0 {r(cell[0, 0])} xlo xhi",
        f"0 {r(cell[1, 1])} ylo yhi",
        f"0 {r(cell[2, 2])} zlo zhi",
        f"{r(cell[1, 0])} {r(cell[2, 0])} {r(cell[2, 1])} xy xz yz",
        "",
        "Masses",
        "",
        *[f"{k + 1} 1.0" for k in range(len(names))],
        "",
        "Atoms # atomic",
        "",
        *[
            f"{i + 1} {t + 1} {r(x)} {r(y)} {r(z)}"
            for i, (t, (x, y, z)) in enumerate(zip(atype, coord))
        ],
    ]
    (tmp / "data.lmp").write_text("\n".join(lines) + "\n")
    (tmp / "in.lmp").write_text(
        f"""units metal
boundary p p p
atom_style atomic
{"atom_modify map yes" if atom_map else ""}
read_data data.lmp
pair_style deepmd {pth} {extra}
pair_coeff * * {" ".join(names)}
compute vir all pressure NULL virial
thermo_style custom step pe c_vir[1] c_vir[2] c_vir[3] c_vir[4] c_vir[5] c_vir[6] vol
thermo_modify format float %.17g
dump d all custom 1 forces.dump id fx fy fz
dump_modify d format float %.17g sort id
run 0
"""
    )
    exe, env = lmp
    mpi = [str(Path(exe).parent / "mpirun"), "-np", str(ranks)] if ranks > 1 else []
    run = subprocess.run(
        [*mpi, exe, "-in", "in.lmp", "-log", "log.lammps"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert f"with {ranks} MPI tasks" in run.stdout or ranks == 1
    log = (tmp / "log.lammps").read_text().splitlines()
    (head,) = [k for k, line in enumerate(log) if line.split()[:2] == ["Step", "PotEng"]]
    values = [float(x) for x in log[head + 1].split()]
    dump = (tmp / "forces.dump").read_text().splitlines()
    (start,) = [k for k, line in enumerate(dump) if line.startswith("ITEM: ATOMS")]
    forces = np.array([[float(x) for x in line.split()[1:]] for line in dump[start + 1 :]])
    virial = np.array(values[2:8]) * values[8] / NKTV2P
    return values[1], forces, virial


def voigt(v: np.ndarray) -> np.ndarray:
    """A 3x3 virial as LAMMPS's Voigt order: xx yy zz xy xz yz."""
    v = v.reshape(3, 3)
    return np.array([v[0, 0], v[1, 1], v[2, 2], v[0, 1], v[0, 2], v[1, 2]])
