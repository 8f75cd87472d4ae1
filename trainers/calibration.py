"""Temperature scaling (Guo et al., 2017), its figures of merit, and lesion-level voting.

Everything works on class probabilities, so one temperature serves a single
model and a soft-voting ensemble alike: ``softmax(log p / T)`` equals
``softmax(z / T)`` for a model whose logits are z, since log p and z differ by
a per-row constant.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .metrics import lesion_index

ECE_BINS = 15
EPS = 1e-12
T_RANGE = (0.05, 20.0)  # temperatures searched; outside it a model is broken, not miscalibrated


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of ``probs`` sharpened (T < 1) or softened (T > 1); T = 1 gives them back."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0 or not len(probs):
        return probs
    logits = np.log(np.clip(probs, EPS, 1.0)) / float(temperature)
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], EPS, 1.0))))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per confidence bin (equal width on [0, 1]): count, mean confidence and accuracy of the top class."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = predicted == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)  # (lo, hi] bins, 0 in the first
    rows = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n,
                     "confidence": float(confidence[inside].mean()) if n else None,
                     "accuracy": float(correct[inside].mean()) if n else None})
    return rows


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: sum over bins of (bin share) x |accuracy - mean confidence| (Naeini et al., 2015)."""
    total = len(labels)
    if not total:
        return 0.0
    return float(sum(r["count"] / total * abs(r["accuracy"] - r["confidence"])
                     for r in reliability_bins(probs, labels, bins) if r["count"]))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the NLL of ``probs`` on ``labels`` (searched on log T)."""
    from scipy.optimize import minimize_scalar  # here: scipy.optimize costs `train`, which never calibrates, ~0.6 s

    lo, hi = (math.log(t) for t in T_RANGE)
    result = minimize_scalar(lambda log_t: nll(apply_temperature(probs, math.exp(log_t)), labels),
                             bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(result.x))


def calibration_summary(val_probs, val_labels, temperature: float) -> dict:
    """NLL and ECE on the val split before and after scaling, with the temperature."""
    after = apply_temperature(val_probs, temperature)
    at_bound = not T_RANGE[0] * 1.01 < temperature < T_RANGE[1] / 1.01
    return {"temperature": temperature, "fitted_on": "val", "bins": ECE_BINS, "at_search_bound": at_bound,
            "val_nll_before": nll(val_probs, val_labels), "val_nll_after": nll(after, val_labels),
            "val_ece_before": expected_calibration_error(val_probs, val_labels),
            "val_ece_after": expected_calibration_error(after, val_labels)}


def lesion_mean(probs: np.ndarray, lesion_ids: list[str]) -> np.ndarray:
    """Every row replaced by the mean of the rows of its lesion (lesion-level soft voting)."""
    probs = np.asarray(probs, dtype=np.float64)
    group, count = lesion_index(lesion_ids)
    sums = np.zeros((count, probs.shape[1]))
    np.add.at(sums, group, probs)
    counts = np.bincount(group, minlength=len(sums))[:, None]
    return (sums / counts)[group]


def flat_accuracy(bins: list[dict]) -> float | None:
    """The one accuracy of every non-empty bin, when they all have the same (a diagram with nothing to read:
    the val split all right, or all wrong); None when the bins differ."""
    accuracies = {round(float(r["accuracy"]), 9) for r in bins if r["count"]}
    return next(iter(accuracies)) if len(accuracies) == 1 else None


def plot_reliability(before: list[dict], after: list[dict] | None, path: Path, title: str) -> None:
    """Reliability diagram: accuracy against confidence per bin, before (and after) scaling."""
    from hamdata.plots import new_figure, save_png

    fig = new_figure(5.5, 5)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    flat = flat_accuracy(before)
    if flat is not None:  # every bin at one accuracy (all right, or all wrong): no curve to read
        ax.text(0.5, 0.5, f"every val prediction falls in bins of accuracy {flat:.2f}:\nnothing to read calibration "
                          "from; a larger or harder\nval split (build with a larger --val) would show it",
                ha="center", va="center", fontsize=9, transform=ax.transAxes,
                bbox={"facecolor": "white", "edgecolor": "0.7"})
        before, after = [], None
    for rows, label, marker in ((before, "before", "o"), (after, "after temperature scaling", "s")):
        if rows:
            used = [r for r in rows if r["count"]]
            ax.plot([r["confidence"] for r in used], [r["accuracy"] for r in used], marker=marker, label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top class)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    save_png(fig, path)
