"""One vocabulary for several collections: label maps, the site table, sex and age.

Label maps. Each collection names its diagnoses in its own words (HAM10000
``dx`` codes, ISIC 2019 one-hot columns, the ISIC archive's diagnosis fields).
A label map is a CSV ``collection,label,class``: the class of the build's
class set a source label becomes, or empty to drop rows with that label.
``manifests/labels_<class set>.csv`` ships one per class set; ``--label-map
FILE`` overrides or adds entries (same columns). Labels match without regard
to case or surrounding spaces. A row may offer several labels, most specific
first (the levels of an ISIC-archive diagnosis path, hamdata.inputs.hierarchy): a
``--label-map`` row for any of them decides first; else the first the shipped
map knows decides, so ``Nevus, NOS, Compound`` falls back to
``Nevus``. A row none of whose labels has an entry is an error (or skipped and
counted, with ``--on-error skip``); a row whose entry is empty is dropped and
counted, and so is a row with no diagnosis at all (empty, ``nan``, ``unknown``);
the counts go into dataset.json ``unmapped``.

Sites. HAM10000 ``localization`` and ISIC ``anatom_site_general`` become one
``site`` from ``SITES`` through ``SITE_OF`` (docs/more-data.md prints the
table); the original value stays in the sample's ``localization``.

Sex is ``male``, ``female`` or ``unknown`` (``M``/``F`` read as male/female, any
other value as unknown); age is a number of years or empty.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

from hamdata.inputs.classes import CLASS_SETS
from hamdata.errors import HamdataError

COLLECTIONS = ("ham10000", "isic2019", "isic2020", "bcn20000", "isic2024", "isic-archive")
# A collection whose labels are another's words: a label map's entries for it come first, then that one's.
SPOKEN_LIKE = {"isic2024": "isic-archive"}  # SLICE-3D's iddx_1..5 are the archive's diagnosis hierarchy

UNKNOWN_SITE = "unknown"
SITES = (
    "head/neck", "upper extremity", "lower extremity", "anterior torso", "posterior torso",
    "lateral torso", "torso", "palms/soles", "oral/genital", UNKNOWN_SITE,
)
# Original value (lower case) -> site. HAM10000 localization first, then ISIC anatom_site_general.
SITE_OF = {
    "abdomen": "anterior torso", "chest": "anterior torso", "back": "posterior torso", "trunk": "torso",
    "face": "head/neck", "ear": "head/neck", "neck": "head/neck", "scalp": "head/neck",
    "upper extremity": "upper extremity", "hand": "upper extremity",
    "lower extremity": "lower extremity", "foot": "lower extremity",
    "acral": "palms/soles", "genital": "oral/genital", "unknown": UNKNOWN_SITE, "": UNKNOWN_SITE,
    "head/neck": "head/neck", "anterior torso": "anterior torso", "posterior torso": "posterior torso",
    "lateral torso": "lateral torso", "torso": "torso", "palms/soles": "palms/soles",
    "oral/genital": "oral/genital",
}
SEXES = ("male", "female", "unknown")
MAP_COLUMNS = ("collection", "label", "class")


def unified_site(value: str) -> str | None:
    """The site of an original localization / anatom_site_general value; None when the table has no entry."""
    return SITE_OF.get(str(value).strip().lower())


_SEX_OF = {"male": "male", "m": "male", "female": "female", "f": "female"}


def unified_sex(value: str) -> str:
    """male, female or unknown (M and F read as male and female; anything else is unknown)."""
    return _SEX_OF.get(str(value).strip().lower(), "unknown")


def label_key(label: str) -> str:
    return " ".join(str(label).split()).lower()


@dataclass(frozen=True)
class LabelMap:
    """(collection, label key) -> class ("" = drop), and where each entry came from."""

    class_set: str
    entries: dict  # (collection, label_key) -> class or ""
    files: tuple[str, ...]
    overridden: frozenset = frozenset()  # the keys a --label-map file gave: they decide before the shipped ones

    def lookup(self, collection: str, label: str) -> str | None:
        """The class of a source label, "" to drop it, None when the map has no entry."""
        return self.entries.get((collection, label_key(label)))

    def resolve(self, collection: str, candidates) -> tuple[str | None, str]:
        """(class, the label that decided it) of a row's labels, most specific first: the first the map knows
        decides (a class, or "" to drop); (None, the most specific label) when it knows none; ("", "") for no label."""
        candidates = [c for c in candidates if c]
        spoken = (collection, SPOKEN_LIKE[collection]) if collection in SPOKEN_LIKE else (collection,)
        for label in candidates:  # a user's --label-map row decides first, at whatever level it names
            for name in spoken:
                if (name, label_key(label)) in self.overridden:
                    return self.entries[(name, label_key(label))], label
        for label in candidates:
            cls = next((c for name in spoken if (c := self.lookup(name, label)) is not None), None)
            if cls is not None:
                return cls, label
        return (None, candidates[0]) if candidates else ("", "")


def shipped_file(name: str) -> Path | None:
    """manifests/NAME beside the code, or installed as package data; None when neither is there."""
    for base in (Path(__file__).resolve().parents[2], Path(sys.prefix) / "share" / "hamdata"):
        path = base / "manifests" / name
        if path.is_file():
            return path
    return None


def shipped_map_path(class_set: str) -> Path | None:
    """manifests/labels_<class set>.csv beside the code, or installed as package data."""
    return shipped_file(f"labels_{class_set}.csv")


def _read_map(path: Path, classes: tuple[str, ...], class_set: str, origin: str) -> dict:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise HamdataError(f"{origin}: no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HamdataError(f"{origin}: cannot read {path}: {e}") from None
    rows = list(csv.reader(io.StringIO(text, newline="")))
    rows = [r for r in rows if any(f.strip() for f in r)]
    if not rows or [c.strip().lower() for c in rows[0]] != list(MAP_COLUMNS):
        got = ",".join(rows[0]) if rows else "nothing"
        raise HamdataError(f"{path}: expected the header {','.join(MAP_COLUMNS)}, got {got!r}")
    entries = {}
    for number, row in enumerate(rows[1:], start=1):
        if len(row) != 3:
            raise HamdataError(f"{path}: row {number}: expected 3 fields (collection,label,class), got {len(row)}")
        collection, label, cls = (f.strip() for f in row)
        if collection not in COLLECTIONS:
            raise HamdataError(f"{path}: row {number}: unknown collection {collection!r}: expected one of "
                               f"{', '.join(COLLECTIONS)}")
        if not label:
            raise HamdataError(f"{path}: row {number}: empty label")
        if cls and cls not in classes:
            raise HamdataError(f"{path}: row {number}: class {cls!r} is not in the {class_set} classes "
                               f"({', '.join(classes)}); leave it empty to drop label {label!r}")
        entries[(collection, label_key(label))] = cls
    return entries


def load_label_map(class_set: str, override: str | None = None) -> LabelMap:
    """The shipped map of a class set, with the entries of `override` (a --label-map file) on top."""
    classes = CLASS_SETS[class_set]
    shipped = shipped_map_path(class_set)
    if shipped is None:
        raise HamdataError(f"the label map manifests/labels_{class_set}.csv is not installed: reinstall hamdata")
    entries = _read_map(shipped, classes, class_set, "label map")
    files, overridden = [str(shipped)], {}
    if override:
        overridden = _read_map(Path(override), classes, class_set, "--label-map")
        entries.update(overridden)
        files.append(str(Path(override).resolve()))
    return LabelMap(class_set, entries, tuple(files), frozenset(overridden))
