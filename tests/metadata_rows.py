"""Small HAM10000 metadata tables shared by test_metadata.py and test_layouts.py.

Imported as ``from metadata_rows import ...``; not a test file.
"""

import csv
import io
import math

import pandas as pd

from hamdata.inputs.metadata import METADATA_COLUMNS

HEADER = ",".join(METADATA_COLUMNS)
# (lesion_id, image_id, dx, dx_type, age, sex, localization); two lesions with two images.
ROWS = [
    ("HAM_0000001", "ISIC_0000001", "nv", "follow_up", "45", "male", "back"),
    ("HAM_0000001", "ISIC_0000002", "nv", "follow_up", "45", "male", "back"),
    ("HAM_0000002", "ISIC_0000003", "mel", "histo", "", "unknown", "lower extremity"),
    ("HAM_0000003", "ISIC_0000004", "bcc", "histo", "70.5", "female", "face"),
    ("HAM_0000004", "ISIC_0000005", "akiec", "consensus", "0", "female", "scalp"),
    ("HAM_0000004", "ISIC_0000006", "akiec", "consensus", "120", "female", "scalp"),
]
IDS = [r[1] for r in ROWS]


def expected_frame(rows=ROWS, dataset=None) -> pd.DataFrame:
    """What read_metadata must return for `rows` (already normalised)."""
    df = pd.DataFrame([list(r) for r in rows], columns=list(METADATA_COLUMNS))
    df["age"] = [float(a) if a else math.nan for a in df["age"]]
    df = pd.DataFrame({c: list(df[c]) for c in METADATA_COLUMNS})
    if dataset is not None:
        df["dataset"] = dataset
    return df


def csv_text(rows=ROWS, header=METADATA_COLUMNS, sep=",") -> str:
    """A CSV (or TSV) of `rows`; no header line when `header` is None."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=sep, lineterminator="\n")
    writer.writerows(([header] if header is not None else []) + list(rows))
    return out.getvalue()
