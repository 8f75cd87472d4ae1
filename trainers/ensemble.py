"""`ensemble`: soft voting over several runs, with TTA, greedy member selection, lesion voting and calibration.

Each member keeps its own image size, normalisation, metadata encoding and
stored temperature: it predicts the split exactly as ``evaluate`` would, and
the ensemble averages those probabilities (weighted by how often greedy
selection chose the member; equal weights without selection). Greedy
selection is Caruana et al.'s (2004) forward selection with replacement on the
val split, by macro-F1, the way Gessert et al. (2019) chose their ISIC 2019
ensemble; a two-class set is selected by the partial AUC above 80% TPR, the
ISIC 2024 challenge's score.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hamdata.errors import HamdataError
from hamdata.store.card import Build
from hamdata.workspace import atomic_write

from .metrics import headline, macro_f1, partial_auc_above_tpr
from .subgroups import group_values, in_order, parse_by, subgroup_lines

SELECT_ROUNDS = 3  # greedy selection runs at most this many rounds per member


@dataclass
class Member:
    """One ensemble member: its checkpoint and what it predicted."""

    path: Path
    state: dict
    probs: dict  # split -> (n, C) probabilities, rows sorted by image id


def selection_score(labels: np.ndarray, probs: np.ndarray) -> tuple[str, float]:
    """What greedy selection maximises: for a two-class set whose val split holds both classes, the partial AUC
    above 80% TPR of P(second class) (the ISIC 2024 challenge's score: at 1 malignant in 1,000, argmax
    predictions are all benign and macro-F1 cannot tell members apart); otherwise macro-F1 of the argmax."""
    labels = np.asarray(labels)
    if probs.shape[1] == 2:
        pauc = partial_auc_above_tpr(labels == 1, probs[:, 1])
        if pauc is not None:
            return "pauc_80", pauc
    return "macro_f1", macro_f1(labels, probs.argmax(1))


def greedy_select(member_probs: list[np.ndarray], labels: np.ndarray, rounds: int | None = None) -> dict:
    """Forward selection with replacement: add the member that most raises the score of the mean (selection_score:
    pAUC for two classes, macro-F1 otherwise), keep the best prefix.

    Returns {"counts": times each member was chosen, "weights": counts / total, "trace": score after each round,
    "rounds_kept", "metric": the score's name}. Ties go to the lower index, so the result depends only on the
    inputs.
    """
    if not member_probs:
        raise ValueError("greedy_select needs at least one member")
    labels = np.asarray(labels)
    rounds = rounds or SELECT_ROUNDS * len(member_probs)
    total = np.zeros_like(np.asarray(member_probs[0], dtype=np.float64))
    counts = np.zeros(len(member_probs), dtype=np.int64)
    chosen, trace = [], []
    metric = selection_score(labels, total + member_probs[0])[0]
    for k in range(1, rounds + 1):
        scores = [selection_score(labels, (total + p) / k)[1] for p in member_probs]
        best = int(np.argmax(scores))  # argmax takes the first of equal scores
        total = total + member_probs[best]
        chosen.append(best)
        trace.append(float(scores[best]))
    keep = int(np.argmax(trace)) + 1  # the shortest prefix reaching the best score
    for i in chosen[:keep]:
        counts[i] += 1
    return {"counts": counts.tolist(), "weights": (counts / counts.sum()).tolist(), "trace": trace,
            "rounds_kept": keep, "metric": metric}


def soft_vote(member_probs: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """The weighted mean of the members' probabilities."""
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in member_probs])
    w = np.asarray(weights, dtype=np.float64)
    return np.tensordot(w / w.sum(), stacked, axes=1)


def check_members(paths: list, states: list[dict]) -> None:
    """Refuse an ensemble that cannot be one: fewer than two members, or members with other class lists."""
    if len(paths) < 2:
        raise HamdataError(f"ensemble: needs at least two members (runs or checkpoints), got {len(paths)}")
    first = list(states[0]["classes"])
    for path, state in zip(paths[1:], states[1:]):
        if list(state["classes"]) != first:
            raise HamdataError(f"ensemble: {path} was trained for classes {list(state['classes'])}, but {paths[0]} "
                               f"for {first}; every member needs the same class list")


def default_out(paths: list[Path], split: str) -> Path:
    """Beside the first member's run folder: ``ensemble-<run>+<run>...-<split>`` (where a user looks for it, not in
    ./runs of whatever folder the command ran in)."""
    runs = [p.parent if p.suffix == ".pt" else p for p in (Path(p).resolve() for p in paths)]
    names = "+".join(dict.fromkeys(r.name for r in runs))
    if len(names) > 80:
        names = f"{runs[0].name}+{len(runs) - 1}-more"
    return runs[0].parent / f"ensemble-{names}-{split}"


def write_record(out: Path, record: dict) -> None:
    from hamdata.runfiles import ENSEMBLE

    atomic_write(out / ENSEMBLE, json.dumps(record, indent=2, sort_keys=True) + "\n")


def _member_name(path: Path) -> str:
    """A readable name: the run folder and the file (``p6a/best.pt``)."""
    return f"{path.parent.name}/{path.name}"


