"""Crystal database at scale: import rate and query latency on SQLite and PostgreSQL.

    python3 benchmarks/db_bench.py --n 1000000 --backends sqlite,postgresql

Generates ``--n`` structures with :mod:`lamkit.db.synthetic` (prototype cells decorated across
the 60-element pool: elements, binaries and ternaries), imports them through
``CrystalDB.import_records`` (the same path as ``lam db import``: validation, derived fields,
spglib, one transaction per batch) into a fresh database per backend, runs ``ANALYZE``,
optionally recomputes all hulls (``--hull``), then times ``--queries`` random queries of each
kind (limit 100, the default order by id) and prints p50/p99 latencies.  The structure cache of
:mod:`lamkit.db.records` is emptied before each backend, so each import pays for its own
spglib calls.  PostgreSQL: ``--pg-url`` or ``$LAMKIT_TEST_PG_URL`` (a fresh schema is created
and, unless ``--keep``, dropped).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path

import numpy as np


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def fresh_url(kind: str, workdir: Path, pg_url: str | None) -> tuple[str, callable]:
    """(database URL, cleanup) of an empty database of ``kind``."""
    if kind == "sqlite":
        path = workdir / "bench.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}", lambda: None
    from sqlalchemy import create_engine, text

    if not pg_url:
        raise SystemExit("PostgreSQL: give --pg-url or set LAMKIT_TEST_PG_URL")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_url else "?"

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return f"{pg_url}{sep}options=-csearch_path%3D{schema}", drop


def query_params(kind: str, rng: np.random.Generator, sample: dict) -> dict:
    """Random filters of one query kind, drawn from the generated data."""
    pool = sample["pool"]
    if kind == "element-subset":  # only_elements: records made of 3 random elements
        return {"only_elements": list(rng.choice(pool, 3, replace=False))}
    if kind == "contains-element":  # elements: records containing 2 random elements
        return {"elements": list(rng.choice(pool, 2, replace=False))}
    if kind == "chemsys":
        return {"chemsys": sample["chemsys"][int(rng.integers(len(sample["chemsys"])))]}
    if kind == "formula":
        return {"formula": sample["formula"][int(rng.integers(len(sample["formula"])))]}
    if kind == "spacegroup":
        return {"spacegroup": int(rng.choice(sample["spacegroup"]))}
    if kind == "energy-window":  # a 20 meV/atom window
        lo = float(rng.uniform(-8.0, -1.0))
        return {"energy_per_atom": (lo, lo + 0.02)}
    raise ValueError(kind)


QUERY_KINDS = (
    "element-subset",
    "contains-element",
    "chemsys",
    "formula",
    "spacegroup",
    "energy-window",
)


def rattle(chunk: list[dict], sigma: float, rng: np.random.Generator) -> None:
    """Move every site by a Gaussian displacement of ``sigma`` Å (in place): every structure is
    then distinct (as relaxed structures from a screening are), so the import's exact geometry
    cache never serves one, while symmetry within spglib's tolerance is kept."""
    for d in chunk:
        lattice = np.asarray(d["lattice"], dtype=float)
        cart = np.asarray(d["frac_coords"]) @ lattice
        cart = cart + rng.normal(0.0, sigma, cart.shape)
        d["frac_coords"] = np.linalg.solve(lattice.T, cart.T).T


