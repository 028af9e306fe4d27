"""The results of a screening: final flags, the table, the summary and the output files.

Flags computed at the end from the stored per-structure results (so that changing a threshold
never needs a new relaxation):

* ``stable``: ``e_above_hull <= stability_threshold`` (default 0 eV/atom), ``metastable``:
  ``<= metastability_threshold`` (default 0.1), for relaxed structures (converged ones only,
  unless ``require_converged`` is off); NA when the hull could not be judged (the
  ``hull_status`` says why), False for rejected and failed rows;
* ``unique``: the first of its kind among the relaxed structures of this submission
  (``duplicate_of``: the index of the earlier structure it matches);
* ``sun`` (S.U.N.): ``e_above_hull <= sun_threshold`` (default 0.1 eV/atom, MatterGen's) and
  unique and novel, with the same convergence rule; NA when one of them is unknown.

Booleans are pandas' nullable ``boolean`` (True / False / NA), integers ``Int64``, texts
``string``, real numbers ``float64`` (NaN when missing).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .config import ScreenConfig

#: Columns of the results table, in order.
COLUMNS = (
    "index", "source", "formula", "nsites", "status", "reason", "valid", "converged",
    "relax_status", "relax_steps", "fmax", "energy", "energy_per_atom",
    "formation_energy_per_atom", "e_above_hull", "decomposition", "hull_status", "stable",
    "metastable", "unique", "duplicate_of", "novel", "matched_id", "sun", "spacegroup_number",
    "spacegroup_symbol", "db_id",
)  # fmt: skip
BOOL_COLUMNS = ("valid", "converged", "stable", "metastable", "unique", "novel", "sun")
INT_COLUMNS = ("index", "nsites", "relax_steps", "duplicate_of", "matched_id",
               "spacegroup_number", "db_id")  # fmt: skip
FLOAT_COLUMNS = ("fmax", "energy", "energy_per_atom", "formation_energy_per_atom",
                 "e_above_hull")  # fmt: skip
STRING_COLUMNS = ("source", "formula", "status", "reason", "relax_status", "decomposition",
                  "hull_status", "spacegroup_symbol")  # fmt: skip
OUTPUT_FILES = (
    "results.csv",
    "results.parquet",
    "results.json",
    "summary.json",
    "e_above_hull.png",
    "relaxed.extxyz",
)


def _and(*values: bool | None) -> bool | None:
    """Kleene AND: False if any is False, else None if any is unknown, else True."""
    if any(v is False for v in values):
        return False
    if any(v is None for v in values):
        return None
    return True


def _below(e: float | None, threshold: float) -> bool | None:
    if e is None or (isinstance(e, float) and math.isnan(e)):
        return None
    return bool(e <= threshold)


def finalize(rows: list[dict], duplicates: dict[int, int | None], config: ScreenConfig) -> None:
    """Add the final flags (see the module docstring) to ``rows`` in place.  ``duplicates``:
    index -> index of the earlier relaxed structure it duplicates (None: first of its kind),
    for every relaxed ("ok") row."""
    for r in rows:
        if r["status"] != "ok":
            r.update(stable=False, metastable=False, unique=False, duplicate_of=None, sun=False)
            r["novel"] = False
            continue
        judged = bool(r["converged"]) or not config.require_converged
        e = r.get("e_above_hull")
        dup = duplicates.get(r["index"])
        r["duplicate_of"] = dup
        r["unique"] = dup is None
        r["stable"] = _below(e, config.stability_threshold) if judged else False
        r["metastable"] = _below(e, config.metastability_threshold) if judged else False
        sun_e = _below(e, config.sun_threshold) if judged else False
        r["sun"] = _and(sun_e, r["unique"], r.get("novel"))


def table(rows: list[dict]):
    """The results DataFrame: one row per structure, :data:`COLUMNS` in order."""
    import pandas as pd

    df = pd.DataFrame([{c: r.get(c) for c in COLUMNS} for r in rows], columns=list(COLUMNS))
    for c in BOOL_COLUMNS:
        df[c] = pd.array([None if v is None else bool(v) for v in df[c]], dtype="boolean")
    for c in INT_COLUMNS:
        df[c] = pd.array([None if _missing(v) else int(v) for v in df[c]], dtype="Int64")
    for c in FLOAT_COLUMNS:
        df[c] = pd.to_numeric(df[c].astype(object).where(df[c].notna(), np.nan), errors="coerce")
        df[c] = df[c].astype("float64")
    for c in STRING_COLUMNS:
        df[c] = pd.array([None if _missing(v) else str(v) for v in df[c]], dtype="string")
    return df


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def anonymous_formula(formula: str) -> str:
    """The prototype formula of a reduced formula: "AB2" for CuAu2 and for NaCl2 (letters by
    increasing amount, pymatgen's convention)."""
    from pymatgen.core import Composition

    return Composition(formula).anonymized_formula


def _count(df, col: str) -> int:
    return int(df[col].fillna(False).astype(bool).sum())


def summarize(df, config: ScreenConfig, info: dict) -> dict:
    """Counts, rates (over all inputs), diversity and timing of a results table; ``info``
    carries the run's context (screen_id, model, database, notes, timing, ...)."""
    n = len(df)
    ok = df[df.status == "ok"]
    counts = {
        "inputs": n,
        "rejected": int((df.status == "rejected").sum()),
        "valid": _count(df, "valid"),
        "failed": int((df.status == "failed").sum()),
        "relaxed": len(ok),
        "converged": _count(df, "converged"),
        "with_hull": int(ok.e_above_hull.notna().sum()),
        "stable": _count(df, "stable"),
        "metastable": _count(df, "metastable"),
        "unique": _count(df, "unique"),
        "novel": _count(df, "novel"),
        "sun": _count(df, "sun"),
    }
    rates = {k: (counts[k] / n if n else 0.0) for k in counts if k != "inputs"}
    good = ok[ok.spacegroup_number.notna()]
    protos = {(anonymous_formula(f), int(s)) for f, s in zip(good.formula, good.spacegroup_number)}
    sun = good[good.sun.fillna(False).astype(bool)]
    out = dict(info)
    out.update(
        counts=counts,
        rates=rates,
        rates_over="all input structures",
        thresholds={
            "stable": config.stability_threshold,
            "metastable": config.metastability_threshold,
            "sun": config.sun_threshold,
            "require_converged": config.require_converged,
        },
        diversity={
            "spacegroups": int(good.spacegroup_number.nunique()),
            "prototypes": len(protos),
            "sun_spacegroups": int(sun.spacegroup_number.nunique()),
            "sun_prototypes": len(
                {(anonymous_formula(f), int(s)) for f, s in zip(sun.formula, sun.spacegroup_number)}
            ),
        },
    )
    return out


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def _records(df) -> list[dict]:
    """The table as JSON-ready dicts (missing values as None, numpy scalars as Python)."""
    import pandas as pd

    def py(v: Any) -> Any:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return None
        return v.item() if isinstance(v, np.generic) else v

    return [{k: py(v) for k, v in rec.items()} for rec in df.astype(object).to_dict("records")]


def write_outputs(df, summary: dict, relaxed: list, out_dir: Path) -> dict[str, Path]:
    """Write the results files (see :data:`OUTPUT_FILES`) atomically; ``relaxed``: ase.Atoms of
    the relaxed rows, in table order.  Returns file name -> path."""
    out_dir = Path(out_dir)
    paths = {name: out_dir / name for name in OUTPUT_FILES}
    _atomic_write(paths["results.csv"], lambda p: df.to_csv(p, index=False))
    _atomic_write(paths["results.parquet"], lambda p: df.to_parquet(p, index=False))
    texts = {"results.json": _records(df), "summary.json": summary}
    for name, data in texts.items():
        _atomic_write(paths[name], lambda p, d=data: p.write_text(json.dumps(d, indent=1) + "\n"))
    _atomic_write(paths["e_above_hull.png"], lambda p: histogram(df, summary, p))
    _atomic_write(paths["relaxed.extxyz"], lambda p: _write_extxyz(p, relaxed))
    return paths


def _write_extxyz(path: Path, frames: list) -> None:
    import ase.io

    ase.io.write(str(path), frames, format="extxyz")
    if not frames:
        path.write_text("")


def histogram(df, summary: dict, path: Path) -> None:
    """PNG histogram of e_above_hull (eV/atom) of the relaxed structures, thresholds marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e = df.e_above_hull[(df.status == "ok") & df.e_above_hull.notna()].to_numpy(float)
    th = summary["thresholds"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        if len(e):
            lo, hi = float(min(e.min(), -0.05)), float(max(e.max(), th["metastable"] + 0.05))
            ax.hist(np.clip(e, lo, hi), bins=min(60, max(10, len(e) // 5)), color="#4c72b0")
        else:
            ax.text(0.5, 0.5, "no energies above hull", ha="center", transform=ax.transAxes)
        for key, style in (("stable", "-"), ("metastable", "--")):
            ax.axvline(th[key], color="k", ls=style, lw=1, label=f"{key} <= {th[key]:g}")
        ax.set_xlabel("energy above hull (eV/atom)")
        ax.set_ylabel("structures")
        c = summary["counts"]
        ax.set_title(
            f"{c['with_hull']} of {c['inputs']} with a hull; {c['stable']} stable, "
            f"{c['metastable']} metastable"
        )
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def format_summary(summary: dict, paths: dict[str, Path] | None = None) -> str:
    """The printed summary: counts with rates, thresholds, diversity, reasons, outputs."""
    c, r, th = summary["counts"], summary["rates"], summary["thresholds"]
    t = summary.get("timing", {})

    def line(label: str, key: str, note: str = "") -> str:
        return f"  {label:<12} {c[key]:>8}  {100 * r[key]:6.1f} %  {note}".rstrip()

    head = f"screening {summary.get('screen_id', '')}: {c['inputs']} structures"
    if t:
        head += f" in {t.get('total', 0.0):.1f} s ({t.get('resumed', 0)} resumed from the store)"
    novel_note = "" if summary.get("novelty_assessed", True) else "(no database: not assessed)"
    lines = [
        head,
        line("valid", "valid"),
        line("rejected", "rejected"),
        line("relaxed", "relaxed"),
        line("failed", "failed"),
        line("converged", "converged"),
        line("with hull", "with_hull"),
        line("stable", "stable", f"e_above_hull <= {th['stable']:g} eV/atom"),
        line("metastable", "metastable", f"<= {th['metastable']:g} eV/atom"),
        line("unique", "unique"),
        line("novel", "novel", novel_note),
        line("S.U.N.", "sun", f"e_above_hull <= {th['sun']:g}, unique, novel"),
        f"  diversity: {summary['diversity']['spacegroups']} space groups, "
        f"{summary['diversity']['prototypes']} prototypes among relaxed structures",
    ]
    if summary.get("reasons"):
        lines.append("  rejected or failed, by rule:")
        lines += [f"    {n:>6}  {k}" for k, n in list(summary["reasons"].items())[:8]]
    for note in summary.get("notes", []):
        lines.append(f"  note: {note}")
    if paths:
        lines.append(f"  outputs in {Path(next(iter(paths.values()))).parent}")
    return "\n".join(lines)
