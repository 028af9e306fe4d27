"""Reports of a ``lam learn`` run, rewritten after every iteration's stages:

``report.json`` (the iteration records), ``report.csv`` (one row per iteration: labels spent,
accurate/candidate/failed ratios, every property quantity's relative error and whether it is
within tolerance) and pictures: ``errors.png`` (|relative error| per quantity against labels
spent), ``ratios.png``, ``labels.png`` and ``devi_hist.png`` (max_devi_f per iteration).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..props.common import new_figure, save_figure
from .state import LearnState, write_atomic


def _quantities(state: LearnState) -> list[str]:
    names: list[str] = []
    for rec in state.records:
        for key, qs in (rec.get("properties") or {}).items():
            for q in qs:
                if f"{key}:{q}" not in names:
                    names.append(f"{key}:{q}")
    return names


def table(state: LearnState) -> list[dict]:
    """One row per iteration."""
    rows = []
    for rec in state.records:
        row: dict = {
            "iteration": rec["iteration"],
            "labels": rec.get("labels_before_train", ""),
            "frames": rec.get("explored", ""),
        }
        for k in ("accurate", "candidate", "failed"):
            row[k] = (rec.get("ratios") or {}).get(k, "")
        row["selected"] = rec.get("selected", "")
        row["label_failures"] = rec.get("label_failures", "")
        for name in _quantities(state):
            key, q = name.rsplit(":", 1)
            e = (rec.get("properties") or {}).get(key, {}).get(q)
            row[f"{name} rel_err"] = "" if e is None else e["relative"]
            row[f"{name} ok"] = "" if e is None else e["ok"]
        row["converged"] = rec.get("converged", "")
        rows.append(row)
    return rows


def write_report(run_dir: Path, state: LearnState) -> None:
    run_dir = Path(run_dir)
    write_atomic(run_dir / "report.json", {"finished": state.finished, "records": state.records})
    rows = table(state)
    if rows:
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with open(run_dir / "report.csv", "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
    _plots(run_dir, state)


def _plots(run_dir: Path, state: LearnState) -> None:
    recs = [r for r in state.records if "properties" in r]
    if recs:
        fig, ax = new_figure()
        labels = [r.get("labels_before_train", 0) for r in recs]
        for name in _quantities(state):
            key, q = name.rsplit(":", 1)
            ys = [
                abs(r["properties"].get(key, {}).get(q, {}).get("relative", np.nan))
                for r in recs
            ]
            ax.plot(labels, ys, "o-", label=name)
        ax.set_yscale("log")
        ax.set_xlabel("labelled frames in training")
        ax.set_ylabel("|relative error| of the property")
        ax.legend(fontsize=6)
        save_figure(fig, run_dir / "errors.png")
    recs = [r for r in state.records if "ratios" in r]
    if recs:
        its = [r["iteration"] for r in recs]
        fig, ax = new_figure()
        for k in ("accurate", "candidate", "failed"):
            ax.plot(its, [r["ratios"][k] for r in recs], "o-", label=k)
        ax.set_xlabel("iteration")
        ax.set_ylabel("fraction of explored frames")
        ax.legend()
        save_figure(fig, run_dir / "ratios.png")
        fig, ax = new_figure()
        for r in recs:
            h = r.get("devi_hist")
            if h:
                edges = np.asarray(h["edges"])
                ax.stairs(h["counts"], edges, label=f"iteration {r['iteration']}")
        ax.set_xscale("log")
        ax.axvline(recs[-1].get("lo", np.nan), color="k", ls=":")
        ax.axvline(recs[-1].get("hi", np.nan), color="k", ls="--")
        ax.set_xlabel("max_devi_f (eV/Å)")
        ax.set_ylabel("frames")
        ax.legend(fontsize=7)
        save_figure(fig, run_dir / "devi_hist.png")
    fig, ax = new_figure()
    its = [r["iteration"] for r in state.records]
    ax.bar(its, [r.get("labels_before_train", 0) for r in state.records])
    ax.set_xlabel("iteration")
    ax.set_ylabel("labelled frames used for training")
    save_figure(fig, run_dir / "labels.png")


def histogram(devi) -> dict:
    """Log-spaced histogram of max_devi_f for the report."""
    edges = np.logspace(-4, 1, 31)
    counts, _ = np.histogram(np.clip(np.asarray(devi), 1.01e-4, 9.9), bins=edges)
    return {"edges": edges.tolist(), "counts": counts.tolist()}
