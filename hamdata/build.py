"""`build-shards`: raw HAM10000 -> preprocessed, lesion-aware WebDataset shards.

The main process decides everything that is order or randomness (split,
sample order, shard boundaries) and writes; workers only turn one file's
bytes into an encoded image. Results come back in submission order, so the
shards are the same bytes whatever the number of workers. At most a fixed
window of work is in flight, so memory does not grow with the dataset.
"""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from hamdata import memory

from hamdata.dedup import compare

from hamdata.dedup import fingerprint as dedup
from hamdata.inputs.classes import CLASS_SETS, DEFAULT_CLASS_SET, resolve_class_set
from hamdata.dedup.settle import fingerprints, settle
from hamdata.errors import HamdataError
from hamdata.split.groups import UnionFind, make_groups
from hamdata.inputs.metadata_isic2020 import LIST_EVIDENCE
from hamdata.inputs.merge import DEFAULT_IMAGE_TYPES, check_image_types, check_paths, open_inputs
from hamdata.store.manifest import TABULAR_FORMAT, card_skeleton
from hamdata.parallel import ordered_map, pool_size
from hamdata.image.preprocess import PreprocessConfig
from hamdata.image.work import Task, process_image
from hamdata.store.card import Build, thaw
from hamdata.store.schema import sample_record
from hamdata.store.writer import BuildWriter
from hamdata.split.stratified import HELDOUT, SPLITS, WRITTEN_SPLITS, SplitConfig, decide_split
from hamdata.inputs.vocabulary import load_label_map
from hamdata.workspace import Workspace


@dataclass(frozen=True)
class BuildConfig:
    """Everything that decides the content of a build (workers and overwrite do not)."""

    data: tuple[str, ...] = ("data/HAM10000",)  # --data, in order (a str is one input)
    out: str = "shards"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    format: str = "jpg"
    quality: int = 95
    shard_size: int = 500
    on_error: str = "fail"
    allow_missing: bool = False
    classes: str = DEFAULT_CLASS_SET  # --classes: the class set of the build
    label_map: str | None = None  # --label-map FILE over the shipped map of the class set
    find_duplicates: bool = True  # search duplicates by content
    keep_duplicates: bool = False  # keep both images of a duplicate pair (in one split)
    image_types: tuple[str, ...] | None = DEFAULT_IMAGE_TYPES  # --image-types: kept types of inputs that name them
    hold_out: tuple[str, ...] = ()  # --hold-out: collections written to the heldout split, with their groups

    def __post_init__(self):
        if isinstance(self.data, (str, Path)):
            object.__setattr__(self, "data", (str(self.data),))
        object.__setattr__(self, "data", tuple(str(d) for d in self.data))
        if not self.data:
            raise HamdataError("--data: give at least one input folder")
        resolve_class_set(self.classes)
        if self.format not in ("jpg", "png"):
            raise HamdataError(f"--format: expected jpg or png, got {self.format!r}")
        if not 1 <= self.quality <= 100:
            raise HamdataError(f"--quality: expected 1..100, got {self.quality}")
        if self.shard_size < 1:
            raise HamdataError(f"--shard-size: expected a positive number of samples, got {self.shard_size}")
        if self.image_types is not None:
            object.__setattr__(self, "image_types", check_image_types(self.image_types))
        if self.on_error not in ("fail", "skip"):
            raise HamdataError(f"--on-error: expected fail or skip, got {self.on_error!r}")
        hold = self.hold_out.split(",") if isinstance(self.hold_out, str) else self.hold_out
        object.__setattr__(self, "hold_out", tuple(dict.fromkeys(h.strip() for h in hold if h.strip())))

    def to_dict(self) -> dict:
        record = asdict(self)
        record["preprocess"] = self.preprocess.to_dict()
        if not self.hold_out:
            del record["hold_out"]  # a build without one reads as before
        else:
            record["hold_out"] = list(self.hold_out)
        return record


