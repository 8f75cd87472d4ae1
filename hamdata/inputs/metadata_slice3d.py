"""Parse ISIC 2024 (SLICE-3D): ``train-metadata.csv`` beside ``train-image.hdf5`` or ``train-image/image/``.

The table, as the challenge ships it (55 columns; header and rows as printed by public solutions, e.g.
danielkaijzer/Skin-Cancer-Classifier ``data/test-metadata.csv`` at 8fd716f, and counted in several EDA
notebooks): ``isic_id,target,patient_id,age_approx,sex,anatom_site_general,clin_size_long_diam_mm,image_type,
tbp_tile_type``, 34 ``tbp_lv_*`` columns, ``attribution,copyright_license,lesion_id,iddx_full,iddx_1..iddx_5,
mel_mitotic_index,mel_thick_mm,tbp_lv_dnn_lesion_confidence``. 401,059 rows, 393 with target 1, 1,042 patients,
379,001 rows without a lesion id (patients are what keeps such a split clean), every image ``TBP tile: close-up``.

- Labels: ``iddx_1..5`` are the archive's diagnosis hierarchy (hamdata.inputs.hierarchy), deepest first; a malignancy
  build takes ``target`` (1 malignant, 0 benign) first.
- ``features``: the numeric measurements (``NUMERIC_COLUMNS``: ``clin_size_long_diam_mm`` and the ``tbp_lv_*``
  numbers, not the two location names) as floats, None when missing; they travel in each sample's json.
  ``mel_thick_mm`` and ``mel_mitotic_index`` are left out: only biopsied melanomas have them, so they would
  give the label away.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hamdata.errors import HamdataError
from hamdata.inputs.hierarchy import diagnosis_candidates
from hamdata.inputs.metadata import cell_text, check_image_ids, listing, parse_ages
from hamdata.inputs.metadata_isic import fields, first_rows, raw_table, unseen_warnings

TRAIN = "train-metadata.csv"
IMAGES_HDF5 = "train-image.hdf5"
IMAGES_FOLDER = ("train-image", "image")
OWN_IMAGE_TYPES = ("TBP tile: close-up", "TBP tile: overview")  # the kind this collection is made of
TBP_NUMERIC = (
    "tbp_lv_A", "tbp_lv_Aext", "tbp_lv_B", "tbp_lv_Bext", "tbp_lv_C", "tbp_lv_Cext", "tbp_lv_H", "tbp_lv_Hext",
    "tbp_lv_L", "tbp_lv_Lext", "tbp_lv_areaMM2", "tbp_lv_area_perim_ratio", "tbp_lv_color_std_mean", "tbp_lv_deltaA",
    "tbp_lv_deltaB", "tbp_lv_deltaL", "tbp_lv_deltaLB", "tbp_lv_deltaLBnorm", "tbp_lv_eccentricity",
    "tbp_lv_minorAxisMM", "tbp_lv_nevi_confidence", "tbp_lv_norm_border", "tbp_lv_norm_color", "tbp_lv_perimeterMM",
    "tbp_lv_radial_color_std_max", "tbp_lv_stdL", "tbp_lv_stdLExt", "tbp_lv_symm_2axis", "tbp_lv_symm_2axis_angle",
    "tbp_lv_x", "tbp_lv_y", "tbp_lv_z", "tbp_lv_dnn_lesion_confidence",
)
NUMERIC_COLUMNS = ("clin_size_long_diam_mm",) + TBP_NUMERIC
IDDX = tuple(f"iddx_{i}" for i in range(1, 6))
COLUMNS = ("isic_id", "target", "patient_id", "lesion_id", "age_approx", "sex", "anatom_site_general", "image_type",
           "tbp_tile_type") + IDDX + NUMERIC_COLUMNS
REQUIRED = ("isic_id", "target", "patient_id")
_TARGET = {"1": "malignant", "0": "benign", "1.0": "malignant", "0.0": "benign"}


def is_slice3d_table(names: set[str]) -> bool:
    """Whether a header (lower-case names) is SLICE-3D's train-metadata.csv."""
    return {"isic_id", "target", "patient_id", "tbp_lv_a"} <= names


