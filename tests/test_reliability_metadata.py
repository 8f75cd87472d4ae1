"""Reliability 3: hostile metadata tables, through read_metadata and the real CLI.

Every table is either accepted with the right values (checked in the json
member of every sample the build wrote) or rejected with one line that names
the file; never a traceback. Tables are written the ways real files differ:
column order, extra columns, BOM, CRLF, quoting, empty ages, stray whitespace
and case, blank lines, duplicate rows, non-UTF-8 bytes.
"""

import codecs
import csv
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from hamdata.inputs.classes import CLASSES
from hamdata.errors import HamdataError
from hamdata.inputs.metadata import METADATA_COLUMNS, read_metadata
from hamdata.inputs.vocabulary import unified_sex
from helpers import cli, one_error_line, shard_members



def fuzz(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def tiny_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


JPEG = tiny_jpeg()
# Every image here is the same tiny JPEG under another id: one picture, which the duplicate search would rightly
# keep once (tests/test_duplicates.py); these tests are about the tables, so the search is off.
BUILD = ["--size", "16", "--no-hair-removal", "--no-clahe", "--workers", "1", "--no-duplicate-search"]


# ------------------------------------------------------------------ a table and its rendering


@st.composite
def tables(draw):
    """Rows of a valid table (values as a careful person would type them) and how to write them."""
    n = draw(st.integers(1, 6))
    lesion_dx = draw(st.lists(st.sampled_from(CLASSES), min_size=3, max_size=3))
    text = st.text(alphabet="ab Z,;\"'\t\n\r-é", max_size=8)
    rows = []
    for i in range(n):
        lesion = draw(st.integers(0, 2))
        rows.append({
            "lesion_id": f"HAM_{lesion:07d}", "image_id": f"ISIC_{i:07d}", "dx": lesion_dx[lesion],
            "dx_type": draw(st.sampled_from(["histo", "follow_up", "consensus", ""])),
            "age": draw(st.sampled_from(["", "0", "45", "37.5", "120", "80.0"])),
            "sex": draw(st.sampled_from(["male", "female", "unknown", ""])),
            "localization": draw(text),
        })
    style = {
        "order": draw(st.permutations(range(7))),
        "extra": draw(st.lists(st.sampled_from(["Unnamed: 0", "notes", "", "dataset", "DX_2"]), max_size=2, unique=True)),
        "extra_at": draw(st.lists(st.integers(0, 9), min_size=2, max_size=2)),
        "header_case": draw(st.sampled_from(["lower", "upper", "title", "padded"])),
        "pad": draw(st.booleans()), "upper_dx": draw(st.booleans()),
        "sep": draw(st.sampled_from([",", "\t"])),
        "quoting": draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
        "newline": draw(st.sampled_from(["\n", "\r\n", "mixed"])),
        "blank_lines": draw(st.lists(st.integers(1, n), max_size=2)),
        "encoding": draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"])),
        "name": draw(st.sampled_from(["HAM10000_metadata.csv", "my table.csv"])),
    }
    return rows, style


def render(rows: list[dict], style: dict) -> bytes:
    names = [METADATA_COLUMNS[i] for i in style["order"]]
    header = [{"lower": c, "upper": c.upper(), "title": c.title(), "padded": f" {c} "}[style["header_case"]] for c in names]
    table = []
    for row in rows:
        values = [row[c].upper() if c == "dx" and style["upper_dx"] else row[c] for c in names]
        table.append([f"  {v} " if style["pad"] else v for v in values])
    for name, at in zip(style["extra"], style["extra_at"]):
        at = min(at, len(header))
        header.insert(at, name)
        for i, values in enumerate(table):
            values.insert(at, f"x{i}, é")
    records = []
    for values in [header] + table:
        out = io.StringIO()  # "\r\n" so that the writer quotes values holding \r or \n
        csv.writer(out, delimiter=style["sep"], quoting=style["quoting"], lineterminator="\r\n").writerow(values)
        records.append(out.getvalue()[:-2])
        if len(records) - 1 in style["blank_lines"]:
            records.append("")
    ends = {"\n": ["\n"], "\r\n": ["\r\n"], "mixed": ["\n", "\r\n"]}[style["newline"]]
    return "".join(r + ends[k % len(ends)] for k, r in enumerate(records)).encode(style["encoding"])


def expected(rows: list[dict], style: dict) -> pd.DataFrame:
    """What a careful reader makes of ``rows``: stripped, dx lower-case, empties filled."""
    frame = pd.DataFrame({
        "lesion_id": [r["lesion_id"] for r in rows], "image_id": [r["image_id"] for r in rows],
        "dx": [r["dx"] for r in rows],
        "dx_type": [r["dx_type"].strip() or "unknown" for r in rows],
        "age": [float(r["age"]) if r["age"] else math.nan for r in rows],
        "sex": [r["sex"].strip() or "unknown" for r in rows],
        "localization": [r["localization"].strip() or "unknown" for r in rows],
    })
    if "dataset" in style["extra"]:
        frame["dataset"] = [f"x{i}, é" for i in range(len(rows))]
    return frame


def flat_folder(root: Path, name: str, data: bytes, ids) -> Path:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / name).write_bytes(data)
    for image_id in ids:
        (root / f"{image_id}.jpg").write_bytes(JPEG)
    return root