def ordered_results(tasks: list[Task], cfg: BuildConfig, workers: int):
    """Results in task order, computed by ``workers`` processes (see hamdata.parallel)."""
    work = functools.partial(process_image, cfg=cfg.preprocess, fmt=cfg.format, quality=cfg.quality)
    return ordered_map(work, tasks, workers)


def sample_order(metadata: pd.DataFrame, split: pd.Series, seed: int) -> list[tuple[str, np.ndarray]]:
    """Row positions of each split in the seeded order they are written in (image ids sorted, then permuted)."""
    names, ids = split.to_numpy(), metadata["image_id"].to_numpy()
    ordered = []
    for k, name in enumerate(WRITTEN_SPLITS):
        rows = np.flatnonzero(names == name)
        rows = rows[np.argsort(ids[rows], kind="stable")]
        perm = np.random.default_rng([seed, k]).permutation(len(rows))
        ordered.append((name, rows[perm]))
    return ordered


ROW_CHUNK = 4096  # rows turned into Python objects at once while writing (401,059 at once: 370 MiB)


def _rows_in_order(metadata: pd.DataFrame, ordered: list[tuple[str, np.ndarray]]):
    """(split, row) in write order, a chunk of rows at a time: the build never holds a Python object per sample."""
    for name, rows in ordered:
        for start in range(0, len(rows), ROW_CHUNK):
            for row in metadata.iloc[rows[start:start + ROW_CHUNK]].itertuples(index=False):
                yield name, row


def build_shards(cfg: BuildConfig, workers: int | None = None, overwrite: bool = False, progress: bool = True) -> dict:
    """Build the shards of ``cfg.data`` into ``cfg.out``; returns a summary for the CLI."""
    started = time.perf_counter()
    out = Path(cfg.out)
    check_paths(cfg.data, out)
    workspace = Workspace(out, overwrite=overwrite)
    with workspace.claim():  # one writer per output, from before the work until the build is in place
        return _build(cfg, out, workspace, workers, progress, started)


def _missing_error(inputs, cfg: BuildConfig) -> HamdataError:
    first = inputs.sources[inputs.missing[0]["input"]]
    ids = [m["image_id"] for m in inputs.missing]
    return HamdataError(
        f"{first.metadata_path}: {len(ids)} of {len(inputs.table) + len(ids)} listed images have no file under "
        f"{', '.join(cfg.data)} (first: {', '.join(sorted(ids)[:3])}); pass --allow-missing to build the rest"
    )


