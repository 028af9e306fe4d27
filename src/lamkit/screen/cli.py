"""``lam screen``: screen structures (a thin layer over :func:`lamkit.screen.screen`), and
``lam screen --metrics PRED.csv --truth TRUTH.csv``: a model as a stability classifier.

The database is ``--db URL`` (a path, ``sqlite:///...`` or ``postgresql+psycopg://...``), else
``$LAMKIT_DB_URL``, else none (then no hull from the database and no novelty).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .config import CELL_FILTERS, INSERT_WHEN, OPTIMIZERS, PRESET_NAMES, ScreenError

#: CrystalDB.query filters accepted by --query, and how their values are read.
_LISTS = ("elements", "only_elements", "tags", "formula", "submitter", "model")
_RANGES = {"nsites": int, "energy_per_atom": float}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the ``lam screen`` options to ``p``."""
    p.add_argument("INPUTS", nargs="*", help="files, folders, .zip/.tar(.gz) archives")
    p.add_argument("-m", "--model", help="model file, 'emt' or 'ase:module.Class'")
    p.add_argument("--db", default=None, help="database URL or path (default: $LAMKIT_DB_URL)")
    p.add_argument("-o", "--output", default="screen-out", help="output folder (resumable)")
    p.add_argument(
        "--query",
        action="append",
        default=[],
        help="database input, e.g. 'only_elements=Cu,Au;nsites=1:16' (repeatable)",
    )
    eng = p.add_mutually_exclusive_group()
    eng.add_argument("--workers", type=int, default=None, help="local Dask cluster of N workers")
    eng.add_argument("--cluster", default=None, help="address of a running Dask scheduler")
    p.add_argument("--insert", action="store_true", help="store passing structures in --db")
    p.add_argument("--insert-when", choices=INSERT_WHEN, default="converged")
    p.add_argument("--model-name", default=None, help="model name for the database")
    p.add_argument("--submitter", default=None)
    p.add_argument("--restart", action="store_true", help="discard the stored results of -o")
    p.add_argument("--no-progress", action="store_true")
    r = p.add_argument_group("relaxation")
    r.add_argument("--optimizer", choices=OPTIMIZERS, default="fire")
    r.add_argument("--cell-filter", choices=CELL_FILTERS, default="frechet")
    r.add_argument("--fmax", type=float, default=0.05, help="eV/Å (default 0.05)")
    r.add_argument("--smax", type=float, default=None, help="eV/Å^3 (default: not checked)")
    r.add_argument("--steps", type=int, default=500)
    r.add_argument("--pressure", type=float, default=0.0, help="GPa")
    r.add_argument("--max-atoms", type=int, default=8192, help="atom budget of one batch")
    r.add_argument("--chunk-size", type=int, default=256, help="structures per shard")
    r.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    r.add_argument("--head", default=None, help="branch of a multi-task model")
    v = p.add_argument_group("validity")
    v.add_argument("--min-distance", type=float, default=0.5, help="Å (default 0.5)")
    v.add_argument("--volume-per-atom", default="1:200", help="lo:hi in Å^3/atom")
    v.add_argument("--max-sites", type=int, default=1000)
    v.add_argument("--charge-neutrality", action="store_true", help="SMACT rule")
    v.add_argument("--no-type-map-check", action="store_true")
    v.add_argument("--no-db-element-check", action="store_true")
    v.add_argument("--parse-timeout", type=float, default=60.0, help="seconds per file")
    v.add_argument("--parse-workers", type=int, default=2)
    j = p.add_argument_group("judgement")
    j.add_argument("--preset", choices=PRESET_NAMES, default="openlam", help="matcher preset")
    j.add_argument("--hull-model", default=None, help="database model of the hull")
    j.add_argument("--novelty-model", default=None, help="compare with this model's records")
    j.add_argument("--references", default=None, help="elemental references: Cu=-3.5,Au=-3.2")
    j.add_argument("--stability-threshold", type=float, default=0.0, help="eV/atom")
    j.add_argument("--metastability-threshold", type=float, default=0.1, help="eV/atom")
    j.add_argument("--sun-threshold", type=float, default=0.1, help="eV/atom (MatterGen)")
    j.add_argument("--allow-unconverged", action="store_true", help="flag unconverged too")
    m = p.add_argument_group("classifier metrics")
    m.add_argument("--metrics", default=None, help="results CSV with predicted e_above_hull")
    m.add_argument("--truth", default=None, help="CSV with the true e_above_hull")
    m.add_argument("--threshold", type=float, default=0.0, help="stable: e_above_hull <= this")
    m.add_argument("--format", choices=["table", "json"], default="table")


def _pair_list(text: str | None, what: str) -> dict[str, float] | None:
    if not text:
        return None
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ScreenError(f"{what}: expected El=value,...; found '{part}'")
    return out