def build(data: Path, out: Path, *extra: str):
    if out.exists():
        shutil.rmtree(out)
    return cli("build-shards", "--data", data, "--out", out, *BUILD, *extra)


def shard_records(out: Path) -> dict[str, dict]:
    return {name[:-5]: json.loads(data) for name, data in shard_members(out) if name.endswith(".json")}


def assert_shards_hold(out: Path, frame: pd.DataFrame) -> None:
    """Every row of ``frame`` is one sample whose json carries the row's values."""
    records = shard_records(out)
    assert sorted(records) == sorted(frame["image_id"])
    for row in frame.itertuples(index=False):
        got = records[row.image_id]
        want = {"lesion_id": row.lesion_id, "dx": row.dx, "dx_type": row.dx_type, "sex": unified_sex(row.sex),
                "localization": row.localization, "age": None if math.isnan(row.age) else row.age}
        assert {k: got[k] for k in want} == want


# ------------------------------------------------------------------ accepted: right values end to end


@fuzz(25)
@given(table=tables())
def test_hostile_but_valid_tables_build_with_the_right_values(tmp_path, table):
    rows, style = table  # every character drawn is in Latin-1, so every encoding can write it
    data = render(rows, style)
    want = expected(rows, style)
    root = flat_folder(tmp_path / "data", style["name"], data, want["image_id"])
    got = read_metadata(root / style["name"])
    pd.testing.assert_frame_equal(got, want)
    latin = style["encoding"] == "latin-1" and any(b > 127 for b in data)
    assert any("read as Latin-1" in w for w in got.attrs["warnings"]) == latin
    result = build(root, tmp_path / "out", "--shard-size", "4")
    assert result.exit_code == 0, result.output
    assert_shards_hold(tmp_path / "out", want)
    assert ("read as Latin-1" in result.stdout) == latin


# ------------------------------------------------------------------ fuzzed bytes: never a traceback

INTERESTING = [b'"', b",", b"\t", b"\n", b"\r", b"\x00", b"\xff", b"\xfe", b"\xef\xbb\xbf", b" ", b"NV", b"-1", b"", b"\xe9"]


@st.composite
def mutated(draw):
    rows, style = draw(tables())
    data = bytearray(render(rows, {**style, "encoding": "utf-8"}))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        what = draw(st.sampled_from(["insert", "delete", "replace", "duplicate line"]))
        piece = draw(st.sampled_from(INTERESTING) | st.binary(max_size=3))
        if what == "insert":
            data[at:at] = piece
        elif what == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif what == "replace":
            data[at:at + len(piece)] = piece
        else:
            lines = bytes(data).split(b"\n")
            k = at % len(lines)
            data = bytearray(b"\n".join(lines[:k + 1] + lines[k:]))
    return bytes(data), [r["image_id"] for r in rows]


def check_frame(frame: pd.DataFrame) -> None:
    """Invariants of any table read_metadata accepts."""
    assert tuple(frame.columns[:7]) == METADATA_COLUMNS and isinstance(frame.index, pd.RangeIndex)
    assert frame["image_id"].is_unique and frame["dx"].isin(CLASSES).all()
    assert frame["age"].dtype == np.float64 and ((frame["age"] >= 0) & (frame["age"] <= 120) | frame["age"].isna()).all()
    assert (frame.groupby("lesion_id")["dx"].nunique() == 1).all()
    for column in ("lesion_id", "image_id", "dx_type", "sex", "localization"):
        assert all(isinstance(v, str) and v and v == v.strip() for v in frame[column])


