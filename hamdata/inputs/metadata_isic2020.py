"""Parse the ISIC 2020 challenge's training tables and its duplicate list (and the Kaggle copy's ``train.csv``).

The files, as the challenge ships them (ISIC challenge page for 2020, ImageMarkup/stade
``stade/core/templates/data/2020.html``; the copies read by many public repositories):

- ``ISIC_2020_Training_GroundTruth.csv``: ``image_name,patient_id,sex,age_approx,
  anatom_site_general_challenge,diagnosis,benign_malignant,target`` (33,126 rows, ages ``45``);
- ``ISIC_2020_Training_GroundTruth_v2.csv``: the same with ``lesion_id`` after ``patient_id``;
- ``ISIC_2020_Training_Duplicates.csv``: ``image_name_1,image_name_2``, 425 pairs of images that show
  the same picture;
- Kaggle's ``siim-isic-melanoma-classification`` ``train.csv``: the v1 columns, ages ``45.0``.

``diagnosis`` is the archive's legacy word (``nevus``, ``melanoma``, ``unknown`` for 27,124 rows, which is
missing); a malignancy build takes ``benign_malignant`` (else ``target``: 1 malignant, 0 benign) first.
Patients become groups; ``lesion_id`` (v2) too.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hamdata.errors import HamdataError
from hamdata.inputs.metadata import cell_text, check_image_ids, column_index, header_names, listing, parse_ages, read_table
from hamdata.inputs.metadata_isic import fields, first_rows, raw_table

TRUTH_V2 = "ISIC_2020_Training_GroundTruth_v2.csv"
TRUTH = "ISIC_2020_Training_GroundTruth.csv"
DUPLICATES = "ISIC_2020_Training_Duplicates.csv"
KAGGLE_TRAIN = "train.csv"
COLUMNS = ("image_name", "patient_id", "lesion_id", "sex", "age_approx", "anatom_site_general_challenge",
           "diagnosis", "benign_malignant", "target")
REQUIRED = ("image_name", "diagnosis")
DUPLICATE_COLUMNS = ("image_name_1", "image_name_2")
LIST_EVIDENCE = "ISIC 2020 duplicate list"
_TARGET = {"1": "malignant", "0": "benign", "1.0": "malignant", "0.0": "benign"}


def is_isic2020_table(names: set[str]) -> bool:
    """Whether a header (lower-case names) is ISIC 2020's training table."""
    return {"image_name", "diagnosis", "anatom_site_general_challenge"} <= names


def parse_isic2020(path: Path) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """The raw table (hamdata.inputs.metadata_isic.RAW_COLUMNS) of an ISIC 2020 training table, its repeated ids, warnings."""
    df, rows, warnings = read_table(path)
    index = column_index(df.columns, COLUMNS, REQUIRED, path)
    names = [cell_text(v) for v in df.iloc[:, index["image_name"]]]
    check_image_ids(names, rows, path)
    col = fields(df, index, COLUMNS[1:])
    bad = [f"row {r} ({t!r})" for r, t in zip(rows, col["target"]) if t and t not in _TARGET]
    if bad:
        raise HamdataError(f"{path}: bad target in {listing(bad)}: expected 0 or 1")
    table = raw_table(
        names, rows, labels=[(d,) for d in col["diagnosis"]],
        malignancy=[bm or _TARGET.get(t, "") for bm, t in zip(col["benign_malignant"], col["target"])],
        lesion_id=col["lesion_id"], patient_id=col["patient_id"], age=parse_ages(col["age_approx"], rows, path),
        sex=col["sex"], localization=col["anatom_site_general_challenge"],
    )
    table, repeats = first_rows(table)
    return table, repeats, warnings


def _data_lines(path: Path) -> int:
    try:
        return max(0, sum(1 for line in path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
                          if line.strip()) - 1)
    except OSError:
        return 0


def parse_duplicate_list(path: Path, ids: set[str]) -> list[tuple[str, str]]:
    """The (image_name_1, image_name_2) pairs of the duplicate list; an error naming the rows whose ids the
    training table does not list."""
    if set(DUPLICATE_COLUMNS) <= header_names(path) and _data_lines(path) == 0:
        return []  # a list of no pairs
    df, rows, _ = read_table(path)
    index = column_index(df.columns, DUPLICATE_COLUMNS, DUPLICATE_COLUMNS, path)
    pairs = list(zip((cell_text(v) for v in df.iloc[:, index["image_name_1"]]),
                     (cell_text(v) for v in df.iloc[:, index["image_name_2"]])))
    unknown = [f"row {r} ({', '.join(i for i in pair if i not in ids)})" for r, pair in zip(rows, pairs)
               if any(i not in ids for i in pair)]
    if unknown:
        raise HamdataError(f"{path}: {listing(unknown)} name images the training table does not list: expected the "
                           f"duplicate list of the same ISIC 2020 training set")
    same = [f"row {r}" for r, (a, b) in zip(rows, pairs) if a == b]
    if same:
        raise HamdataError(f"{path}: {listing(same)} pair an image with itself: expected two different images")
    return pairs
