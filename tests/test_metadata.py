"""hamdata.inputs.metadata: reading and validating metadata tables.

Every table is written in tmp_path; the real table comes from tests/conftest.py
and is skipped when absent.
"""

import csv
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from metadata_rows import HEADER, ROWS, csv_text, expected_frame

from hamdata.inputs.classes import CLASSES
from hamdata.errors import HamdataError
from hamdata.inputs.metadata import METADATA_COLUMNS, read_metadata, validate_metadata


def bad(path: Path, *needles: str) -> str:
    """The one-line HamdataError message of read_metadata(path), checked for needles."""
    with pytest.raises(HamdataError) as info:
        read_metadata(path)
    message = str(info.value)
    assert "\n" not in message
    assert path.name in message
    for needle in needles:
        assert needle in message, message
    return message


# ---------------------------------------------------------------- real data


def test_real_metadata_table(real_metadata_csv):
    md = read_metadata(real_metadata_csv)
    assert len(md) == 10_015
    assert md["lesion_id"].nunique() == 7_470
    assert md["age"].isna().sum() == 57
    assert (md["sex"] == "unknown").sum() == 57
    assert tuple(md.columns) == METADATA_COLUMNS
    assert isinstance(md.index, pd.RangeIndex)
    assert set(md["dx"]) == set(CLASSES)
    assert md.attrs["warnings"] == ()


# ---------------------------------------------------------------- bad metadata


@pytest.mark.parametrize("body, needles", [
    (HEADER + "\nHAM_1,ISIC_1,nv,histo,40,male,back\nHAM_2,ISIC_2,melanoma,histo,40,male,back\n",
     ["unknown dx", "row 2 ('melanoma')", "akiec, bcc, bkl, df, mel, nv, vasc"]),
    (HEADER + "\nHAM_1,ISIC_1,nv,histo,40,male,back\nHAM_2,ISIC_2,mel,histo,40,male,back\n"
     "HAM_1,ISIC_1,nv,histo,40,male,back\n", ["duplicate image_id ISIC_1 (rows 1, 3)"]),
    (HEADER + "\nHAM_1,ISIC_1,nv,histo,40,male,back\nHAM_3,ISIC_1,mel,histo,40,male,back\n",
     ["duplicate image_id ISIC_1 (rows 1, 2)"]),
    ("lesion_id,image_id,diagnosis,age\nHAM_1,ISIC_1,nv,40\n",
     ["missing column dx", "'lesion_id', 'image_id', 'diagnosis', 'age'"]),
    ("lesion_id;image_id;dx\nHAM_1;ISIC_1;nv\n", ["missing column image_id, dx", "commas or tabs"]),
    (HEADER + "\n", ["no data rows"]),
    (HEADER + "\n\n,,,,,,\n", ["no data rows"]),
    ("", ["is empty"]),
    (",,,\n", ["has no header"]),
    ("\r\n \r\n", ["is empty"]),
    (HEADER + "\nHAM_1,ISIC_1,nv,histo,40,male,back\nHAM_2,ISIC_2,nv,histo,-5,male,back\n",
     ["bad age", "row 2 ('-5')", "0 to 120"]),
    (HEADER + "\nHAM_1,ISIC_1,nv,histo,121,male,back\nHAM_2,ISIC_2,nv,histo,forty,male,back\n",
     ["row 1 ('121')", "row 2 ('forty')"]),
    (HEADER + "\nHAM_1,ISIC_1,nv,histo,40,male,back\nHAM_2,  ,nv,histo,40,male,back\n",
     ["empty image_id in row 2"]),
    (HEADER + "\nHAM_1,ISIC_1.jpg,nv,histo,40,male,back\n", ["row 1 ('ISIC_1.jpg')"]),
    (HEADER + "\nHAM_1,ISIC_1,nv,histo,40,male,back\nHAM_1,ISIC_2,nv,histo,40,male\n",
     ["row 2 (6 fields)", "expected 7 fields"]),
    (HEADER + "\nHAM_1,ISIC_1,nv,histo,40,male,back\nHAM_1,ISIC_2,mel,histo,40,male,back\n",
     ["lesion HAM_1 has images of several diagnoses: nv (row 1), mel (row 2)"]),
    (HEADER + "\n,ISIC_1,nv,histo,40,male,back\n", ["empty lesion_id in row 1"]),
    ("image_id,dx,DX\nISIC_1,nv,nv\n", ["column 'dx' appears twice"]),
    (HEADER + "\n" + "".join(f"HAM_{i},ISIC_{i},xx,histo,40,male,back\n" for i in range(8)),
     ["row 5 ('xx') and 3 more"]),
])
def test_bad_metadata_is_a_one_line_error_naming_the_row(tmp_path, body, needles):
    path = tmp_path / "HAM10000_metadata.csv"
    path.write_bytes(body.encode())
    bad(path, *needles)