@fuzz(300)
@given(case=mutated() | st.tuples(st.binary(max_size=200), st.just([])))
def test_fuzzed_bytes_are_read_or_rejected_in_one_line(tmp_path, case):
    data, _ = case
    path = tmp_path / "HAM10000_metadata.csv"
    path.write_bytes(data)
    try:
        frame = read_metadata(path)
    except HamdataError as exc:
        message = str(exc)
        assert message.isprintable() and str(path) in message, message
    else:
        check_frame(frame)


CELL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6)
TYPICAL = {"lesion_id": ["HAM_1", "HAM_2"], "image_id": ["ISIC_1", "ISIC_2", "ISIC_3"], "dx": list(CLASSES) + [" NV "],
           "dx_type": ["histo"], "age": ["", "45", " 7.5 "], "sex": ["male"], "localization": ["back"]}


@fuzz(150)
@given(cells=st.lists(st.fixed_dictionaries({c: CELL | st.sampled_from(v) for c, v in TYPICAL.items()}), min_size=1, max_size=4),
       quoting=st.sampled_from([csv.QUOTE_ALL, csv.QUOTE_MINIMAL]))
@example(cells=[{"lesion_id": "0", "image_id": "0", "dx": "akiec", "dx_type": "histo", "age": "", "sex": "male",
                 "localization": "NULL"}], quoting=csv.QUOTE_ALL)  # found by hypothesis on 2026-12-05
