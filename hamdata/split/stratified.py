"""Lesion-aware stratified train/val/test splits, the canonical split, and the leakage audit.

All images of one lesion go to one split. Within each class, lesions are
placed largest first into the split that is furthest below its target number
of images, which keeps every class within a lesion's size of the asked
fractions (scikit-learn's StratifiedGroupKFold balances folds, not arbitrary
fractions, and misses 70/15/15 by more than a point on the rare classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hamdata.inputs.classes import CLASSES
from hamdata.errors import HamdataError
from hamdata.inputs.vocabulary import shipped_file

SPLITS = ("train", "val", "test")
HELDOUT = "heldout"  # build-shards --hold-out: every image of the collections held out, and what their groups pull along
WRITTEN_SPLITS = SPLITS + (HELDOUT,)  # in the order a build writes them
CANONICAL_NAME = "ham10000_split.csv"
CANONICAL_SEED = 42
CANONICAL_FRACTIONS = (0.15, 0.15)  # (val, test)


@dataclass(frozen=True)
class SplitConfig:
    """How the split of a build was decided."""

    val: float = 0.15
    test: float = 0.15
    seed: int = 42
    manifest: str | None = None  # a split file given with --split-manifest
    fresh: bool = False  # --fresh-split: ignore the canonical split

    def __post_init__(self):
        for name, value in (("--val", self.val), ("--test", self.test)):
            if not 0.0 <= value < 1.0:
                raise HamdataError(f"{name}: expected a fraction in [0, 1), got {value}")
        if self.val + self.test >= 1.0:
            raise HamdataError(f"--val + --test must be below 1 so that train is not empty, got {self.val + self.test}")


def lesion_table(df: pd.DataFrame, classes=CLASSES, column: str = "lesion_id") -> pd.DataFrame:
    """One row per lesion (or other group `column`): its class (the most frequent dx, ties by class order)
    and image count; the id column is named lesion_id."""
    counts = df.groupby([column, "dx"], sort=True).size().rename("n").reset_index()
    counts["order"] = counts["dx"].map({dx: i for i, dx in enumerate(classes)})
    counts = counts.sort_values([column, "n", "order"], ascending=[True, False, True])
    table = counts.drop_duplicates(column)[[column, "dx"]]
    sizes = df.groupby(column, sort=True).size().rename("n")
    table = table.merge(sizes, left_on=column, right_index=True).reset_index(drop=True)
    return table.rename(columns={column: "lesion_id"})


def _assign_class(lesions: pd.DataFrame, fractions: np.ndarray, rng: np.random.Generator,
                  filled: np.ndarray | None = None) -> list[str]:
    """Place one class's lesions, largest first, into the split furthest below its target.

    filled: images of this class already placed (pinned) per split; they count toward the targets.
    """
    order = rng.permutation(len(lesions))
    sizes = lesions["n"].to_numpy()[order]
    order = order[np.argsort(-sizes, kind="stable")]
    filled = np.zeros(len(SPLITS)) if filled is None else filled.astype(float)
    targets = fractions * (lesions["n"].sum() + filled.sum())
    assigned = [""] * len(lesions)
    for i in order:
        deficit = np.where(fractions > 0, targets - filled, -np.inf)
        k = int(np.argmax(deficit))
        assigned[i] = SPLITS[k]
        filled[k] += lesions["n"].iat[i]
    return assigned


def split_lesions(df: pd.DataFrame, val: float = 0.15, test: float = 0.15, seed: int = 42, classes=CLASSES,
                  column: str = "lesion_id", pinned: pd.Series | None = None) -> pd.Series:
    """Split label ("train"/"val"/"test") for every row of ``df``, group-aware and stratified by class.

    column: the group column (all rows of one group go to one split); lesion_id by default.
    pinned: per row, a split the row's group must go to ("" = free); pinned images count toward the
    targets, so the free groups are split around them. Without pins: the lesion-aware split as always.
    """
    SplitConfig(val=val, test=test, seed=seed)  # validates the fractions
    fractions = np.array([1.0 - val - test, val, test])
    split_of: dict[str, str] = {}
    free = df
    pinned_table = None
    if pinned is not None and (pinned != "").any():
        pins = pd.DataFrame({"group": df[column].to_numpy(), "split": pinned.to_numpy()})
        split_of.update(dict(pins[pins["split"] != ""].drop_duplicates("group").itertuples(index=False)))
        is_pinned = np.array([group in split_of for group in df[column].tolist()], dtype=bool)  # isin: ~0.1 s
        free, pinned_table = df[~is_pinned], df[is_pinned].assign(split=df[column][is_pinned].map(split_of))
    lesions = lesion_table(free, classes, column) if len(free) else pd.DataFrame(columns=["lesion_id", "dx", "n"])
    rng = np.random.default_rng(seed)
    for dx in classes:
        part = lesions[lesions["dx"] == dx].reset_index(drop=True)
        if len(part):
            filled = None
            if pinned_table is not None:
                here = pinned_table[pinned_table["dx"] == dx]["split"].value_counts()
                filled = np.array([here.get(name, 0) for name in SPLITS])
            split_of.update(zip(part["lesion_id"].tolist(), _assign_class(part, fractions, rng, filled)))
    return df[column].map(split_of).rename("split")


def audit_leakage(df: pd.DataFrame) -> list[str]:
    """Problems that would leak information between splits: one line each, empty when clean.

    ``df`` needs lesion_id, image_id and split, and may have group. A lesion or group in two
    splits, or one image id in two splits (an augmented copy of a test image in train, say), is leakage.
    """
    problems = []
    for column in [c for c in ("lesion_id", "group", "image_id") if c in df.columns]:
        spread = df.groupby(column)["split"].nunique()
        for key in spread[spread > 1].index[:20]:
            splits = sorted(df.loc[df[column] == key, "split"].unique())
            problems.append(f"leakage: {column.replace('_id', '')} {key} is in several splits: {', '.join(splits)}")
        if column == "group" and (spread > 1).any():
            break  # a group spans splits because one of its lesions or images does, named above
        if (spread > 1).sum() > 20:
            problems.append(f"leakage: {(spread > 1).sum() - 20} more {column} values in several splits")
    return problems


def split_fractions(df: pd.DataFrame) -> pd.DataFrame:
    """Per-class fraction of images in each split (rows: CLASSES present, columns: SPLITS)."""
    table = pd.crosstab(df["dx"], df["split"], normalize="index")
    return table.reindex(columns=list(SPLITS), fill_value=0.0)


def canonical_path() -> Path | None:
    """Where the canonical split file lies: beside the code, or installed as package data."""
    return shipped_file(CANONICAL_NAME)


def make_canonical(metadata: pd.DataFrame) -> pd.DataFrame:
    """The canonical split table (image_id, lesion_id, dx, split) of the real HAM10000 metadata."""
    val, test = CANONICAL_FRACTIONS
    table = metadata[["image_id", "lesion_id", "dx"]].copy()
    table["split"] = split_lesions(metadata, val=val, test=test, seed=CANONICAL_SEED).to_numpy()
    return table.sort_values("image_id").reset_index(drop=True)


def read_split_file(path: Path) -> pd.DataFrame:
    """A split file: CSV with at least image_id and split columns."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise HamdataError(f"{path}: cannot read split file ({exc.__class__.__name__}: {exc})".splitlines()[0]) from None
    missing = {"image_id", "split"} - set(table.columns)
    if missing:
        raise HamdataError(f"{path}: split file needs columns image_id and split; missing {', '.join(sorted(missing))}")
    bad = table.index[~table["split"].isin(SPLITS)]
    if len(bad):
        raise HamdataError(f"{path}: row {bad[0] + 1}: split must be one of {', '.join(SPLITS)}, got {table['split'].iat[bad[0]]!r}")
    return table


