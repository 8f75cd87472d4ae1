"""WebDataset pipelines over a build's shards: train and eval presets, resampling, DDP split.

The shard list comes from dataset.json. What one epoch yields depends only
on (seed, epoch, rank, world size, loader workers), never on what came
before, so a resumed run reads exactly what an uninterrupted one would.

Every loader process is a *slot* (rank x worker). Slots read disjoint
samples: whole shards when there are at least as many shards as slots,
otherwise every slot reads every shard and keeps the samples whose key hashes
to it. A training slot cycles over its samples until it has its exact quota,
so every rank runs the same number of full batches. An eval slot reads its
samples once, so that all slots together see every sample exactly once.

Training on an unbalanced set replaces the notebook's WeightedRandomSampler
by repeat-factor sampling on the stream: each sample of class c is emitted
floor(r_c) or ceil(r_c) times (expectation r_c), with r_c proportional to
1 / count_c and scaled so that one pass yields as many samples as it reads.

Decoded images leave the loader as uint8 (B, 3, H, W) (training batches in
channels_last memory order); normalisation with the build's train mean/std
happens on the device (``normalize``). The train preset runs on whole batches
(trainers.decode): in the workers, or with ``decode="gpu"`` on the GPU, the
workers then only reading tars and yielding the image bytes.
"""

from __future__ import annotations

import functools
import json
import random
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from hamdata.errors import HamdataError
from hamdata.store.card import Build
from hamdata.store.manifest import CARD_NAME
from hamdata.store.shards import TAR_ERRORS, iter_members, sha256_file, tar_error_detail

from .config import TRAIN_SETS
from .decode import augment_cpu, decode_rgb, pack
from .fusion import MetadataEncoding, drop_metadata
from .presets import eval_preset

# Samples held for shuffling (undecoded: ~5-50 KB each), or a slot's whole epoch where that is fewer: the stream
# goes round a small set again and again, and a buffer of 1,000 would read it several times before the first
# batch and give an epoch some samples twice and others not at all.
SHUFFLE_BUFFER = 1000


# ------------------------------------------------------------------ pure helpers


