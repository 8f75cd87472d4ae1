"""Any saved checkpoint: evaluate it on a split of a build (with lesion voting and calibration), or predict raw images.

A checkpoint may carry a temperature (``evaluate --calibrate`` stores it);
evaluate, predict and ensemble then apply it to the model's probabilities.
The class names come from the checkpoint; a build it is evaluated on must have
the same class list.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hamdata import runfiles
from hamdata.errors import HamdataError
from hamdata.store.card import Build
from hamdata.store.manifest import CARD_NAME, read_manifest

from .calibration import apply_temperature, calibration_summary, fit_temperature, lesion_mean, plot_reliability, reliability_bins
from .checkpoints import check_build_classes, checkpoint_classes, load_checkpoint, model_from_checkpoint, save_checkpoint
from .config import EVAL_SPLITS
from .subgroups import group_values, in_order, parse_by, subgroup_lines, write_subgroups
from .data import open_build, split_shards
from .fusion import MetadataEncoding
from .dist import Dist, resolve_device
from .loop import Env, make_env, predict_split, tta_views
from .metrics import classification_metrics, headline, write_evaluation

SUMMARY = ("auc", "pauc_80", "accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "samples")


def _checkpoint_env(state: dict, device: str, path: Path) -> tuple[Env, nn.Module]:
    dev = resolve_device(device, Dist())
    precision = state["config"].get("precision", "auto")  # as the run evaluated itself; fp16 is for CUDA only
    env = make_env(Dist(), dev, state["data"], "auto" if precision == "fp16" and dev.type != "cuda" else precision)
    return env, model_from_checkpoint(state, dev, path)


def metadata_json(state: dict) -> str:
    """The checkpoint's metadata encoding as the loader takes it; empty for an image-only model."""
    encoding = state["data"].get("metadata")
    return json.dumps(encoding, sort_keys=True) if encoding else ""


def temperature_of(state: dict) -> float:
    return float((state.get("calibration") or {}).get("temperature", 1.0))


def open_eval_build(state: dict, shards, split: str, echo, path="checkpoint") -> Build:
    """The build a checkpoint (at ``path``) is evaluated on (--shards, else its training build), checked: the
    same class list, the same preprocessing (else a warning), the same shards (else a warning)."""
    if split not in EVAL_SPLITS:
        raise HamdataError(f"--split: expected {' or '.join(EVAL_SPLITS)}, got {split!r}")
    build = open_build(shards or state["data"]["build"])
    if not build.samples(split):
        raise HamdataError(f"--split {split}: {build.path} has no {split} split"
                           + (" (build-shards --hold-out COLLECTION writes one)" if split == "heldout" else ""))
    check_build_classes(path, state, build)
    if build.preprocess != state["data"]["preprocess"]:
        echo(f"warning: {build.path} was preprocessed differently from the checkpoint's training build")
    trained_on = (state["data"].get("shards_sha256") or {}).get("build")
    if trained_on is not None and list(trained_on) != list(build.fingerprint):
        echo(f"warning: {build.path} is not the build the checkpoint was trained on (its shards differ: another, rebuilt "
             "or replaced build)")
    return build


def claim_output(out: Path, overwrite: bool, keep=()) -> None:
    """An evaluation's folder, checked before anything is predicted: refused when it holds files already (as
    build-shards refuses an existing build), unless --overwrite, which only ever replaces an earlier evaluation
    (a folder with metrics.json and no checkpoint), never a file, a run, a build, or a folder holding one of
    `keep` (the checkpoints and the build read)."""
    if out.exists() and not out.is_dir():
        raise HamdataError(f"--out {out} is a file: expected a folder for the evaluation")
    target = out.resolve()
    for path in keep:
        path = Path(path).resolve()
        if target == path or target in path.parents or path in target.parents:
            raise HamdataError(f"--out {out} is, holds or lies inside {path}, which this command reads: choose "
                               f"another --out")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise HamdataError(f"--out {out} exists already: pass --overwrite to replace it, or choose another --out")
    if not (out / runfiles.METRICS).is_file() or any(out.glob("*.pt")) or (out / CARD_NAME).exists():
        raise HamdataError(f"--out {out} is not an earlier evaluation (no {runfiles.METRICS}, or it holds "
                           f"checkpoints or a build): --overwrite replaces evaluations only; choose another --out")