def run_backend(kind: str, args, sample: dict) -> dict:
    from lamkit.db import CrystalDB, synthetic
    from lamkit.db import records as _records

    url, cleanup = fresh_url(kind, Path(args.workdir), args.pg_url)
    out: dict = {"backend": kind, "n": args.n}
    try:
        db = CrystalDB(url).init()
        _records._GEOMETRY_CACHE.clear()
        items = synthetic.generate(args.n, seed=args.seed)
        rng = np.random.default_rng(args.seed + 1)
        # structures are generated chunk by chunk outside the import's clock (generation is
        # the benchmark's input, not part of the import)
        out["import_s"] = out["import_cpu_s"] = out["generate_s"] = 0.0
        added = rejected = 0
        while added + rejected < args.n:
            t0 = time.perf_counter()
            chunk = list(itertools.islice(items, args.chunk))
            if args.rattle > 0:
                rattle(chunk, args.rattle, rng)
            out["generate_s"] += time.perf_counter() - t0
            if not chunk:
                break
            t0, c0 = time.perf_counter(), time.process_time()
            rep = db.import_records(
                chunk, batch_size=args.batch_size, update_hull=False, submitter="bench",
                workers=args.workers, defer_symmetry=args.defer_symmetry,
            )
            out["import_s"] += time.perf_counter() - t0
            out["import_cpu_s"] += time.process_time() - c0  # this process, not a PG server
            added += rep.added
            rejected += len(rep.rejected) + rep.duplicates
            if args.progress:
                print(f"[{kind}] {added:,} imported, {added / out['import_s']:,.0f}/s", flush=True)
        out["added"] = added
        out["rejected"] = rejected
        out["import_rate"] = added / out["import_s"]
        print(
            f"[{kind}] import: {added:,} added, {rejected} rejected or duplicate, "
            f"{out['import_s']:.0f} s, {out['import_rate']:,.0f}/s "
            f"({added / out['import_cpu_s']:,.0f} per CPU second of this process), "
            f"generation {out['generate_s']:.0f} s, load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        if args.defer_symmetry and not args.no_index:  # the deferred space groups, apart
            idx = db.index_symmetry(workers=args.workers, batch_size=args.batch_size)
            out["index_s"], out["index_rate"] = idx.seconds, idx.rate
            print(f"[{kind}] lam db index: {idx.summary()}, load {os.getloadavg()[0]:.1f}",
                  flush=True)
        t0 = time.perf_counter()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
        out["analyze_s"] = time.perf_counter() - t0
        out["queries"] = time_queries(db, args, sample)
        if args.hull:  # after the queries: they do not depend on it
            t0 = time.perf_counter()
            out["hull_diagrams"] = db.update_hulls(progress=args.progress)
            out["hull_s"] = time.perf_counter() - t0
            print(f"[{kind}] hulls: {out['hull_diagrams']} in {out['hull_s']:.0f} s", flush=True)
        if kind == "sqlite":
            out["size_bytes"] = Path(url.split("///", 1)[1]).stat().st_size
        else:
            with db.engine.connect() as conn:
                out["size_bytes"] = int(
                    conn.exec_driver_sql(
                        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
                    ).scalar_one()
                )
        db.close()
    finally:
        if not args.keep:
            cleanup()
    return out


def time_queries(db, args, sample: dict) -> dict:
    rng = np.random.default_rng(args.seed + 1)
    res: dict = {}
    for kind in QUERY_KINDS:
        times, hits = [], []
        for _ in range(args.queries):
            params = query_params(kind, rng, sample)
            t0 = time.perf_counter()
            page = db.query(**params, limit=100)
            times.append(time.perf_counter() - t0)
            hits.append(len(page.records))
        res[kind] = summary(times, hits)
    # keyset pages: follow the cursor of "contains one element" queries 20 pages deep
    times, hits = [], []
    for _ in range(max(1, args.queries // 20)):
        el = str(rng.choice(sample["pool"]))
        cursor = None
        for _ in range(20):
            t0 = time.perf_counter()
            page = db.query(elements=[el], limit=100, cursor=cursor)
            times.append(time.perf_counter() - t0)
            hits.append(len(page.records))
            cursor = page.next_cursor
            if cursor is None:
                break
    res["keyset-page"] = summary(times, hits)
    for kind, r in res.items():
        print(f"  {kind:18s} p50 {r['p50_ms']:8.2f} ms  p99 {r['p99_ms']:8.2f} ms", flush=True)
    return res


def summary(times: list[float], hits: list[int]) -> dict:
    return {
        "count": len(times),
        "p50_ms": 1e3 * percentile(times, 50),
        "p99_ms": 1e3 * percentile(times, 99),
        "mean_hits": float(np.mean(hits)) if hits else 0.0,
    }


def sample_data(args) -> dict:
    """Chemical systems, formulas and space groups of the first structures (query targets)."""
    from lamkit.db import synthetic
    from lamkit.db.records import make_row

    chemsys, formula, sgs = set(), set(), set()
    for d in synthetic.generate(min(args.n, 2000), seed=args.seed):
        row = make_row(d, energy=d["energy"])
        chemsys.add(row["chemsys"])
        formula.add(row["formula"])
        sgs.add(row["spacegroup_number"])
    return {
        "pool": list(synthetic.ELEMENT_POOL),
        "chemsys": sorted(chemsys),
        "formula": sorted(formula),
        "spacegroup": sorted(s for s in sgs if s is not None),
    }


def print_table(results: list[dict]) -> None:
    def row(label: str, cell) -> None:
        print(f"| {label} | " + " | ".join(cell(r) for r in results) + " |")

    print()
    print("| | " + " | ".join(r["backend"] for r in results) + " |")
    print("|---|" + "---:|" * len(results))
    row("records", lambda r: f"{r['added']:,}")
    row("import (structures/s)", lambda r: f"{r['import_rate']:,.0f}")
    row(
        "import, per CPU second of the importing process",
        lambda r: f"{r['added'] / r['import_cpu_s']:,.0f}",
    )
    row("import wall time (s)", lambda r: f"{r['import_s']:.0f}")
    if all("index_s" in r for r in results):
        row("deferred space groups, lam db index (records/s)", lambda r: f"{r['index_rate']:,.0f}")
    if all("hull_s" in r for r in results):
        row(
            "hull update, all systems (s)",
            lambda r: f"{r['hull_s']:.0f} ({r['hull_diagrams']} diagrams)",
        )
    row("database size (MiB)", lambda r: f"{r['size_bytes'] / 2**20:,.0f}")
    for kind in results[0]["queries"]:
        hits = results[0]["queries"][kind]["mean_hits"]
        row(
            f"{kind} p50 / p99 (ms), {hits:.0f} hits",
            lambda r, k=kind: f"{r['queries'][k]['p50_ms']:.1f} / {r['queries'][k]['p99_ms']:.1f}",
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--pg-url", default=os.environ.get("LAMKIT_TEST_PG_URL"))
    p.add_argument("--workdir", default="/tmp/lamkit-db-bench")
    p.add_argument("--batch-size", type=int, default=5000)
    p.add_argument("--chunk", type=int, default=50_000, help="structures generated at a time")
    p.add_argument("--queries", type=int, default=200, help="random queries per kind")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hull", action="store_true", help="recompute all hulls after the import")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL schema")
    p.add_argument("--rattle", type=float, default=0.0,
                   help="Gaussian site displacement (Å): all structures distinct, no cache hits")
    p.add_argument("--workers", type=int, default=1, help="import worker processes")
    p.add_argument("--defer-symmetry", action="store_true",
                   help="import with space groups pending, then time 'lam db index' apart")
    p.add_argument("--no-index", action="store_true",
                   help="with --defer-symmetry: leave the space groups pending")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    print(
        f"db_bench: n={args.n:,} python {platform.python_version()} on {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    sample = sample_data(args)
    results = []
    for kind in args.backends.split(","):
        results.append(run_backend(kind, args, sample))
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
