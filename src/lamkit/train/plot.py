"""Pictures of training results: the learning curve from ``lcurve.out``."""

from __future__ import annotations

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
    metrics = sorted({n.rsplit("_", 1)[0] for n in names if n.startswith("rmse")})
    fig, axes = plt.subplots(
        1, max(len(metrics), 1), figsize=(4.2 * max(len(metrics), 1), 3.4), squeeze=False
    )
    for ax, m in zip(axes[0], metrics):
        for suffix, style in (("trn", "-"), ("val", "--")):
            col = f"{m}_{suffix}"
            if col in names and len(data):
                y = data[:, names.index(col)]
                if np.isfinite(y).any():
                    ax.plot(data[:, 0], y, style, label=suffix)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(m)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
