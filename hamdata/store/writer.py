"""``BuildWriter``: the one writer of a build folder's content, for ``build-shards`` and ``balance`` alike.

    writer = BuildWriter(tmp, classes, shard_size, {"train": "train", "val": "val", "test": "test"})
    for ...:
        writer.write(key, ext, image, record, collection=..., group=..., moments=...)
    writer.finish(card)   # counts, shards, train statistics into the card; _info.json; dataset.json last

It owns the shards (one ShardWriter per split), manifest.csv (one row per sample, hamdata.store.schema), each
image's sha256, the counts per split and class, the train pixel statistics, _info.json and dataset.json, written
last so that its presence means the folder is whole. The caller owns the folder itself (a Workspace that is moved
into place only after ``finish``) and everything that decides what is written and in which order.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping

import numpy as np

from hamdata.inputs.classes import label_of
from hamdata.store.card import Build, thaw
from hamdata.store.manifest import MANIFEST_NAME, ManifestWriter, write_card, write_info
from hamdata.store.schema import manifest_row, sample_json
from hamdata.store.shards import ShardWriter

def mean_std(moments: np.ndarray) -> dict:
    """Per-channel mean and std of the train pixels, in [0, 1] units (dataset.json ``train_stats``)."""
    if moments[6] == 0:
        return {"mean": None, "std": None, "pixels": 0}
    mean = moments[:3] / moments[6] / 255.0
    std = np.sqrt(np.maximum(moments[3:6] / moments[6] / 255.0 ** 2 - mean ** 2, 0.0))
    return {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std], "pixels": int(moments[6])}


class BuildWriter:
    """Writes the samples of a build or balanced set into ``folder``, then its card.

    splits: split name -> folder of its tars inside ``folder`` (a build: ``{"train": "train", ...}``, in card
    order; a balanced set: ``{"train": ""}``, its tars at its top). measure: sum the train images' pixel moments
    (given with each write) into ``train_stats``; a balanced set keeps its build's instead.
    Use it as a context manager: leaving the block on an error closes every file without finishing.
    """

    def __init__(self, folder: Path, classes, shard_size: int, splits: Mapping[str, str], measure: bool = True):
        self.folder = Path(folder)
        self.classes = tuple(classes)
        self._shards = {name: ShardWriter(self.folder, subdir, name, name, shard_size) for name, subdir in splits.items()}
        self._counts = {(name, dx): 0 for name in splits for dx in self.classes}
        self._moments = np.zeros(7, dtype=np.int64) if measure else None
        self._manifest = ManifestWriter(self.folder / MANIFEST_NAME)
        self._open = True

    def write(self, key: str, ext: str, image: bytes, record: dict, *, collection, group, meta: bytes | None = None,
              moments: np.ndarray | None = None) -> str:
        """Append one sample to its split (``record["split"]``); returns the shard it went into.

        record: the sample's json record (hamdata.store.schema); meta: its json member when it is already encoded
        (a balanced set copies its originals' bytes), else sample_json(record). moments: the
        hamdata.image.work.channel_moments of a train image, when the writer measures.
        """
        split, dx = record["split"], record["dx"]
        label = label_of(dx, self.classes)
        shard = self._shards[split].write(key, ext, image, label, meta if meta is not None else sample_json(record))
        self._manifest.write(manifest_row(key, record, label, shard, hashlib.sha256(image).hexdigest(), collection, group))
        self._counts[split, dx] += 1
        if self._moments is not None and split == "train" and moments is not None:
            self._moments += moments
        return shard

    def finish(self, card: dict, build: Build | None = None) -> dict:
        """Close the shards and manifest, put ``counts``, ``shards`` and ``train_stats`` into ``card``, write
        _info.json and then dataset.json; returns the card. build: a balanced set's build, whose train statistics
        the set keeps and whose val and test splits its _info.json lists too."""
        shards = [info.to_dict() for writer in self._shards.values() for info in writer.close()]
        self._manifest.close()
        self._open = False
        card.update(counts={name: {dx: self._counts[name, dx] for dx in self.classes} for name in self._shards},
                    shards=shards)
        if self._moments is not None:
            card["train_stats"] = mean_std(self._moments)
        elif build is not None:
            card["train_stats"] = thaw(build.raw.get("train_stats"))
        write_info(self.folder, card, build=thaw(build.raw) if build is not None else None)
        write_card(self.folder, card)
        return card

    def abort(self) -> None:
        """Close every file without finishing (the folder is thrown away)."""
        if self._open:
            for writer in self._shards.values():
                writer.abort()
            self._manifest.close()
            self._open = False

    def __enter__(self) -> BuildWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None:
            self.abort()
