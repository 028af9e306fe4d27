"""A model as a stability classifier: Matbench Discovery's metrics of predicted against true
energies above hull (:func:`stability_metrics`).

Conventions (those of ``matbench_discovery.metrics.discovery.stable_metrics``):

* a structure is stable (positive) when its energy above hull is ``<= threshold`` (eV/atom),
  for the prediction and the truth alike, so a structure exactly on the hull is stable;
* a missing prediction (NaN or None) counts as predicted unstable (``fillna=True``, their
  default: a model that fails on a structure does not get to call it stable); with
  ``fillna=False`` such rows are left out of the classification instead;
* a missing true value leaves the row out of the classification (it is neither positive nor
  negative);
* MAE, RMSE and R² use the rows where both values are present;
* every ratio whose denominator is zero is NaN (precision without predicted positives, recall
  without true positives, DAF with a prevalence of 0, F1 when precision + recall is 0).

DAF (discovery acceleration factor) = precision / prevalence, the prevalence being the fraction
of classified rows that are truly stable: how many times more stable structures the model
finds than picking at random.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _as_array(values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    """float64 array with NaN for None and for anything that is not a number."""
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        try:
            out[i] = np.nan if v is None else float(v)
        except (TypeError, ValueError):
            out[i] = np.nan
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def stability_metrics(
    e_above_hull_pred: Sequence[float | None] | np.ndarray,
    e_above_hull_true: Sequence[float | None] | np.ndarray,
    threshold: float = 0.0,
    *,
    fillna: bool = True,
) -> dict:
    """Classification and regression metrics of predicted against true energies above hull
    (both [n] eV/atom, same order) at ``threshold`` eV/atom.

    Returns a dict with F1, DAF, precision, recall (= TPR), accuracy, TPR, TNR, FPR, FNR,
    prevalence (floats, NaN where undefined), MAE, RMSE and R2 (eV/atom; R2 dimensionless), the
    confusion counts TP, FP, TN, FN, ``n`` (rows classified = TP + FP + TN + FN), ``n_total``
    (rows given), ``n_missing_pred`` and ``n_missing_true`` (rows with a missing value) and
    ``n_regression`` (rows in MAE, RMSE and R2)."""
    pred = _as_array(e_above_hull_pred)
    true = _as_array(e_above_hull_true)
    if len(pred) != len(true):
        raise ValueError(
            f"stability_metrics: {len(pred)} predictions but {len(true)} true values; "
            "expected one of each per structure"
        )
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold: expected a finite number (eV/atom); found {threshold}")
    pred_nan, true_nan = np.isnan(pred), np.isnan(true)
    actual_pos = ~true_nan & (true <= threshold)
    actual_neg = ~true_nan & (true > threshold)
    model_pos = ~pred_nan & (pred <= threshold)
    model_neg = pred_nan | (pred > threshold) if fillna else ~pred_nan & (pred > threshold)
    tp = int(np.sum(actual_pos & model_pos))
    fn = int(np.sum(actual_pos & model_neg))
    fp = int(np.sum(actual_neg & model_pos))
    tn = int(np.sum(actual_neg & model_neg))
    pos, neg = tp + fn, tn + fp
    n = pos + neg
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, pos)
    prevalence = _ratio(pos, n)
    f1 = (
        2 * precision * recall / (precision + recall)
        if np.isfinite(precision) and np.isfinite(recall) and precision + recall > 0
        else float("nan")
    )
    both = ~(pred_nan | true_nan)
    diff = pred[both] - true[both]
    mae = float(np.mean(np.abs(diff))) if diff.size else float("nan")
    rmse = float(np.sqrt(np.mean(diff**2))) if diff.size else float("nan")
    return {
        "F1": f1,
        "DAF": precision / prevalence if prevalence > 0 else float("nan"),
        "precision": precision,
        "recall": recall,
        "accuracy": _ratio(tp + tn, n),
        "TPR": recall,
        "TNR": _ratio(tn, neg),
        "FPR": _ratio(fp, neg),
        "FNR": _ratio(fn, pos),
        "prevalence": prevalence,
        "MAE": mae,
        "RMSE": rmse,
        "R2": _r2(true[both], pred[both]),
        "TP": tp,
        "FP": fp,
        "TN": tn,
        "FN": fn,
        "n": n,
        "n_total": len(pred),
        "n_missing_pred": int(pred_nan.sum()),
        "n_missing_true": int(true_nan.sum()),
        "n_regression": int(both.sum()),
    }


def _r2(true: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination as scikit-learn's ``r2_score`` computes it (1 for a perfect
    fit of constant truth, 0 for an imperfect one; NaN with fewer than two rows)."""
    if true.size < 2:
        return float("nan")
    ss_res = float(np.sum((true - pred) ** 2))
    ss_tot = float(np.sum((true - true.mean()) ** 2))
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return 1.0 - ss_res / ss_tot
