"""timm and Ray Data read a build as README shows, with no hamdata code.

timm finds a split by its name through the build's ``_info.json``; README's
Ray Data example runs on a local Ray (2 CPUs) in a child process, so that a
hang is a timeout and no Ray state stays in the test session. Both must return
every sample once, with the label manifest.csv lists.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hamdata.inputs.classes import CLASSES
from helpers import REPO

SPLITS = ("train", "val", "test")
SIZE = (32, 32)  # of conftest's `build` (160 images, 25 a tar: several per split), read only
TARGET = 6  # samples per class of conftest's `balanced`, made from `build`, read only


def manifest(folder: Path) -> list[dict]:
    """manifest.csv's rows in file order, which is the order of the samples in the shards."""
    with open(folder / "manifest.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def readme_block(needle: str) -> str:
    """The one ```python block of README.md that holds ``needle``: the test runs the example as printed."""
    blocks = (REPO / "README.md").read_text(encoding="utf-8").split("```python\n")[1:]
    found = [block.split("```", 1)[0] for block in blocks if needle in block.split("```", 1)[0]]
    assert len(found) == 1, f"README.md: {len(found)} python blocks hold {needle!r}"
    return found[0]


SHARD_LIST = 'card = json.load(open("shards/dataset.json"))'  # README's shard list, from dataset.json


# ------------------------------------------------------------------ timm


@pytest.fixture(scope="module")
def create_dataset():
    return pytest.importorskip("timm.data", reason="timm is not installed (pip install -r requirements-test.txt)").create_dataset


@pytest.mark.parametrize("split", SPLITS)
def test_timm_eval_mode_reads_a_split_by_name_once_in_shard_order(build, create_dataset, split):
    dataset = create_dataset("wds/hamdata", root=str(build), split=split, is_training=False)
    rows = [row for row in manifest(build) if row["split"] == split]
    keys = [name.removesuffix(".JPEG") for name in dataset.filenames()]  # timm's reader: __key__ + ".JPEG"
    samples = list(dataset)
    assert len(dataset) == len(samples) == len(rows) > 0
    assert keys == [row["key"] for row in rows], "every sample once, in the order of the shards"
    for row, (image, label) in zip(rows, samples):
        assert label == int(row["label"]) and CLASSES[label] == row["dx"], row["key"]
        assert image.size == SIZE and image.mode == "RGB", row["key"]


def test_timm_eval_mode_gives_the_shard_pixels(build, create_dataset):
    dataset = create_dataset("wds/hamdata", root=str(build), split="val", is_training=False)
    card = json.loads((build / "dataset.json").read_text())
    stored = []
    for entry in (s for s in card["shards"] if s["split"] == "val"):
        with tarfile.open(build / entry["path"]) as tar:
            stored += [np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"))
                       for m in tar.getmembers() if m.name.endswith(".jpg")]
    assert len(stored) == len(dataset)
    for (image, _), pixels in zip(dataset, stored):
        assert np.array_equal(np.asarray(image), pixels)


def test_timm_train_mode_shuffles_with_the_seed_and_fills_the_epoch(build, create_dataset):
    labels = Counter(int(row["label"]) for row in manifest(build) if row["split"] == "train")
    n = sum(labels.values())
    eval_order = [label for _, label in create_dataset("wds/hamdata", root=str(build), split="train")]

    def epoch(seed: int, number: int = 0, batch_size: int = 1) -> list[int]:
        dataset = create_dataset("wds/hamdata", root=str(build), split="train", is_training=True, seed=seed,
                                 batch_size=batch_size)
        dataset.set_epoch(number)
        got = [label for _, label in dataset]
        assert len(got) == len(dataset), "an epoch is len(dataset) samples"
        return got

    first = epoch(seed=3)
    assert len(first) == n and Counter(first) == labels, "one process, batch 1: an epoch is each sample once"
    assert first != eval_order, "train mode shuffles"
    assert epoch(seed=3) == first, "the same seed gives the same order"
    assert epoch(seed=3, number=1) != first, "another epoch, another order"
    by_batch = epoch(seed=3, batch_size=8)  # timm rounds the epoch up to whole batches, repeating samples
    assert len(by_batch) == math.ceil(n / 8) * 8 and set(by_batch) <= set(range(len(CLASSES)))


def test_timm_loader_as_train_py_uses_it(build, create_dataset):
    """train.py's data path: create_dataset in train and eval mode, create_loader with workers."""
    from timm.data import create_loader

    n = {split: sum(row["split"] == split for row in manifest(build)) for split in ("train", "val")}
    train = create_dataset("wds/hamdata", root=str(build), split="train", is_training=True, batch_size=8, seed=42)
    val = create_dataset("wds/hamdata", root=str(build), split="val", is_training=False, batch_size=8)
    options = dict(input_size=(3, 32, 32), batch_size=8, num_workers=2, use_prefetcher=False)
    loader = create_loader(train, is_training=True, **options)
    seen = 0
    for images, targets in loader:
        assert images.shape[1:] == (3, 32, 32) and ((0 <= targets) & (targets < len(CLASSES))).all()
        seen += len(targets)
    assert seen == len(train) == 2 * math.ceil(math.ceil(n["train"] / 2) / 8) * 8, "per worker, whole batches"
    val_labels = [int(t) for _, targets in create_loader(val, is_training=False, crop_pct=1.0, **options)
                  for t in targets]
    assert Counter(val_labels) == Counter(int(r["label"]) for r in manifest(build) if r["split"] == "val")


def test_timm_balanced_set_by_split_name_has_target_per_class(balanced, build, create_dataset):
    for is_training in (False, True):
        dataset = create_dataset("wds/hamdata", root=str(balanced), split="train", is_training=is_training, seed=0)
        labels = Counter(label for _, label in dataset)
        assert labels == {index: TARGET for index in range(len(CLASSES))}, is_training
    # its val split is the build's, reached through the set's path back to the build
    val = create_dataset("wds/hamdata", root=str(balanced), split="val")
    assert [label for _, label in val] == [int(r["label"]) for r in manifest(build) if r["split"] == "val"]


def test_readme_timm_example(build, create_dataset, monkeypatch):
    monkeypatch.chdir(build.parent)  # README's paths: shards/...
    assert build.name == "shards"
    scope = {}
    exec(readme_block('create_dataset("wds/hamdata"'), scope)
    rows = manifest(build)
    n = {split: sum(row["split"] == split for row in rows) for split in SPLITS}
    assert len(scope["val"]) == n["val"] and len(scope["train"]) == math.ceil(n["train"] / 64) * 64
    assert scope["label"] == int([r for r in rows if r["split"] == "val"][-1]["label"])


# ------------------------------------------------------------------ Ray Data

# Runs in a child process: a local Ray on 2 CPUs, its temporary files in argv[1]; then, from the folder that
# holds the build (argv[2]), README's shard list and its Ray Data example once per split (the example reads
# shards["train"]); writes what every row held to argv[3].
RAY_PROGRAM = r"""
import hashlib, json, os, sys
import ray

temp, workdir, out, shard_list, example = sys.argv[1:6]
ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False, logging_level="ERROR")
try:
    ray.data.DataContext.get_current().enable_progress_bars = False
    os.chdir(workdir)  # after ray.init: the workers are elsewhere, as on a cluster
    rows = []
    for split in ("train", "val", "test"):
        scope = {}
        exec(shard_list, scope)
        exec(example.replace('shards["train"]', f'shards["{split}"]'), scope)
        for row in scope["ds"].take_all():
            image = row["jpg"]
            rows.append({"split": split, "key": row["__key__"], "cls": row["cls"], "json": row["json"],
                         "url": row["__url__"], "shape": list(image.shape), "dtype": str(image.dtype),
                         "sha256": hashlib.sha256(image.tobytes()).hexdigest()})
        assert (scope["label"], scope["key"]) == (scope["row"]["cls"], scope["row"]["__key__"])
    with open(out, "w") as handle:
        json.dump(rows, handle)
finally:
    ray.shutdown()
"""


@pytest.fixture(scope="module")
def ray_rows(build, tmp_path_factory, request) -> list[dict]:
    """Every row that README's Ray Data example read, split by split, with one Ray session (about 15 s)."""
    pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install -r requirements-test.txt)")
    example = readme_block("ray.data.read_webdataset(")
    assert 'shards["train"]' in example
    tmp = tmp_path_factory.mktemp("ray")
    out = tmp / "rows.json"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}  # nothing written to ~/.ray
    # Ray's sockets live in its temp folder, and a Unix socket path has at most 107 bytes: pytest's own temp
    # folders (deeper still under pytest-xdist, .../popen-gw1/...) are too long, so Ray gets a short one.
    short = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp" if Path("/tmp").is_dir() else None))
    request.addfinalizer(lambda: shutil.rmtree(short, ignore_errors=True))
    command = [sys.executable, "-c", RAY_PROGRAM, str(short), str(build.parent), str(out),
               readme_block(SHARD_LIST), example]
    log = tmp / "ray.log"  # a file, not a pipe: a Ray process left behind cannot keep the test waiting on it
    with open(log, "wb") as handle:
        proc = subprocess.Popen(command, cwd=tmp, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and what Ray started in its process group
            proc.wait(timeout=30)
            pytest.fail(f"README's Ray Data example did not finish in 300 s: {log.read_text(errors='replace')[-3000:]}")
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]
    return json.loads(out.read_text())