def plan_samples(cfg: BuildConfig, workers: int | None, progress: bool) -> tuple[pd.DataFrame, pd.Series, dict]:
    """The kept images with their groups, their split, and the card fields about inputs, duplicates and groups."""
    label_map = load_label_map(cfg.classes, cfg.label_map)
    inputs = open_inputs(cfg.data, label_map, cfg.on_error, cfg.image_types)
    if inputs.missing and not cfg.allow_missing:
        raise _missing_error(inputs, cfg)
    check_hold_out(cfg.hold_out, inputs.table["collection"])
    listed = listed_duplicates(inputs, cfg.keep_duplicates)
    table = inputs.table
    if listed["drop"]:
        table = table[~table["image_id"].isin(listed["drop"])].reset_index(drop=True)
    if cfg.split.manifest:  # a split file that splits a lesion or patient fails now, before the duplicate search
        decide_split(table.assign(group=make_groups(table, inputs.links).to_numpy()), cfg.split, CLASS_SETS[cfg.classes])
    search = {"searched": cfg.find_duplicates, "method": dedup.METHOD if cfg.find_duplicates else None,
              "threshold": compare.THRESHOLD if cfg.find_duplicates else None, "kept": cfg.keep_duplicates,
              "same_lesion_pairs": 0, "fingerprinted": 0}
    found = {"drop": set(), "records": [], "pairs": []}
    if cfg.find_duplicates:
        # about 1 ms an image: worker processes only pay for their start-up (seconds) on large builds
        rows, vectors = fingerprints(list(table["locator"]), workers if len(table) > 5000 else 1, progress)
        memory.release(len(table))
        found = settle(table, rows, vectors, cfg.keep_duplicates)
        search.update(same_lesion_pairs=found["same_lesion_pairs"], fingerprinted=len(rows))
        del rows, vectors
        memory.release(len(table))
    listed_pairs = {frozenset(p) for p in listed["pairs"]}
    found["records"] = [r for r in found["records"] if frozenset((r["kept"], r["dropped"])) not in listed_pairs]
    dropped = table["image_id"].isin(found["drop"]).to_numpy()
    listed_rows = inputs.table[inputs.table["image_id"].isin(listed["drop"])]
    links = pd.concat([inputs.links, table[dropped][list(inputs.links.columns)],
                       listed_rows[list(inputs.links.columns)]], ignore_index=True)
    kept = table[~dropped].reset_index(drop=True) if dropped.any() else table.copy(deep=False)
    kept["group"] = make_groups(kept, links, found["pairs"] + listed["pairs"]).to_numpy()
    # links: the rows not built (copies dropped by content or by a list, later rows of an id) with their collection
    held = held_images(kept, links, found["pairs"] + listed["pairs"], cfg.hold_out) if cfg.hold_out else set()
    split, split_record = split_holding_out(kept, cfg, held)
    id_records = [{"kept": d["image_id"], "kept_input": d["kept_input"], "dropped": d["image_id"],
                   "input": d["dropped_input"], "action": "dropped", "file": d["dropped_file"],
                   "evidence": {"method": "image id", "detail": d["evidence"]}} for d in inputs.id_duplicates]
    sizes = kept.groupby("group").size()
    lesions = kept.groupby("group")["lesion_id"].nunique()
    fields = {
        "inputs": inputs.records(kept),
        "warnings": inputs.warnings,
        "missing": [m["image_id"] for m in inputs.missing],
        "unmapped": inputs.unmapped,
        "left_out": inputs.left_out,
        "label_map": list(label_map.files),
        "duplicates": id_records + listed["records"] + found["records"],
        "duplicate_lists": listed["lists"],
        "features": list(dict.fromkeys(n for s in inputs.sources for n in s.feature_names)),
        "duplicate_search": search,
        "groups": {"count": int(len(sizes)), "largest": int(sizes.max()) if len(sizes) else 0,
                   "with_several_lesions": int((lesions > 1).sum())},
        "split": split_record,
    }
    return kept, split, fields


def check_hold_out(hold_out: tuple[str, ...], collections: pd.Series) -> None:
    """--hold-out names collections the build holds, and not all of them (checked before the duplicate search)."""
    present = sorted(set(collections))
    absent = [c for c in hold_out if c not in present]
    if absent:
        raise HamdataError(f"--hold-out {absent[0]}: the build holds no image of collection {absent[0]!r}: expected "
                           f"one of {', '.join(present)}")
    if hold_out and set(present) <= set(hold_out):
        raise HamdataError(f"--hold-out {','.join(hold_out)}: every image of the build would be held out: nothing "
                           f"left to train on")


def held_images(kept: pd.DataFrame, gone: pd.DataFrame, pairs, hold_out: tuple[str, ...]) -> set:
    """The kept images that stand for a held-out collection: its own, and the kept copy of each of its images
    that the build dropped (a later copy of the same id in `gone`, or the partner of a dropped copy in `pairs`,
    found by content or listed), so that a held-out picture never trains under another collection's name."""
    own = set(kept.loc[kept["collection"].isin(hold_out), "image_id"])
    dropped = set(gone.loc[gone["collection"].isin(hold_out), "image_id"])
    kept_ids = set(kept["image_id"])
    stand_in = {i for pair in pairs if set(pair) & dropped for i in pair}
    return own | ((dropped | stand_in) & kept_ids)


