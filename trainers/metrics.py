"""Classification metrics, the ISIC challenge prediction CSV and the confusion matrix of an evaluation.

Everything here works on plain numpy arrays (labels as indices in the build's
class list, probabilities with one column per class in that order), so it is
tested without torch. The class list (``classes``: dataset.json's, recorded in
every checkpoint) defaults to the HAM10000 one. The CSV's columns are the ISIC
challenge's of that list (``hamdata.inputs.classes.isic_columns``: ISIC 2018 for
HAM10000, ISIC 2019 with its UNK column, predicted as 0, for isic2019); they
are mapped by name, never by position.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from hamdata import runfiles
from hamdata.inputs.classes import CLASS_SETS, CLASSES, ISIC2018_COLUMNS, UNKNOWN_COLUMN, isic_column, isic_columns
from hamdata.errors import HamdataError
from hamdata.plots import new_figure, save_png

ISIC_HEADER = ("image",) + ISIC2018_COLUMNS  # the HAM10000 header; isic_header(classes) for any class list


def isic_header(classes=CLASSES) -> tuple[str, ...]:
    """The header row of the ISIC CSV of a class list."""
    return ("image",) + isic_columns(classes)


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean F1 over the classes present in the labels or the predictions (sklearn's 'macro'). In numpy: every
    epoch's validation calls it, and scikit-learn's import (~1 s) waits for the final evaluation."""
    f1 = class_f1(labels, predicted)
    f1 = f1[~np.isnan(f1)]
    return float(np.mean(f1)) if len(f1) else 0.0


def class_f1(labels, predicted, n_classes: int = 0) -> np.ndarray:
    """F1 of each class index 0 .. max(n_classes, the largest label or prediction + 1) - 1; nan for a class in
    neither the labels nor the predictions."""
    labels, predicted = np.asarray(labels, dtype=np.int64).ravel(), np.asarray(predicted, dtype=np.int64).ravel()
    n = max(int(n_classes), int(max(labels.max(initial=-1), predicted.max(initial=-1))) + 1)
    true, said = np.bincount(labels, minlength=n), np.bincount(predicted, minlength=n)
    return f1_of_counts(true, said, np.bincount(labels[labels == predicted], minlength=n))


def f1_of_counts(true, said, hit) -> np.ndarray:
    """Per-class F1 from (possibly weighted) counts along the last axis: images of the class, images predicted as
    it, and both. 2 tp / (2 tp + fp + fn) = 2 hit / (true + said); nan where true + said is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(true + said > 0, 2 * hit / (true + said), np.nan)


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes present in the labels (sklearn's balanced_accuracy_score)."""
    present = np.unique(labels)
    if not len(present):
        return 0.0
    return float(np.mean([np.mean(predicted[labels == c] == c) for c in present]))


def one_vs_rest_auc(labels: np.ndarray, probs: np.ndarray) -> list[float | None]:
    """ROC AUC of each class against the rest; None where the split lacks positives or negatives."""
    from sklearn.metrics import roc_auc_score

    aucs = []
    for c in range(np.asarray(probs).shape[1]):
        positive = labels == c
        aucs.append(float(roc_auc_score(positive, probs[:, c])) if 0 < positive.sum() < len(labels) else None)
    return aucs


MIN_TPR = 0.80  # ISIC 2024's partial AUC: the area of the ROC curve above 80% true-positive rate
FIXED_SPECIFICITIES = (0.90, 0.95)


