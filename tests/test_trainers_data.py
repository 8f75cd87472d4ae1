"""trainers/data.py on a tiny synthetic build: epoch length, shuffling, slots, resampling, train sets."""

import collections
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hamdata.inputs.classes import CLASSES
from hamdata.errors import HamdataError
from trainers.data import (StreamSpec, find_train_set, make_loader, normalize, open_build, repeat_factors, slot_samples,
                           split_shards)
from trainers.presets import eval_preset, train_preset


def train_keys(build: Path, *, epoch=0, seed=1, rank=0, world=1, workers=0, batches=3, batch_size=8, factors=()):
    card = open_build(build)
    shards, _ = split_shards(card, "train")
    spec = StreamSpec(shards, "train", 32, batch_size, seed, epoch, rank, world, batches, factors)
    loader = make_loader(spec, workers)
    batches_seen = [b for b in loader]
    assert len(loader) == batches
    return batches_seen


def flat(batches, field="keys"):
    return [k for b in batches for k in b[field]]



def test_a_short_epoch_reads_about_its_own_samples_not_a_1000_sample_buffer(build, monkeypatch):
    """The shuffle buffer of a slot whose epoch needs fewer samples than SHUFFLE_BUFFER is that epoch: 3 batches of 8
    read from the tars at most twice their 24 samples (a buffer of 1,000 would go round this ~110-sample train split
    nine times before its first batch)."""
    import trainers.data as data

    read = collections.Counter()
    real = data.read_tars

    def counting(paths, guard=()):
        for sample in real(paths, guard):
            read[sample["__key__"]] += 1
            yield sample

    monkeypatch.setattr(data, "read_tars", counting)
    batches = train_keys(build, batches=3, batch_size=8)
    assert len(flat(batches)) == 24
    assert 24 <= sum(read.values()) <= 48, sum(read.values())

def test_train_epoch_has_the_exact_number_of_full_batches(build):
    for workers in (0, 2):
        batches = train_keys(build, workers=workers, batches=5)
        assert len(batches) == 5
        assert all(b["images"].shape == (8, 3, 32, 32) and b["images"].dtype == torch.uint8 for b in batches)
        assert all(b["labels"].dtype == torch.int64 for b in batches)


def test_more_batches_than_one_pass_cycles_over_the_samples(build):
    n_train = sum(open_build(build).counts["train"].values())
    batches = train_keys(build, batches=3 * n_train // 8)
    keys = flat(batches)
    assert len(keys) == 3 * n_train // 8 * 8 and max(collections.Counter(keys).values()) >= 2


def test_shuffling_is_seeded_and_changes_every_epoch(build):
    first = flat(train_keys(build, epoch=0))
    assert first == flat(train_keys(build, epoch=0))
    assert first != flat(train_keys(build, epoch=1))
    assert first != flat(train_keys(build, epoch=0, seed=2))
    a, b = train_keys(build, epoch=0)[0]["images"], train_keys(build, epoch=0)[0]["images"]
    assert torch.equal(a, b)  # augmentation is seeded too


@pytest.mark.parametrize("n_slots", [2, 3, 8])  # 2, 3: by shard (train has >= 3 shards); 8: by sample key
def test_slots_read_disjoint_samples_that_cover_the_split(build, n_slots):
    card = open_build(build)
    for split in ("train", "val"):
        shards, expected = split_shards(card, split)
        parts = [[s["__key__"] for s in slot_samples(list(shards), seed=3, epoch=1, slot=i, n_slots=n_slots, cycle=False)]
                 for i in range(n_slots)]
        everything = [k for p in parts for k in p]
        assert len(everything) == len(set(everything)) == expected


def test_ranks_and_workers_see_the_same_number_of_batches_of_disjoint_samples(build):
    per_rank = [train_keys(build, rank=r, world=2, workers=2, batches=3, batch_size=4) for r in range(2)]
    assert [len(b) for b in per_rank] == [3, 3]
    assert not set(flat(per_rank[0])) & set(flat(per_rank[1]))


def test_eval_stream_reads_every_sample_once(build):
    card = open_build(build)
    shards, expected = split_shards(card, "test")
    ids = []
    for rank in range(2):
        spec = StreamSpec(shards, "eval", 32, 5, 0, 0, rank, 2)
        ids += flat(list(make_loader(spec, 2)), "image_ids")
    assert len(ids) == len(set(ids)) == expected


def test_resampling_balances_the_stream(build):
    counts = dict(open_build(build).counts["train"])
    factors = repeat_factors(counts)
    n = sum(counts.values())
    batches = train_keys(build, batches=12 * n // 8, factors=tuple(factors[dx] for dx in CLASSES))
    seen = collections.Counter(flat(batches, "labels") if False else [int(v) for b in batches for v in b["labels"]])
    present = [CLASSES.index(dx) for dx in CLASSES if counts[dx] > 0]
    shares = np.array([seen[c] for c in present]) / sum(seen.values())
    assert counts["nv"] / n > 0.5 and shares.max() < 2.0 / len(present)  # nv no longer dominates
    assert shares.min() > 0.5 / len(present)


def test_presets_and_normalisation():
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    assert train_preset(32)(image).shape == (3, 32, 32)
    assert eval_preset(32)(image).shape == (3, 32, 32)
    assert torch.equal(eval_preset(32)(image), eval_preset(32)(image))
    mean, std = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.2, 0.2])
    flat_image = (mean * 255).round().to(torch.uint8).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert normalize(flat_image, mean, std).abs().max() < 0.01


def _fake_balanced(build: Path, name: str) -> Path:
    """A minimal balanced set (the train tars copied) with the card fields trainers read."""
    card = json.loads((build / "dataset.json").read_text())
    folder = build / name
    folder.mkdir(exist_ok=True)
    shards = []
    for i, entry in enumerate(s for s in card["shards"] if s["split"] == "train"):
        shutil.copy(build / entry["path"], folder / f"train-{i:06d}.tar")
        shards.append({**entry, "path": f"train-{i:06d}.tar"})
    sub = {**card, "kind": "balanced", "shards": shards, "counts": {"train": card["counts"]["train"]}}
    (folder / "dataset.json").write_text(json.dumps(sub))
    return folder


def test_find_train_set(build, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(build, copy)
    card = open_build(copy)
    chosen, note = find_train_set(card, "auto")
    assert chosen.name == "train" and not chosen.balanced and "no balanced set" in note
    _fake_balanced(copy, "balanced-20")
    chosen, note = find_train_set(card, "auto")
    assert chosen.name == "balanced-20" and "the one balanced set" in note
    _fake_balanced(copy, "balanced-40")
    chosen, note = find_train_set(card, "auto")
    assert chosen.name == "train" and "choose one with --train-set" in note
    assert find_train_set(card, "balanced-40")[0].name == "balanced-40"
    with pytest.raises(HamdataError, match="balanced-99"):
        find_train_set(card, "balanced-99")
    with pytest.raises(HamdataError, match="is a balanced set"):
        open_build(copy / "balanced-20")