def split_holding_out(kept: pd.DataFrame, cfg: BuildConfig, held: set = frozenset()) -> tuple[pd.Series, dict]:
    """The split of every kept row: with --hold-out, every group holding an image in `held` (held_images) is
    ``heldout`` (images of other collections it pulls along are listed in the record), and the rest is split as
    without it (HAM10000 on its canonical split but for the images pulled out)."""
    classes = CLASS_SETS[cfg.classes]
    if not cfg.hold_out:
        return decide_split(kept, cfg.split, classes)
    touched = set(kept.loc[kept["image_id"].isin(held), "group"])
    out = kept["group"].isin(touched).to_numpy()  # the rows written to heldout
    if out.all():
        raise HamdataError(f"--hold-out {','.join(cfg.hold_out)}: every image of the build would be held out: "
                           f"nothing left to train on")
    rest, record = decide_split(kept[~out], cfg.split, classes)
    split = pd.Series(HELDOUT, index=kept.index, name="split", dtype=object)
    split[~out] = rest.to_numpy()
    pulled = kept[out & ~kept["collection"].isin(cfg.hold_out).to_numpy()]
    record = dict(record, held_out={
        "collections": list(cfg.hold_out), "images": int(out.sum()), "groups": len(touched),
        "pulled_along": [{"image_id": r.image_id, "collection": r.collection, "group": r.group}
                         for r in pulled.sort_values("image_id").itertuples(index=False)]})
    return split, record


def listed_duplicates(inputs, keep: bool) -> dict:
    """What the inputs' published duplicate lists (ISIC 2020's) decide, whatever the search by content finds.

    The listed pairs of one input form sets (a chain a-b, b-c is one set); of each set the first image that the
    list never names second is kept (else the first in table order), the others are dropped, or all kept with
    `keep`; every pair links its images into one group. A pair with an image the build does not take (a label no
    class takes, an image type left out) has nothing to drop and is counted as ``outside``.
    Returns {"drop": ids, "pairs": (kept, other) pairs, "records": dataset.json duplicates, "lists": per list}.
    """
    position = {image: i for i, image in enumerate(inputs.table["image_id"])}
    input_of = dict(zip(inputs.table["image_id"], inputs.table["input"]))
    drop, pairs, records, lists = set(), [], [], []
    for index, source in enumerate(inputs.sources):
        if source.duplicate_list is None:
            continue
        # The sets are made of every listed pair, built or not: a-b, b-c with b left out still makes a and c one.
        sets = UnionFind()
        for a, b in source.listed_duplicates:
            sets.union(a, b)
        members: dict = {}
        for image in sorted({i for pair in source.listed_duplicates for i in pair if i in position}, key=position.get):
            members.setdefault(sets.find(image), []).append(image)
        seconds = {b for _, b in source.listed_duplicates}
        for images in members.values():
            kept = next((i for i in images if i not in seconds), images[0])
            for other in images:
                if other == kept:
                    continue
                pairs.append((kept, other))
                records.append({"kept": kept, "kept_input": int(input_of[kept]), "dropped": other,
                                "input": int(input_of[other]), "action": "kept (--keep-duplicates)" if keep else "dropped",
                                "evidence": {"method": LIST_EVIDENCE, "file": str(source.duplicate_list)}})
                if not keep:
                    drop.add(other)
        inside = sum(a in position and b in position for a, b in source.listed_duplicates)
        lists.append({"input": index, "file": str(source.duplicate_list), "pairs": len(source.listed_duplicates),
                      "applied": inside, "outside": len(source.listed_duplicates) - inside})
    records.sort(key=lambda r: (r["kept"], r["dropped"]))
    return {"drop": drop, "pairs": sorted(pairs), "records": records, "lists": lists}