def partial_auc_above_tpr(positive, scores, min_tpr: float = MIN_TPR) -> float | None:
    """The ISIC 2024 challenge's score: the area under the ROC curve above ``min_tpr`` true-positive rate, in
    0 .. 1 - min_tpr (0.2: perfect; 0.02: scores that tell nothing). As the challenge's Kaggle metric computes
    it: labels and scores flipped, scikit-learn's McClish-standardised AUC up to FPR = 1 - min_tpr, rescaled back
    to the plain area. None when the labels hold one class only."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return None
    from sklearn.metrics import roc_auc_score

    max_fpr = abs(1 - min_tpr)
    scaled = roc_auc_score(~positive, -np.asarray(scores, dtype=np.float64), max_fpr=max_fpr)
    return float(0.5 * max_fpr ** 2 + (max_fpr - 0.5 * max_fpr ** 2) / (1.0 - 0.5) * (scaled - 0.5))


def sensitivity_at_specificity(positive, scores, specificity: float) -> float | None:
    """The highest true-positive rate among the thresholds whose specificity is at least ``specificity``
    (a point of the ROC curve, no interpolation); None when the labels hold one class only."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return None
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(positive, np.asarray(scores, dtype=np.float64))
    return float(tpr[fpr <= 1 - specificity + 1e-12].max())


def classification_metrics(labels, probs, classes=CLASSES) -> dict:
    """Top-level and per-class metrics of probabilities ``probs`` (n x len(classes)) against ``labels`` (n)."""
    classes = tuple(classes)
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise ValueError(f"probabilities of shape {probs.shape} for {len(classes)} classes")
    from sklearn.metrics import precision_recall_fscore_support

    predicted = probs.argmax(1)
    everyone = np.arange(len(classes))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predicted, labels=everyone, zero_division=0)
    aucs = one_vs_rest_auc(labels, probs)
    defined = [a for a in aucs if a is not None]
    per_class = {
        dx: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
             "support": int(support[i]), "auc": aucs[i]}
        for i, dx in enumerate(classes)
    }
    first = {}
    if len(classes) == 2:  # a two-class set is read by its AUC first (ISIC 2020): P(second class) as the score
        positive = labels == 1
        first = {"auc": aucs[1], "pauc_80": partial_auc_above_tpr(positive, probs[:, 1]),
                 **{f"sensitivity_at_specificity_{s:.2f}": sensitivity_at_specificity(positive, probs[:, 1], s)
                    for s in FIXED_SPECIFICITIES}}
    return {
        **first,
        "samples": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)) if len(labels) else 0.0,
        "balanced_accuracy": balanced_accuracy(labels, predicted),
        "macro_f1": macro_f1(labels, predicted),
        "macro_auc": float(np.mean(defined)) if defined else None,
        "per_class": per_class,
        "classes_in_split": [classes[c] for c in np.unique(labels)],
        "notes": "balanced_accuracy: mean recall over classes_in_split; macro_f1: mean F1 over classes "
                 "in the split or the predictions; auc: one-vs-rest, null where a class has no positives",
    }


SMALL_CLASS = 10  # a class with fewer images than this in a split is flagged wherever its figures are shown
BOOTSTRAP = 1000  # resamples of the lesions for the intervals of macro-F1 and balanced accuracy


def lesion_index(lesions) -> tuple[np.ndarray, int]:
    """The lesion of each image as an index 0..count-1 (by sorted lesion id), and the count."""
    _, index = np.unique(np.asarray(lesions, dtype=object).astype(str), return_inverse=True)
    return index, (int(index.max()) + 1 if len(index) else 0)


def lesion_resamples(count: int, seed: int, resamples: int = BOOTSTRAP, chunk: int = 100):
    """Bootstrap weights of `count` lesions drawn with replacement: (rows, count) arrays, `chunk` resamples at a
    time (bounded memory at ISIC 2024's 60,000 test lesions), `resamples` rows in all, from one seeded stream."""
    rng = np.random.default_rng(seed)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        draws = rng.integers(0, count, size=(rows, count)) + (np.arange(rows) * count)[:, None]
        yield np.bincount(draws.ravel(), minlength=rows * count).reshape(rows, count).astype(np.float64)


