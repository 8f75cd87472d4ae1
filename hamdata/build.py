"""`build-shards`: raw HAM10000 -> preprocessed, lesion-aware WebDataset shards.

The main process decides everything that is order or randomness (split,
sample order, shard boundaries) and writes; workers only turn one file's
bytes into an encoded image. Results come back in submission order, so the
shards are the same bytes whatever the number of workers. At most a fixed
window of work is in flight, so memory does not grow with the dataset.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from .classes import CLASSES, label_of
from .errors import HamdataError
from .manifest import MANIFEST_NAME, ManifestWriter, card_skeleton, count_table, write_card, write_info
from .parallel import ordered_map
from .preprocess import ImageError, PreprocessConfig, decode_image, encode_image, preprocess
from .shards import ShardWriter, sample_json
from .layouts import missing_images, open_source, read_image_bytes
from .split import SPLITS, SplitConfig, decide_split
from .locks import hold
from .workspace import Workspace


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides the content of a build (workers and overwrite do not)."""

    data: str = "data/HAM10000"
    out: str = "shards"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    format: str = "jpg"
    quality: int = 95
    shard_size: int = 500
    on_error: str = "fail"
    allow_missing: bool = False

    def __post_init__(self):
        if self.format not in ("jpg", "png"):
            raise HamdataError(f"--format: expected jpg or png, got {self.format!r}")
        if not 1 <= self.quality <= 100:
            raise HamdataError(f"--quality: expected 1..100, got {self.quality}")
        if self.shard_size < 1:
            raise HamdataError(f"--shard-size: expected a positive number of samples, got {self.shard_size}")
        if self.on_error not in ("fail", "skip"):
            raise HamdataError(f"--on-error: expected fail or skip, got {self.on_error!r}")

    def to_dict(self) -> dict:
        record = asdict(self)
        record["preprocess"] = self.preprocess.to_dict()
        return record


@dataclass(frozen=True)
class Task:
    index: int
    image_id: str
    locator: str


@dataclass
class Result:
    index: int
    image_id: str
    data: bytes = b""
    error: str = ""
    notes: tuple[str, ...] = ()
    moments: np.ndarray | None = None  # int64 per channel: sum, sum of squares (0..255 values), pixel count
    seconds: dict = field(default_factory=dict)


def process_image(task: Task, cfg: PreprocessConfig, fmt: str, quality: int) -> Result:
    """One input file -> encoded, preprocessed image (or the cause it could not be)."""
    result = Result(task.index, task.image_id)
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.seconds[stage] = now - clock
        clock = now

    try:
        raw = read_image_bytes(task.locator)
        lap("read")
        rgb, notes = decode_image(raw)
        lap("decode")
    except ImageError as exc:
        result.error = exc.cause
        return result
    except HamdataError as exc:
        result.error = str(exc)
        return result
    result.notes = notes
    rgb = preprocess(rgb, cfg, timer=lap)
    result.moments = channel_moments(rgb)
    result.data = encode_image(rgb, fmt, quality)
    lap("encode")
    return result


def ordered_results(tasks: list[Task], cfg: BuildConfig, workers: int):
    """Results in task order, computed by ``workers`` processes (see hamdata.parallel)."""
    work = functools.partial(process_image, cfg=cfg.preprocess, fmt=cfg.format, quality=cfg.quality)
    return ordered_map(work, tasks, workers)


def sample_order(metadata: pd.DataFrame, split: pd.Series, seed: int) -> list[tuple[str, pd.DataFrame]]:
    """Rows of each split in the seeded order they are written in."""
    ordered = []
    for k, name in enumerate(SPLITS):
        rows = metadata[split.to_numpy() == name].sort_values("image_id")
        perm = np.random.default_rng([seed, k]).permutation(len(rows))
        ordered.append((name, rows.iloc[perm]))
    return ordered


def json_value(value):
    """Metadata cell -> JSON value: NaN -> null, integral floats -> int."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return str(value)


def sample_record(row, split: str) -> dict:
    record = {name: json_value(getattr(row, name)) for name in ("image_id", "lesion_id", "dx", "dx_type", "age", "sex", "localization")}
    record.update(split=split, source="original", parent=None, recipe=None)
    return record


LEVELS = np.arange(256, dtype=np.int64)


def channel_moments(rgb: np.ndarray) -> np.ndarray:
    """Exact integer sums per channel (sum, sum of squares, pixel count) from histograms.

    Integers make the train statistics independent of summation order, and the
    histograms cost a tenth of a float64 copy of the image.
    """
    hists = [np.bincount(rgb[..., c].ravel(), minlength=256) for c in range(3)]
    sums = [int(h @ LEVELS) for h in hists]
    squares = [int(h @ (LEVELS * LEVELS)) for h in hists]
    return np.array(sums + squares + [rgb.shape[0] * rgb.shape[1]], dtype=np.int64)


def _mean_std(moments: np.ndarray) -> dict:
    """Per-channel mean and std of the train pixels, in [0, 1] units."""
    if moments[6] == 0:
        return {"mean": None, "std": None, "pixels": 0}
    mean = moments[:3] / moments[6] / 255.0
    std = np.sqrt(np.maximum(moments[3:6] / moments[6] / 255.0 ** 2 - mean ** 2, 0.0))
    return {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std], "pixels": int(moments[6])}


def _check_paths(data: Path, out: Path) -> None:
    if not data.exists():
        raise HamdataError(f"--data: no such folder: {data} (expected a HAM10000 copy; `hamdata synth --out {data}` makes a synthetic one)")
    if out.resolve() == data.resolve() or data.resolve() in out.resolve().parents:
        raise HamdataError(f"--out {out} is inside the input folder {data}; choose a folder outside it")
    if out.resolve() in data.resolve().parents:  # --overwrite would delete the input with the old build
        raise HamdataError(f"--data {data} is inside the output folder {out}; choose an --out outside the input")


def build_shards(cfg: BuildConfig, workers: int | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Build the shards of ``cfg.data`` into ``cfg.out``; returns a summary for the CLI."""
    started = time.perf_counter()
    data, out = Path(cfg.data), Path(cfg.out)
    _check_paths(data, out)
    workspace = Workspace(out, overwrite=overwrite)
    workspace.check()
    with hold(out):  # one writer per output, from before the work until the build is in place
        workspace.check()
        return _build(cfg, data, out, workspace, workers, progress, started)