def shard_pixels(folder: Path) -> dict[str, str]:
    """sha256 of every image's decoded RGB pixels, by key."""
    digests = {}
    for entry in json.loads((folder / "dataset.json").read_text())["shards"]:
        with tarfile.open(folder / entry["path"]) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".jpg"):
                    pixels = np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"))
                    digests[m.name.split(".", 1)[0]] = hashlib.sha256(pixels.tobytes()).hexdigest()
    return digests


def test_readme_ray_data_example_reads_every_sample_once(build, ray_rows):
    rows = {row["key"]: row for row in manifest(build)}
    keys = [r["key"] for r in ray_rows]
    assert len(keys) == len(set(keys)) and set(keys) == set(rows), "every sample once"
    pixels = shard_pixels(build)
    for r in ray_rows:
        row = rows[r["key"]]
        assert r["split"] == row["split"] == r["json"]["split"], r["key"]
        assert r["cls"] == int(row["label"]) and CLASSES[r["cls"]] == row["dx"] == r["json"]["dx"], r["key"]
        assert r["json"]["lesion_id"] == row["lesion_id"] and r["json"]["image_id"] == row["image_id"], r["key"]
        assert Path(r["url"]) == build / row["shard"], r["key"]
        assert r["shape"] == [SIZE[1], SIZE[0], 3] and r["dtype"] == "uint8", r["key"]
        assert r["sha256"] == pixels[r["key"]], r["key"]