def lesion_intervals(labels, predicted, lesions, n_classes: int, seed: int = 0, resamples: int = BOOTSTRAP) -> dict:
    """Bootstrap 95% intervals of macro-F1 and balanced accuracy over lesions (the images of a lesion are not
    independent): the lesions drawn with replacement, each figure recomputed as classification_metrics defines it
    (balanced accuracy: mean recall over the classes in the labels; macro-F1: mean F1 over the classes in the
    labels or the predictions). {"macro_f1_ci95": [low, high], "balanced_accuracy_ci95": [low, high]}."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    lesion, count = lesion_index(lesions)
    if count < 2:
        return {"macro_f1_ci95": None, "balanced_accuracy_ci95": None}
    true = np.zeros((count, n_classes))
    hit = np.zeros((count, n_classes))
    said = np.zeros((count, n_classes))
    np.add.at(true, (lesion, labels), 1)
    np.add.at(said, (lesion, predicted), 1)
    np.add.at(hit, (lesion[labels == predicted], labels[labels == predicted]), 1)
    f1s, bas = [], []
    for weights in lesion_resamples(count, seed, resamples):
        t, h, p = weights @ true, weights @ hit, weights @ said
        with np.errstate(invalid="ignore", divide="ignore"):
            bas.append(np.nanmean(np.where(t > 0, h / t, np.nan), axis=1))
            f1s.append(np.nanmean(f1_of_counts(t, p, h), axis=1))
    return {"macro_f1_ci95": [float(v) for v in np.percentile(np.concatenate(f1s), [2.5, 97.5])],
            "balanced_accuracy_ci95": [float(v) for v in np.percentile(np.concatenate(bas), [2.5, 97.5])]}


def small_classes(labels, classes) -> dict[str, int]:
    """The classes with fewer than SMALL_CLASS images among `labels` (0 included), with their counts."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(classes))
    return {dx: int(counts[i]) for i, dx in enumerate(classes) if counts[i] < SMALL_CLASS}


def headline(metrics: dict) -> str:
    """The figures a person reads first: the AUC for a two-class set (ISIC 2020's reading), then macro-F1,
    balanced accuracy (each with its bootstrap interval over lesions, where known) and accuracy; then a flag for
    the classes with fewer than SMALL_CLASS images."""
    auc = metrics.get("auc")
    first = f"AUC {auc:.3f}, " if isinstance(auc, float) else ("AUC n/a, " if "auc" in metrics else "")
    pauc = metrics.get("pauc_80")
    first += f"pAUC>80%TPR {pauc:.4f}, " if isinstance(pauc, float) else ""

    def interval(name: str) -> str:
        ci = metrics.get(f"{name}_ci95")
        return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""

    text = (f"{first}macro-F1 {metrics['macro_f1']:.3f}{interval('macro_f1')}, balanced acc "
            f"{metrics['balanced_accuracy']:.3f}{interval('balanced_accuracy')}, accuracy {metrics['accuracy']:.3f}")
    small = metrics.get("small_classes")
    if small:
        text += (f" (few images: {', '.join(f'{dx} {n}' for dx, n in small.items())}; under {SMALL_CLASS} a class's "
                 f"figures swing with one image)")
    return text


def report_text(labels, probs, classes=CLASSES) -> str:
    from sklearn.metrics import classification_report

    labels = np.asarray(labels)
    return classification_report(labels, np.asarray(probs).argmax(1), labels=np.arange(len(classes)),
                                 target_names=list(classes), digits=4, zero_division=0)


def _column_sources(classes) -> list[int | None]:
    """For each ISIC column of ``classes``, the index of its class (None: UNK, which no class of the list holds)."""
    index = {isic_column(dx): i for i, dx in enumerate(classes)}
    sources = [index.get(column) for column in isic_columns(classes)]
    assert all(s is not None or c == UNKNOWN_COLUMN for s, c in zip(sources, isic_columns(classes)))
    return sources


def isic_rows(image_ids, probs, classes=CLASSES) -> list[list[str]]:
    """Rows of the ISIC CSV: image id without extension, then probabilities by column name (UNK: 0)."""
    order = _column_sources(tuple(classes))
    rows = []
    for image_id, p in zip(image_ids, np.asarray(probs, dtype=np.float64)):
        image_id = str(image_id)
        if image_id.lower().endswith((".jpg", ".jpeg", ".png")):
            image_id = image_id.rsplit(".", 1)[0]
        rows.append([image_id] + [f"{min(max(p[i], 0.0), 1.0) if i is not None else 0.0:.6f}" for i in order])
    return rows


