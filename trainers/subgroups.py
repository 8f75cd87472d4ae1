"""Figures per subgroup (`evaluate --by FIELD`, `ensemble --by FIELD`): where a model fails, not only how often.

Dermatology models lose most of their accuracy on images from a source they did not train on, on rare sites and
on some ages; reviewers and the clinical checklists for medical AI ask for figures per subgroup. A field is
``collection``, ``site``, ``sex``, ``age`` (bands of 15 years, and ``unknown``), ``image_type`` (builds of inputs
that name image types), or any other field the build's samples carry (``dx_type``, ``localization``, ...).

Per group: the images, lesions and images of each class; accuracy; balanced accuracy and macro-F1 over the
classes with at least MIN_PER_CLASS images in the group; the recall of each such class; the AUC (two classes:
P(second class), both classes at least MIN_PER_CLASS; more: the mean one-vs-rest AUC of the classes with at
least MIN_PER_CLASS images in and out of the class). A figure without enough images is None (``n/a`` in the CSV
and on the page), never a number computed from nothing. Balanced accuracy carries a bootstrap 95% interval over
the group's lesions (BOOTSTRAP resamples, seeded): the images of one lesion are not independent, and a 30-image
group must not look as certain as a 3,000-image one. The figures follow the probabilities they are given: under
``--by-lesion``, the lesion-voted ones, as the overall figures.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from hamdata.errors import HamdataError
from hamdata.store.card import Build
from hamdata.store.shards import TAR_ERRORS, iter_members, tar_error_detail

from .metrics import class_f1, lesion_index, lesion_resamples

BUILT_IN = ("collection", "site", "sex", "age", "image_type")
AGE_BAND = 15  # years per age band
MIN_PER_CLASS = 2  # images of a class a group needs for a figure of that class
BOOTSTRAP = 1000  # resamples of the lesions for the balanced-accuracy interval
UNKNOWN = "unknown"
_NOT_FIELDS = ("image_id", "split", "source", "parent", "recipe", "features", "lesion_id", "group", "patient_id",
               "file_id", "input")
MAX_GROUPS = 50  # a field with more distinct values is not a subgroup but an identifier or a measurement


def parse_by(text: str | None) -> tuple[str, ...]:
    """--by FIELD[,FIELD] as a tuple of field names (empty: no --by)."""
    if text is None:
        return ()
    fields = tuple(dict.fromkeys(f.strip() for f in str(text).split(",") if f.strip()))
    if not fields:
        raise HamdataError(f"--by: no field given: expected a comma-separated list of {', '.join(BUILT_IN)} or "
                           f"another field of the build's samples")
    return fields


def age_band(age) -> str:
    """The 15-year band of an age ("45-59"), or "unknown"."""
    if age is None or (isinstance(age, float) and math.isnan(age)):
        return UNKNOWN
    low = int(float(age) // AGE_BAND) * AGE_BAND
    return f"{low}-{low + AGE_BAND - 1}"


def split_records(build: Build, split: str) -> dict[str, dict]:
    """The sample json of every image of a split of the build, by image id."""
    import json

    records = {}
    for path in build.shard_paths(split):
        try:
            for member in iter_members(path, read=lambda key, ext: ext == "json"):
                if member.ext == "json":
                    record = json.loads(member.data)
                    records[record.get("image_id", member.key)] = record
        except TAR_ERRORS as exc:
            raise HamdataError(f"{path}: cannot read shard ({tar_error_detail(exc)}); run `verify {build.path}`") from None
    return records


def _value(record: dict, field: str) -> str:
    if field == "age":
        return age_band(record.get("age"))
    value = record.get(field)
    if value is None or value == "":
        return UNKNOWN
    return str(value)


def group_values(build: Build, split: str, fields: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """{field: {image id: its group}} for the images of a split; one clear line for a field the build does not
    carry (checked before anything is predicted)."""
    records = split_records(build, split)
    if not records:
        raise HamdataError(f"{build.path}: the {split} split has no samples to group")
    carried = sorted({k for r in records.values() for k, v in r.items()
                      if k not in _NOT_FIELDS and not isinstance(v, (dict, list))} | {"age"})
    out = {}
    for field in fields:
        if field not in carried:
            if field in BUILT_IN:
                raise HamdataError(f"--by {field}: the samples of {build} do not carry {field} (a build made before "
                                   f"hamdata wrote it, or of inputs without it): rebuild it, or choose one of "
                                   f"{', '.join(carried)}")
            raise HamdataError(f"--by {field}: unknown field: expected one of {', '.join(carried)}")
        values = {image_id: _value(record, field) for image_id, record in records.items()}
        distinct = len(set(values.values()))
        if distinct > MAX_GROUPS:
            raise HamdataError(f"--by {field}: {distinct} distinct values in the {split} split: a subgroup field has "
                               f"at most {MAX_GROUPS} (a measurement or an identifier is not one)")
        out[field] = values
    return out


def in_order(groups: dict[str, dict[str, str]], image_ids, build: Path, split: str) -> dict[str, list[str]]:
    """The groups of group_values in the order of the predictions' image ids."""
    out = {}
    for field, values in groups.items():
        missing = [i for i in image_ids if i not in values]
        if missing:
            raise HamdataError(f"{build}: no sample json for image {missing[0]} of the {split} split; run `verify {build}`")
        out[field] = [values[i] for i in image_ids]
    return out


