"""``Build.open(path)``: a build or balanced set's dataset.json as a frozen, typed card.

The card is read once and checked (hamdata.store.manifest.read_card: a finished build, a readable format, a known class
list); what callers need is a field with a type, not a string key into a dict: classes, counts per split and
class, the splits and their shards, the train statistics, the balanced sets inside a build, the inputs, the
duplicates, and the shard sha256s a run records as the build's fingerprint. ``raw`` keeps the whole card (as
read-only mappings) for what has no field yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from hamdata.errors import HamdataError
from hamdata.store.manifest import CARD_NAME, card_classes, read_card, shards_of, split_names

BALANCED_PREFIX = "balanced-"  # `balance --target N` writes balanced-N into a build (or beside it, --out)
BALANCED_PATTERN = BALANCED_PREFIX + "*"
SPLIT_ORDER = ("train", "val", "test", "heldout")  # dataset.json sorts its keys; a card lists its splits so


def balanced_name(target: int) -> str:
    """The folder name of the balanced set of ``target`` samples per class."""
    return f"{BALANCED_PREFIX}{target}"


def is_balanced_name(name: str) -> bool:
    return name.startswith(BALANCED_PREFIX)


def balanced_folders(build) -> list[Path]:
    """Every balanced-N folder in ``build``, finished or not (verify looks at each)."""
    return sorted(p for p in Path(build).glob(BALANCED_PATTERN) if p.is_dir())


def balanced_sets(build) -> tuple[str, ...]:
    """The names of the finished balanced sets in ``build`` (those holding a card)."""
    return tuple(p.name for p in balanced_folders(build) if (p / CARD_NAME).is_file())


def thaw(value: Any) -> Any:
    """A frozen card value as plain JSON data again (dicts and lists), to store or compare."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def _frozen(value: Any) -> Any:
    """JSON data made read-only: dicts become mappings that refuse writes, lists tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def _whole(value, strict: bool):
    """A count of the card: an int; not strict, anything else is kept as written (verify reports it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        if strict:
            raise TypeError(f"expected a whole number, got {value!r}")
        return value
    try:
        number = int(value)
    except ValueError:
        if strict:
            raise
        return value
    return number


def _count(value, strict: bool) -> int:
    """A count of ``counts``; not strict, what is not a whole number reads as 0 (``written_counts`` keeps it)."""
    number = _whole(value, strict)
    return number if isinstance(number, int) else 0


def _train_stats(stats) -> TrainStats | None:
    """``train_stats`` as written: a mean and a std of three numbers each, or None (absent, empty or damaged)."""
    if not isinstance(stats, dict):
        return None
    mean, std = stats.get("mean"), stats.get("std")
    if not all(isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                           for x in v) for v in (mean, std)):
        return None
    return TrainStats(tuple(float(x) for x in mean), tuple(float(x) for x in std))


