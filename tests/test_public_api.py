"""The public Python API (docs/api.md): a build's card through hamdata.open_build, and trainers.loader for a
training loop of one's own, with the stream guarantees of `train`."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import torch

import hamdata
import trainers
from helpers import REPO


def manifest_keys(build, split: str) -> list[str]:
    with open(build / "manifest.csv", newline="", encoding="utf-8") as handle:
        return [row["key"] for row in csv.DictReader(handle) if row["split"] == split]


def test_a_plain_pytorch_loop_trains_with_the_public_api_alone(build):
    card = hamdata.open_build(build)
    train = trainers.loader(build, "train", image_size=32, batch_size=16, seed=3)
    val = trainers.loader(build, "val", image_size=32, batch_size=16)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(16, len(card.classes)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for epoch in range(6):
        for batch in train:
            loss = torch.nn.functional.cross_entropy(model(batch["images"]), batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        scored = [(key, logits.argmax().item()) for batch in val for key, logits in zip(batch["keys"], model(batch["images"]))]

    per_epoch = len(train)
    assert len(losses) == 6 * per_epoch == 6 * (card.samples("train") // 16)
    first, last = sum(losses[:per_epoch]) / per_epoch, sum(losses[-per_epoch:]) / per_epoch
    assert last < first, (first, last)
    assert sorted(k for k, _ in scored) == sorted(manifest_keys(build, "val"))  # every val sample once
    assert all(0 <= c < len(card.classes) for _, c in scored)


def test_the_loader_keeps_the_stream_guarantees(build):
    train = trainers.loader(build, "train", image_size=32, batch_size=8, seed=5)
    epochs = [[key for batch in train for key in batch["keys"]] for _ in range(2)]  # each pass: the next epoch
    assert len(epochs[0]) == len(epochs[1]) == 8 * len(train)
    assert epochs[0] != epochs[1]
    again = trainers.loader(build, "train", image_size=32, batch_size=8, seed=5)
    again.set_epoch(1)
    assert [key for batch in again for key in batch["keys"]] == epochs[1]  # same seed and epoch, same stream
    batch = next(iter(trainers.loader(build, "train", image_size=32, batch_size=8)))
    assert batch["images"].dtype == torch.float32 and batch["images"].shape == (8, 3, 32, 32)
    assert batch["labels"].dtype == torch.int64 and abs(batch["images"].mean().item()) < 1.5
    raw = next(iter(trainers.loader(build, "val", image_size=32, batch_size=8, normalized=False)))
    assert raw["images"].dtype == torch.uint8
    # two DDP ranks: disjoint samples, the same number of whole batches, together the eval split once
    ranks = [trainers.loader(build, "train", image_size=32, batch_size=4, rank=r, world=2) for r in (0, 1)]
    seen = [[key for batch in loader for key in batch["keys"]] for loader in ranks]
    assert len(ranks[0]) == len(ranks[1]) and len(seen[0]) == len(seen[1]) == 4 * len(ranks[0])
    assert not set(seen[0]) & set(seen[1])  # resampling repeats a sample within its rank, never across ranks
    tests = [[key for batch in trainers.loader(build, "test", image_size=32, batch_size=4, rank=r, world=2)
              for key in batch["keys"]] for r in (0, 1)]
    assert not set(tests[0]) & set(tests[1]) and sorted(tests[0] + tests[1]) == sorted(manifest_keys(build, "test"))


def test_the_loader_carries_metadata_when_asked(build):
    batch = next(iter(trainers.loader(build, "val", image_size=32, batch_size=4, metadata=True)))
    assert batch["meta"].dtype == torch.float32 and batch["meta"].shape[0] == 4 and batch["meta"].shape[1] > 3


@pytest.mark.parametrize("option, value", [("image_size", 0), ("batch_size", "8"), ("workers", -1)])
def test_the_loader_refuses_bad_options_in_one_line(build, option, value):
    with pytest.raises(hamdata.HamdataError, match=option):
        trainers.loader(build, "train", **{option: value})


def test_open_build_is_the_card_typed_and_frozen(build, balanced):
    raw = json.loads((build / "dataset.json").read_text())
    card = hamdata.open_build(build)
    assert card.kind == "build" and card.classes == tuple(raw["classes"])
    assert card.splits == ("train", "val", "test")
    for split in card.splits:
        assert dict(card.counts[split]) == {dx: raw["counts"][split].get(dx, 0) for dx in card.classes}
        assert card.samples(split) == len(manifest_keys(build, split))
        paths = card.shard_paths(split)
        assert paths and all(p.is_file() and p.parent.parent == build for p in paths)
    assert card.fingerprint == tuple(s["sha256"] for s in raw["shards"])
    assert list(card.train_stats.mean) == raw["train_stats"]["mean"]
    with pytest.raises(TypeError):
        card.counts["train"]["nv"] = 0
    with pytest.raises(AttributeError):
        card.kind = "balanced"
    one = hamdata.open_build(balanced)
    assert one.kind == "balanced" and one.splits == ("train",) and one.build_path == build.resolve()
    with pytest.raises(hamdata.HamdataError, match="no such folder"):
        hamdata.open_build(build / "nope")


def test_a_damaged_shard_list_is_one_line(build, tmp_path):
    raw = json.loads((build / "dataset.json").read_text())
    del raw["shards"][0]["split"]
    (tmp_path / "dataset.json").write_text(json.dumps(raw))
    with pytest.raises(hamdata.HamdataError, match="damaged counts or shard list"):
        hamdata.open_build(tmp_path)


def test_importing_the_packages_loads_no_heavy_library():
    code = ("import sys, hamdata, trainers; print(sorted(m for m in ('pandas', 'cv2', 'torch', 'albumentations') "
            "if m in sys.modules)); hamdata.BuildConfig; print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["[]", "True"]  # nothing until a name is used; then what it needs