# ------------------------------------------------------------------ figures


def _recalls(labels: np.ndarray, predicted: np.ndarray, classes: list[int]) -> dict[int, float]:
    return {c: float(np.mean(predicted[labels == c] == c)) for c in classes}


def _macro_f1(labels: np.ndarray, predicted: np.ndarray, classes: list[int]) -> float:
    """Mean F1 over ``classes`` (a class in neither the labels nor the predictions counts 0)."""
    f1 = class_f1(labels, predicted, max(classes) + 1)
    return float(np.mean(np.nan_to_num(f1[list(classes)], nan=0.0)))


def _auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by ranks (ties count half): the Mann-Whitney U statistic over both classes' sizes."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _group_auc(labels: np.ndarray, probs: np.ndarray, n_classes: int) -> float | None:
    if n_classes == 2:
        pos = labels == 1
        if pos.sum() >= MIN_PER_CLASS and (~pos).sum() >= MIN_PER_CLASS:
            return _auc(pos, probs[:, 1])
        return None
    aucs = [_auc(labels == c, probs[:, c]) for c in range(n_classes)
            if (labels == c).sum() >= MIN_PER_CLASS and (labels != c).sum() >= MIN_PER_CLASS]
    return float(np.mean(aucs)) if aucs else None


def bootstrap_balanced_accuracy(labels: np.ndarray, predicted: np.ndarray, lesions: list[str], classes: list[int],
                                seed: int, resamples: int = BOOTSTRAP) -> list[float] | None:
    """The 2.5th and 97.5th percentiles of the balanced accuracy (mean recall over `classes`) when the group's
    lesions are drawn with replacement; None for a group of one lesion or without classes."""
    if not classes:
        return None
    lesion, count = lesion_index(lesions)
    if count < 2:
        return None
    totals = np.zeros((count, len(classes)))
    right = np.zeros((count, len(classes)))
    for k, c in enumerate(classes):
        np.add.at(totals[:, k], lesion[labels == c], 1)
        np.add.at(right[:, k], lesion[(labels == c) & (predicted == c)], 1)
    values = []
    for weights in lesion_resamples(count, seed, resamples):
        seen, hit = weights @ totals, weights @ right
        with np.errstate(invalid="ignore", divide="ignore"):
            recall = np.where(seen > 0, hit / np.where(seen > 0, seen, 1), np.nan)
        drawn = ~np.isnan(recall).all(axis=1)  # a resample without any of the classes has no figure: left out
        if drawn.any():
            values.append(np.nanmean(recall[drawn], axis=1))
    if not values:
        return None
    low, high = np.percentile(np.concatenate(values), [2.5, 97.5])
    return [float(low), float(high)]


