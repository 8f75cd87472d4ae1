"""`balance --target N`: a build's train split -> exactly N samples per class.

The plan (which originals are kept, which copies are made from which parent,
with which recipe, in which order) is a pure function of the train manifest
and the config. Execution reads the parents from the build's train tars,
makes the copies in worker processes and writes ``balanced-N/`` atomically.
Copies come back in plan order, so the tars are the same bytes whatever the
number of workers.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from hamdata.inputs.classes import CLASSES
from hamdata.errors import HamdataError
from hamdata.store.card import Build, balanced_name, thaw
from hamdata.store.manifest import CARD_NAME, MANIFEST_NAME, card_skeleton, read_manifest
from hamdata.parallel import ordered_map, pool_size
from hamdata.store.schema import sample_json
from hamdata.store.shards import IMAGE_EXTS, TAR_ERRORS, iter_members, sha256_file, tar_error_detail
from hamdata.store.writer import BuildWriter
from hamdata.workspace import Workspace

WARN_COPIES_PER_ORIGINAL = 20
_KEEP, _COPY, _ORDER = 0, 1, 2  # independent random streams per purpose


@dataclass(frozen=True)
class BalanceConfig:
    """Everything that decides the content of a balanced set (workers and overwrite do not)."""

    target: int
    seed: int = 42
    strong_below: float = 0.5

    def __post_init__(self):
        if isinstance(self.target, bool) or not isinstance(self.target, (int, np.integer)) or self.target < 1:
            raise HamdataError(f"--target: expected a positive number of samples per class, got {self.target}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise HamdataError(f"--seed: expected a non-negative integer, got {self.seed}")
        if not isinstance(self.strong_below, (int, float)) or not math.isfinite(self.strong_below) or self.strong_below < 0:
            raise HamdataError(f"--strong-below: expected a fraction of the target >= 0, got {self.strong_below}")


@dataclass(frozen=True)
class PlannedSample:
    key: str
    dx: str
    origin: str  # the train sample whose pixels it starts from: itself for an original, else the parent
    recipe: dict | None = None  # None for an original


@dataclass(frozen=True)
class ClassPlan:
    dx: str
    originals: int
    kept: tuple[str, ...]
    copies: tuple[PlannedSample, ...]
    policy: str

    def summary(self) -> dict:
        return {"originals": self.originals, "kept": len(self.kept), "copies": len(self.copies), "policy": self.policy}


@dataclass(frozen=True)
class BalancePlan:
    classes: dict  # dx -> ClassPlan, in the order of the build's class list
    samples: tuple[PlannedSample, ...]  # in write order
    warnings: tuple[str, ...]


# ------------------------------------------------------------------ planning (pure)


def spread_across_lesions(keys: list[str], lesions: list[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` of ``keys``: one image of every lesion (lesions in seeded order) before a second of any."""
    groups: dict[str, list[str]] = {}
    for key, lesion in sorted(zip(keys, lesions)):
        groups.setdefault(lesion or key, []).append(key)  # no lesion id: the image is its own lesion
    order = sorted(groups)
    ranked = []
    for position, k in enumerate(rng.permutation(len(order))):
        members = groups[order[k]]
        for depth, m in enumerate(rng.permutation(len(members))):
            ranked.append((depth, position, members[m]))
    ranked.sort()
    return sorted(key for _, _, key in ranked[:n])


def round_robin_copies(parents: list[str], n: int, rng: np.random.Generator, policy: str, seed: int, dx: str) -> list[PlannedSample]:
    """``n`` copies, parents taken in a seeded order one after another, so counts per parent differ by <= 1."""
    from hamdata.image.augment import augment_seed, make_recipe  # albumentations and OpenCV: only once there is work

    order = [parents[i] for i in rng.permutation(len(parents))]
    copies = []
    for j in range(n):
        parent = order[j % len(order)]
        key = f"{parent}_aug{j // len(order) + 1:04d}"
        copies.append(PlannedSample(key, dx, parent, make_recipe(policy, augment_seed(seed, key))))
    return copies


def choose_policy(originals: int, cfg: BalanceConfig) -> str:
    return "strong" if originals < cfg.strong_below * cfg.target else "light"


def _train_rows(manifest: pd.DataFrame, classes: tuple[str, ...]) -> pd.DataFrame:
    missing = {"key", "dx", "lesion_id"} - set(manifest.columns)
    if missing:
        raise HamdataError(f"train manifest: missing columns {', '.join(sorted(missing))}")
    rows = manifest[manifest["split"] == "train"] if "split" in manifest.columns else manifest
    unknown = sorted(set(rows["dx"]) - set(classes))
    if unknown:
        raise HamdataError(f"train manifest: dx {unknown[0]!r} is not one of {', '.join(classes)}")
    if rows["key"].duplicated().any():
        raise HamdataError(f"train manifest: key {rows.loc[rows['key'].duplicated(), 'key'].iat[0]!r} appears twice")
    return rows


