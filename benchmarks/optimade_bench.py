"""OPTIMADE filter latency of the service at scale, on SQLite and PostgreSQL.

    python3 benchmarks/optimade_bench.py --db sqlite:////path/bench.db --db postgresql+psycopg://...

Each ``--db`` is an existing crystal database (e.g. the 1,000,000-record one that
``benchmarks/db_bench.py --keep`` builds).  ``--copy-from URL --copy-to URL``: first copy every
record (and the chemical systems and elemental references) of one database into another, empty
one, in id order, with hull values as they are (so both backends hold the same rows).

For every database the service app is built over it and ``--queries`` requests of each kind
are timed end to end in-process (Starlette's TestClient: routing, filter parsing and
translation, the page query, the capped count, JSON), page_limit 20:

- has-all: ``elements HAS ALL "X","Y"`` for a stored binary system;
- nelements: ``nelements = k``, k = 1, 2, 3;
- formula: ``chemical_formula_reduced = "..."`` of a stored record;
- e-above-hull: ``_lamkit_e_above_hull < x``, x from 0 to 0.2 eV/atom.

Prints p50/p99 per kind and a JSON summary (``--json PATH``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import warnings

import numpy as np


def copy_database(src_url: str, dest_url: str, chunk: int = 50_000) -> float:
    """Copy records, chemical systems and elemental references; returns seconds taken."""
    from sqlalchemy import insert, select, text

    from lamkit.db import CrystalDB
    from lamkit.db.engine import write_tx
    from lamkit.db.ingest import insert_rows
    from lamkit.db.schema import elemental_refs, records

    t0 = time.perf_counter()
    src, dest = CrystalDB(src_url).init(), CrystalDB(dest_url).init()
    with src.engine.connect() as conn, write_tx(dest.engine) as out:
        last, done = 0, 0
        while True:
            rows = conn.execute(
                select(records).where(records.c.id > last).order_by(records.c.id).limit(chunk)
            ).all()
            if not rows:
                break
            last = rows[-1].id
            batch = []
            for r in rows:
                m = dict(r._mapping)
                m.pop("id")
                batch.append(m)
            insert_rows(out, batch)
            done += len(rows)
            print(f"copied {done} records ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        refs = [dict(r._mapping) for r in conn.execute(select(elemental_refs))]
        if refs:
            out.execute(insert(elemental_refs), refs)
    with dest.engine.connect() as conn:
        conn.execute(text("ANALYZE"))
        conn.commit()
    return time.perf_counter() - t0


def filters(db, n: int, seed: int) -> dict[str, list[str]]:
    """``n`` filters of each kind drawn from what ``db`` stores."""
    from sqlalchemy import func, select

    from lamkit.db.optimade.formulas import formulas_of_stored
    from lamkit.db.schema import chemsystems, records

    rng = random.Random(seed)
    with db.engine.connect() as conn:
        binaries = (
            conn.execute(select(chemsystems.c.chemsys).where(chemsystems.c.nelements == 2))
            .scalars()
            .all()
        )
        top = conn.execute(select(func.max(records.c.id))).scalar_one()
        formulas = []
        while len(formulas) < n:
            f = conn.execute(
                select(records.c.formula).where(records.c.id == rng.randint(1, top))
            ).scalar()
            if f is not None:
                formulas.append(f)
    pairs = [rng.choice(binaries).split("-") for _ in range(n)]
    return {
        "has-all": [f'elements HAS ALL "{a}","{b}"' for a, b in pairs],
        "nelements": [f"nelements = {1 + i % 3}" for i in range(n)],
        "formula": [f'chemical_formula_reduced = "{formulas_of_stored(f)[0]}"' for f in formulas],
        "e-above-hull": [f"_lamkit_e_above_hull < {0.2 * i / max(n - 1, 1):.4f}" for i in range(n)],
    }


def time_backend(url: str, n: int, seed: int) -> dict:
    from fastapi.testclient import TestClient

    from lamkit.db import CrystalDB
    from lamkit.db.service import create_app

    db = CrystalDB(url).init()
    client = TestClient(create_app(db, keys_from_environment=False))
    client.get("/optimade/v1/structures", params={"page_limit": 1})  # warm imports, pools
    out = {"url": db.engine.url.render_as_string(hide_password=True), "records": db.count()}
    for kind, texts in filters(db, n, seed).items():
        times, hits = [], []
        for text in texts:
            t = time.perf_counter()
            r = client.get("/optimade/v1/structures", params={"filter": text, "page_limit": 20})
            times.append(1000 * (time.perf_counter() - t))
            if r.status_code != 200:
                raise SystemExit(f"{text}: {r.status_code} {r.text[:300]}")
            body = r.json()
            hits.append(body["meta"].get("data_returned", -1))
        out[kind] = {
            "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)),
            "counted": sum(h >= 0 for h in hits),
            "median_matches_counted": float(np.median([h for h in hits if h >= 0] or [0])),
        }
        print(
            f"{out['url'][:40]:40s} {kind:13s} p50 {out[kind]['p50_ms']:7.1f} ms  "
            f"p99 {out[kind]['p99_ms']:7.1f} ms",
            flush=True,
        )
    db.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", action="append", default=[], help="database URL (repeat)")
    p.add_argument("--copy-from", default=None)
    p.add_argument("--copy-to", default=None)
    p.add_argument("--queries", type=int, default=50, help="requests per kind")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*httpx.*")
    results: dict = {"queries": args.queries}
    if args.copy_from and args.copy_to:
        results["copy_s"] = copy_database(args.copy_from, args.copy_to)
        print(f"copy: {results['copy_s']:.0f} s", flush=True)
    results["backends"] = [time_backend(url, args.queries, args.seed) for url in args.db]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
