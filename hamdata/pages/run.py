"""The report sections of a training run folder (see hamdata.report).

A run folder is whatever the trainers wrote: config.json, metrics.jsonl (one
line per epoch), metrics.json, confusion_matrix.png, classification_report.txt,
predictions_isic2018.csv, gradcam/*.png and checkpoints (named in
hamdata.runfiles). Each part is optional: an evaluation folder has no history,
a run still training has no metrics.json, and the page says what is missing
instead of failing. Nothing here imports torch.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hamdata.pages import html as h
from hamdata import runfiles as rf
from hamdata.inputs.classes import CLASS_NAMES
from hamdata.plots import plot_history

PER_CLASS_COLUMNS = ("precision", "recall", "f1", "support", "auc")


def is_run(folder: Path) -> bool:
    return any((Path(folder) / name).is_file() for name in rf.RUN_MARKERS)


def run_sections(folder: Path, report_name: str = "report.html") -> list[h.Section]:
    """Metrics, curves, confusion matrix, Grad-CAM gallery, configuration and file list of a run."""
    folder = Path(folder)
    config, config_problem = read_json(folder / rf.CONFIG)
    metrics, metrics_problem = read_json(folder / rf.METRICS)
    history, bad = read_history(folder / rf.HISTORY)
    ensemble, ensemble_problem = read_json(folder / rf.ENSEMBLE)
    problems = [p for p in (config_problem, metrics_problem, ensemble_problem) if p]
    sections = [_metrics_section(folder, metrics, problems)]
    if ensemble:
        sections.append(_ensemble_section(ensemble, metrics or {}))
    else:
        sections.append(_curves_section(folder, history, bad))
    if (metrics or {}).get("by"):
        sections.append(_subgroups_section(folder, metrics))
    sections += [_calibration_section(folder, metrics or {}), _confusion_section(folder)]
    # Sections with nothing to show are left out: an evaluation folder has no Grad-CAM images and no config.json.
    if _gradcam_paths(folder):
        sections.append(_gradcam_section(folder))
    if config:
        sections.append(_config_section(config))
    return sections + [_files_section(folder, report_name)]


def read_json(path: Path) -> tuple[dict | None, str]:
    """A JSON object file, or None and why not ("" when the file is simply absent)."""
    if not path.is_file():
        return None, ""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path}: unreadable ({exc.__class__.__name__})"
    return (value, "") if isinstance(value, dict) else (None, f"{path}: not a JSON object")


def read_history(path: Path) -> tuple[list[dict], int]:
    """metrics.jsonl lines that parse as objects, and how many did not (a line being written)."""
    history, bad = [], 0
    if path.is_file():
        for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                value = json.loads(text)
            except ValueError:
                bad += bool(text.strip())
                continue
            if isinstance(value, dict):
                history.append(value)
            else:
                bad += 1
    return history, bad


def _metrics_section(folder: Path, metrics: dict | None, problems: list[str]) -> h.Section:
    section = h.Section("metrics", "Metrics").add(*[h.note(p) for p in problems])
    if metrics:
        headline = [(k, metrics.get(k)) for k in ("split", "samples", "auc", "pauc_80", "sensitivity_at_specificity_0.90",
                                                   "sensitivity_at_specificity_0.95", "accuracy", "balanced_accuracy", "macro_f1",
                                                   "macro_auc", "checkpoint", "epoch", "tta", "by_lesion", "csv_holds")
                    if k in metrics]
        if isinstance(metrics.get("image_level"), dict):
            headline += [(f"image-level {k}", v) for k, v in metrics["image_level"].items()]
        section.add(h.facts(headline))
        per_class = metrics.get("per_class") if isinstance(metrics.get("per_class"), dict) else {}
        columns = sorted({c for v in per_class.values() if isinstance(v, dict) for c in v},
                         key=lambda c: (PER_CLASS_COLUMNS.index(c) if c in PER_CLASS_COLUMNS else len(PER_CLASS_COLUMNS), c))
        if columns:
            rows = [[dx, *[(per_class.get(dx) or {}).get(c) for c in columns]] for dx in per_class]
            section.add(h.table(["class", *columns], rows))
        if metrics.get("notes"):
            section.add(h.muted(metrics["notes"]))
    else:
        section.add(h.muted(f"no {rf.METRICS} in this folder: the run has not been evaluated yet"))
    report = folder / rf.REPORT
    if report.is_file():
        text = report.read_text(encoding="utf-8", errors="replace")
        section.add("<h3>Classification report</h3>", f"<pre>{h.esc(text)}</pre>")
    return section


def _curves_section(folder: Path, history: list[dict], bad: int) -> h.Section:
    section = h.Section("curves", "Training curves")
    if bad:
        section.add(h.note(f"{rf.HISTORY}: {bad} lines are not JSON objects (a run still being written?); they are left out"))
    fig = plot_history(history)
    if fig is not None:
        section.add(f'<div class="plots wide">{h.img(h.figure_uri(fig), "training curves")}</div>')
        keys = ["epoch"] + sorted({k for line in history for k in line} - {"epoch"})
        section.add(h.table(keys, [[line.get(k) for k in keys] for line in history], h.MAX_ROWS))
    elif (folder / rf.CURVES).is_file():
        section.add(f'<div class="plots wide">{h.embed_file(folder / rf.CURVES, rf.CURVES)}</div>')
    else:
        section.add(h.muted(f"no training history ({rf.HISTORY}) in this folder: an evaluation folder?"))
    return section


def _ensemble_section(ensemble: dict, metrics: dict) -> h.Section:
    """Every member's score on the split beside the ensemble's, with its weight and the selection."""
    section = h.Section("ensemble", "Ensemble members")
    keys = ("macro_f1", "balanced_accuracy", "accuracy", "macro_auc")
    rows = [[m.get("name"), m.get("arch"), m.get("image_size"), m.get("metadata"), m.get("temperature"), m.get("weight"),
             *[(m.get("scores") or {}).get(k) for k in keys]] for m in ensemble.get("members", [])]
    rows.append(["ensemble", "", "", "", ensemble.get("temperature"), 1.0, *[metrics.get(k) for k in keys]])
    section.add(h.table(["member", "arch", "image size", "metadata", "temperature", "weight", *keys], rows))
    if ensemble.get("selection"):
        sel = ensemble["selection"]
        section.add(h.muted(f"greedy forward selection on the val split by macro-F1 (repeats allowed): "
                            f"kept {sel.get('rounds_kept')} of {len(sel.get('trace', []))} rounds; val macro-F1 per round "
                            + ", ".join(f"{v:.3f}" for v in sel.get("trace", []))))
    if ensemble.get("by_lesion"):
        section.add(h.muted("all scores are lesion-voted (each image carries its lesion's mean probabilities); "
                            "do not compare them with image-level figures"))
    return section


def _subgroups_section(folder: Path, metrics: dict) -> h.Section:
    """evaluate/ensemble --by: a table per field (n/a where a group has too few images of a class) and its plot."""
    section = h.Section("subgroups", "Figures per subgroup")
    section.add(h.muted("balanced accuracy and macro-F1 over the classes with at least 2 images in the group; the "
                        "interval: 2.5th to 97.5th percentile of 1,000 resamples of the group's lesions; n/a: too "
                        "few images for the figure"))
    for field, rows in metrics["by"].items():
        body = []
        for r in rows:
            ci = r.get("balanced_accuracy_ci95")
            body.append([r.get("group"), r.get("images"), r.get("lesions"),
                         ", ".join(f"{dx} {n}" for dx, n in (r.get("counts") or {}).items() if n),
                         *("n/a" if v is None else v for v in (r.get("accuracy"), r.get("balanced_accuracy"))),
                         f"{ci[0]:.3f} to {ci[1]:.3f}" if ci else "n/a",
                         *("n/a" if v is None else v for v in (r.get("macro_f1"), r.get("auc"))),
                         ", ".join(f"{dx} {v:.2f}" for dx, v in (r.get("recall") or {}).items() if v is not None)
                         or "n/a"])
        section.add(f"<h3>by {h.esc(field)}</h3>")
        section.add(h.table(["group", "images", "lesions", "images per class", "accuracy", "balanced accuracy",
                             "95% interval", "macro-F1", "AUC", "recall per class (classes with 2 images or more)"],
                            body))
        plot = folder / f"by_{field}.png"
        if plot.is_file():
            section.add(f'<div class="plots wide">{h.embed_file(plot, f"balanced accuracy by {field}")}</div>')
    return section


def _calibration_section(folder: Path, metrics: dict) -> h.Section:
    section = h.Section("calibration", "Calibration")
    calibration = metrics.get("calibration")
    if not isinstance(calibration, dict):
        return section.add(h.muted("not calibrated (evaluate --calibrate or ensemble --calibrate fit a temperature)"))
    section.add(h.facts([(k, calibration.get(k)) for k in ("temperature", "fitted_on", "val_nll_before", "val_nll_after",
                                                            "val_ece_before", "val_ece_after", "bins")]))
    if (folder / rf.RELIABILITY).is_file():
        section.add(f'<div class="plots">{h.embed_file(folder / rf.RELIABILITY, "reliability diagram (val split)")}</div>')
    return section


def _confusion_section(folder: Path) -> h.Section:
    section = h.Section("confusion", "Confusion matrix")
    path = folder / rf.CONFUSION
    if path.is_file():
        return section.add(f'<div class="plots wide">{h.embed_file(path, "confusion matrix")}</div>')
    return section.add(h.muted(f"no {rf.CONFUSION} in this folder"))


def _gradcam_paths(folder: Path) -> list[Path]:
    return sorted((folder / rf.GRADCAM).glob("**/*.png")) + sorted(folder.glob(f"*{rf.GRADCAM}*.png"))


def _gradcam_section(folder: Path) -> h.Section:
    section = h.Section("gradcam", "Grad-CAM gallery")
    paths = _gradcam_paths(folder)
    return section.add(f'<div class="plots">{"".join(h.embed_file(p, gradcam_caption(p.stem)) for p in paths)}</div>')


def gradcam_caption(stem: str) -> str:
    """``akiec_correct_ISIC_1`` -> ``true akiec, correct: ISIC_1`` (runfiles.gradcam_name, without .png); the
    class may be one of any class set (the run's own list is not needed to read its file names)."""
    parts = stem.split("_", 2)
    if len(parts) == 3 and parts[0] in CLASS_NAMES:
        return f"true {parts[0]}, {parts[1]}: {parts[2]}"
    return stem


def _config_section(config: dict) -> h.Section:
    section = h.Section("run", "Run")
    train = config.get("config") if isinstance(config.get("config"), dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    versions = config.get("versions") if isinstance(config.get("versions"), dict) else {}
    facts = [("recipe", train.get("recipe")), ("architecture", config.get("arch") or train.get("arch")),
             ("train set", data.get("train_set")), ("build", data.get("build")), ("device", config.get("device")),
             ("world size", config.get("world_size")), ("epochs", train.get("epochs")), ("batch size", train.get("batch_size")),
             ("learning rate", train.get("lr")), ("image size", data.get("image_size") or train.get("image_size")),
             ("seed", train.get("seed")), ("note", config.get("train_set_note")),
             ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()))]
    return section.add(h.facts(facts), h.details(f"{rf.CONFIG} as written", json.dumps(config, indent=2, sort_keys=True)))


def _files_section(folder: Path, report_name: str) -> h.Section:
    section = h.Section("files", "Files")
    predictions = folder / rf.PREDICTIONS
    if predictions.is_file():
        with open(predictions, newline="", encoding="utf-8", errors="replace") as handle:
            rows = list(csv.reader(handle))
        if rows:
            section.add(f"<h3>{rf.PREDICTIONS} ({len(rows) - 1} images)</h3>", h.table(rows[0], rows[1:], 10))
    listed = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name != report_name)
    rows = [[p.relative_to(folder).as_posix(), p.stat().st_size] for p in listed]
    return section.add("<h3>Everything in the folder</h3>", h.table(["file", "bytes"], rows, 200))