def split_probabilities(path: Path, state: dict, build: Build, split: str, *, tta: bool, device: str,
                        batch_size: int, workers: int, calibrated: bool = True) -> tuple[list, np.ndarray, np.ndarray]:
    """(image ids, labels, probabilities) of a checkpoint on a split, sorted by image id, with its stored temperature."""
    env, model = _checkpoint_env(state, device, path)
    ids, labels, probs = predict_split(env, model, *split_shards(build, split), image_size=state["data"]["image_size"],
                                       batch_size=batch_size, workers=workers, num_classes=len(checkpoint_classes(state)),
                                       tta=tta, what=f"{split} split",
                                       metadata=metadata_json(state))
    return ids, labels, apply_temperature(probs, temperature_of(state)) if calibrated else probs


def lesions_of(build: Path, image_ids: list[str]) -> list[str]:
    """The lesion id of each image, from the build's manifest.csv."""
    table = read_manifest(build)
    lesion = dict(zip(table["image_id"], table["lesion_id"]))
    missing = [i for i in image_ids if i not in lesion]
    if missing:
        raise HamdataError(f"{build / 'manifest.csv'}: no row for image {missing[0]} ({len(missing)} missing)")
    return [lesion[i] or i for i in image_ids]  # no lesion id: the image is its own lesion


def finish_evaluation(out: Path, ids, labels, probs, info: dict, lesions: list[str] | None,
                      calibration: dict | None = None, *, classes, groups: dict | None = None,
                      group_lesions: list[str] | None = None) -> dict:
    """Write what evaluate writes; given the images' ``lesions`` (lesions_of), the CSV and the top-level figures
    are lesion-voted. classes: the checkpoint's (and build's) class list. groups: {field: group of each image}
    (--by; trainers.subgroups). group_lesions: the lesion of each image, for the bootstrap intervals (overall and
    per group)."""
    by_lesion = lesions is not None
    info = dict(info, by_lesion=by_lesion)
    if by_lesion:
        info["image_level"] = {k: v for k, v in classification_metrics(labels, probs, classes).items() if k in SUMMARY}
        info["lesions"] = len(set(lesions))
        info["csv_holds"] = ("lesion-level probabilities: every image carries the mean over its lesion's images in the "
                             "split; the top-level figures are computed from them, image_level from the images alone")
        probs = lesion_mean(probs, lesions)
    else:
        info["csv_holds"] = "image-level probabilities; the top-level figures are computed from them"
    if calibration is not None:
        info["calibration"] = {k: v for k, v in calibration.items() if k not in ("bins_before", "bins_after")}
        plot_reliability(calibration["bins_before"], calibration["bins_after"], out / runfiles.RELIABILITY,
                         f"val split: ECE {calibration['val_ece_before']:.3f} -> {calibration['val_ece_after']:.3f} "
                         f"(T = {calibration['temperature']:.2f})")
    if groups:
        out.mkdir(parents=True, exist_ok=True)
        title = f"{info.get('split', '')} split{', lesion-voted' if by_lesion else ''}"
        info["by"] = write_subgroups(out, labels, probs, groups, group_lesions, classes, title)
    return write_evaluation(out, ids, labels, probs, info, classes, lesions=group_lesions)


def calibrate(val_probs: np.ndarray, val_labels: np.ndarray) -> dict:
    """Fit one temperature on the val split; NLL, ECE and reliability bins before and after."""
    temperature = fit_temperature(val_probs, val_labels)
    summary = calibration_summary(val_probs, val_labels, temperature)
    summary["bins_before"] = reliability_bins(val_probs, val_labels)
    summary["bins_after"] = reliability_bins(apply_temperature(val_probs, temperature), val_labels)
    if summary["at_search_bound"]:
        summary["warning"] = (f"the temperature stopped at the edge of its search range ({temperature:.3g}): the val "
                              "split is (nearly) all right or all wrong, too easy or too small to calibrate on; build with a "
                              "larger --val, or calibrate a run whose val split it does not fit so well")
    return summary


