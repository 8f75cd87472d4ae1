"""``trainers.loader(build, split, ...)``: a build's split as batches for a training loop of your own.

The stream is the one `train` reads (trainers.data.ShardStream): seeded shard and sample shuffling that changes
with the epoch, disjoint samples per DDP rank and loader worker, the same number of whole batches on every rank,
the light train preset or the eval preset, class-aware resampling of an unbalanced train split, and a stop with one
line if the build is replaced while it is read. What it adds for a plain loop: images normalised with the build's
train statistics, one pass per epoch, and the class list::

    import torch, trainers
    train = trainers.loader("shards", "train", image_size=224, batch_size=32)
    for epoch in range(10):
        for batch in train:   # {"images": float32 (B, 3, 224, 224), "labels": int64 (B,), "keys": [...], ...}
            loss = torch.nn.functional.cross_entropy(model(batch["images"]), batch["labels"])
            ...
"""

from __future__ import annotations

import json
import math

import torch

from hamdata.errors import HamdataError
from hamdata.store.card import Build

from .data import StreamSpec, find_train_set, fit_metadata, make_loader, normalize, open_build, repeat_factors, split_shards
from .loop import batches_per_rank


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HamdataError(f"{name} must be a positive integer, got {value!r}")
    return value


class Loader:
    """Batches of one split of a build (see the module docstring); each pass over it is one epoch."""

    def __init__(self, build, split: str = "train", *, image_size: int = 224, batch_size: int = 32,
                 train: bool | None = None, train_set: str = "auto", resample: bool = True, metadata: bool = False,
                 normalized: bool = True, seed: int = 0, workers: int = 0, rank: int | None = None,
                 world: int | None = None, pin_memory: bool = False):
        """build: a build folder (made by build-shards). split: train, val, test, or heldout.
        train: the train preset (random resized crop, flips, light colour jitter), shuffling, whole batches and an
        exact number of them; default: split == "train". Otherwise every sample of the split once (across ranks).
        train_set: for the train split, `auto` (the build's one balanced set, else its train split), `train`,
        or `balanced-N`. resample: repeat-factor resampling of an unbalanced train stream (as `train` does).
        metadata: batches carry "meta", (B, dim) float32: age, sex and site encoded as Phase 6 does, fitted on
        the build's train split. normalized: images as float32 standardised with the build's train mean/std
        (else uint8 0..255). rank, world: this process among DDP processes (default: torch.distributed's).
        """
        card = open_build(build)
        self.build, self.classes = card.path, card.classes
        self.image_size, self.batch_size = _positive("image_size", image_size), _positive("batch_size", batch_size)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise HamdataError(f"workers must be 0 or more, got {workers!r}")
        if rank is None or world is None:
            ready = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = torch.distributed.get_rank() if ready else 0
            world = torch.distributed.get_world_size() if ready else 1
        self.rank, self.world = int(rank), int(world)
        self.split = split
        self.train = (split == "train") if train is None else bool(train)
        guard = ((str(self.build), card.fingerprint),)
        factors, self.train_set = (), None
        if split == "train":
            chosen, _ = find_train_set(card, train_set)
            shards, self.samples, self.train_set = chosen.shards, chosen.samples, chosen.name
            if chosen.folder.resolve() != self.build.resolve():
                guard += ((str(chosen.folder), Build.open(chosen.folder).fingerprint),)
            if self.train and resample and not chosen.balanced:
                by_class = repeat_factors(chosen.counts)
                factors = tuple(by_class[dx] for dx in self.classes)
        else:
            shards, self.samples = split_shards(card, split)
        self.batches = batches_per_rank(self.samples, self.world, self.batch_size, 0) if self.train else 0
        self.encoding = fit_metadata(card) if metadata else None
        self._stream = dict(shards=tuple(shards), image_size=self.image_size, batch_size=self.batch_size,
                            rank=self.rank, world=self.world, guard=guard,
                            metadata=json.dumps(self.encoding, sort_keys=True) if metadata else "")
        self._training = dict(seed=int(seed), batches=self.batches, factors=factors)
        self.mean = torch.tensor(card.train_stats.mean, dtype=torch.float32)
        self.std = torch.tensor(card.train_stats.std, dtype=torch.float32)
        self.normalized, self.workers, self.pin_memory = normalized, workers, pin_memory
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next pass reads (its shuffle and augmentation); each pass then takes the next."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches of one pass on this rank: exact in training; in evaluation, known ahead for one process only
        (under DDP the split's samples are divided by key, and a rank's share is known once read)."""
        if self.train:
            return self.batches
        if self.world > 1:
            raise TypeError("an evaluation pass's batches per rank are known only after reading it")
        return math.ceil(self.samples / self.batch_size)

    def __iter__(self):
        spec = (StreamSpec.training(epoch=self.epoch, **self._stream, **self._training) if self.train
                else StreamSpec.evaluation(**self._stream))
        self.epoch += 1
        for batch in make_loader(spec, self.workers, self.pin_memory):
            if self.normalized:
                batch["images"] = normalize(batch["images"], self.mean, self.std)
            yield batch
