"""Pictures of training results: the learning curve from ``lcurve.out``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np


def read_lcurve(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Column names and values of an lcurve file (``# step rmse_val rmse_trn ... lr``)."""
    lines = Path(path).read_text().splitlines()
    names = lines[0].lstrip("#").split()
    rows = [ln.split() for ln in lines if ln.strip() and not ln.startswith("#")]
    data = np.array([[float(x) for x in r] for r in rows]) if rows else np.zeros((0, len(names)))
    return names, data


def plot_lcurve(path: str | Path, out: str | Path | None = None) -> Path:
    """Write a PNG of every ``rmse_*`` column against the step (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, data = read_lcurve(path)
    out = Path(out) if out else Path(path).with_suffix(".png")
    # rmse_e_val, rmse_e_trn, or per task rmse_e_val_<task>
    parsed = {}
    for i, n in enumerate(names):
        m = re.match(r"^(rmse\w*?)_(val|trn)(?:_(.+))?$", n)
        if m:
            parsed[i] = m.groups()
    metrics = sorted({p[0] for p in parsed.values()})
    fig, axes = plt.subplots(
        1, max(len(metrics), 1), figsize=(4.2 * max(len(metrics), 1), 3.4), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics):
        for i, (m, kind, task) in parsed.items():
            if m != metric or not len(data):
                continue
            y = data[:, i]
            if np.isfinite(y).any():
                label = f"{task} {kind}" if task else kind
                ax.plot(data[:, 0], y, "-" if kind == "trn" else "--", label=label)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(metric)
        if ax.get_lines():
            ax.legend(fontsize=7)
        else:  # no finite value (e.g. no virial labels): say so instead of an empty legend
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
