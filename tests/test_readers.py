"""Other frameworks read a build with no hamdata code: tarfile + PIL, webdataset, HuggingFace datasets.

hamdata only makes the build here. Each reader must return every sample once,
with the label, split and metadata that manifest.csv lists; the object-storage
routes of the README (webdataset ``pipe:`` URLs, fsspec URLs) are read the same
way from a local pipe and fsspec's in-memory filesystem.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from hamdata.inputs.classes import CLASSES

SIZE = (32, 32)  # of conftest's `build`, the session's shared one (160 images, 25 a tar: several per split), read only


def manifest(folder: Path) -> dict[str, dict]:
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as handle:
        return {row["key"]: row for row in csv.DictReader(handle)}


def shard_paths(folder: Path, split: str | None = None) -> list[str]:
    """Shard files in dataset.json order: the list a reader gets, no brace range guessed."""
    card = json.loads((folder / "dataset.json").read_text())
    return [str(folder / s["path"]) for s in card["shards"] if split is None or s["split"] == split]


class Checker:
    """Compares what a reader returned with manifest.csv; every key once, none missing."""

    def __init__(self, folder: Path):
        self.folder, self.rows, self.seen = folder, manifest(folder), []

    def check(self, key: str, label: int, meta: dict, image: Image.Image | None = None, url: str | None = None) -> None:
        row = self.rows[key]
        self.seen.append(key)
        assert label == int(row["label"]) and CLASSES[label] == row["dx"] == meta["dx"], key
        for column in ("image_id", "lesion_id", "split", "source"):
            assert meta[column] == row[column], (key, column)
        assert (meta["parent"] or "") == row["parent"], key
        if image is not None:
            assert image.size == SIZE and image.mode == "RGB", key
        if url is not None:
            assert Path(url) == self.folder / row["shard"], key

    def done(self) -> None:
        assert len(self.seen) == len(set(self.seen)), "a sample was read twice"
        assert set(self.seen) == set(self.rows), "readers must return every sample of manifest.csv"


def test_tarfile_and_pil_read_every_sample(build):
    checker = Checker(build)
    for path in shard_paths(build):
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            for image_m, cls_m, json_m in zip(members[0::3], members[1::3], members[2::3]):
                key = image_m.name.split(".", 1)[0]
                assert [image_m.name, cls_m.name, json_m.name] == [f"{key}.jpg", f"{key}.cls", f"{key}.json"]
                data = tar.extractfile(image_m).read()
                assert hashlib.sha256(data).hexdigest() == checker.rows[key]["sha256"]
                image = Image.open(io.BytesIO(data))
                image.load()
                checker.check(key, int(tar.extractfile(cls_m).read()), json.loads(tar.extractfile(json_m).read()), image,
                              url=path)
    checker.done()


def test_webdataset_reads_every_sample(build):
    import webdataset as wds

    checker = Checker(build)
    for split in ("train", "val", "test"):
        dataset = wds.WebDataset(shard_paths(build, split), shardshuffle=False).decode("pil").to_tuple("jpg", "cls", "json")
        for image, label, meta in dataset:
            assert meta["split"] == split
            checker.check(meta["image_id"], label, meta, image)  # originals: key == image_id
    checker.done()


def test_webdataset_brace_range_and_pipe_url(build):
    """The shard-name pattern with a brace range, opened through a shell pipe (how object stores are read)."""
    import webdataset as wds

    train = shard_paths(build, "train")
    assert len(train) > 1
    url = f"pipe:cat {build}/train/train-{{000000..{len(train) - 1:06d}}}.tar"
    dataset = wds.WebDataset(url, shardshuffle=False).to_tuple("__key__", "cls", "json")
    keys = [key for key, _, _ in dataset]
    rows = manifest(build)
    assert sorted(keys) == sorted(k for k, r in rows.items() if r["split"] == "train")


def test_webdataset_fsspec_url(build, monkeypatch):
    """An fsspec filesystem (here in memory; s3://, gs://, ... alike) as a gopen handler."""
    import fsspec
    import webdataset as wds

    memory = fsspec.filesystem("memory")
    urls = []
    for path in shard_paths(build, "val"):
        urls.append(f"memory://bucket/hamdata-readers/{Path(path).name}")
        memory.pipe(urls[-1], Path(path).read_bytes())
    monkeypatch.setitem(wds.gopen_schemes, "memory", lambda url, mode="rb", bufsize=8192, **kw: fsspec.open(url, mode).open())
    try:
        labels = {key: label for key, label in wds.WebDataset(urls, shardshuffle=False).decode().to_tuple("__key__", "cls")}
    finally:
        for url in urls:
            memory.rm(url)
    rows = manifest(build)
    assert labels == {k: int(r["label"]) for k, r in rows.items() if r["split"] == "val"}


def test_huggingface_datasets_reads_every_sample(build, tmp_path):
    datasets = pytest.importorskip("datasets", reason="HuggingFace datasets is not installed (pip install datasets)")
    files = {split: shard_paths(build, split) for split in ("train", "val", "test")}
    loaded = datasets.load_dataset("webdataset", data_files=files, cache_dir=str(tmp_path / "hf"))
    checker = Checker(build)
    for split, dataset in loaded.items():
        assert dataset.features["cls"].dtype == "int64"
        for row in dataset:
            assert row["json"]["split"] == split
            checker.check(row["__key__"], row["cls"], row["json"], row["jpg"].convert("RGB"), url=row["__url__"])
    checker.done()


def hf_features(datasets):
    """The explicit schema the README gives: no inference from the first samples, class names attached."""
    text = datasets.Value("string")
    meta = {name: text for name in ("image_id", "lesion_id", "dx", "dx_type", "sex", "localization", "split", "source", "parent")}
    meta["age"] = datasets.Value("float64")
    meta["recipe"] = {"policy": text, "version": datasets.Value("int64"), "seed": datasets.Value("int64")}
    return datasets.Features({"jpg": datasets.Image(), "cls": datasets.ClassLabel(names=list(CLASSES)), "json": meta,
                              "__key__": text, "__url__": text})


def test_huggingface_datasets_balanced_set_with_explicit_features(balanced, tmp_path):
    """Copies carry a recipe object where originals have null: the README's explicit features read both."""
    datasets = pytest.importorskip("datasets", reason="HuggingFace datasets is not installed (pip install datasets)")
    dataset = datasets.load_dataset("webdataset", data_files={"train": shard_paths(balanced)}, split="train",
                                    features=hf_features(datasets), cache_dir=str(tmp_path / "hf"))
    checker = Checker(balanced)
    for row in dataset:
        checker.check(row["__key__"], row["cls"], row["json"], row["jpg"].convert("RGB"))
        assert (row["json"]["recipe"] is None) == (row["json"]["source"] == "original")
    checker.done()
    assert dataset.features["cls"].int2str(0) == CLASSES[0]


def test_huggingface_datasets_fsspec_url(build, tmp_path):
    datasets = pytest.importorskip("datasets", reason="HuggingFace datasets is not installed (pip install datasets)")
    import fsspec

    memory = fsspec.filesystem("memory")
    urls = []
    for path in shard_paths(build, "test"):
        urls.append(f"memory://bucket/hamdata-hf/{Path(path).name}")
        memory.pipe(urls[-1], Path(path).read_bytes())
    try:
        dataset = datasets.load_dataset("webdataset", data_files={"test": "memory://bucket/hamdata-hf/*.tar"}, split="test",
                                        cache_dir=str(tmp_path / "hf"))
        labels = {row["__key__"]: row["cls"] for row in dataset}
    finally:
        for url in urls:
            memory.rm(url)
    assert labels == {k: int(r["label"]) for k, r in manifest(build).items() if r["split"] == "test"}