def plan_balance(train_manifest: pd.DataFrame, cfg: BalanceConfig, classes=CLASSES) -> BalancePlan:
    """Which originals are kept and which copies are made, per class, and the order they are written in.

    Only rows with split "train" are ever chosen (rows of other splits are ignored). classes: the build's
    class list (dataset.json ``classes``); every one of them needs at least one original.
    """
    class_list = tuple(classes)
    rows = _train_rows(train_manifest, class_list)
    classes, warnings, samples = {}, [], []
    for index, dx in enumerate(class_list):
        part = rows[rows["dx"] == dx].sort_values("key")
        keys, n = part["key"].tolist(), len(part)
        if n == 0:
            raise HamdataError(f"the train split has no {dx} samples: balancing needs at least one original of every "
                               f"class of the build ({', '.join(class_list)})")
        policy = choose_policy(n, cfg)
        if n >= cfg.target:
            rng = np.random.default_rng([cfg.seed, index, _KEEP])
            kept, copies = spread_across_lesions(keys, part["lesion_id"].tolist(), cfg.target, rng), []
        else:
            rng = np.random.default_rng([cfg.seed, index, _COPY])
            kept, copies = keys, round_robin_copies(keys, cfg.target - n, rng, policy, cfg.seed, dx)
            if len(copies) / n > WARN_COPIES_PER_ORIGINAL:
                warnings.append(f"{dx}: {n} originals, {len(copies)} copies = {len(copies) / n:.1f} copies per original")
        classes[dx] = ClassPlan(dx, n, tuple(kept), tuple(copies), policy)
        samples += [PlannedSample(key, dx, key) for key in kept] + copies
    samples.sort(key=lambda s: s.key)
    order = np.random.default_rng([cfg.seed, len(class_list), _ORDER]).permutation(len(samples))
    return BalancePlan(classes, tuple(samples[i] for i in order), tuple(warnings))


# ------------------------------------------------------------------ reading the build


@dataclass(frozen=True)
class ImageRef:
    """Where a sample's image bytes lie inside a tar (read without unpacking the tar)."""

    path: str
    offset: int
    size: int
    ext: str

    def read(self) -> bytes:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            return handle.read(self.size)


def index_train_shards(build: Build, wanted: set[str] | None = None) -> tuple[dict[str, ImageRef], dict[str, bytes]]:
    """Image locations and json members of the train samples of the build (of the keys in `wanted`, or all).

    A damaged or truncated tar is an error (shards.iter_members checks every tar to its end);
    images are only located here, and read when they are written or copied. Only the wanted samples are
    kept: the json of all 280,741 train samples of an ISIC 2024 build (its measurements) would take 420 MiB.
    """
    images, metas = {}, {}

    def want(key: str) -> bool:
        return wanted is None or key in wanted

    for path in build.shard_paths("train"):
        try:
            for member in iter_members(path, read=lambda key, ext: ext == "json" and want(key)):
                if not want(member.key):
                    continue
                if member.ext in IMAGE_EXTS:
                    images[member.key] = ImageRef(str(path), member.offset, member.size, member.ext)
                elif member.ext == "json":
                    metas[member.key] = member.data
        except TAR_ERRORS as exc:
            raise HamdataError(f"{path}: cannot read train shard ({tar_error_detail(exc)}); run `verify {build.path}`") from None
    return images, metas


# ------------------------------------------------------------------ execution


@dataclass(frozen=True)
class CopyTask:
    key: str
    parent: ImageRef
    recipe: dict
    fmt: str
    quality: int


def make_copy(task: CopyTask) -> bytes:
    """Parent bytes -> augmented, encoded copy (runs in a worker)."""
    from hamdata.image.augment import replay
    from hamdata.image.preprocess import ImageError, decode_image, encode_image

    try:
        rgb, _ = decode_image(task.parent.read())
    except ImageError as exc:
        raise HamdataError(f"{task.parent.path}: parent of {task.key} cannot be decoded ({exc.cause}); run verify on the build") from None
    return encode_image(replay(rgb, task.recipe), task.fmt, task.quality)


