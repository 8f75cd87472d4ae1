"""dataset.json (the dataset card) and manifest.csv (one row per sample): write and read.

dataset.json is written last, into a folder that is moved into place only
when complete, so its presence means the build finished. Beside it,
_info.json lists the splits in the format of timm's WebDataset reader.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import platform
from pathlib import Path

import pandas as pd

from hamdata import __version__
from hamdata.inputs.classes import CLASSES, check_classes
from hamdata.errors import HamdataError
from hamdata.store.schema import MANIFEST_COLUMNS, MANIFEST_COLUMNS_V1

# 2: the class list belongs to the build (``classes``), samples record their collection and input,
# dataset.json gains ``inputs``, ``groups``, ``duplicates`` and ``unmapped``. Version 1 cards are still read.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2, 3)
TABULAR_FORMAT = 3  # a build whose samples carry image_type and features (hamdata.store.shards format 3)
CARD_NAME = "dataset.json"
MANIFEST_NAME = "manifest.csv"
INFO_NAME = "_info.json"  # what timm.data.create_dataset("wds/...", root=FOLDER, split=NAME) reads


def library_versions() -> dict:
    """Versions of everything that decides the bytes of a shard."""
    import cv2
    import numpy
    import PIL

    versions = {"python": platform.python_version(), "numpy": numpy.__version__, "opencv": cv2.__version__, "pillow": PIL.__version__}
    try:  # from the package metadata: importing albumentations would import torch (seconds)
        versions["albumentations"] = importlib.metadata.version("albumentations")
    except importlib.metadata.PackageNotFoundError:  # only balancing needs it
        pass
    return versions


class ManifestWriter:
    """Streams manifest.csv rows as samples are written (memory stays flat)."""

    def __init__(self, path: Path):
        self._file = open(path, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv.writerow(MANIFEST_COLUMNS)

    def write(self, row: dict) -> None:
        self._csv.writerow(["" if row.get(c) is None else row[c] for c in MANIFEST_COLUMNS])

    def close(self) -> None:
        self._file.close()


def card_skeleton(kind: str, config: dict, classes=CLASSES) -> dict:
    """The fields every dataset.json starts with."""
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "tool": {"name": "hamdata", "version": __version__},
        "libraries": library_versions(),
        "config": config,
        "classes": list(classes),
    }


def card_classes(card: dict) -> tuple[str, ...]:
    """The class list of a build or balanced set (a version 1 card without one: the HAM10000 classes)."""
    return tuple(card.get("classes") or CLASSES)


def write_card(folder: Path, card: dict) -> None:
    text = json.dumps(card, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    (folder / CARD_NAME).write_text(text, encoding="utf-8")


def timm_info(card: dict, build: dict | None = None) -> dict:
    """The _info.json of a build or balanced set: per split, its shard files relative to the folder, their sample
    counts and the total, in dataset.json's shard order (the layout that timm's WebDataset reader reads:
    timm/data/readers/reader_wds.py, _parse_split_info; a split is then chosen by name, with no brace pattern or
    sample count typed by hand).

    build: for a balanced set, the card of its build, whose val and test splits are listed too, through the
    set's path to its build (``../val/val-000000.tar``): trained on the set, a model is validated on real data.
    """
    splits = {split: [(s["path"], s["samples"]) for s in shards_of(card, split)] for split in split_names(card)}
    for split in split_names(build or {}):
        if split not in splits:
            splits[split] = [(f"{card['build']['path']}/{s['path']}", s["samples"]) for s in shards_of(build, split)]
    name = "hamdata" if card.get("kind") == "build" else f"hamdata-balanced-{card.get('config', {}).get('target')}"
    return {"name": name, "splits": {split: {"name": split, "num_samples": sum(n for _, n in files),
                                             "filenames": [f for f, _ in files], "shard_lengths": [n for _, n in files]}
                                     for split, files in splits.items()}}


def write_info(folder: Path, card: dict, build: dict | None = None) -> None:
    """_info.json (see timm_info), written from the finished card before the card itself, which comes last."""
    text = json.dumps(timm_info(card, build), indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    (folder / INFO_NAME).write_text(text, encoding="utf-8")


def read_card(folder: Path) -> dict:
    """The dataset card of a build; a clear error when there is none or it is damaged."""
    path = Path(folder) / CARD_NAME
    if not path.is_file():
        if any(Path(folder).parent.glob(f".{Path(folder).name}.tmp-*")):
            raise HamdataError(f"{folder}: no {CARD_NAME}: the build there did not finish; run it again")
        if not Path(folder).exists():
            raise HamdataError(f"{folder}: no such folder (expected a build made by `hamdata build-shards`)")
        raise HamdataError(f"{folder}: no {CARD_NAME}: not a hamdata build (run `hamdata build-shards` first)")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HamdataError(f"{path}: unreadable dataset card ({exc})") from None
    if not isinstance(card, dict) or card.get("format_version") not in READABLE_FORMATS:
        raise HamdataError(f"{path}: expected format_version {' or '.join(map(str, READABLE_FORMATS))}, "
                           f"got {card.get('format_version') if isinstance(card, dict) else card!r}")
    check_classes(card.get("classes"), path)
    return card


def read_manifest(folder: Path) -> pd.DataFrame:
    """manifest.csv as strings (label as int); empty cells become None-like empty strings."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise HamdataError(f"{folder}: no {MANIFEST_NAME}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise HamdataError(f"{path}: unreadable manifest ({exc})".splitlines()[0]) from None
    if tuple(table.columns) == MANIFEST_COLUMNS_V1:  # a version 1 build: HAM10000 only, lesions are the groups
        table = table.assign(collection="ham10000", group="")
    if tuple(table.columns) != MANIFEST_COLUMNS:
        raise HamdataError(f"{path}: expected columns {','.join(MANIFEST_COLUMNS)}, got {','.join(table.columns)}")
    return table


def split_names(card: dict) -> list[str]:
    """The splits of a card, in its order: those its counts list, then any that only its shards name."""
    return list(dict.fromkeys([*card.get("counts", {}), *(s["split"] for s in card.get("shards", []))]))


def shards_of(card: dict, split: str | None = None) -> list[dict]:
    """Shard entries of the card, optionally of one split, in order."""
    return [s for s in card.get("shards", []) if split is None or s["split"] == split]