@dataclass(frozen=True)
class Shard:
    """One tar of the card, its path relative to the folder that holds the card."""

    path: str
    split: str
    samples: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class TrainStats:
    """Per-channel mean and std of the build's train originals (pixels in [0, 1]), the normalisation to use."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def as_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class Build:
    """A build (``kind == "build"``) or a balanced set (``"balanced"``), as its dataset.json describes it."""

    path: Path
    kind: str
    format_version: int
    classes: tuple[str, ...]
    counts: Mapping[str, Mapping[str, int]]  # split -> class -> samples, every class of ``classes`` present
    shards: tuple[Shard, ...]
    train_stats: TrainStats | None
    raw: Mapping[str, Any]

    @classmethod
    def open(cls, path, strict: bool = True) -> Build:
        """The card of the build or balanced set in folder ``path``; HamdataError (one line) when there is none,
        it did not finish, or it is damaged.

        strict=False (what verify reads): counts and shard fields that are not whole numbers are kept as written
        (a count reads as 0 in ``counts``; ``written_counts`` and each Shard hold the value), so that every
        disagreement can be reported on its own line; a shard entry without a path or split is still an error.
        A ``train_stats`` that is not a mean and a std of three numbers each reads as None.
        """
        folder = Path(path)
        card = read_card(folder)
        classes = card_classes(card)
        try:
            names = split_names(card)
            names = [n for n in SPLIT_ORDER if n in names] + [n for n in names if n not in SPLIT_ORDER]
            written = card.get("counts") or {}
            counts = {split: {dx: _count((written.get(split) or {}).get(dx, 0), strict) for dx in classes}
                      for split in names}
            shards = tuple(Shard(s["path"], s["split"], _whole(s["samples"] if strict else s.get("samples"), strict),
                                 _whole(s.get("bytes", 0), strict), s.get("sha256", "") if strict else s.get("sha256"))
                           for s in shards_of(card))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HamdataError(f"{folder / CARD_NAME}: damaged counts or shard list ({type(exc).__name__}: {exc})") from None
        version = int(card["format_version"])
        kind = card.get("kind", "build" if version == 1 else None)  # a card without one is a build only in format 1
        return cls(folder, kind, version, classes, _frozen(counts), shards,
                   _train_stats(card.get("train_stats")), _frozen(card))

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits: train, val, test, and heldout when a collection was held out (a balanced set: train)."""
        return tuple(self.counts)

    def shards_of(self, split: str) -> tuple[Shard, ...]:
        return tuple(s for s in self.shards if s.split == split)

    def shard_paths(self, split: str) -> tuple[Path, ...]:
        """The tars of ``split``, in order, as paths (relative to where ``path`` is)."""
        return tuple(self.path / s.path for s in self.shards_of(split))

    def samples(self, split: str) -> int:
        return sum(self.counts.get(split, {}).values())

    @property
    def config(self) -> Mapping[str, Any]:
        return self.raw.get("config", MappingProxyType({}))

    @property
    def preprocess(self) -> dict:
        """The preprocessing of the stored images (size, hair removal, CLAHE, ...), as plain data."""
        return thaw(self.config.get("preprocess") or {})

    @property
    def image_format(self) -> str:
        return self.config.get("format", "jpg")

    @property
    def quality(self) -> int:
        return int(self.config.get("quality", 95))

    @property
    def features(self) -> tuple[str, ...]:
        """The numeric columns the samples carry (ISIC 2024 SLICE-3D's tbp_lv_*), empty for image-only builds."""
        return tuple(self.raw.get("features") or ())

    @property
    def made_from(self) -> str | None:
        """A balanced set's build, as the sha256 of that build's dataset.json when the set was made."""
        return self._mapping("build").get("sha256")

    @property
    def inputs(self) -> tuple:
        """One entry per ``--data`` of the build (format 2): collection, layout, root, rows, samples, warnings."""
        return self.raw.get("inputs") or ()

    @property
    def duplicates(self) -> tuple:
        """The pairs found by content or listed by a publisher, and what was done with each."""
        return self.raw.get("duplicates") or ()

    @property
    def fingerprint(self) -> tuple[str, ...]:
        """The sha256 of every shard, in the card's order: what a run records of the build it read."""
        return tuple(s.sha256 for s in self.shards)

    # What a build says of its inputs and of what it did not take (empty for a balanced set and, where noted, for a
    # format 1 build, which predates them).

    @property
    def input(self) -> Mapping[str, Any]:
        """The first input: root, layout, metadata table, rows, warnings (every format)."""
        return self._mapping("input")

    @property
    def input_list(self) -> tuple:
        """The inputs as InputFiles reads them: ``inputs``, or for a format 1 build its one input as input 0."""
        return self.inputs or (MappingProxyType(dict(self.input, index=0)),)

    @property
    def has_inputs(self) -> bool:
        """Whether the card lists its inputs one by one (a format 2 or 3 build)."""
        return "inputs" in self.raw

    @property
    def skipped(self) -> tuple:
        """The inputs not in the build and why: image_id, file, reason."""
        return self.raw.get("skipped") or ()

    @property
    def converted(self) -> tuple:
        """The inputs that were converted on reading (a 16-bit, CMYK or palette image): image_id, file, notes."""
        return self.raw.get("converted") or ()

    @property
    def unmapped(self) -> Mapping[str, Any]:
        """Per input, the labels that no class of the build took, with their rows."""
        return self._mapping("unmapped")

    @property
    def left_out(self) -> Mapping[str, Any]:
        """Per input, the image types left out (--image-types), with their rows."""
        return self._mapping("left_out")

    @property
    def duplicate_lists(self) -> tuple:
        """The publishers' duplicate lists the build applied: input, file, pairs, applied, outside."""
        return self.raw.get("duplicate_lists") or ()

    @property
    def duplicate_search(self) -> Mapping[str, Any]:
        """How duplicates were searched by content: method, threshold, counts."""
        return self._mapping("duplicate_search")

    @property
    def knows_duplicates(self) -> bool:
        """Whether the card records duplicates at all (not a format 1 build, not a balanced set)."""
        return "duplicates" in self.raw or "duplicate_search" in self.raw

    @property
    def groups(self) -> Mapping[str, Any]:
        """The groups the split kept together: count, largest, with_several_lesions."""
        return self._mapping("groups")

    @property
    def split_record(self) -> Mapping[str, Any]:
        """How the split was decided: method, seed, fractions, and what --hold-out held out."""
        return self._mapping("split")

    @property
    def written_counts(self) -> Mapping[str, Any]:
        """``counts`` as dataset.json has it, classes outside the class list included (what verify checks)."""
        return self._mapping("counts")

    @property
    def tool(self) -> str:
        """The program and version that wrote the card (``hamdata 1.2.0``)."""
        tool = self._mapping("tool")
        return f"{tool.get('name')} {tool.get('version')}"

    @property
    def libraries(self) -> Mapping[str, str]:
        """The versions of what decides a shard's bytes when it was written (python, numpy, opencv, ...)."""
        return self._mapping("libraries")

    # What a balanced set says of how it was made (empty for a build).

    @property
    def plan(self) -> Mapping[str, Any]:
        """Per class: originals, kept, copies, policy."""
        return self._mapping("plan")

    @property
    def policy_definitions(self) -> Mapping[str, Any]:
        """The augmentation policies by name: version and description."""
        return self._mapping("policy_definitions")

    @property
    def warnings(self) -> tuple[str, ...]:
        """A balanced set's warnings (few originals, many copies); a build's: those of reading its inputs."""
        return tuple(self.raw.get("warnings") or self.input.get("warnings") or ())

    @property
    def made_from_path(self) -> str | None:
        """A balanced set's build, relative to the set's folder, as the card records it."""
        return self._mapping("build").get("path")

    def _mapping(self, name: str) -> Mapping[str, Any]:
        value = self.raw.get(name)
        return value if isinstance(value, Mapping) else MappingProxyType({})

    @property
    def balanced_sets(self) -> tuple[str, ...]:
        """The names of the finished balanced sets inside a build (``balanced-N`` folders holding a card)."""
        return balanced_sets(self.path) if self.kind == "build" else ()

    def balanced(self, name: str) -> Build:
        """A balanced set of this build by name (``balanced-2000``)."""
        if name not in self.balanced_sets:
            found = ", ".join(self.balanced_sets) or "none"
            raise HamdataError(f"{self.path}: no balanced set {name!r} (it has {found})")
        return Build.open(self.path / name)

    @property
    def build_path(self) -> Path:
        """A build's own folder; for a balanced set, the folder of the build it was made from."""
        if self.kind == "build":
            return self.path
        return (self.path / (self.made_from_path or "..")).resolve()

    def to_json(self) -> str:
        """The card as dataset.json holds it (sorted keys), for printing or comparing."""
        return json.dumps(thaw(self.raw), indent=2, sort_keys=True)