def evaluate_checkpoint(checkpoint, shards=None, split: str = "test", tta: bool = False, out=None, device: str = "auto",
                        batch_size: int = 64, workers: int = 0, by_lesion: bool = False, calibrate_on_val: bool = False,
                        by: str | tuple | None = None, overwrite: bool = False, echo=print) -> dict:
    """Metrics, report, confusion matrix and ISIC CSV of a checkpoint on a split of a build.

    by_lesion: every image of a lesion gets the mean of their probabilities. calibrate_on_val: fit a
    temperature on the val split, store it in the checkpoint (predict and ensemble then apply it) and
    apply it here; the NLL and ECE before and after go into metrics.json, a reliability diagram beside it.
    by: fields to give figures per group of (--by; trainers.subgroups), checked before any prediction.
    """
    fields = parse_by(by) if isinstance(by, (str, type(None))) else tuple(by)
    path, state = load_checkpoint(checkpoint)
    suffix = ("-tta" if tta else "") + ("-lesion" if by_lesion else "")
    out = Path(out) if out else path.parent / f"eval-{path.stem}-{split}{suffix}"
    card = open_eval_build(state, shards, split, echo, path)
    build = card.path
    claim_output(out, overwrite, keep=(path, build))
    groups = group_values(card, split, fields) if fields else None
    options = {"tta": tta, "device": device, "batch_size": batch_size, "workers": workers}
    calibration = None
    if calibrate_on_val:
        _, val_labels, val_probs = split_probabilities(path, state, card, "val", calibrated=False, **options)
        calibration = calibrate(val_probs, val_labels)
        if calibration.get("warning"):
            echo(f"warning: {calibration['warning']}")
        state["calibration"] = {k: calibration[k] for k in ("temperature", "fitted_on", "val_nll_before", "val_nll_after",
                                                            "val_ece_before", "val_ece_after")}
        state["calibration"]["build"] = str(build)
        save_checkpoint(path, state)
        echo(f"calibration: T = {calibration['temperature']:.3f} on the val split (NLL {calibration['val_nll_before']:.3f} -> "
             f"{calibration['val_nll_after']:.3f}, ECE {calibration['val_ece_before']:.3f} -> "
             f"{calibration['val_ece_after']:.3f}); stored in {path}")
    ids, labels, probs = split_probabilities(path, state, card, split, **options)
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"split": split, "checkpoint": str(path), "build": str(build), "epoch": state.get("epoch"), "tta": tta,
            "temperature": temperature_of(state)}
    lesions = lesions_of(build, ids)  # lesion voting, and the bootstrap intervals over lesions
    metrics = finish_evaluation(out, ids, labels, probs, info, lesions if by_lesion else None, calibration,
                                classes=checkpoint_classes(state), groups=groups and in_order(groups, ids, build, split),
                                group_lesions=lesions)
    level = "lesion-voted" if by_lesion else "images"
    echo(f"{split} ({path.name}{', TTA' if tta else ''}, {level}): {headline(metrics)} on {metrics['samples']} images "
         f"-> {out}")
    for field, rows in metrics.get("by", {}).items():
        echo(subgroup_lines(field, rows))
    return {"out": str(out), "metrics": metrics}


def prepare_image(path: Path, state: dict) -> torch.Tensor:
    """A raw image through the build's own preprocessing and encoding, then the eval preset: uint8 (3, S, S)."""
    from hamdata.image.preprocess import ImageError, PreprocessConfig, decode_image, encode_image, preprocess

    from .data import decode
    from .presets import eval_preset

    data = state["data"]
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise HamdataError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        rgb, _ = decode_image(raw)
    except ImageError as exc:
        raise HamdataError(f"{path}: {exc.cause}") from None
    rgb = preprocess(rgb, PreprocessConfig.from_dict(data["preprocess"]))
    encoded = encode_image(rgb, data["format"], data["quality"])  # what a shard would hold
    return eval_preset(data["image_size"])(decode(encoded))


