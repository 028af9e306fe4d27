"""One DPA-3 training step in isolation: the water example (``lam init dpa3`` preset) on one
192-atom frame of water data_3, energy + forces + virial loss and its backward (the double
backward through the forces), in this process. Prints seconds per step and the peak RSS, and
with ``--saved`` the bytes autograd keeps for the backward, by tensor shape.

    python3 benchmarks/bench_dpa3_step.py --precision float32 --threads 1 --steps 4 [--saved]
"""

from __future__ import annotations

import argparse
import collections
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from lamkit.model import build_model

PRESET = Path(__file__).resolve().parents[1] / "src" / "lamkit" / "presets" / "dpa3.json"
WATER = Path(__file__).resolve().parents[2] / "shared" / "data" / "water" / "data_3"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", default="float32", choices=("float32", "float64"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--data", default=str(WATER))
    p.add_argument("--device", default="cpu")
    p.add_argument("--saved", action="store_true", help="also report saved-for-backward bytes")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = json.loads(PRESET.read_text())["model"]
    cfg["descriptor"]["precision"] = cfg["fitting_net"]["precision"] = a.precision
    cfg["type_map"] = ["O", "H"]
    model = build_model(cfg).to(a.device)
    d = Path(a.data)
    coord = torch.as_tensor(np.load(d / "set.000" / "coord.npy")[:1]).reshape(1, -1, 3)
    box = torch.as_tensor(np.load(d / "set.000" / "box.npy")[:1])
    atype = torch.as_tensor(np.loadtxt(d / "type.raw", dtype=np.int64))[None]
    coord, box, atype = coord.to(a.device), box.to(a.device), atype.to(a.device)

    def loss():
        nbr = model.neighbor_builder()(coord, atype, box)
        nbr = {k: v.to(a.device) for k, v in nbr.items()}
        out = model.forward(coord, atype, box, nbr, create_graph=True)
        return (
            out["energy"].sum() * 1e-3
            + (out["force"] ** 2).sum()
            + (out["virial"] ** 2).sum() * 1e-3
        )

    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        loss().backward()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(
        f"DPA-3 water example, {a.precision}, {a.threads} thread(s), {a.device}: s/step "
        + " ".join(f"{x:.2f}" for x in times)
        + f"; peak RSS {peak:.2f} GB"
    )
    if a.saved:
        seen: dict[int, int] = {}
        by_shape: collections.Counter = collections.Counter()

        def pack(t):
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen[key] = t.untyped_storage().nbytes()
                by_shape[tuple(t.shape)] += seen[key]
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss()
        print(f"saved for backward: {sum(seen.values()) / 1e9:.2f} GB; largest by shape:")
        for shape, n in by_shape.most_common(8):
            print(f"  {list(shape)}: {n / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
