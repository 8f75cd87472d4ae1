"""The ISIC 2024 challenge's metric (partial AUC above 80% TPR) and sensitivity at fixed specificity, checked
against an independent computation: the ROC curve (scikit-learn's roc_curve, every point kept) integrated by
hand over the region above the TPR cut, which the challenge's own code (labels and scores flipped,
roc_auc_score(max_fpr=0.2), McClish rescaling undone; ISIC 2024 Kaggle metric) never does."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from trainers.metrics import classification_metrics, partial_auc_above_tpr, sensitivity_at_specificity


def area_above_tpr(positive, scores, min_tpr=0.8) -> float:
    """Integral over TPR from min_tpr to 1 of (1 - FPR), along the piecewise linear ROC curve."""
    fpr, tpr, _ = roc_curve(positive, scores, drop_intermediate=False)
    area = 0.0
    for (f0, t0), (f1, t1) in zip(zip(fpr, tpr), zip(fpr[1:], tpr[1:])):
        if t1 <= min_tpr or t1 == t0:
            continue  # below the cut, or a flat (FPR-only) step: no TPR length
        lo = max(t0, min_tpr)
        f_lo = f0 + (f1 - f0) * (lo - t0) / (t1 - t0)  # the segment clipped at the cut
        area += (t1 - lo) * ((1 - f_lo) + (1 - f1)) / 2
    return area


@pytest.mark.parametrize("seed", range(6))
def test_partial_auc_agrees_with_the_integral_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    positive = rng.random(n) < rng.uniform(0.05, 0.5)
    positive[:2] = [True, False]
    scores = np.round(rng.random(n) + positive * rng.uniform(0, 1), int(rng.integers(1, 4)))  # with ties
    assert partial_auc_above_tpr(positive, scores) == pytest.approx(area_above_tpr(positive, scores), abs=1e-9)


@pytest.mark.parametrize("kind, expected", [("tied", 0.02), ("perfect", 0.2), ("inverted", 0.0)])
def test_partial_auc_edge_cases(kind, expected):
    positive = np.array([True] * 7 + [False] * 13)
    scores = {"tied": np.full(20, 0.5), "perfect": positive * 1.0, "inverted": 1.0 - positive}[kind]
    assert partial_auc_above_tpr(positive, scores) == pytest.approx(expected, abs=1e-9)
    assert area_above_tpr(positive, scores) == pytest.approx(expected, abs=1e-9)


def test_one_class_has_no_partial_auc_and_metrics_say_null():
    assert partial_auc_above_tpr(np.zeros(5, bool), np.arange(5)) is None
    metrics = classification_metrics([0, 0, 0], np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]]), ("benign", "malignant"))
    assert metrics["auc"] is None and metrics["pauc_80"] is None


def test_sensitivity_at_fixed_specificity_is_a_point_of_the_curve():
    positive = np.array([False] * 10 + [True] * 4)
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95] + [0.85, 0.97, 0.3, 0.99])
    # specificity >= 0.9 allows one false positive (0.95): above 0.95 lie 0.97 and 0.99 -> 2 of 4
    assert sensitivity_at_specificity(positive, scores, 0.90) == pytest.approx(0.5)
    assert sensitivity_at_specificity(positive, scores, 0.95) == pytest.approx(0.5)
    assert sensitivity_at_specificity(positive, scores, 0.70) == pytest.approx(0.75)  # 3 FPs: threshold 0.85


def test_two_class_metrics_lead_with_auc_and_give_the_challenge_figures():
    rng = np.random.default_rng(3)
    labels = (rng.random(300) < 0.2).astype(int)
    p = np.clip(rng.random(300) * 0.7 + labels * 0.3, 0, 1)
    metrics = classification_metrics(labels, np.stack([1 - p, p], 1), ("benign", "malignant"))
    assert list(metrics)[:4] == ["auc", "pauc_80", "sensitivity_at_specificity_0.90", "sensitivity_at_specificity_0.95"]
    assert metrics["pauc_80"] == pytest.approx(area_above_tpr(labels == 1, p), abs=1e-9)
