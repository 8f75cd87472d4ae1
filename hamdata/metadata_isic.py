"""Parse the tables of the ISIC 2019 Task 1 training set and of ISIC-archive exports.

Both give a raw table in the collection's own words, which hamdata.inputs maps
onto the build's classes and the one site vocabulary:

``image_id, file_id, label, lesion_id, patient_id, dx_type, age, sex, localization``

- image_id: the ISIC id (``ISIC_0000123``); ISIC 2019 names some images
  ``ISIC_0000123_downsampled``: the suffix is dropped from image_id (so the
  image meets its other copies by id) and kept in file_id, the file's stem.
- label: the source label (ISIC 2019: the one-hot column holding 1.0; archive:
  the most specific non-empty of ``diagnosis_5`` .. ``diagnosis_1``, else the
  legacy ``diagnosis``).
- lesion_id / patient_id: as given, empty when absent (each such image is then
  its own lesion).
- age: float, NaN when empty; sex and localization as given, empty when absent.

A table that lists one image_id twice keeps its first row; the others come
back in ``repeated`` (image_id, file_id, row) to be listed as same-id duplicates.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import HamdataError
from .metadata import (
    cell_text,
    check_image_ids,
    column_index,
    listing,
    one_hot_labels,
    parse_ages,
    read_table,
)

ISIC2019_LABELS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
ISIC2019_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_METADATA = "ISIC_2019_Training_Metadata.csv"
ARCHIVE_METADATA = "metadata.csv"
DOWNSAMPLED = "_downsampled"
RAW_COLUMNS = ("image_id", "file_id", "label", "lesion_id", "patient_id", "dx_type", "age", "sex", "localization")
DIAGNOSIS_FIELDS = ("diagnosis_5", "diagnosis_4", "diagnosis_3", "diagnosis_2", "diagnosis_1", "diagnosis")


def isic_id(name: str) -> str:
    """The ISIC id of an image name: ``ISIC_0000123_downsampled`` -> ``ISIC_0000123``."""
    return name[: -len(DOWNSAMPLED)] if name.endswith(DOWNSAMPLED) and len(name) > len(DOWNSAMPLED) else name


def _columns(df: pd.DataFrame, index: dict, names) -> dict[str, list[str]]:
    empty = [""] * len(df)
    return {n: ([cell_text(v) for v in df.iloc[:, index[n]]] if n in index else empty) for n in names}


def _first_rows(table: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """The table without repeated image_ids (first kept), and the repeats."""
    repeated_mask = table["image_id"].duplicated(keep="first")
    repeats = [{"image_id": r.image_id, "file_id": r.file_id, "row": int(r.row)}
               for r in table[repeated_mask].itertuples(index=False)]
    return table[~repeated_mask].drop(columns="row").reset_index(drop=True), repeats


def parse_isic2019(truth: Path, metadata: Path | None) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """The raw table of an ISIC 2019 Task 1 training copy, its repeated ids, and warnings."""
    df, rows, warnings = read_table(truth)
    wanted = ("image",) + tuple(c.lower() for c in ISIC2019_LABELS)
    required = wanted[:-1]  # UNK may be absent
    index = column_index(df.columns, wanted, required, truth)
    names = [cell_text(v) for v in df.iloc[:, index["image"]]]
    check_image_ids(names, rows, truth)
    present = [c for c in ISIC2019_LABELS if c.lower() in index]
    labels = one_hot_labels(df, rows, index, present, names, truth)
    extra = {n: {} for n in ("age_approx", "anatom_site_general", "lesion_id", "sex")}
    if metadata is None:
        warnings.append(f"no {ISIC2019_METADATA} beside {truth}: no age, sex, site or lesion ids; "
                        f"each image is its own lesion")
    else:
        mdf, mrows, more = read_table(metadata)
        warnings += more
        mindex = column_index(mdf.columns, ("image",) + tuple(extra), ("image",), metadata)
        mnames = [cell_text(v) for v in mdf.iloc[:, mindex["image"]]]
        check_image_ids(mnames, mrows, metadata)
        columns = _columns(mdf, mindex, extra)
        for n in extra:
            extra[n] = dict(zip(mnames, columns[n]))
        unlisted = [n for n in names if n not in extra["age_approx"]]
        if unlisted:
            warnings.append(f"{metadata}: no row for {len(unlisted)} images ({listing(unlisted)}): "
                            f"no age, sex, site or lesion id for them")
    ages = parse_ages([extra["age_approx"].get(n, "") for n in names], rows, metadata or truth)
    table = pd.DataFrame({
        "image_id": [isic_id(n) for n in names],
        "file_id": names,
        "label": labels,
        "lesion_id": [extra["lesion_id"].get(n, "") for n in names],
        "patient_id": [""] * len(names),
        "dx_type": [""] * len(names),
        "age": ages,
        "sex": [extra["sex"].get(n, "") for n in names],
        "localization": [extra["anatom_site_general"].get(n, "") for n in names],
        "row": rows,
    })
    table, repeats = _first_rows(table)
    return table, repeats, warnings


def parse_archive(path: Path) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """The raw table of an ISIC-archive export (isic-cli ``metadata.csv``), its repeated ids, and warnings."""
    df, rows, warnings = read_table(path)
    optional = ("lesion_id", "patient_id", "age_approx", "sex", "anatom_site_general", "diagnosis_confirm_type")
    index = column_index(df.columns, ("isic_id",) + optional + DIAGNOSIS_FIELDS, ("isic_id",), path)
    diagnosis = [f for f in DIAGNOSIS_FIELDS if f in index]
    if not diagnosis:
        raise HamdataError(f"{path}: no diagnosis column: expected diagnosis_1 .. diagnosis_5 (ISIC archive, "
                           f"2024 and later) or diagnosis (older exports); download the metadata with "
                           f"`isic metadata download`")
    names = [cell_text(v) for v in df.iloc[:, index["isic_id"]]]
    check_image_ids(names, rows, path)
    columns = _columns(df, index, optional + tuple(diagnosis))
    labels = [next((columns[f][i] for f in diagnosis if columns[f][i]), "") for i in range(len(names))]
    ages = parse_ages(columns["age_approx"], rows, path)
    table = pd.DataFrame({
        "image_id": [isic_id(n) for n in names],
        "file_id": names,
        "label": labels,
        "lesion_id": columns["lesion_id"],
        "patient_id": columns["patient_id"],
        "dx_type": columns["diagnosis_confirm_type"],
        "age": ages,
        "sex": columns["sex"],
        "localization": columns["anatom_site_general"],
        "row": rows,
    })
    table, repeats = _first_rows(table)
    return table, repeats, warnings