def parse_query(text: str) -> dict:
    """CrystalDB.query filters of a --query text: ``key=value`` items separated by ';'."""
    filters: dict = {}
    for part in filter(None, (s.strip() for s in text.split(";"))):
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ScreenError(f"--query: expected key=value items separated by ';'; found '{part}'")
        value = value.strip()
        if key in _RANGES:
            lo, _, hi = value.partition(":") if ":" in value else (value, "", value)
            try:
                conv = _RANGES[key]
                filters[key] = (conv(lo) if lo else None, conv(hi) if hi else None)
            except ValueError:
                raise ScreenError(
                    f"--query {key}: expected lo:hi numbers; found '{value}'"
                ) from None
        elif key == "e_above_hull_max":
            try:
                filters[key] = float(value)
            except ValueError:
                raise ScreenError(f"--query {key}: expected a number; found '{value}'") from None
        elif key in _LISTS and "," in value:
            filters[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            filters[key] = value
    return filters


def _config(a):
    from .config import ScreenConfig

    lo, sep, hi = a.volume_per_atom.partition(":")
    try:
        vpa = (float(lo), float(hi))
    except ValueError:
        raise ScreenError(
            f"--volume-per-atom: expected lo:hi in Å^3/atom; found '{a.volume_per_atom}'"
        ) from None
    return ScreenConfig(
        min_distance=a.min_distance,
        volume_per_atom=vpa,
        max_sites=a.max_sites,
        charge_neutrality=a.charge_neutrality,
        check_type_map=not a.no_type_map_check,
        check_db_elements=not a.no_db_element_check,
        parse_timeout=a.parse_timeout,
        parse_workers=a.parse_workers,
        optimizer=a.optimizer,
        cell_filter=a.cell_filter,
        pressure=a.pressure,
        fmax=a.fmax,
        smax=a.smax,
        steps=a.steps,
        dtype=a.dtype,
        head=a.head,
        max_atoms=a.max_atoms,
        device=a.device,
        chunk_size=a.chunk_size,
        preset=a.preset,
        hull_model=a.hull_model,
        novelty_model=a.novelty_model,
        references=_pair_list(a.references, "--references"),
        stability_threshold=a.stability_threshold,
        metastability_threshold=a.metastability_threshold,
        sun_threshold=a.sun_threshold,
        require_converged=not a.allow_unconverged,
        insert_when=a.insert_when,
    )


def run(a) -> int:
    """Run a parsed ``lam screen`` command; returns the exit code."""
    if a.metrics is not None or a.truth is not None:
        return _metrics(a)
    if not a.model:
        raise ScreenError("-m/--model is required: a model file, 'emt' or 'ase:module.Class'")
    inputs: list = list(a.INPUTS) + [{"db_query": parse_query(q)} for q in a.query]
    if not inputs:
        raise ScreenError("nothing to screen: give files, folders, archives or --query")
    missing = [path for path in a.INPUTS if not Path(path).exists()]
    if missing:  # a typo on the command line is the user's to fix, not a rejected row
        raise ScreenError(f"no such file or folder: {', '.join(missing)}")
    config = _config(a)
    from .runner import screen

    db = a.db or os.environ.get("LAMKIT_DB_URL") or None
    res = screen(
        inputs,
        a.model,
        out_dir=a.output,
        db=db,
        config=config,
        workers=a.workers,
        cluster=a.cluster,
        insert=a.insert,
        model_name=a.model_name,
        submitter=a.submitter,
        progress=not a.no_progress and sys.stderr.isatty(),
        restart=a.restart,
    )
    print(res.report())
    for path in res.paths.values():
        print(f"  {path}")
    return 0


def _read_csv(path: str, what: str):
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ScreenError(f"{what} {path}: cannot read the CSV: {exc}") from None
    if "e_above_hull" not in df.columns:
        raise ScreenError(
            f"{what} {path}: expected a column 'e_above_hull' (eV/atom); found "
            f"{', '.join(map(str, df.columns[:12]))}"
        )
    return df


def joined(pred, truth):
    """(predicted, true) e_above_hull arrays, rows paired by 'index', else 'source', else
    position (same length)."""
    for key in ("index", "source"):
        if key in pred.columns and key in truth.columns:
            if truth[key].duplicated().any():
                raise ScreenError(f"truth: the '{key}' column has repeated values")
            both = pred[[key, "e_above_hull"]].merge(
                truth[[key, "e_above_hull"]], on=key, how="inner", suffixes=("_pred", "_true")
            )
            break
    else:
        if len(pred) != len(truth):
            raise ScreenError(
                f"predictions ({len(pred)} rows) and truth ({len(truth)} rows) share no 'index' "
                "or 'source' column and differ in length"
            )
        both = pred[["e_above_hull"]].join(
            truth[["e_above_hull"]], lsuffix="_pred", rsuffix="_true"
        )
    if both.empty:
        raise ScreenError("no prediction row pairs with a truth row (by index or source)")
    return both.e_above_hull_pred.to_numpy(float), both.e_above_hull_true.to_numpy(float)


def _metrics(a) -> int:
    from .metrics import stability_metrics

    if a.metrics is None or a.truth is None:
        raise ScreenError("--metrics PRED.csv and --truth TRUTH.csv go together")
    pred, true = joined(_read_csv(a.metrics, "--metrics"), _read_csv(a.truth, "--truth"))
    m = stability_metrics(pred, true, threshold=a.threshold)
    if a.format == "json":
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in m.items()}
        print(json.dumps(clean, default=float))
        return 0
    print(f"stability classifier at e_above_hull <= {a.threshold:g} eV/atom ({len(true)} rows)")
    for key, value in m.items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {key:<10} {text}")
    return 0