def test_any_text_in_any_cell_is_read_or_rejected_in_one_line(tmp_path, cells, quoting):
    """Newlines, quotes, separators, control and non-Latin characters inside values."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=quoting, lineterminator="\r\n")
    writer.writerows([list(METADATA_COLUMNS)] + [[row[c] for c in METADATA_COLUMNS] for row in cells])
    path = tmp_path / "HAM10000_metadata.csv"
    path.write_bytes(out.getvalue().encode("utf-8"))
    try:
        frame = read_metadata(path)
    except HamdataError as exc:
        assert str(exc).isprintable() and str(path) in str(exc), str(exc)
        return
    check_frame(frame)
    assert list(frame["localization"]) == [site_as_read(c["localization"]) for c in cells]
    assert list(frame["lesion_id"]) == [c["lesion_id"].strip() for c in cells]  # a missing one is rejected above


def site_as_read(cell: str) -> str:
    """The missing-value rule as docs/more-data.md words it: empty, nan, NaN, None, null, NA (any case, stripped)
    mean no value, and a site without one is "unknown" (hypothesis found "NULL")."""
    return "unknown" if cell.strip().lower() in {"", "nan", "none", "null", "na"} else cell.strip()


@fuzz(30)
@given(case=mutated())
def test_fuzzed_tables_through_build_shards(tmp_path, case):
    data, ids = case
    root = flat_folder(tmp_path / "data", "HAM10000_metadata.csv", data, ids)
    out = tmp_path / "out"
    result = build(root, out)
    if result.exit_code == 0:
        frame = read_metadata(root / "HAM10000_metadata.csv")
        assert_shards_hold(out, frame)
    else:
        one_error_line(result)
        assert not out.exists() and not list(tmp_path.glob(".out.tmp-*"))


# ------------------------------------------------------------------ each named case, as a user sees it

HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization"
GOOD = ["HAM_1,ISIC_1,nv,histo,45,male,back", "HAM_1,ISIC_2,nv,histo,45,male,back", "HAM_2,ISIC_3,mel,consensus,70,female,face"]


def case_bytes(case: str) -> bytes:
    body = "\n".join([HEADER] + GOOD) + "\n"
    return {
        "column order": ("dx,localization,image_id,sex,age,lesion_id,dx_type\n"
                         "nv,back,ISIC_1,male,45,HAM_1,histo\nnv,back,ISIC_2,male,45,HAM_1,histo\n"
                         "mel,face,ISIC_3,female,70,HAM_2,consensus\n").encode(),
        "extra columns": ("Unnamed: 0," + HEADER + ",notes\n" + "".join(f"{i},{r},x\n" for i, r in enumerate(GOOD))).encode(),
        "BOM": codecs.BOM_UTF8 + body.encode(),
        "CRLF": body.replace("\n", "\r\n").encode(),
        "quoted fields": (HEADER + '\n"HAM_1","ISIC_1","nv","histo","45","male","back"\n'
                          + '"HAM_1",ISIC_2,nv,histo,"45",male,"back"\nHAM_2,ISIC_3,"mel",consensus,70,female,"face"\n').encode(),
        "empty ages": body.replace(",45,", ",,").encode(),
        "whitespace and case in dx": body.replace(",nv,", ", NV ,").replace(",mel,", ",Mel\t,").encode(),
        "duplicate rows": (body + GOOD[0] + "\n").encode(),
        "non-UTF-8 bytes": body.replace("back", "\xe9paule").encode("latin-1"),
        "unknown dx": body.replace(",mel,", ",melanoma,").encode(),
        "ragged row": body.replace("HAM_2,ISIC_3,mel,", "HAM_2,ISIC_3,mel,,").encode(),
        "one lesion, two diagnoses": body.replace("HAM_2", "HAM_1").encode(),
        "newline inside a quoted lesion_id": body.replace("HAM_2", '"HAM\n1"').replace("HAM_1", '"HAM\n1"').encode(),
    }[case]


ACCEPTED = {
    "column order": {}, "extra columns": {}, "BOM": {}, "CRLF": {}, "quoted fields": {},
    "empty ages": {"ISIC_1": {"age": None}, "ISIC_2": {"age": None}},
    "whitespace and case in dx": {},
    "non-UTF-8 bytes": {"ISIC_1": {"localization": "épaule"}, "ISIC_2": {"localization": "épaule"}},
}
REJECTED = {
    "duplicate rows": "duplicate image_id ISIC_1 (rows 1, 4): expected each image once",
    "unknown dx": "unknown dx in row 3 ('melanoma'): expected one of akiec, bcc, bkl, df, mel, nv, vasc",
    "ragged row": "row 3 (8 fields): expected 7 fields like the header",
    "one lesion, two diagnoses": "lesion HAM_1 has images of several diagnoses: nv (rows 1, 2), mel (row 3)",
    "newline inside a quoted lesion_id": "lesion 'HAM\\n1' has images of several diagnoses: nv (rows 1, 2), mel (row 3)",
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_named_case_is_accepted_with_the_right_values(tmp_path, case):
    root = flat_folder(tmp_path / "data", "HAM10000_metadata.csv", case_bytes(case), ["ISIC_1", "ISIC_2", "ISIC_3"])
    result = build(root, tmp_path / "out")
    assert result.exit_code == 0, result.output
    records = shard_records(tmp_path / "out")
    want = {"ISIC_1": {"lesion_id": "HAM_1", "dx": "nv", "dx_type": "histo", "age": 45, "sex": "male", "localization": "back"},
            "ISIC_3": {"lesion_id": "HAM_2", "dx": "mel", "dx_type": "consensus", "age": 70, "sex": "female", "localization": "face"}}
    want["ISIC_2"] = dict(want["ISIC_1"])
    for image_id, changes in ACCEPTED[case].items():
        want[image_id].update(changes)
    assert {k: {f: v[f] for f in want[k]} for k, v in records.items()} == want
    warned = [line for line in result.stdout.splitlines() if line.startswith("warning: ")]
    if case == "non-UTF-8 bytes":
        assert len(warned) == 2 and warned[0].startswith(f"warning: {root / 'HAM10000_metadata.csv'} is not valid UTF-8 (byte ")
        assert warned[0].endswith("): read as Latin-1")
        # the value is kept as given in localization; the one site vocabulary does not know it
        assert warned[1] == f"warning: {root / 'HAM10000_metadata.csv'}: site épaule not in the site table: read as unknown"
    else:
        assert warned == []


@pytest.mark.parametrize("case", list(REJECTED))
def test_named_case_is_rejected_in_one_line(tmp_path, case):
    root = flat_folder(tmp_path / "data", "HAM10000_metadata.csv", case_bytes(case), ["ISIC_1", "ISIC_2", "ISIC_3"])
    line = one_error_line(build(root, tmp_path / "out"), str(root / "HAM10000_metadata.csv"), REJECTED[case])
    assert not (tmp_path / "out").exists()
    if case == "duplicate rows":  # `stats` on the raw folder says the same, in one line
        result = cli("stats", root, "--out", tmp_path / "plots")
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert result.stderr.splitlines() == [result.stderr.strip()] and REJECTED[case] in result.stderr
        assert line.startswith("error: ")


def test_utf16_table_under_any_name_is_found_in_a_flat_folder(tmp_path):
    """The flat layout finds its CSV by the header; that look must decode UTF-16 as the reader does."""
    body = "\n".join([HEADER] + GOOD) + "\n"
    root = flat_folder(tmp_path / "data", "my table.csv", body.encode("utf-16"), ["ISIC_1", "ISIC_2", "ISIC_3"])
    result = build(root, tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert sorted(shard_records(tmp_path / "out")) == ["ISIC_1", "ISIC_2", "ISIC_3"]