def balance_build(shards_dir, cfg: BalanceConfig, out=None, workers: int | None = None, overwrite: bool = False,
                  progress: bool = True) -> dict:
    """Write ``balanced-<target>/`` for the build at ``shards_dir``; returns a summary for the CLI."""
    started = time.perf_counter()
    build = Path(shards_dir)
    source = Build.open(build)
    if source.kind != "build":
        raise HamdataError(f"{build}: is a {source.kind!r} set; --shards expects a build made by build-shards")
    manifest = read_manifest(build)
    train = manifest[manifest["split"] == "train"]
    if train.empty:
        raise HamdataError(f"{build}: the build has no train split (no train rows in {MANIFEST_NAME}); balance uses train only")
    target_dir = (Path(out) if out is not None else build) / balanced_name(cfg.target)
    workspace = Workspace(target_dir, overwrite=overwrite)
    with workspace.claim():  # one writer per output, from before the work until the set is in place
        return _balance(source, train, cfg, target_dir, workspace, workers, progress, started)


def _balance(source: Build, train, cfg: BalanceConfig, target_dir: Path, workspace: Workspace, workers: int | None,
             progress: bool, started: float) -> dict:
    build = source.path
    plan = plan_balance(train, cfg, source.classes)
    images, metas = index_train_shards(source, {s.origin for s in plan.samples})
    absent = sorted({s.origin for s in plan.samples} - (images.keys() & metas.keys()))
    if absent:
        raise HamdataError(f"{build}: {len(absent)} train samples of {MANIFEST_NAME} are in no train shard "
                           f"(first: {', '.join(absent[:3])}); run `verify {build}`")
    workers = pool_size(workers, sum(s.recipe is not None for s in plan.samples))  # the copies are the work
    # a copy belongs to its parent's collection and group (read_manifest fills them in for a format 1 build)
    origins = {s.origin for s in plan.samples}
    kin = {key: (collection, group) for key, collection, group in zip(train["key"], train["collection"], train["group"])
           if key in origins}
    shard_size = int(source.config["shard_size"])
    with workspace as tmp, BuildWriter(tmp, source.classes, shard_size, {"train": ""}, measure=False) as writer:
        _write_samples(writer, plan, images, metas, kin, source.image_format, source.quality, workers, progress)
        writer.finish(_balanced_card(source, cfg, plan, target_dir), build=source)
    seconds = time.perf_counter() - started
    return {"out": str(target_dir), "samples": len(plan.samples),
            "classes": {dx: cp.summary() for dx, cp in plan.classes.items()}, "warnings": list(plan.warnings),
            "samples_per_second": len(plan.samples) / seconds if seconds else 0.0, "workers": workers, "seconds": seconds}


def _write_samples(writer: BuildWriter, plan: BalancePlan, images: dict, metas: dict, kin: dict, fmt: str,
                   quality: int, workers: int, progress: bool) -> None:
    """The originals' bytes as they are, and the copies made in worker processes, in the plan's order."""
    tasks = (CopyTask(s.key, images[s.origin], s.recipe, fmt, quality) for s in plan.samples if s.recipe is not None)
    copies = ordered_map(make_copy, tasks, workers)
    bar = tqdm(total=len(plan.samples), unit="sample", desc="balance", disable=not progress, dynamic_ncols=True)
    try:
        for sample in plan.samples:
            record = json.loads(metas[sample.origin])
            if sample.recipe is None:
                ext, image, meta = images[sample.key].ext, images[sample.key].read(), metas[sample.key]
            else:
                record.update(source="augmented", parent=sample.origin, recipe=sample.recipe)
                ext, image, meta = fmt, next(copies), sample_json(record)
            collection, group = kin[sample.origin]
            writer.write(sample.key, ext, image, record, collection=collection, group=group, meta=meta)
            bar.update(1)
    finally:
        bar.close()
        copies.close()


def _balanced_card(source: Build, cfg: BalanceConfig, plan: BalancePlan, target_dir: Path) -> dict:
    """The balanced set's dataset.json but for what its writer adds (counts, shards, train statistics)."""
    from hamdata.image.augment import POLICIES, describe_policy

    config = asdict(cfg)
    # inherited from the build, so that readers of a balanced set find the image settings where a build has them
    config.update({name: thaw(source.config.get(name)) for name in ("format", "quality", "shard_size", "preprocess")})
    card = card_skeleton("balanced", config, source.classes)  # a balanced set has its build's class list
    size = tuple(source.preprocess.get("size", (256, 256)))
    card.update(
        build={"path": Path(os.path.relpath(source.path.resolve(), target_dir.resolve())).as_posix(),
               "sha256": sha256_file(source.path / CARD_NAME)},
        policies={dx: cp.policy for dx, cp in plan.classes.items()},
        policy_definitions={name: describe_policy(name, size) for name in POLICIES},
        plan={dx: cp.summary() for dx, cp in plan.classes.items()},
        warnings=list(plan.warnings),
    )
    return card
