"""Checkpoint files: written atomically, read back checked (format, fields, class list), RNG state, weights.

A checkpoint is written to a temporary file and renamed, so a crash never leaves a torn one. It records the class
list of the build it was trained on (``classes``, one of hamdata.inputs.classes.CLASS_SETS): its outputs are those classes
in that order, and it is only evaluated, ensembled or resumed on a build with the same list (``check_build_classes``).
"""

from __future__ import annotations

import pickle
import random
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from hamdata import runfiles
from hamdata.inputs.classes import CLASS_SETS, class_set_name
from hamdata.errors import HamdataError
from hamdata.workspace import atomic_write, left_behind

from .models import build_model

CHECKPOINT_FORMAT = "hamdata-checkpoint-1"
# Every checkpoint holds these (and data holds DATA_FIELDS); last.pt adds TRAINING_FIELDS to resume from.
CHECKPOINT_FIELDS = ("classes", "arch", "config", "data", "epoch", "model")
DATA_FIELDS = ("build", "train_counts", "preprocess", "format", "quality", "mean", "std", "image_size")
TRAINING_FIELDS = ("optimizer", "scheduler", "scaler", "ema", "rng", "progress")


def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file, then rename: a kill during the save leaves the previous ``path`` whole."""
    atomic_write(path, writer=lambda tmp: torch.save(state, tmp))


def remove_stale_temporaries(out: Path) -> None:
    """Half-written ``.NAME.tmp-PID`` files that a killed run left in its folder."""
    for tmp in out.glob(".*.tmp-*"):
        if tmp.is_file() and left_behind(tmp):
            tmp.unlink(missing_ok=True)


def short_reason(what, limit: int = 120) -> str:
    """An exception (or text) on one line, cut to ``limit`` characters."""
    text = " ".join(str(what).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _load_failure(path: Path, exc: Exception) -> str:
    """Why torch.load failed, in a few words (torch's own messages run to paragraphs)."""
    if path.stat().st_size == 0:
        return "empty file"
    if isinstance(exc, pickle.UnpicklingError):  # never suggest weights_only=False for a file we cannot trust
        return "UnpicklingError: not a file of tensors and plain values"
    text = re.sub(r"^\[enforce fail at [^\]]*\]\W*", "", " ".join(str(exc).split()))  # c10's location prefix
    return f"{exc.__class__.__name__}: {short_reason(text.split('. ')[0])}"


def load_checkpoint(path, default_name: str = runfiles.BEST) -> tuple[Path, dict]:
    """A hamdata checkpoint (a file, or a run folder's ``default_name``), checked for its fields and class list.

    A file cut short, random bytes, another zip or pickle, or a dict without the fields is one HamdataError.
    """
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    if not path.is_file():
        raise HamdataError(f"{path}: no such checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files that are not its own
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and torch errors alike
        raise HamdataError(f"{path}: not a readable checkpoint; the file is damaged, cut short or not a checkpoint "
                           f"({_load_failure(path, exc)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise HamdataError(f"{path}: not a hamdata checkpoint (expected format {CHECKPOINT_FORMAT})")
    problems = [f"no {name}" for name in CHECKPOINT_FIELDS if name not in state]
    problems += [f"{name} is not a mapping" for name in ("model", "data", "config") if not isinstance(state.get(name, {}), dict)]
    if isinstance(state.get("data"), dict):
        problems += [f"no data.{name}" for name in DATA_FIELDS if name not in state["data"]]
    if problems:
        raise HamdataError(f"{path}: damaged hamdata checkpoint ({', '.join(problems)})")
    classes = state["classes"]
    if not isinstance(classes, (list, tuple)) or class_set_name(classes) is None:
        known = " or ".join(f"{list(members)} ({name})" for name, members in CLASS_SETS.items())
        raise HamdataError(f"{path}: trained for classes {classes}, but hamdata uses {known}")
    return path, state


def checkpoint_classes(state: dict) -> tuple[str, ...]:
    """The class list a (loaded, checked) checkpoint was trained for: its outputs, in order."""
    return tuple(state["classes"])


def check_build_classes(where, state: dict, build) -> tuple[str, ...]:
    """The checkpoint's class list, when the build's (a hamdata.store.Build) is the same; else one line naming both."""
    mine, theirs = checkpoint_classes(state), build.classes
    if mine != theirs:
        raise HamdataError(f"{where}: trained for classes {list(mine)} ({class_set_name(mine)}), but the build {build.path} "
                           f"has classes {list(theirs)} ({class_set_name(theirs) or 'unknown'}); use a build of the "
                           "checkpoint's class list")
    return mine


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def model_from_checkpoint(state: dict, device: torch.device, path="checkpoint") -> nn.Module:
    model = build_model(state["arch"], "none", num_classes=len(checkpoint_classes(state)), metadata=state["data"].get("metadata"))
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise HamdataError(f"{path}: damaged hamdata checkpoint (its weights do not fit a {state['arch']}: {short_reason(exc)})") from None
    return model.to(device, memory_format=torch.channels_last).eval()  # as the batches (loop.Env.batch)