def _build(cfg: BuildConfig, out: Path, workspace: Workspace, workers: int | None, progress: bool,
           started: float) -> dict:
    kept, split, fields = plan_samples(cfg, workers, progress)
    workers = pool_size(workers, len(kept))
    memory.release(len(kept))  # the planning's tables are gone; the writing starts from what is alive
    classes = CLASS_SETS[cfg.classes]
    splits = SPLITS + ((HELDOUT,) if (split == HELDOUT).any() else ())
    with workspace as tmp, BuildWriter(tmp, classes, cfg.shard_size, {name: name for name in splits}) as writer:
        tabular = bool(len(kept)) and kept["features"].notna().any()  # format 3: an input with measurements
        skipped, converted, stage_seconds = _write_samples(writer, kept, split, cfg, tabular, workers, progress)
        card = card_skeleton("build", cfg.to_dict(), classes)
        if tabular:
            card.update(format_version=TABULAR_FORMAT)
        first = fields["inputs"][0]
        missing = [{"image_id": i, "file": None, "reason": "missing: no image file found"} for i in fields.pop("missing")]
        card.update(split=fields.pop("split"), skipped=sorted(missing + skipped, key=lambda s: s["image_id"]),
                    converted=converted,
                    input={"root": first["root"], "layout": first["layout"], "metadata": first["metadata"],
                           "rows": first["rows"], "warnings": fields.pop("warnings")})
        card.update(fields)
        writer.finish(card)
    seconds = time.perf_counter() - started
    built = Build.open(out)  # the summary is what the card in place says
    written = sum(s.samples for s in built.shards)
    return {"out": str(out), "samples": written, "counts": thaw(built.counts), "skipped": len(built.skipped),
            "unmapped": thaw(built.unmapped), "left_out": thaw(built.left_out),
            "duplicate_lists": thaw(built.duplicate_lists), "shards": len(built.shards),
            "split": thaw(built.split_record), "warnings": list(built.warnings), "duplicates": len(built.duplicates),
            "seconds": seconds, "images_per_second": written / seconds if seconds else 0.0,
            "stage_seconds": stage_seconds, "workers": workers}


def _write_samples(writer: BuildWriter, kept: pd.DataFrame, split: pd.Series, cfg: BuildConfig, tabular: bool,
                   workers: int, progress: bool) -> tuple[list, list, dict]:
    """Preprocess the kept images in worker processes and write them in the seeded order; returns the skipped
    and converted inputs and the seconds per stage."""
    ordered = sample_order(kept, split, cfg.split.seed)
    # Two passes over the same rows: one feeds the workers (ahead by their window), one writes the results in
    # order; tee holds only the rows between the two.
    feed, rows = itertools.tee(_rows_in_order(kept, ordered))
    tasks = (Task(k, row.image_id, row.locator) for k, (_, row) in enumerate(feed))
    total = sum(len(r) for _, r in ordered)
    stage_seconds: dict[str, float] = {}
    skipped, converted = [], []
    bar = tqdm(total=total, unit="img", desc="build-shards", disable=not progress, dynamic_ncols=True)
    results = ordered_results(tasks, cfg, workers)
    try:
        for result, (name, row) in zip(results, rows):
            bar.update(1)
            for stage, sec in result.seconds.items():
                stage_seconds[stage] = stage_seconds.get(stage, 0.0) + sec
            locator = row.locator
            if result.error:
                if cfg.on_error == "fail":
                    raise HamdataError(f"{locator}: {result.error} (pass --on-error skip to build without it)")
                skipped.append({"image_id": row.image_id, "file": locator, "reason": result.error})
                continue
            if result.notes:
                converted.append({"image_id": row.image_id, "file": locator, "notes": list(result.notes)})
            t0 = time.perf_counter()
            writer.write(row.image_id, cfg.format, result.data, sample_record(row, name, tabular),
                         collection=row.collection, group=row.group, moments=result.moments)
            stage_seconds["write"] = stage_seconds.get("write", 0.0) + time.perf_counter() - t0
    finally:
        results.close()  # stop the workers now (on an error), not whenever the generator is collected
        bar.close()
    return skipped, converted, stage_seconds