def test_blank_lines_count_in_row_numbers(tmp_path):
    path = tmp_path / "m.csv"
    rows = "HAM_1,ISIC_1,nv,histo,40,male,back\n\nHAM_2,ISIC_2,bad,histo,40,male,back\n"
    path.write_text(HEADER + "\n" + rows)
    bad(path, "row 3 ('bad')")


def test_metadata_directory_or_missing_file_is_an_error(tmp_path):
    with pytest.raises(HamdataError, match="not found"):
        read_metadata(tmp_path / "absent.csv")
    with pytest.raises(HamdataError, match="cannot read"):
        read_metadata(tmp_path)


# ---------------------------------------------------------------- accepted variants


def reads_as(tmp_path, data: bytes, expected: pd.DataFrame, name="m.csv") -> pd.DataFrame:
    path = tmp_path / name
    path.write_bytes(data)
    got = read_metadata(path)
    pd.testing.assert_frame_equal(got, expected)
    assert isinstance(got.index, pd.RangeIndex)
    return got


def test_bom_crlf_and_utf16_are_read(tmp_path):
    text = csv_text()
    reads_as(tmp_path, b"\xef\xbb\xbf" + text.encode(), expected_frame())
    reads_as(tmp_path, text.replace("\n", "\r\n").encode(), expected_frame())
    reads_as(tmp_path, b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode(), expected_frame())
    reads_as(tmp_path, text.encode("utf-16"), expected_frame())


def test_quoted_fields_with_separators_and_newlines(tmp_path):
    rows = [r[:6] + ("lower, extremity",) for r in ROWS]
    rows[0] = rows[0][:6] + ("two\nlines",)
    out = io.StringIO()
    csv.writer(out, quoting=csv.QUOTE_ALL).writerows([METADATA_COLUMNS] + rows)
    reads_as(tmp_path, out.getvalue().encode(), expected_frame(rows))
    spaced = HEADER + '\nHAM_1, "ISIC_1" , "nv",histo, "40",male,"back, upper"\n'
    expected = expected_frame([("HAM_1", "ISIC_1", "nv", "histo", "40", "male", "back, upper")])
    reads_as(tmp_path, spaced.encode(), expected)


def test_whitespace_and_case_are_normalised(tmp_path):
    messy = [tuple(f"  {v} " for v in r) for r in ROWS]
    messy[2] = messy[2][:2] + (" MEL ",) + messy[2][3:]
    header = ", ".join(f" {c.upper()} " for c in METADATA_COLUMNS)
    text = header + "\n" + csv_text(messy, header=None)  # header unquoted, as typed by hand
    reads_as(tmp_path, text.encode(), expected_frame())


def test_extra_columns_ignored_dataset_kept_and_column_order_free(tmp_path):
    order = [6, 0, 4, 2, 1, 5, 3]
    header = ["Unnamed: 0"] + [METADATA_COLUMNS[i] for i in order] + ["dataset", "notes"]
    rows = [[str(n)] + [r[i] for i in order] + ["rosendahl", "x"] for n, r in enumerate(ROWS)]
    reads_as(tmp_path, csv_text(rows, header).encode(), expected_frame(dataset=["rosendahl"] * 6))


def test_tab_separated_and_extensionless(tmp_path):
    reads_as(tmp_path, csv_text(sep="\t").encode(), expected_frame(), name="HAM10000_metadata")


def test_latin1_bytes_are_read_with_a_warning(tmp_path):
    rows = [r[:6] + ("épaule",) for r in ROWS]
    got = reads_as(tmp_path, csv_text(rows).encode("latin-1"), expected_frame(rows))
    assert any("not valid UTF-8" in w and "Latin-1" in w for w in got.attrs["warnings"])