def write_isic_csv(path: Path, image_ids, probs, classes=CLASSES) -> None:
    ids = list(image_ids)
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate image ids in predictions")
    with open(path, "w", newline="", encoding="ascii") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(isic_header(classes))
        writer.writerows(isic_rows(ids, probs, classes))


def read_isic_csv(path: Path, classes=None) -> tuple[list[str], np.ndarray]:
    """(image ids, probabilities in the order of ``classes``) of an ISIC CSV, its columns mapped by name.

    classes: default, the known class list whose ISIC columns the header names (UNK is read past).
    """
    with open(path, newline="", encoding="ascii") as handle:
        rows = list(csv.reader(handle))
    header, body = (rows[0] if rows else []), rows[1:]
    if classes is None:
        named = set(header[1:])
        classes = next((members for members in CLASS_SETS.values() if set(isic_columns(members)) == named), None)
        if classes is None:
            raise HamdataError(f"{path}: header {','.join(header)} names the columns of no known class list")
    missing = [c for c in isic_columns(classes) if c != UNKNOWN_COLUMN and c not in header]
    if missing:
        raise HamdataError(f"{path}: no column {', '.join(missing)} (expected {','.join(isic_header(classes))})")
    if tuple(classes) == CLASS_SETS["malignancy"]:  # image,target: P(malignant), P(benign) = 1 - target
        target = header.index(isic_column("malignant"))
        probs = np.array([float(r[target]) for r in body]).reshape(-1, 1)
        return [r[0] for r in body], np.hstack([1.0 - probs, probs])
    columns = [header.index(isic_column(dx)) for dx in classes]
    return [r[0] for r in body], np.array([[float(r[c]) for c in columns] for r in body]).reshape(-1, len(classes))


def confusion_counts(labels, probs, classes=CLASSES) -> np.ndarray:
    """The len(classes) x len(classes) confusion matrix (rows: true class, columns: predicted)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(labels, np.asarray(probs).argmax(1), labels=np.arange(len(classes)))


def plot_confusion(labels, probs, path: Path, title: str, classes=CLASSES) -> None:
    """Counts and row-normalised confusion matrix side by side."""
    classes = list(classes)
    cm = confusion_counts(labels, probs, classes)
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
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
    fig.suptitle(title)
    # tight_layout's margins, measured for class names of 5, 9 and 20 characters: one draw of the figure less
    # (~0.34 s -> 0.23 a figure, written at the end of every run and evaluation)
    longest = max(len(c) for c in classes)
    fig.subplots_adjust(left=0.03 + 0.0065 * longest, right=0.988, bottom=0.115, top=0.87, wspace=0.02 + 0.019 * longest)
    save_png(fig, path, dpi=110, tight=False)


def write_evaluation(out: Path, image_ids, labels, probs, info: dict, classes=CLASSES, lesions=None) -> dict:
    """metrics.json, classification_report.txt, confusion_matrix.png and the ISIC CSV (runfiles.PREDICTIONS) in ``out``.
    lesions: the lesion of each image, for the bootstrap intervals of macro-F1 and balanced accuracy."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = {**info, **classification_metrics(labels, probs, classes), "small_classes": small_classes(labels, classes)}
    if lesions is not None:
        metrics.update(lesion_intervals(labels, np.asarray(probs).argmax(1), lesions, len(classes)))
    write_isic_csv(out / runfiles.PREDICTIONS, image_ids, probs, classes)
    (out / runfiles.REPORT).write_text(report_text(labels, probs, classes), encoding="utf-8")
    plot_confusion(labels, probs, out / runfiles.CONFUSION,
                   f"{info.get('split', '')} split: macro-F1 {metrics['macro_f1']:.3f}, balanced acc {metrics['balanced_accuracy']:.3f}",
                   classes)
    (out / runfiles.METRICS).write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return metrics
