"""Classification metrics, the ISIC 2018 prediction CSV and the confusion matrix of an evaluation.

Everything here works on plain numpy arrays (labels as indices in CLASSES,
probabilities with one column per class in CLASSES order), so it is tested
without torch. ISIC columns are mapped by name, never by position.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support, roc_auc_score

from hamdata import runfiles
from hamdata.classes import CLASS_INDEX, CLASSES, ISIC2018_COLUMNS, isic_column
from hamdata.plots import new_figure, save_png

ISIC_HEADER = ("image",) + ISIC2018_COLUMNS


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean F1 over the classes present in the labels or the predictions (sklearn's 'macro')."""
    present = np.union1d(labels, predicted)
    _, _, f1, _ = precision_recall_fscore_support(labels, predicted, labels=present, zero_division=0)
    return float(np.mean(f1)) if len(f1) else 0.0


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present in the labels (sklearn's balanced_accuracy_score)."""
    present = np.unique(labels)
    if not len(present):
        return 0.0
    return float(np.mean([np.mean(predicted[labels == c] == c) for c in present]))


def one_vs_rest_auc(labels: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """ROC AUC of each class against the rest; None where the split lacks positives or negatives."""
    aucs = []
    for c in range(len(CLASSES)):
        positive = labels == c
        aucs.append(float(roc_auc_score(positive, probs[:, c])) if 0 < positive.sum() < len(labels) else None)
    return aucs


def classification_metrics(labels, probs) -> dict:
    """Top-level and per-class metrics of probabilities ``probs`` (n x 7) against ``labels`` (n)."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    predicted = probs.argmax(1)
    everyone = np.arange(len(CLASSES))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=everyone, zero_division=0)
    aucs = one_vs_rest_auc(labels, probs)
    defined = [a for a in aucs if a is not None]
    per_class = {
        dx: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
             "support": int(support[i]), "auc": aucs[i]}
        for i, dx in enumerate(CLASSES)
    }
    return {
        "samples": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)) if len(labels) else 0.0,
        "balanced_accuracy": balanced_accuracy(labels, predicted),
        "macro_f1": macro_f1(labels, predicted),
        "macro_auc": float(np.mean(defined)) if defined else None,
        "per_class": per_class,
        "classes_in_split": [CLASSES[c] for c in np.unique(labels)],
        "notes": "balanced_accuracy: mean recall over classes_in_split; macro_f1: mean F1 over classes "
                 "in the split or the predictions; auc: one-vs-rest, null where a class has no positives",
    }


def report_text(labels, probs) -> str:
    labels = np.asarray(labels)
    return classification_report(labels, np.asarray(probs).argmax(1), labels=np.arange(len(CLASSES)),
                                 target_names=list(CLASSES), digits=4, zero_division=0)


def isic_rows(image_ids, probs) -> list[list[str]]:
    """Rows of the ISIC 2018 Task 3 CSV: image id without extension, then probabilities by column name."""
    order = [CLASS_INDEX[dx.lower()] for dx in ISIC2018_COLUMNS]
    assert [isic_column(CLASSES[i]) for i in order] == list(ISIC2018_COLUMNS)
    rows = []
    for image_id, p in zip(image_ids, np.asarray(probs, dtype=np.float64)):
        image_id = str(image_id)
        if image_id.lower().endswith((".jpg", ".jpeg", ".png")):
            image_id = image_id.rsplit(".", 1)[0]
        rows.append([image_id] + [f"{min(max(p[i], 0.0), 1.0):.6f}" for i in order])
    return rows


def write_isic_csv(path: Path, image_ids, probs) -> None:
    ids = list(image_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate image ids in predictions")
    with open(path, "w", newline="", encoding="ascii") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(ISIC_HEADER)
        writer.writerows(isic_rows(ids, probs))


def read_isic_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """(image ids, probabilities in CLASSES order) of an ISIC 2018 CSV, mapped by column name."""
    with open(path, newline="", encoding="ascii") as handle:
        rows = list(csv.reader(handle))
    header, body = rows[0], rows[1:]
    columns = [header.index(isic_column(dx)) for dx in CLASSES]
    return [r[0] for r in body], np.array([[float(r[c]) for c in columns] for r in body]).reshape(-1, len(CLASSES))


def plot_confusion(labels, probs, path: Path, title: str) -> None:
    """Counts and row-normalised confusion matrix side by side."""
    cm = confusion_matrix(labels, np.asarray(probs).argmax(1), labels=np.arange(len(CLASSES)))
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm, dtype=float), where=rows > 0)
    fig = new_figure(12, 5.2)
    axes = fig.subplots(1, 2)
    for ax, data, name in ((axes[0], cm, "counts"), (axes[1], norm, "recall (row-normalised)")):
        ax.imshow(data, cmap="Blues", vmin=0)
        for (i, j), v in np.ndenumerate(data):
            text = f"{v:d}" if data is cm else f"{v:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if v > data.max() / 2 else "black")
        ax.set_xticks(range(len(CLASSES)), CLASSES)
        ax.set_yticks(range(len(CLASSES)), CLASSES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
    fig.suptitle(title)
    save_png(fig, path, dpi=110)


def write_evaluation(out: Path, image_ids, labels, probs, info: dict) -> dict:
    """metrics.json, classification_report.txt, confusion_matrix.png, predictions_isic2018.csv in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = {**info, **classification_metrics(labels, probs)}
    write_isic_csv(out / runfiles.PREDICTIONS, image_ids, probs)
    (out / runfiles.REPORT).write_text(report_text(labels, probs), encoding="utf-8")
    plot_confusion(labels, probs, out / runfiles.CONFUSION,
                   f"{info.get('split', '')} split: macro-F1 {metrics['macro_f1']:.3f}, balanced acc {metrics['balanced_accuracy']:.3f}")
    (out / runfiles.METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return metrics
