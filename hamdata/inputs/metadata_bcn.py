"""Parse BCN20000 as its authors publish it: ``bcn_20k_train.csv`` beside its image folder.

Header (imatge-upc/BCN20000, whose code reads ``bcn_filename``, ``diagnosis`` and ``lesion_id`` of
``bcn_20k_train.csv``; Hernández-Pérez et al., Sci Data 2024):
``bcn_filename,age_approx,anatom_site_general,diagnosis,lesion_id,capture_date,sex,split``, with file
names ``BCN_0000000001.jpg`` and the diagnoses ``NV MEL BCC AK BKL DF VASC SCC`` (the ISIC 2019 codes).
The archive's BCN20000 collection is an ISIC-archive export, read by hamdata.inputs.metadata_isic.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from hamdata.inputs.metadata import cell_text, check_image_ids, column_index, parse_ages, read_table
from hamdata.inputs.metadata_isic import fields, first_rows, raw_table

TRAIN = "bcn_20k_train.csv"
COLUMNS = ("bcn_filename", "age_approx", "anatom_site_general", "diagnosis", "lesion_id", "capture_date", "sex",
           "split")
REQUIRED = ("bcn_filename", "diagnosis")


def parse_bcn(path: Path) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """The raw table (hamdata.inputs.metadata_isic.RAW_COLUMNS) of ``bcn_20k_train.csv``, its repeated ids, warnings."""
    df, rows, warnings = read_table(path)
    index = column_index(df.columns, COLUMNS, REQUIRED, path)
    names = [os.path.splitext(cell_text(v))[0] for v in df.iloc[:, index["bcn_filename"]]]
    check_image_ids(names, rows, path)
    col = fields(df, index, COLUMNS[1:])
    table = raw_table(names, rows, labels=[(d,) for d in col["diagnosis"]], lesion_id=col["lesion_id"],
                      age=parse_ages(col["age_approx"], rows, path), sex=col["sex"],
                      localization=col["anatom_site_general"])
    table, repeats = first_rows(table)
    return table, repeats, warnings
