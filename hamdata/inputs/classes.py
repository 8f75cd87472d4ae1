"""The class sets a build can use, each in the one order every part of hamdata uses.

The class list belongs to the build: dataset.json ``classes`` names it, and
everything downstream (balance, trainers, metrics, the ISIC CSV's columns,
reports, checkpoints) takes it from there. Class indices are positions in
that list, never whatever order a dataframe happens to produce.

- ``ham10000`` (the default): the seven HAM10000 diagnoses, alphabetical as in
  its ``dx`` column. ``CLASSES`` is this list.
- ``isic2019``: the eight ISIC 2019 Task 1 training diagnoses, alphabetical
  (``ak`` is ISIC 2019's AK, which holds HAM10000's akiec images).
- ``malignancy``: ``benign``, ``malignant`` (ISIC 2020's task); its ISIC CSV is
  ``image,target``, the probability of malignant.
"""

from __future__ import annotations

from hamdata.errors import HamdataError

HAM10000_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
ISIC2019_CLASSES = ("ak", "bcc", "bkl", "df", "mel", "nv", "scc", "vasc")

MALIGNANCY_CLASSES = ("benign", "malignant")

CLASS_SETS = {"ham10000": HAM10000_CLASSES, "isic2019": ISIC2019_CLASSES, "malignancy": MALIGNANCY_CLASSES}
DEFAULT_CLASS_SET = "ham10000"
CLASSES = HAM10000_CLASSES  # the default class list

CLASS_NAMES = {
    "ak": "Actinic keratosis",
    "akiec": "Actinic keratoses / intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesions",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevi",
    "scc": "Squamous cell carcinoma",
    "vasc": "Vascular lesions",
    "benign": "Benign",
    "malignant": "Malignant",
}

# Column order of the ISIC challenge ground truth and prediction files of each class set.
ISIC2018_COLUMNS = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
ISIC2019_COLUMNS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
TARGET_COLUMN = "target"  # ISIC 2020's one column: the probability of malignant
_ISIC_COLUMNS = {"ham10000": ISIC2018_COLUMNS, "isic2019": ISIC2019_COLUMNS, "malignancy": (TARGET_COLUMN,)}
UNKNOWN_COLUMN = "UNK"  # ISIC 2019's "none of the above" column: no training image has it; predicted as 0

CLASS_INDEX = {dx: i for i, dx in enumerate(CLASSES)}


def label_of(dx: str, classes=CLASSES) -> int:
    """Class index of a diagnosis code in `classes`; KeyError for a code not in it."""
    classes = tuple(classes)
    if dx not in classes:
        raise KeyError(dx)
    return classes.index(dx)


def isic_column(dx: str) -> str:
    """ISIC column name of a diagnosis code (``"nv"`` -> ``"NV"``; ``"malignant"`` -> ISIC 2020's ``"target"``)."""
    return TARGET_COLUMN if dx == "malignant" else dx.upper()


def class_set_name(classes) -> str | None:
    """The name of a known class list (``"ham10000"``), or None."""
    classes = tuple(classes)
    return next((name for name, members in CLASS_SETS.items() if members == classes), None)


def isic_columns(classes=CLASSES) -> tuple[str, ...]:
    """The columns of the ISIC challenge CSV of a class list (2018 for ham10000, 2019 with UNK for isic2019)."""
    name = class_set_name(classes)
    return _ISIC_COLUMNS[name] if name else tuple(isic_column(dx) for dx in classes)


def resolve_class_set(name: str) -> tuple[str, ...]:
    """The class list of `--classes NAME`; a one-line error for an unknown name."""
    try:
        return CLASS_SETS[name]
    except KeyError:
        raise HamdataError(f"--classes: unknown class set {name!r}: expected one of {', '.join(CLASS_SETS)}") from None


def check_classes(classes, origin) -> tuple[str, ...]:
    """A class list read from a card or checkpoint, as a tuple; an error unless it is a known class set."""
    if not isinstance(classes, (list, tuple)) or class_set_name(classes) is None:
        known = "; ".join(f"{name}: {', '.join(members)}" for name, members in CLASS_SETS.items())
        raise HamdataError(f"{origin}: class list {classes!r} is not one hamdata knows ({known})")
    return tuple(classes)