def group_figures(labels, probs, values: list[str], lesions: list[str], class_names, seed: int = 0) -> list[dict]:
    """One row per group (sorted by name, ``unknown`` last); see the module docstring for each figure."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    predicted = probs.argmax(1)
    values = np.asarray(values, dtype=object)
    lesions = np.asarray(lesions, dtype=object)
    names = sorted(set(values.tolist()), key=lambda v: (v == UNKNOWN, v))
    rows = []
    for index, name in enumerate(names):
        here = values == name
        y, p, yhat = labels[here], probs[here], predicted[here]
        counts = np.bincount(y, minlength=len(class_names))
        enough = [c for c in range(len(class_names)) if counts[c] >= MIN_PER_CLASS]
        recalls = _recalls(y, yhat, enough)
        rows.append({
            "group": name,
            "images": int(here.sum()),
            "lesions": int(len(set(lesions[here].tolist()))),
            "counts": {dx: int(counts[c]) for c, dx in enumerate(class_names)},
            "accuracy": float(np.mean(yhat == y)) if len(y) >= MIN_PER_CLASS else None,
            "balanced_accuracy": float(np.mean(list(recalls.values()))) if enough else None,
            "balanced_accuracy_ci95": bootstrap_balanced_accuracy(y, yhat, lesions[here].tolist(), enough,
                                                                  seed=seed * 1000 + index),
            "macro_f1": _macro_f1(y, yhat, enough) if enough else None,
            "recall": {dx: recalls.get(c) for c, dx in enumerate(class_names)},
            "auc": _group_auc(y, p, len(class_names)),
        })
    return rows


# ------------------------------------------------------------------ outputs


def csv_name(field: str) -> str:
    return f"by_{field}.csv"


def plot_name(field: str) -> str:
    return f"by_{field}.png"


def _cell(value) -> str:
    return "n/a" if value is None else (f"{value:.10g}" if isinstance(value, float) else str(value))


def write_csv(path: Path, field: str, rows: list[dict], class_names) -> None:
    header = (["field", "group", "images", "lesions"] + [f"n_{dx}" for dx in class_names]
              + ["accuracy", "balanced_accuracy", "balanced_accuracy_ci_low", "balanced_accuracy_ci_high", "macro_f1"]
              + [f"recall_{dx}" for dx in class_names] + ["auc"])
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for r in rows:
            ci = r["balanced_accuracy_ci95"] or [None, None]
            writer.writerow([field, r["group"], r["images"], r["lesions"], *(r["counts"][dx] for dx in class_names),
                             *(_cell(v) for v in (r["accuracy"], r["balanced_accuracy"], ci[0], ci[1], r["macro_f1"])),
                             *(_cell(r["recall"][dx]) for dx in class_names), _cell(r["auc"])])


def plot_groups(path: Path, field: str, rows: list[dict], title: str) -> None:
    """Balanced accuracy per group with its bootstrap 95% interval; groups without a figure are named, not drawn."""
    from hamdata.plots import DPI, new_figure

    shown = [r for r in rows if r["balanced_accuracy"] is not None]
    fig = new_figure(7.0, 1.2 + 0.45 * max(len(rows), 1))
    ax = fig.add_subplot()
    for y, r in enumerate(rows):
        label = f"{r['group']} ({r['images']})"
        ax.text(-0.02, y, label, ha="right", va="center", fontsize=9, transform=ax.get_yaxis_transform())
        if r["balanced_accuracy"] is None:
            ax.text(0.02, y, "n/a: fewer than 2 images of every class", va="center", fontsize=8, color="0.4")
            continue
        ci = r["balanced_accuracy_ci95"]
        if ci:
            ax.plot(ci, [y, y], color="tab:blue", linewidth=2, alpha=0.5)
        ax.plot([r["balanced_accuracy"]], [y], "o", color="tab:blue")
    ax.set_yticks([])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.set_xlabel("balanced accuracy (dot), bootstrap 95% interval over lesions (bar)", fontsize=9)
    ax.set_title(f"{title} by {field}" + ("" if shown else ": no group large enough"), fontsize=10)
    fig.subplots_adjust(left=0.3)
    fig.savefig(path, dpi=DPI, format="png")


def write_subgroups(out: Path, labels, probs, groups: dict[str, list[str]], lesions: list[str], class_names,
                    title: str) -> dict:
    """metrics.json's ``by``: {field: rows}; a CSV and a plot per field in `out`."""
    by = {}
    for field, values in groups.items():
        rows = group_figures(labels, probs, values, lesions, list(class_names))
        write_csv(out / csv_name(field), field, rows, list(class_names))
        plot_groups(out / plot_name(field), field, rows, title)
        by[field] = rows
    return by


def subgroup_lines(field: str, rows: list[dict]) -> str:
    """The terminal's table of one --by field: images, balanced accuracy and its interval, macro-F1, AUC."""
    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    width = max([len(r["group"]) for r in rows] + [len(field)])
    lines = [f"  by {field}:", f"    {'group':<{width}}  images  bal.acc [95% interval]  macro-F1    AUC"]
    for r in rows:
        ci = r["balanced_accuracy_ci95"]
        interval = f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"
        lines.append(f"    {r['group']:<{width}}  {r['images']:>6}  {f(r['balanced_accuracy']):>7} {interval:<16}"
                     f"  {f(r['macro_f1']):>8}  {f(r['auc']):>5}")
    return "\n".join(lines)
