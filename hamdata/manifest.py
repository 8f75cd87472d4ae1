"""dataset.json (the dataset card) and manifest.csv (one row per sample): write and read.

dataset.json is written last, into a folder that is moved into place only
when complete, so its presence means the build finished.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import platform
from pathlib import Path

import pandas as pd

from . import __version__
from .classes import CLASSES
from .errors import HamdataError

FORMAT_VERSION = 1
CARD_NAME = "dataset.json"
MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = (
    "key", "split", "label", "dx", "image_id", "lesion_id",
    "source", "parent", "recipe", "shard", "sha256",
)


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


def card_skeleton(kind: str, config: dict) -> dict:
    """The fields every dataset.json starts with."""
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "tool": {"name": "hamdata", "version": __version__},
        "libraries": library_versions(),
        "config": config,
        "classes": list(CLASSES),
    }


def count_table(rows: pd.DataFrame) -> dict:
    """{split: {dx: n}} with every class listed, in CLASSES order."""
    counts = {}
    for split, part in rows.groupby("split", sort=False):
        per_class = part["dx"].value_counts()
        counts[split] = {dx: int(per_class.get(dx, 0)) for dx in CLASSES}
    return counts


def write_card(folder: Path, card: dict) -> None:
    text = json.dumps(card, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    (folder / CARD_NAME).write_text(text, encoding="utf-8")


def read_card(folder: Path) -> dict:
    """The dataset card of a build; a clear error when there is none or it is damaged."""
    path = Path(folder) / CARD_NAME
    if not path.is_file():
        if any(Path(folder).parent.glob(f".{Path(folder).name}.tmp-*")):
            raise HamdataError(f"{folder}: no {CARD_NAME}: the build there did not finish; run it again")
        raise HamdataError(f"{folder}: no {CARD_NAME}: not a hamdata build (run `hamdata build-shards` first)")
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HamdataError(f"{path}: unreadable dataset card ({exc})") from None
    if not isinstance(card, dict) or card.get("format_version") != FORMAT_VERSION:
        raise HamdataError(f"{path}: expected format_version {FORMAT_VERSION}, got {card.get('format_version') if isinstance(card, dict) else card!r}")
    if tuple(card.get("classes", ())) != CLASSES:
        raise HamdataError(f"{path}: class list {card.get('classes')} differs from hamdata's {list(CLASSES)}")
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
    if tuple(table.columns) != MANIFEST_COLUMNS:
        raise HamdataError(f"{path}: expected columns {','.join(MANIFEST_COLUMNS)}, got {','.join(table.columns)}")
    return table


def shards_of(card: dict, split: str | None = None) -> list[dict]:
    """Shard entries of the card, optionally of one split, in order."""
    return [s for s in card.get("shards", []) if split is None or s["split"] == split]