def _read(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The wanted columns of train-metadata.csv: text as str (missing by the one rule), numbers as float64 (NaN).

    pandas' C parser, not hamdata.inputs.metadata.read_table: 401,059 rows x 55 cells as Python strings would take
    over a GiB; numbers parsed straight into arrays take 110 MB."""
    try:
        head = pd.read_csv(path, nrows=0, encoding="utf-8-sig")
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise HamdataError(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    by_name = {str(c).strip().lower(): c for c in head.columns}
    missing = [c for c in REQUIRED if c not in by_name]
    if missing:
        raise HamdataError(f"{path}: missing column {', '.join(missing)}: expected ISIC 2024's train-metadata.csv "
                           f"(isic_id, target, patient_id, ..., tbp_lv_*, ..., iddx_1 .. iddx_5)")
    text = [c for c in COLUMNS if c not in NUMERIC_COLUMNS and c.lower() in by_name]
    numeric = [c for c in NUMERIC_COLUMNS if c.lower() in by_name]
    try:
        df = pd.read_csv(path, usecols=[by_name[c.lower()] for c in text + numeric], encoding="utf-8-sig",
                         dtype={by_name[c.lower()]: str for c in text}, keep_default_na=False,
                         na_values={by_name[c.lower()]: ["", "nan", "NaN", "None", "null", "NA"] for c in numeric})
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise HamdataError(f"{path}: unreadable ({str(e).splitlines()[0]}): expected a comma-separated table with "
                           f"the header of ISIC 2024's train-metadata.csv") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    for c in numeric:
        column = df[c.lower()]
        if column.dtype.kind not in "fiu":
            numbers = pd.to_numeric(column, errors="coerce")
            bad = [f"row {k + 1} ({column.iat[k]!r})" for k in np.flatnonzero(numbers.isna().to_numpy())
                   if str(column.iat[k]).strip()]
            if bad:
                raise HamdataError(f"{path}: {c} in {listing(bad)} is not a number: expected a number or an empty "
                                   f"cell")
            df[c.lower()] = numbers
    return df, numeric


def parse_slice3d(path: Path) -> tuple[pd.DataFrame, list[dict], list[str], tuple[str, ...]]:
    """The raw table (hamdata.inputs.metadata_isic.RAW_COLUMNS + ``features``, a float row per image) of
    train-metadata.csv, its repeated ids, warnings, and the names of the feature columns."""
    df, numeric = _read(path)
    rows = list(range(1, len(df) + 1))
    if not rows:
        raise HamdataError(f"{path} has a header but no data rows: expected one row per image")
    names = [cell_text(v) for v in df["isic_id"]]
    check_image_ids(names, rows, path)
    index = {c: i for i, c in enumerate(df.columns)}
    col = fields(df, index, [c.lower() for c in COLUMNS if c not in NUMERIC_COLUMNS and c != "isic_id"])
    bad = [f"row {r} ({t!r})" for r, t in zip(rows, col["target"]) if t not in _TARGET]
    if bad:
        raise HamdataError(f"{path}: bad target in {listing(bad)}: expected 0 or 1")
    diagnoses = list(zip(*(col[c] for c in IDDX)))
    warnings = unseen_warnings(path, "iddx_1..5", diagnoses, "diagnosis")
    # One float matrix (NaN: missing), a row view per image: 401,059 dicts of 34 floats would take half a GiB.
    matrix = df[[c.lower() for c in numeric]].to_numpy(dtype=np.float64) if numeric else np.zeros((len(df), 0))
    table = raw_table(
        names, rows, labels=[diagnosis_candidates(d) for d in diagnoses],
        malignancy=[_TARGET[t] for t in col["target"]], lesion_id=col["lesion_id"], patient_id=col["patient_id"],
        age=parse_ages(col["age_approx"], rows, path), sex=col["sex"], localization=col["anatom_site_general"],
        image_type=col["image_type"],
    )
    table["features"] = list(matrix)
    table, repeats = first_rows(table)
    return table, repeats, warnings, tuple(numeric)