def read_metadata_csv(path, images) -> dict[str, dict]:
    """``--metadata CSV`` (image,age,sex,localization, and any numeric columns the checkpoint fuses): the row of
    each image, matched by file name or stem."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise HamdataError(f"--metadata {path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("image", "age", "sex", "localization") if c not in table.columns]
    if missing:
        raise HamdataError(f"--metadata {path}: no column {', '.join(missing)}; expected image,age,sex,localization")
    rows = {str(r["image"]).strip(): r for r in table.to_dict("records")}
    found = {}
    for image in images:
        name, stem = Path(image).name, Path(image).stem
        row = rows.get(name) or rows.get(stem) or rows.get(str(image))
        if row is None:
            raise HamdataError(f"--metadata {path}: no row for image {name} (column image holds a file name or id)")
        # any other column is a numeric feature a checkpoint fused with --metadata-columns (ISIC 2024 tbp_lv_*)
        features = {c: row[c] for c in table.columns if c not in ("image", "age", "sex", "localization")}
        found[str(image)] = {"age": row["age"] or None, "sex": row["sex"], "localization": row["localization"],
                             "features": features}
    return found


def _metadata_vectors(state: dict, images, metadata: dict | None, echo) -> list[np.ndarray | None]:
    """Each image's encoded metadata for a fusion checkpoint (missing where none given); None for image-only ones."""
    encoding = state["data"].get("metadata")
    if encoding is None:
        if metadata:
            echo("warning: this checkpoint does not use metadata; --age/--sex/--site/--metadata are ignored")
        return [None] * len(images)
    encoding = MetadataEncoding.from_dict(encoding)
    if not metadata:
        echo("note: a metadata-fusion checkpoint given no metadata: predicting as for missing age, sex and site")
    absent = [c for c in encoding.columns if not any(c in (r.get("features") or {}) for r in (metadata or {}).values())]
    if metadata and absent:
        echo(f"warning: the checkpoint fuses {', '.join(absent)}, which --metadata does not give: read as missing")
    warned = set()
    vectors = []
    for image in images:
        record = (metadata or {}).get(str(image), {})
        for value in encoding.unseen(record.get("sex"), record.get("localization")):
            if value not in warned and not value.endswith("'unknown'"):
                warned.add(value)
                echo(f"warning: {value} never occurs in the training data; read as unknown")
        vectors.append(encoding.encode_record(record))
    return vectors


def predict_images(checkpoint, images, tta: bool = False, device: str = "auto", metadata: dict | None = None,
                   echo=print) -> list[dict]:
    """Class probabilities of raw images: [{"image", "dx", "probabilities": {dx: p}}], the classes the checkpoint's.

    metadata: {image path: {"age", "sex", "localization"}} for a metadata-fusion checkpoint.
    """
    path, state = load_checkpoint(checkpoint)
    classes = checkpoint_classes(state)
    env, model = _checkpoint_env(state, device, path)
    vectors = _metadata_vectors(state, images, metadata, echo)
    temperature = temperature_of(state)
    results = []
    for image, vector in zip(images, vectors):
        x = env.batch(prepare_image(Path(image), state).unsqueeze(0))
        extra = () if vector is None else (torch.from_numpy(vector[None]).to(env.device),)
        with torch.no_grad(), env.autocast():
            views = tta_views(x) if tta else [x]
            p = torch.stack([torch.softmax(model(v, *extra).float(), 1) for v in views]).mean(0).cpu().numpy()
        p = apply_temperature(p, temperature)[0].tolist()
        results.append({"image": str(image), "dx": classes[int(np.argmax(p))], "probabilities": dict(zip(classes, p))})
    return results
