"""``lam learn CONFIG.json [-o DIR] [--max-stages N] [--workers N | --cluster ADDR]``."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("CONFIG", help="lam learn config (JSON); see docs/active-learning.md")
    p.add_argument("-o", "--output", default="learn-out", help="run folder (resumed if present)")
    p.add_argument("--max-stages", type=int, default=None,
                   help="stop after this many stages (run again to resume)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, default=None, help="label on N local Dask workers")
    g.add_argument("--cluster", default=None, help="label on a Dask scheduler (tcp://host:8786)")


def run(a) -> int:
    from .config import load_config
    from .loop import run_learn

    cfg = load_config(a.CONFIG)
    if a.workers is not None:
        cfg.workers = a.workers
    if a.cluster is not None:
        cfg.cluster = a.cluster
    state = run_learn(cfg, a.output, max_stages=a.max_stages)
    last = state.records[-1] if state.records else {}
    print(
        f"lam learn: {state.finished or 'stopped'} after iteration {state.iteration}; "
        f"{state.labels} frames labelled ({state.failed_labels} failed); "
        f"accurate ratio {last.get('ratios', {}).get('accurate', float('nan')):.3f}; "
        f"report in {a.output}/report.csv"
    )
    return 0
