"""stability_metrics against confusion matrices counted by hand: the <= threshold convention on
both sides, DAF = precision / prevalence, NaN handling (missing predictions count as unstable,
missing truths are left out), and the undefined ratios of degenerate sets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lamkit.screen.metrics import stability_metrics

#            pred    true     at threshold 0
ROWS = [
    (-0.10, -0.05),  # TP
    (0.00, 0.00),  # TP: on the hull is stable on both sides
    (-0.02, 0.03),  # FP
    (0.05, -0.01),  # FN
    (0.20, 0.15),  # TN
    (0.01, 0.40),  # TN
    (0.30, 0.00),  # FN
    (-0.05, 0.08),  # FP
    (0.12, 0.09),  # TN
    (0.00, -0.20),  # TP
]


def test_hand_counted_confusion_matrix():
    pred, true = zip(*ROWS)
    m = stability_metrics(pred, true)
    assert (m["TP"], m["FP"], m["TN"], m["FN"]) == (3, 2, 3, 2)
    assert m["n"] == m["n_total"] == m["n_regression"] == 10
    assert m["precision"] == pytest.approx(3 / 5)
    assert m["recall"] == m["TPR"] == pytest.approx(3 / 5)
    assert m["TNR"] == pytest.approx(3 / 5) and m["FPR"] == pytest.approx(2 / 5)
    assert m["FNR"] == pytest.approx(2 / 5)
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["F1"] == pytest.approx(0.6)
    assert m["prevalence"] == pytest.approx(5 / 10)
    assert m["DAF"] == pytest.approx((3 / 5) / (5 / 10))
    diff = np.array(pred) - np.array(true)
    assert m["MAE"] == pytest.approx(np.abs(diff).mean())
    assert m["RMSE"] == pytest.approx(np.sqrt((diff**2).mean()))
    t = np.array(true)
    assert m["R2"] == pytest.approx(1 - (diff**2).sum() / ((t - t.mean()) ** 2).sum())


def test_threshold_moves_the_boundary():
    pred, true = zip(*ROWS)
    m = stability_metrics(pred, true, threshold=0.1)
    # true stable (<= 0.1): rows 0,1,2,3,6,7,8,9; predicted stable: rows 0,1,2,3,5,7,9
    assert (m["TP"], m["FP"], m["TN"], m["FN"]) == (6, 1, 1, 2)
    assert m["prevalence"] == pytest.approx(0.8)
    assert m["DAF"] == pytest.approx((6 / 7) / 0.8)
    # exactly at the threshold is stable
    m = stability_metrics([0.1], [0.1], threshold=0.1)
    assert (m["TP"], m["FP"], m["TN"], m["FN"]) == (1, 0, 0, 0)


def test_missing_values():
    pred = [-0.1, math.nan, None, 0.2, -0.3, 0.1]
    true = [-0.2, -0.1, 0.3, math.nan, 0.05, None]
    m = stability_metrics(pred, true)
    # rows 3 and 5 have no truth: left out. Rows 1 and 2 have no prediction: unstable.
    # row 0 TP, row 1 FN (true stable), row 2 TN, row 4 FP
    assert (m["TP"], m["FP"], m["TN"], m["FN"]) == (1, 1, 1, 1)
    assert (m["n"], m["n_total"], m["n_missing_pred"], m["n_missing_true"]) == (4, 6, 2, 2)
    assert m["n_regression"] == 2  # rows 0 and 4
    assert m["MAE"] == pytest.approx((0.1 + 0.35) / 2)
    # fillna=False: rows without a prediction are left out as well
    m = stability_metrics(pred, true, fillna=False)
    assert (m["TP"], m["FP"], m["TN"], m["FN"]) == (1, 1, 0, 0)
    assert m["n"] == 2


def test_degenerate_sets():
    # nothing truly stable: recall, prevalence-based DAF and F1 undefined; precision 0
    m = stability_metrics([-0.1, 0.2], [0.1, 0.2])
    assert (m["TP"], m["FP"], m["TN"], m["FN"]) == (0, 1, 1, 0)
    assert m["prevalence"] == 0 and m["precision"] == 0
    assert math.isnan(m["recall"]) and math.isnan(m["DAF"]) and math.isnan(m["F1"])
    # no predicted positives: precision undefined
    m = stability_metrics([0.1, 0.2], [-0.1, 0.2])
    assert math.isnan(m["precision"]) and m["recall"] == 0 and math.isnan(m["F1"])
    # perfect classifier of everything stable
    m = stability_metrics([-0.1, -0.2], [-0.1, -0.2])
    assert m["F1"] == 1 and m["DAF"] == 1 and m["MAE"] == 0 and m["R2"] == 1
    assert math.isnan(m["TNR"])
    # nothing to classify
    m = stability_metrics([], [])
    assert m["n"] == 0 and math.isnan(m["accuracy"]) and math.isnan(m["MAE"])
    with pytest.raises(ValueError, match="2 predictions but 1"):
        stability_metrics([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="threshold"):
        stability_metrics([0.1], [0.1], threshold=math.nan)