def _split_of(table: pd.DataFrame) -> dict[str, str]:
    """image_id -> split of a split table, as plain strings: pandas' isin against the 10,015 canonical ids, and
    iterating over its arrow strings, cost ~0.1 s each, in every build."""
    return dict(zip(table["image_id"].tolist(), table["split"].tolist()))


def _absent(split_of: dict[str, str], metadata: pd.DataFrame) -> list[str]:
    """The image_ids of ``metadata`` that the split table does not list, in the metadata's order."""
    return [image_id for image_id in metadata["image_id"].tolist() if image_id not in split_of]


def decide_split(metadata: pd.DataFrame, cfg: SplitConfig, classes=CLASSES) -> tuple[pd.Series, dict]:
    """The split of every metadata row and a record of how it was decided.

    Order of precedence: --split-manifest FILE, --fresh-split, the canonical split, else a fresh split
    with the given seed. A ``group`` column (lesions, patients and duplicates merged: hamdata.split.groups)
    keeps each group in one split; without one, each lesion is a group. Images of the canonical split
    keep their canonical split and pull their group with them; the other groups are split around them.
    With the canonical split covering every image, the split is the canonical one, as always.
    """
    column = "group" if "group" in metadata.columns else "lesion_id"
    if cfg.manifest:
        path = Path(cfg.manifest)
        if not path.is_file():
            raise HamdataError(f"--split-manifest: no such file: {path}")
        split_of = _split_of(read_split_file(path))
        absent = _absent(split_of, metadata)
        if absent:
            raise HamdataError(
                f"{path}: {len(absent)} image_ids of the metadata are not in the split file (first: {', '.join(absent[:3])})"
            )
        return _apply(split_of, metadata, path), {"source": "file", "file": str(path)}
    canonical = canonical_path()
    fresh = {"val": cfg.val, "test": cfg.test, "seed": cfg.seed}
    if not cfg.fresh and canonical is not None:
        table = read_split_file(canonical)
        split_of = _split_of(table)
        record = {"source": "canonical", "file": f"manifests/{CANONICAL_NAME}"}
        ham = metadata["collection"] == "ham10000" if "collection" in metadata.columns else None
        if not _absent(split_of, metadata) and (ham is None or ham.all()):
            if tuple(classes) == CLASSES:
                _check_same_labels(table, metadata, canonical)
            split = metadata["image_id"].map(split_of).rename("split")
            if not audit_leakage(metadata.assign(split=split.to_numpy())):
                return split, record
        pinned = metadata["image_id"].map(split_of).fillna("")
        if (pinned != "").any():
            pinned, moved = _settle_pins(metadata[column], pinned, metadata["image_id"])
            split = split_lesions(metadata, cfg.val, cfg.test, cfg.seed, classes, column, pinned)
            record = dict(record, source="canonical+fresh", pinned=int((pinned != "").sum()), moved=moved, **fresh)
            return split, record
    split = split_lesions(metadata, cfg.val, cfg.test, cfg.seed, classes, column)
    return split, {"source": "fresh", **fresh}