def _build(cfg: BuildConfig, data: Path, out: Path, workspace: Workspace, workers: int | None, progress: bool,
           started: float) -> dict:
    source = open_source(data)
    missing = missing_images(source)
    if missing and not cfg.allow_missing:
        raise HamdataError(
            f"{source.metadata_path}: {len(missing)} of {len(source.metadata)} listed images have no file under {data} "
            f"(first: {', '.join(missing[:3])}); pass --allow-missing to build the rest"
        )
    split, split_record = decide_split(source.metadata, cfg.split)
    workers = max(1, workers or os.cpu_count() or 1)
    with workspace as tmp:
        card, stage_seconds = _write_build(tmp, source, split, cfg, workers, progress)
        card["split"] = split_record
        card["skipped"] = [{"image_id": i, "file": None, "reason": "missing: no image file found"} for i in missing] + card["skipped"]
        card["skipped"].sort(key=lambda s: s["image_id"])
        card["input"] = {"root": str(data.resolve()), "layout": source.layout, "metadata": str(source.metadata_path),
                         "rows": len(source.metadata), "warnings": list(source.warnings)}
        write_info(tmp, card)
        write_card(tmp, card)
    seconds = time.perf_counter() - started
    written = sum(s["samples"] for s in card["shards"])
    return {"out": str(out), "samples": written, "counts": card["counts"], "skipped": len(card["skipped"]),
            "shards": len(card["shards"]), "split": split_record, "warnings": list(source.warnings),
            "seconds": seconds, "images_per_second": written / seconds if seconds else 0.0,
            "stage_seconds": stage_seconds, "workers": workers}


def _write_build(tmp: Path, source, split: pd.Series, cfg: BuildConfig, workers: int, progress: bool) -> tuple[dict, dict]:
    card = card_skeleton("build", cfg.to_dict())
    ordered = sample_order(source.metadata, split, cfg.split.seed)
    rows, tasks = {}, []
    for name, part in ordered:
        for row in part.itertuples(index=False):
            if row.image_id in source.images:
                rows[len(tasks)] = (name, row)
                tasks.append(Task(len(tasks), row.image_id, source.images[row.image_id]))
    writers = {name: ShardWriter(tmp, name, name, name, cfg.shard_size) for name in SPLITS}
    manifest = ManifestWriter(tmp / MANIFEST_NAME)
    moments = np.zeros(7, dtype=np.int64)
    stage_seconds: dict[str, float] = {}
    skipped, converted, written = [], [], []
    bar = tqdm(total=len(tasks), unit="img", desc="build-shards", disable=not progress, dynamic_ncols=True)
    results = ordered_results(tasks, cfg, workers)
    try:
        for result in results:
            bar.update(1)
            name, row = rows[result.index]
            for stage, sec in result.seconds.items():
                stage_seconds[stage] = stage_seconds.get(stage, 0.0) + sec
            locator = tasks[result.index].locator
            if result.error:
                if cfg.on_error == "fail":
                    raise HamdataError(f"{locator}: {result.error} (pass --on-error skip to build without it)")
                skipped.append({"image_id": row.image_id, "file": locator, "reason": result.error})
                continue
            if result.notes:
                converted.append({"image_id": row.image_id, "file": locator, "notes": list(result.notes)})
            if name == "train":
                moments += result.moments
            record = sample_record(row, name)
            t0 = time.perf_counter()
            shard = writers[name].write(row.image_id, cfg.format, result.data, label_of(row.dx), sample_json(record))
            manifest.write({"key": row.image_id, "split": name, "label": label_of(row.dx), "dx": row.dx,
                            "image_id": row.image_id, "lesion_id": row.lesion_id, "source": "original",
                            "shard": shard, "sha256": hashlib.sha256(result.data).hexdigest()})
            stage_seconds["write"] = stage_seconds.get("write", 0.0) + time.perf_counter() - t0
            written.append((name, row.dx))
        shards = [info.to_dict() for name in SPLITS for info in writers[name].close()]
    except BaseException:
        results.close()  # stop the workers now, not whenever the generator is collected
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        bar.close()
        manifest.close()
    counts = count_table(pd.DataFrame(written, columns=["split", "dx"])) if written else {}
    card.update(
        counts={name: counts.get(name, {dx: 0 for dx in CLASSES}) for name in SPLITS},
        shards=shards, skipped=skipped, converted=converted, train_stats=_mean_std(moments),
    )
    return card, stage_seconds