def test_missing_optional_columns_are_filled_with_warnings(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("image_id,dx,sex\nISIC_1,nv,\nISIC_2,mel,female\n")
    got = read_metadata(path)
    assert tuple(got.columns) == METADATA_COLUMNS
    assert list(got["lesion_id"]) == ["ISIC_1", "ISIC_2"]
    assert list(got["sex"]) == ["unknown", "female"]
    assert list(got["dx_type"]) == ["unknown"] * 2 and list(got["localization"]) == ["unknown"] * 2
    assert got["age"].isna().all() and got["age"].dtype == np.float64
    warnings = " | ".join(got.attrs["warnings"])
    assert "no lesion_id column: each image is its own lesion" in warnings
    assert "dx_type, age, localization" in warnings


def test_validate_metadata_on_a_dataframe(tmp_path):
    raw = pd.DataFrame({
        "image_id": [" ISIC_2", "ISIC_1"], "dx": ["NV", "mel"], "lesion_id": ["HAM_2", "HAM_1"],
        "age": [45.0, np.nan], "sex": [None, "male"], "other": [1, 2],
    }, index=[10, 3])
    got = validate_metadata(raw, "my table")
    assert list(got["image_id"]) == ["ISIC_2", "ISIC_1"] and list(got["dx"]) == ["nv", "mel"]
    assert got["age"].iloc[0] == 45.0 and math.isnan(got["age"].iloc[1])
    assert list(got["sex"]) == ["unknown", "male"]
    assert isinstance(got.index, pd.RangeIndex) and tuple(got.columns) == METADATA_COLUMNS
    raw.loc[3, "dx"] = "cat"
    with pytest.raises(HamdataError, match=r"^my table: unknown dx in row 2 \('cat'\)"):
        validate_metadata(raw, "my table")


# ---------------------------------------------------------------- property


LOCATIONS = ["back", "lower extremity", "face", "unknown", "scalp, left"]
row_strategy = st.tuples(
    st.integers(0, 3),  # lesion number; its dx is fixed below so lesions stay consistent
    st.sampled_from(["histo", "follow_up", "consensus", "confocal"]),
    st.one_of(st.just(""), st.integers(0, 120).map(str), st.sampled_from(["37.5", "0.0"])),
    st.sampled_from(["male", "female", "unknown"]),
    st.sampled_from(LOCATIONS),
)


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(row_strategy, min_size=1, max_size=12),
    lesion_dx=st.lists(st.sampled_from(CLASSES), min_size=4, max_size=4),
    order=st.permutations(range(7)),
    bom=st.booleans(), crlf=st.booleans(), tab=st.booleans(), pad=st.booleans(),
    upper_dx=st.booleans(), with_dataset=st.booleans(),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
)
def test_any_valid_table_reads_back_equal(tmp_path, rows, lesion_dx, order, bom, crlf, tab, pad,
                                          upper_dx, with_dataset, quoting):
    table = [(f"HAM_{les}", f"ISIC_{n:07d}", lesion_dx[les], t, a, s, loc)
             for n, (les, t, a, s, loc) in enumerate(rows)]
    header = [METADATA_COLUMNS[i] for i in order] + (["dataset"] if with_dataset else [])
    written = []
    for r in table:
        values = [r[i] for i in order] + (["vidir"] if with_dataset else [])
        values = [v.upper() if upper_dx and header[j] == "dx" else v for j, v in enumerate(values)]
        written.append([f" {v}  " if pad else v for v in values])
    out = io.StringIO()
    csv.writer(out, delimiter="\t" if tab else ",", quoting=quoting,
               lineterminator="\r\n" if crlf else "\n").writerows([header] + written)
    data = ("\ufeff" if bom else "").encode() + out.getvalue().encode()
    path = tmp_path / "prop.csv"
    path.write_bytes(data)
    expected = expected_frame(table, dataset=["vidir"] * len(table) if with_dataset else None)
    pd.testing.assert_frame_equal(read_metadata(path), expected)
    pd.testing.assert_frame_equal(validate_metadata(expected, "frame"), expected)