def _settle_pins(groups: pd.Series, pinned: pd.Series, image_ids: pd.Series) -> tuple[pd.Series, list[dict]]:
    """One pinned split per group: where its pinned images disagree (a duplicate or patient links two
    canonical lesions of different splits), the split holding most of them wins (ties: test, val, train),
    and the others are listed as moved."""
    frame = pd.DataFrame({"group": groups.to_numpy(), "split": pinned.to_numpy(), "image_id": image_ids.to_numpy()})
    rank = {"test": 0, "val": 1, "train": 2}
    settled, moved = {}, []
    for group, part in frame[frame["split"] != ""].groupby("group", sort=True):
        counts = part["split"].value_counts()
        if len(counts) == 1:
            settled[group] = counts.index[0]
            continue
        best = sorted(counts.index, key=lambda name: (-counts[name], rank[name]))[0]
        settled[group] = best
        moved += [{"image_id": r.image_id, "canonical": r.split, "split": best, "group": group}
                  for r in part[part["split"] != best].itertuples(index=False)]
    return frame["group"].map(settled).fillna("").set_axis(pinned.index), sorted(moved, key=lambda m: m["image_id"])


def _check_same_labels(table: pd.DataFrame, metadata: pd.DataFrame, path: Path) -> None:
    """The canonical split only fits a copy of HAM10000 whose lesions and labels agree with it."""
    merged = metadata.merge(table, on="image_id", suffixes=("", "_canon"))
    for column in ("lesion_id", "dx"):
        if f"{column}_canon" in merged:
            differ = merged[merged[column] != merged[f"{column}_canon"]]
            if len(differ):
                raise HamdataError(
                    f"{path}: image {differ['image_id'].iat[0]} has {column} {differ[column].iat[0]!r} here but "
                    f"{differ[column + '_canon'].iat[0]!r} in the canonical split ({len(differ)} rows differ); "
                    "pass --fresh-split to split this copy anew"
                )


def _apply(split_of: dict[str, str], metadata: pd.DataFrame, path: Path) -> pd.Series:
    split = metadata["image_id"].map(split_of).rename("split")
    problems = audit_leakage(metadata.assign(split=split.to_numpy()))
    if problems:
        raise HamdataError(f"{path}: the split puts lesions or groups in several splits ({problems[0]})")
    return split
