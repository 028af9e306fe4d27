"""Evaluate a `lam freeze --format pt2` package with torch alone (no lamkit import).

usage: python load_pt2.py model.pt2 structure.npz [out.npz]
structure.npz holds coord [natoms, 3] (Angstrom), atype [natoms] (indices into the package's
type_map) and box [9] (Angstrom, rows are cell vectors; leave it out for a --no-pbc package).
"""

import json
import os
import sys

import numpy as np
import torch

# AOTInductor checks input dtypes and shapes only when asked (read once, before loading)
os.environ.setdefault("AOTI_RUNTIME_CHECK_INPUTS", "1")
pot = torch._inductor.aoti_load_package(sys.argv[1])
meta = pot.get_metadata()
print("type_map", json.loads(meta["type_map"]), "rcut", float(meta["rcut"]), "Angstrom")
data = np.load(sys.argv[2])
inputs = [
    torch.tensor(data["coord"], dtype=torch.float64).reshape(1, -1, 3),
    torch.tensor(data["atype"], dtype=torch.int64).reshape(1, -1),
]
if json.loads(meta["periodic"]):
    inputs.append(torch.tensor(data["box"], dtype=torch.float64).reshape(1, 9))
with torch.no_grad():
    outputs = pot(*inputs)
result = {name: t.numpy() for name, t in zip(json.loads(meta["outputs"]), outputs)}
print("energy", result["energy"][0, 0], "eV; max |force|", np.abs(result["force"]).max(), "eV/A")
if len(sys.argv) > 3:
    np.savez(sys.argv[3], **result)