def seed_of(*parts: int) -> int:
    """A 63-bit seed from integers (seed, epoch, slot, ...), the same in every process."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def repeat_factors(counts: dict[str, int]) -> dict[str, float]:
    """Expected copies per sample so that each present class gets an equal share of a pass.

    r_c = total / (K * n_c) for the K classes with n_c > 0 (0 for absent classes):
    proportional to inverse frequency, and sum_c n_c r_c = total.
    """
    present = {dx: n for dx, n in counts.items() if n > 0}
    total = sum(present.values())
    return {dx: (total / (len(present) * n) if n > 0 else 0.0) for dx, n in counts.items()}


def resample(samples: Iterable[dict], factors: list[float], rng: np.random.Generator) -> Iterator[dict]:
    """Emit each sample floor(r) or ceil(r) times (expectation r = factors[label])."""
    for sample in samples:
        r = factors[int(sample["cls"])]
        copies = int(r) + int(rng.random() < r - int(r))
        for _ in range(copies):
            yield sample


def slot_of(key: str, seed: int, epoch: int, n_slots: int) -> int:
    """The slot that reads sample ``key`` in this epoch (sample-level split)."""
    return zlib.crc32(f"{seed}:{epoch}:{key}".encode()) % n_slots


def quota(batches: int, worker: int, workers: int) -> int:
    """Batches that loader worker ``worker`` yields when a rank runs ``batches`` in all."""
    return batches // workers + int(worker < batches % workers)


class BuildReplaced(HamdataError):
    """The build (or balanced set) a run reads was replaced while it ran."""


# dataset.json files found unchanged in this process: path -> (inode, size, mtime), so that a check costs one stat
_UNCHANGED: dict[str, tuple] = {}


def check_unchanged(guard: tuple) -> None:
    """Raise BuildReplaced when a folder's dataset.json no longer lists the shards it listed when the run started.

    guard: ((folder, the card's fingerprint), ...). A stat per folder when nothing changed; the card is read again
    otherwise.
    """
    for folder, sums in guard:
        path = Path(folder) / CARD_NAME
        try:
            st = path.stat()
            seen = (st.st_ino, st.st_size, st.st_mtime_ns)
            if _UNCHANGED.get(str(path)) == seen:
                continue
            same = Build.open(folder).fingerprint == tuple(sums)
        except (OSError, ValueError, HamdataError):  # gone or half-way through being moved
            same = False
        if not same:
            raise BuildReplaced(f"{folder} was replaced during the run (its dataset.json no longer lists the shards the "
                                "run started on)")
        _UNCHANGED[str(path)] = seen


def _opened(paths: list[str], guard: tuple) -> Iterator[dict]:
    for path in paths:
        stream = open(path, "rb")
        check_unchanged(guard)  # after the open: the file read is the one the unchanged card lists
        yield {"url": path, "stream": stream}


def read_tars(paths: list[str], guard: tuple = ()) -> Iterator[dict]:
    """Raw samples (``__key__``, ``jpg``/``png``, ``cls``, ``json`` bytes) of tars in order.

    guard: see check_unchanged, done as each tar is opened, so that a stream never mixes two builds.
    """
    if not guard:
        return wds.tarfile_samples([{"url": p} for p in paths])
    return wds.tariterators.group_by_keys(wds.tariterators.tar_file_expander(_opened(paths, guard)))


def slot_samples(shards: list[str], *, seed: int, epoch: int, slot: int, n_slots: int, cycle: bool,
                 guard: tuple = ()) -> Iterator[dict]:
    """The samples one slot reads in one epoch, disjoint from every other slot's.

    With ``cycle`` the slot goes round its samples forever, each pass in a new shard order.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(shards))
    by_shard = len(shards) >= n_slots
    mine = [shards[i] for i in (order[slot::n_slots] if by_shard else order)]
    rng = np.random.default_rng([seed, epoch, slot, 7])
    while True:
        seen = 0
        for sample in read_tars(mine, guard):
            if by_shard or slot_of(sample["__key__"], seed, epoch, n_slots) == slot:
                seen += 1
                yield sample
        if not cycle:
            return
        if seen == 0:
            raise HamdataError(f"loader slot {slot} of {n_slots} got no training samples: "
                               "use fewer --workers or processes for this small set")
        mine = [mine[i] for i in rng.permutation(len(mine))]


# ------------------------------------------------------------------ presets and decoding


def decode(data: bytes) -> torch.Tensor:
    """JPEG/PNG bytes -> uint8 (3, H, W), a view of the decoded HWC array (no copy).

    The loader's own decoder (trainers.decode.decode_rgb: OpenCV), so training and evaluation
    see the same pixels; torchvision.io's decoders are deprecated since 0.29.
    """
    return torch.from_numpy(decode_rgb(data)).permute(2, 0, 1)


def decode_sample(sample: dict) -> np.ndarray:
    """A sample's image as RGB (H, W, 3); a damaged one is an error that names the shard and key."""
    try:
        return decode_rgb(image_bytes(sample))
    except ValueError as exc:
        raise HamdataError(f"{sample.get('__url__')}: sample {sample.get('__key__')}: {exc}; "
                           "run `hamdata verify` on the build") from None


def image_bytes(sample: dict) -> bytes:
    for ext in ("jpg", "png"):
        if ext in sample:
            return sample[ext]
    raise HamdataError(f"sample {sample.get('__key__')} in {sample.get('__url__')} has no jpg or png member")


def sample_image_id(sample: dict) -> str:
    return json.loads(sample["json"])["image_id"] if "json" in sample else sample["__key__"]


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float, standardised with per-channel mean/std given in [0, 1] units."""
    return (images.float() / 255.0 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


@functools.lru_cache(maxsize=4)
def metadata_encoding(text: str) -> MetadataEncoding:
    """The StreamSpec's encoding (a JSON string, so that the spec stays hashable and cheap to pickle)."""
    return MetadataEncoding.from_dict(json.loads(text))


def sample_metadata(sample: dict, encoding: MetadataEncoding) -> np.ndarray:
    """A sample's (age, sex, localization), from its json member, as the encoding's vector."""
    return encoding.encode_record(json.loads(sample["json"]) if "json" in sample else {})


def metadata_batch(samples: list[dict], spec: "StreamSpec", seed: int | None = None) -> torch.Tensor:
    """(B, dim) float32 metadata of a batch; in training (seed given) some rows dropped to missing."""
    encoding = metadata_encoding(spec.metadata)
    vectors = np.stack([sample_metadata(s, encoding) for s in samples])
    if seed is not None:
        vectors = drop_metadata(vectors, encoding.missing(), spec.metadata_dropout, np.random.default_rng([seed, 6]))
    return torch.from_numpy(vectors)


def train_batch(samples: list[dict], size: int, seed: int, decode: str) -> dict:
    """A training batch: cpu: decoded and augmented here (uint8 images, NHWC in memory);
    gpu: the image bytes packed into one tensor, with the seed and size of its augmentation."""
    batch = {"labels": torch.tensor([int(s["cls"]) for s in samples], dtype=torch.int64),
             "keys": [s["__key__"] for s in samples], "image_ids": [sample_image_id(s) for s in samples]}
    if decode == "gpu":
        data, lengths = pack([image_bytes(s) for s in samples])
        return {**batch, "data": data, "lengths": lengths, "seed": seed, "size": size}
    return {**batch, "images": augment_cpu([decode_sample(s) for s in samples], size, np.random.default_rng(seed))}


def collate(samples: list[tuple]) -> dict:
    images, labels, keys, ids, meta = zip(*samples)
    batch = {"images": torch.stack(images), "labels": torch.tensor(labels, dtype=torch.int64),
             "keys": list(keys), "image_ids": list(ids)}
    if meta[0] is not None:
        batch["meta"] = torch.from_numpy(np.stack(meta))
    return batch


# ------------------------------------------------------------------ the dataset


@dataclass(frozen=True)
class StreamSpec:
    """What one epoch of one rank reads; picklable, so loader workers get a copy."""

    shards: tuple[str, ...]  # absolute tar paths
    preset: str  # train | eval
    image_size: int
    batch_size: int
    seed: int
    epoch: int
    rank: int = 0
    world: int = 1
    batches: int = 0  # train: exact number of batches of this rank
    factors: tuple[float, ...] = ()  # train: repeat factor by class index (empty: none)
    decode: str = "cpu"  # train: cpu (workers decode and augment) | gpu (workers yield raw bytes; see trainers.decode)
    metadata: str = ""  # a fitted MetadataEncoding as JSON: batches carry "meta" (B, dim); empty: no metadata
    metadata_dropout: float = 0.0  # train: probability that a sample's metadata is set to missing
    guard: tuple = ()  # ((folder, Build.fingerprint), ...): stop when one is replaced (check_unchanged)

    @classmethod
    def training(cls, shards, *, image_size: int, batch_size: int, seed: int, epoch: int, batches: int, rank: int = 0,
                 world: int = 1, factors: tuple = (), decode: str = "cpu", metadata: str = "",
                 metadata_dropout: float = 0.0, guard: tuple = ()) -> StreamSpec:
        """One epoch of training on this rank: ``batches`` whole batches, shuffled from (seed, epoch)."""
        return cls(tuple(shards), "train", image_size, batch_size, seed, epoch, rank, world, batches, tuple(factors),
                   decode, metadata, metadata_dropout, guard)

    @classmethod
    def evaluation(cls, shards, *, image_size: int, batch_size: int, rank: int = 0, world: int = 1,
                   metadata: str = "", guard: tuple = ()) -> StreamSpec:
        """Every sample of ``shards`` once across the ranks, eval preset, the last batch partial."""
        return cls(tuple(shards), "eval", image_size, batch_size, seed=0, epoch=0, rank=rank, world=world,
                   metadata=metadata, guard=guard)


class ShardStream(torch.utils.data.IterableDataset):
    """One epoch of batches for one rank; each DataLoader worker yields its own share."""

    def __init__(self, spec: StreamSpec):
        super().__init__()
        self.spec = spec

    def __len__(self) -> int:
        if self.spec.preset != "train":
            raise TypeError("an eval stream's length per rank is known only after reading it")
        return self.spec.batches

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        spec = self.spec
        slot, n_slots = spec.rank * workers + worker, spec.world * workers
        train = spec.preset == "train"
        stages = [lambda: slot_samples(list(spec.shards), seed=spec.seed, epoch=spec.epoch, slot=slot,
                                       n_slots=n_slots, cycle=train, guard=spec.guard)]
        if train:
            n = quota(spec.batches, worker, workers) * spec.batch_size
            if spec.factors:
                stages.append(lambda src: resample(src, list(spec.factors), np.random.default_rng([spec.seed, spec.epoch, slot, 1])))
            held = max(1, min(SHUFFLE_BUFFER, n))
            stages.append(wds.shuffle(held, initial=held, rng=random.Random(seed_of(spec.seed, spec.epoch, slot, 2))))
            stages.append(lambda src: islice(src, n))
            stages.append(wds.batched(spec.batch_size, collation_fn=list, partial=False))
            stages.append(lambda src: self._train_batches(src, spec, seed_of(spec.seed, spec.epoch, slot, 5)))
        else:
            stages.append(lambda src: self._decoded(src, eval_preset(spec.image_size), spec))
            stages.append(wds.batched(spec.batch_size, collation_fn=collate, partial=True))
        return iter(wds.DataPipeline(*stages))

    @staticmethod
    def _train_batches(batches: Iterable[list], spec: StreamSpec, seed: int) -> Iterator[dict]:
        """Augmentation draws from a per-batch seed (the same in cpu and gpu mode), not the global RNG."""
        for j, samples in enumerate(batches):
            batch = train_batch(samples, spec.image_size, seed_of(seed, j), spec.decode)
            if spec.metadata:
                batch["meta"] = metadata_batch(samples, spec, seed_of(seed, j))
            yield batch

    @staticmethod
    def _decoded(samples: Iterable[dict], transform, spec: StreamSpec) -> Iterator[tuple]:
        encoding = metadata_encoding(spec.metadata) if spec.metadata else None
        for sample in samples:
            image = torch.from_numpy(decode_sample(sample)).permute(2, 0, 1)
            meta = sample_metadata(sample, encoding) if encoding else None
            yield transform(image), int(sample["cls"]), sample["__key__"], sample_image_id(sample), meta


def make_loader(spec: StreamSpec, workers: int, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader over one epoch; len() is the exact number of batches for training."""
    workers = min(workers, max(1, spec.batches)) if spec.preset == "train" else workers
    loader = torch.utils.data.DataLoader(
        ShardStream(spec), batch_size=None, num_workers=workers, pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed_of(spec.seed, spec.epoch, spec.rank, 4) & 0x7FFFFFFF),
    )
    return loader


# ------------------------------------------------------------------ what to read


@dataclass(frozen=True)
class TrainSet:
    """The training stream's source: the train split of a build, or one of its balanced sets."""

    name: str  # train, val, test or a balanced set by name (balanced-N)
    folder: Path
    shards: tuple[str, ...]
    counts: dict  # {dx: n} in the order of the build's class list
    balanced: bool

    @property
    def samples(self) -> int:
        return sum(self.counts.values())


def open_build(folder) -> Build:
    """The build's card; a balanced set is refused with a pointer to its build."""
    build = Build.open(folder)
    if build.kind == "balanced":
        raise HamdataError(f"--shards {build.path} is a balanced set; pass its build ({build.path.parent}) "
                           f"and --train-set {build.path.name}")
    if build.train_stats is None:
        raise HamdataError(f"{build.path / CARD_NAME}: no train_stats (mean/std): the build has no train samples, or "
                           f"its dataset.json is damaged (run verify)")
    return build


def split_shards(build: Build, split: str) -> tuple[tuple[str, ...], int]:
    """Absolute shard paths of a split and its sample count from dataset.json."""
    entries, expected = build.shards_of(split), build.samples(split)
    if not entries or expected == 0:
        raise HamdataError(f"{build.path / CARD_NAME}: the {split} split has no shards")
    paths = tuple(str(build.path / e.path) for e in entries)
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise HamdataError(f"{missing[0]}: shard listed in {CARD_NAME} is missing ({len(missing)} missing)")
    return paths, expected


def find_train_set(build: Build, choice: str) -> tuple[TrainSet, str]:
    """Resolve --train-set (auto | train | balanced-N); returns the set and a note on the choice."""
    found, note, root = build.balanced_sets, "", build.path
    if choice == "auto":
        if len(found) == 1:
            choice, note = found[0], f"the one balanced set in {root}"
        else:
            note = (f"{len(found)} balanced sets ({', '.join(found)}); choose one with --train-set" if found
                    else "no balanced set in the build")
            choice = "train"
    if choice == "train":
        shards, _ = split_shards(build, "train")
        return TrainSet("train", root, shards, dict(build.counts["train"]), balanced=False), note
    folder = Path(choice) if ("/" in choice or choice not in found) and Path(choice).is_dir() else root / choice
    if not (folder / CARD_NAME).is_file():
        raise HamdataError(f"--train-set {choice}: no {folder / CARD_NAME}; expected {', '.join(TRAIN_SETS)}"
                           + (f" or one of {', '.join(found)}" if found else " or a balanced-N folder (the build has none)"))
    sub = Build.open(folder)
    if sub.kind != "balanced":
        raise HamdataError(f"{folder / CARD_NAME}: expected kind 'balanced', got {sub.kind!r}")
    if sub.made_from and sub.made_from != sha256_file(root / CARD_NAME):
        raise HamdataError(f"--train-set {choice}: made from another build than {root} (its {CARD_NAME} differs); "
                           f"balance this build with `hamdata balance --shards {root}`")
    if sub.classes != build.classes:
        raise HamdataError(f"--train-set {choice}: its classes ({', '.join(sub.classes)}) are not those of its build "
                           f"{root} ({', '.join(build.classes)})")
    shards, _ = split_shards(sub, "train")
    counts = dict(sub.counts["train"])
    balanced = len({n for n in counts.values() if n > 0}) == 1
    name = folder.name if folder.resolve().parent == root.resolve() else str(folder)
    return TrainSet(name, folder, shards, counts, balanced=balanced), note or "chosen with --train-set"


def split_records(shards: tuple[str, ...]) -> list[dict]:
    """The json record of every sample in ``shards`` (images are not read)."""
    records = []
    for path in shards:
        try:
            for member in iter_members(Path(path), read=lambda key, ext: ext == "json"):
                if member.ext == "json":
                    records.append(json.loads(member.data))
        except TAR_ERRORS as exc:
            raise HamdataError(f"{path}: damaged shard ({tar_error_detail(exc)}); run `hamdata verify` on the build") from None
    return records


def fit_metadata(build: Build, columns=()) -> dict:
    """The metadata encoding, fitted on the build's train split (originals only), as a dict; `columns`: numeric
    columns of the samples' ``features`` (--metadata-columns), each one the build must carry."""
    carried = list(build.features)
    unknown = [c for c in columns if c not in carried]
    if unknown:
        held = f"it carries {', '.join(carried)}" if carried else "it carries none (only ISIC 2024 SLICE-3D builds do)"
        raise HamdataError(f"--metadata-columns: {', '.join(unknown)} not among the numeric columns of {build.path}: "
                           f"{held}")
    shards, _ = split_shards(build, "train")
    return MetadataEncoding.fit(split_records(shards), where=f"the train split of {build.path}", columns=columns).to_dict()
