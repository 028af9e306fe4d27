"""Evaluation and ``lam test`` of spin models (:mod:`lamkit.model.spin`), as the reference's
``DeepPot.eval(..., spin=...)`` and ``dp test`` of a spin model.

``DeepPot.eval`` of a spin model takes ``spin`` [nf, natoms*3] or [nf, natoms, 3] (μB) and
returns energy, force, virial (and atom_energy, atom_virial with ``atomic``), then the magnetic
force ``force_mag`` [nf, natoms, 3] (eV/μB) and ``mask_mag`` [nf, natoms, 1] (bool, magnetic
atoms).

``lam test`` of a spin model reports, per system and weighted over systems, the energy (total
and per atom), the real force over every atom (``Force atom MAE/RMSE``, eV/Å), the magnetic
force over the magnetic atoms (``Force spin MAE/RMSE``, eV/μB) and, with virial labels and a
cell, the virial; its detail files are the reference's: ``.e.out``, ``.e_peratom.out``,
``.fr.out`` (real forces), ``.fm.out`` (magnetic forces of the magnetic atoms, columns
``data_fmx data_fmy data_fmz pred_fmx pred_fmy pred_fmz``), ``.v.out``, ``.v_peratom.out`` and
``.s.out``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import keys
from .detail_files import mae_rmse, save_rows, save_virials


def eval_spin(dp, coords, cells, atom_types, spin, atomic=False, fparam=None, aparam=None,
              mixed_type=False) -> tuple[np.ndarray, ...]:
    """``DeepPot.eval`` of a spin model (``dp``: the DeepPot); see the module docstring."""
    coords, cells, atype, fparam, aparam = dp._standard_input(
        coords, cells, atom_types, fparam, aparam, mixed_type
    )
    nf, natoms = atype.shape
    if spin is None:
        raise ValueError("DeepPot.eval: this is a spin model; give the atomic spins (spin=...)")
    spin = np.asarray(spin, dtype=np.float64)
    if spin.size != nf * natoms * 3:
        raise ValueError(
            f"spin: expected shape [{nf}, {natoms}, 3] (or [{nf}, {natoms * 3}]), got {spin.shape}"
        )
    spin = spin.reshape(nf, natoms, 3)
    names = [keys.ENERGY, keys.FORCE, keys.VIRIAL]
    if atomic:
        names += [keys.ATOM_ENERGY, keys.ATOM_VIRIAL]
    names += [keys.FORCE_MAG, keys.MASK_MAG]
    if natoms == 0:
        empty = {keys.ENERGY: (1,), keys.VIRIAL: (9,), keys.ATOM_ENERGY: (0, 1),
                 keys.ATOM_VIRIAL: (0, 9), keys.FORCE: (0, 3), keys.FORCE_MAG: (0, 3),
                 keys.MASK_MAG: (0, 1)}
        return tuple(np.zeros((nf, *empty[n])) for n in names)
    dev = dp.device

    def tensor(x):
        return None if x is None else torch.tensor(x, device=dev)

    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    step = max(1, dp.budget.frames(natoms))
    for start in range(0, nf, step):
        sl = slice(start, min(nf, start + step))
        box = None if cells is None else cells[sl]
        nbr = dp._neighbors(coords[sl], atype[sl], box, spin=spin[sl])
        nbr = {k: v.to(dev) for k, v in nbr.items()}
        with torch.no_grad():
            out = dp.model(
                tensor(coords[sl]),
                tensor(atype[sl]),
                tensor(box),
                nbr,
                tensor(None if fparam is None else fparam[sl]),
                tensor(None if aparam is None else aparam[sl]),
                do_force=True,
                do_virial=True,
                do_atomic_virial=atomic,
                chunk_atoms=dp.budget.chunk(natoms),
                spin=tensor(spin[sl]),
            )
        for n in names:
            value = out[n].detach().cpu()
            parts[n].append(value.numpy() if n == keys.MASK_MAG else value.double().numpy())
    return tuple(np.concatenate(parts[n]) for n in names)


def test_spin_system(dp, system, numb_test=0, detail=None, append=False, atomic=False) -> dict:
    """``lam test`` metrics of one loaded system for a spin model (atoms in file order)."""
    n = system.nframes if numb_test <= 0 else min(numb_test, system.nframes)
    box = system.box[:n] if system.box is not None else None
    mixed = system.mixed_type
    atype = system.atype[:n] if mixed else system.atype[0]
    lab = system.labels
    out = dp.eval(
        system.coords[:n], box, atype, atomic=atomic, mixed_type=mixed, spin=lab[keys.SPIN][:n]
    )
    e, f, v = out[0], out[1], out[2]
    fm, mm = out[-2], out[-1].reshape(n, -1).astype(bool)
    natoms = system.natoms
    res: dict = {"system": system.path, "nframes": n, "natoms": natoms, "pairs": {}}
    if system.find.get(keys.ENERGY):
        res["mae_e"], res["rmse_e"] = mae_rmse(e.reshape(-1), lab[keys.ENERGY][:n].reshape(-1))
        res["mae_ea"], res["rmse_ea"] = res["mae_e"] / natoms, res["rmse_e"] / natoms
        res["n_e"] = n
        res["pairs"]["energy/atom"] = (lab[keys.ENERGY][:n].reshape(-1) / natoms,
                                       e.reshape(-1) / natoms)
    f_lab = lab[keys.FORCE][:n].reshape(n, natoms, 3)
    if system.find.get(keys.FORCE):
        res["mae_fr"], res["rmse_fr"] = mae_rmse(f.reshape(-1), f_lab.reshape(-1))
        res["n_fr"] = f.size
        res["pairs"]["force"] = (f_lab.reshape(-1), f.reshape(-1))
    fm_lab = lab[keys.FORCE_MAG][:n].reshape(n, natoms, 3)[mm]
    fm_pred = fm.reshape(n, natoms, 3)[mm]
    has_fm = bool(system.find.get(keys.FORCE_MAG)) and fm_pred.size > 0
    if has_fm:
        res["mae_fm"], res["rmse_fm"] = mae_rmse(fm_pred.reshape(-1), fm_lab.reshape(-1))
        res["n_fm"] = fm_pred.size
        res["pairs"]["magnetic force"] = (fm_lab.reshape(-1), fm_pred.reshape(-1))
    has_v = bool(system.find.get(keys.VIRIAL)) and system.pbc
    if has_v:
        res["mae_v"], res["rmse_v"] = mae_rmse(v.reshape(-1), lab[keys.VIRIAL][:n].reshape(-1))
        res["mae_va"], res["rmse_va"] = res["mae_v"] / natoms, res["rmse_v"] / natoms
        res["n_v"] = n * 9
        res["pairs"]["virial/atom"] = (lab[keys.VIRIAL][:n].reshape(-1) / natoms,
                                       v.reshape(-1) / natoms)
    if detail:
        p = Path(detail)
        name = system.path
        pe = np.concatenate([lab[keys.ENERGY][:n].reshape(-1, 1), e.reshape(-1, 1)], axis=1)
        save_rows(p.with_suffix(".e.out"), pe, f"{name}: data_e pred_e", append)
        save_rows(p.with_suffix(".e_peratom.out"), pe / natoms, f"{name}: data_e pred_e", append)
        pf = np.concatenate([f_lab.reshape(-1, 3), f.reshape(-1, 3)], axis=1)
        header = f"{name}: data_fx data_fy data_fz pred_fx pred_fy pred_fz"
        save_rows(p.with_suffix(".fr.out"), pf, header, append)
        if has_fm:
            pfm = np.concatenate([fm_lab.reshape(-1, 3), fm_pred.reshape(-1, 3)], axis=1)
            header = f"{name}: data_fmx data_fmy data_fmz pred_fmx pred_fmy pred_fmz"
            save_rows(p.with_suffix(".fm.out"), pfm, header, append)
        save_virials(p, name, lab[keys.VIRIAL][:n], v, box if has_v else None, natoms, append)
    return res