def _predict_members(members: list[Member], build: Build, splits: list[str], options: dict, echo) -> tuple:
    """Every member's probabilities on every split; the ids and labels must agree across members."""
    from .predict import split_probabilities

    reference = {}
    for member in members:
        for split in splits:
            ids, labels, probs = split_probabilities(member.path, member.state, build, split, **options)
            if split in reference and reference[split][0] != ids:
                raise HamdataError(f"ensemble: {member.path} saw other {split} images than the first member")
            reference.setdefault(split, (ids, labels))
            member.probs[split] = probs
        echo(f"  {member.path}: {member.state['arch']} at {member.state['data']['image_size']} px"
             f"{', metadata' if member.state['data'].get('metadata') else ''}")
    return reference


def run_ensemble(members: list, *, shards=None, split: str = "test", tta: bool = False, by_lesion: bool = False,
                 select: str | None = None, calibrate: bool = False, out=None, device: str = "auto", batch_size: int = 64,
                 workers: int = 0, by: str | None = None, overwrite: bool = False, echo=print) -> dict:
    """Soft-vote ``members`` (run folders or checkpoints) on ``split``; writes what evaluate writes, plus ensemble.json.

    select="greedy": choose members on the val split (see greedy_select). calibrate: fit one temperature on the
    ensemble's val probabilities and apply it. by_lesion: lesion-level soft voting of the ensemble's output.
    by: fields to give figures per group of (trainers.subgroups), checked before any prediction.
    """
    from hamdata import runfiles
    from hamdata.report import write_report

    from .calibration import apply_temperature, lesion_mean
    from .checkpoints import load_checkpoint
    from .metrics import classification_metrics
    from .predict import (SUMMARY, calibrate as fit_calibration, claim_output, finish_evaluation, lesions_of, open_eval_build,
                          temperature_of)

    if select not in (None, "greedy"):
        raise HamdataError(f"--select: expected greedy, got {select!r}")
    fields = parse_by(by)
    loaded = [load_checkpoint(m) for m in members]  # a damaged member is one line naming it
    check_members([p for p, _ in loaded], [s for _, s in loaded])
    team = [Member(path, state, {}) for path, state in loaded]
    out = Path(out) if out else default_out([p for p, _ in loaded], split)
    classes = tuple(team[0].state["classes"])  # every member's (check_members), and the build's (open_eval_build)
    card = open_eval_build(team[0].state, shards, split, echo, team[0].path)
    build = card.path
    claim_output(out, overwrite, keep=[p for p, _ in loaded] + [build])
    groups = group_values(card, split, fields) if fields else None
    splits = list(dict.fromkeys([split] + (["val"] if select or calibrate else [])))
    why = " (and val, for " + " and ".join(w for w, on in (("selection", select), ("calibration", calibrate)) if on) + ")"
    echo(f"ensemble of {len(team)} members on the {split} split{why if len(splits) > 1 else ''} of {build}"
         f"{' with TTA' if tta else ''}:")
    reference = _predict_members(team, card, splits, {"tta": tta, "device": device, "batch_size": batch_size,
                                                              "workers": workers}, echo)
    ids, labels = reference[split]
    selection = None
    weights = [1.0] * len(team)
    if select:
        selection = greedy_select([m.probs["val"] for m in team], reference["val"][1])
        weights = selection["weights"]
        echo(f"  greedy selection on val by {selection['metric']}: weights " + ", ".join(f"{w:.2f}" for w in weights))
    probs = soft_vote([m.probs[split] for m in team], weights)
    calibration = None
    if calibrate:
        calibration = fit_calibration(soft_vote([m.probs["val"] for m in team], weights), reference["val"][1])
        probs = apply_temperature(probs, calibration["temperature"])
        if calibration.get("warning"):
            echo(f"  warning: {calibration['warning']}")
    group_lesions = lesions_of(build, ids)  # the bootstrap intervals over lesions (overall, and per group)
    lesions = group_lesions if by_lesion else None
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for member, weight in zip(team, weights):
        scored = lesion_mean(member.probs[split], lesions) if by_lesion else member.probs[split]
        scores = {k: v for k, v in classification_metrics(labels, scored, classes).items() if k in SUMMARY}
        records.append({"name": _member_name(member.path), "checkpoint": str(member.path), "arch": member.state["arch"],
                        "image_size": member.state["data"]["image_size"], "metadata": bool(member.state["data"].get("metadata")),
                        "temperature": temperature_of(member.state), "weight": weight, "scores": scores})
    info = {"split": split, "build": str(build), "tta": tta, "ensemble": [str(m.path) for m in team],
            "weights": weights, "temperature": calibration["temperature"] if calibration else 1.0}
    metrics = finish_evaluation(out, ids, labels, probs, info, lesions, calibration, classes=classes,
                                groups=groups and in_order(groups, ids, build, split), group_lesions=group_lesions)
    write_record(out, {"members": records, "weights": weights, "selection": selection, "split": split, "tta": tta,
                       "by_lesion": by_lesion, "build": str(build), "temperature": info["temperature"],
                       "scores": {k: metrics[k] for k in SUMMARY if k in metrics}})
    report = write_report(out)
    for record in records:
        echo(f"  {record['name']}: macro-F1 {record['scores']['macro_f1']:.3f} (weight {record['weight']:.2f})")
    echo(f"{split} (ensemble of {len(team)}{', TTA' if tta else ''}{', lesion-voted' if by_lesion else ''}): "
         f"{headline(metrics)} "
         f"-> {out} ({runfiles.ENSEMBLE}, {Path(report).name})")
    for field, rows in metrics.get("by", {}).items():
        echo(subgroup_lines(field, rows))
    return {"out": str(out), "metrics": metrics, "members": records, "report": str(report)}
