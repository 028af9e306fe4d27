"""Novelty + energy above hull per candidate against the 1,000,000-record benchmark database.

    python3 benchmarks/bench_novelty.py            # builds ~/.cache/lamkit-bench/bench.db
    python3 benchmarks/bench_novelty.py --db ~/.cache/lamkit-bench/bench.db --runs 5

The database is the one of ``benchmarks/db_bench.py`` (``lamkit.db.synthetic.generate(n,
seed=0)``, model "synthetic", every hull computed); ``--db`` reuses an existing file, else it is
built there (import about 2 minutes, hull update about 5-8 minutes on one core) and kept.

Candidates, a third of each kind, over whatever chemical systems they fall in: "known",
perturbed copies of random stored records (sites moved by up to 0.01 Å, energy per atom within
1 %); "distorted", :func:`lamkit.db.synthetic.make_structure` of random prototypes and elements
in cells strained by up to 4 % (most match a stored prototype, but their space group at 0.1 Å
is a lower one); "new", 2-8 atoms of 1-3 elements at random positions in a random cell.
Each candidate is timed through ``NoveltyIndex.match`` (its spglib space group, its reduced
cell, the prefilter query, the matcher) plus ``HullOracle.assess``.  Every run starts with a new
index and oracle, so the distribution includes the first hull build of each chemical system
and the first load of each formula's stored structures.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

DEFAULT_DB = Path.home() / ".cache" / "lamkit-bench" / "bench.db"


def build(path: Path, n: int, seed: int) -> None:
    """The benchmark database of db_bench.py at ``path`` (import, then every hull)."""
    import itertools

    from lamkit.db import CrystalDB, synthetic

    path.parent.mkdir(parents=True, exist_ok=True)
    db = CrystalDB(path).init()
    items = synthetic.generate(n, seed=seed)
    t0 = time.perf_counter()
    done = 0
    while chunk := list(itertools.islice(items, 50_000)):
        rep = db.import_records(chunk, batch_size=5000, update_hull=False, submitter="bench")
        done += len(chunk)
        print(f"import {done:,} ({rep.added:,} added in this chunk)", flush=True)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    print(f"import: {time.perf_counter() - t0:.0f} s; hulls ...", flush=True)
    t0 = time.perf_counter()
    db.update_hulls(progress=True)
    print(f"hulls: {time.perf_counter() - t0:.0f} s", flush=True)
    db.close()


def candidates(db, n: int, rng: np.random.Generator, n_records: int) -> list[tuple]:
    """(kind, pymatgen Structure, energy eV) of ``n`` candidates, a third of each kind."""
    from pymatgen.core import Lattice, Structure

    from lamkit.db import synthetic

    out = []
    names = list(synthetic.PROTOTYPES)
    pool = synthetic.ELEMENT_POOL
    while len(out) < n:
        kind = ("known", "distorted", "new")[len(out) % 3]
        if kind == "known":  # a stored record, sites moved by up to 0.01 Å
            rec = db.get(int(rng.integers(1, n_records + 1)))
            if rec is None or rec.energy is None:
                continue
            s = rec.structure
            v = rng.normal(size=(len(s), 3))
            v *= rng.uniform(0, 0.01, (len(s), 1)) / np.linalg.norm(v, axis=1, keepdims=True)
            s = Structure(s.lattice, s.species, s.cart_coords + v, coords_are_cartesian=True)
            energy = rec.energy * (1 + rng.uniform(-0.01, 0.01))
        elif kind == "distorted":  # a prototype in a cell strained by up to 4 %
            proto = names[int(rng.integers(len(names)))]
            k = synthetic.N_SPECIES[proto]
            els = [pool[int(i)] for i in rng.choice(len(pool), size=k, replace=False)]
            d = synthetic.make_structure(proto, els, rng, strain=0.04)
            s = Structure(Lattice(d["lattice"]), d["species"], d["frac_coords"])
            energy = d["energy"]
        else:  # random positions: new structures
            s = _random_crystal(rng, pool)
            energy = len(s) * float(rng.uniform(-7.0, -2.0))
        out.append((kind, s, energy))
    return out


def _random_crystal(rng: np.random.Generator, pool) -> object:
    """2-8 atoms of 1-3 elements at random positions (no two closer than 1.6 Å) in a random
    cell of about 14 Å^3 per atom."""
    from pymatgen.core import Lattice, Structure

    while True:
        nat = int(rng.integers(2, 9))
        els = [pool[int(i)] for i in rng.choice(len(pool), size=int(rng.integers(1, 4)))]
        species = [els[i % len(els)] for i in range(nat)]
        a, b, c = rng.uniform(0.8, 1.25, 3) * (14.0 * nat) ** (1 / 3)
        alpha, beta, gamma = rng.uniform(75, 105, 3)
        try:
            lattice = Lattice.from_parameters(a, b, c, alpha, beta, gamma)
        except ValueError:
            continue
        s = Structure(lattice, species, rng.random((nat, 3)))
        if nat == 1 or s.distance_matrix[np.triu_indices(nat, 1)].min() >= 1.6:
            return s


def run_once(db, cands, preset: str, prefilter: str, model: str) -> list[dict]:
    from lamkit.screen.novelty import NoveltyIndex
    from lamkit.screen.stability import HullOracle

    index = NoveltyIndex(db, preset, prefilter=prefilter)
    oracle = HullOracle(db, model=model)
    rows = []
    for kind, s, energy in cands:
        species = [sp.symbol for sp in s.species]
        t0 = time.perf_counter()
        rid = index.match(s, energy_per_atom=energy / len(s))
        t1 = time.perf_counter()
        st = oracle.assess(species, energy)
        t2 = time.perf_counter()
        rows.append(
            {
                "kind": kind,
                "novelty_s": t1 - t0,
                "hull_s": t2 - t1,
                "total_s": t2 - t0,
                "matched": rid is not None,
                "status": st.hull_status.split(":")[0],
            }
        )
    rows.append({"fits": index.fits, "systems": oracle.n_systems})
    return rows


def warm_up() -> None:
    """Import what a screening imports once (pymatgen, spglib, vesin and torch), outside the
    clock: the figures are per candidate in a running process."""
    import pymatgen.analysis.phase_diagram  # noqa: F401
    import pymatgen.analysis.structure_matcher  # noqa: F401

    from lamkit.db.records import load_spglib, min_distance

    load_spglib()
    min_distance(np.eye(3) * 3.0, np.zeros((1, 3)))


def pct(values, q) -> float:
    return 1e3 * float(np.percentile(np.asarray(values), q))


def report(label: str, rows: list[dict]) -> None:
    print(f"\n{label}: {len(rows)} candidates")
    for key in ("total_s", "novelty_s", "hull_s"):
        v = [r[key] for r in rows]
        print(
            f"  {key[:-2]:8s} p50 {pct(v, 50):7.1f} ms  p90 {pct(v, 90):7.1f} ms  "
            f"p99 {pct(v, 99):7.1f} ms  mean {1e3 * np.mean(v):6.1f} ms"
        )
    for kind in ("known", "distorted", "new"):
        mine = [r for r in rows if r["kind"] == kind]
        if mine:
            v = [r["total_s"] for r in mine]
            print(
                f"  {kind:9s}: {len(mine)}, matched {sum(r['matched'] for r in mine)}, "
                f"total p50 {pct(v, 50):.1f} ms p90 {pct(v, 90):.1f} ms; hull status "
                f"{dict(Counter(r['status'] for r in mine))}"
            )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", type=Path, default=DEFAULT_DB, help="SQLite file (built if missing)")
    p.add_argument("--n", type=int, default=1_000_000, help="records when building")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=5, help="runs, each with a new index and oracle")
    p.add_argument("--candidates", type=int, default=200, help="candidates per run")
    p.add_argument("--preset", default="openlam", choices=("openlam", "mattergen"))
    p.add_argument("--prefilter", default="auto", choices=("auto", "spacegroup", "formula"))
    p.add_argument("--model", default="synthetic", help="hull model")
    args = p.parse_args(argv)
    if not args.db.exists():
        print(f"building {args.db} with {args.n:,} records", flush=True)
        build(args.db, args.n, args.seed)
    from lamkit.db import CrystalDB

    warm_up()
    db = CrystalDB(args.db)
    n_records = db.count()
    print(
        f"bench_novelty: {n_records:,} records in {args.db}, preset {args.preset}, prefilter "
        f"{args.prefilter}; python {platform.python_version()} on {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    rng = np.random.default_rng(args.seed + 100)
    everything = []
    for run in range(args.runs):
        cands = candidates(db, args.candidates, rng, n_records)
        t0 = time.perf_counter()
        rows = run_once(db, cands, args.preset, args.prefilter, args.model)
        info = rows.pop()
        wall = time.perf_counter() - t0
        v = [r["total_s"] for r in rows]
        print(
            f"run {run}: {len(rows)} candidates in {wall:.1f} s, p50 {pct(v, 50):.1f} ms, "
            f"{info['fits']} matcher fits, {info['systems']} chemical systems",
            flush=True,
        )
        everything += rows
    report("all runs", everything)
    p50 = pct([r["total_s"] for r in everything], 50)
    print(f"\ntarget p50 < 100 ms: {'met' if p50 < 100 else 'MISSED'} ({p50:.1f} ms)")
    db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
