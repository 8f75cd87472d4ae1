"""hamdata.sources: layout detection, metadata validation, image lookup.

Every fixture dataset is built in tmp_path with 8x8 JPEGs; the real table and
the 23 real images come from tests/conftest.py and are skipped when absent.
"""

import csv
import io
import math
import multiprocessing
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hamdata.classes import CLASSES, ISIC2018_COLUMNS
from hamdata.errors import HamdataError
from hamdata.sources import (
    METADATA_COLUMNS,
    Source,
    missing_images,
    open_source,
    read_image_bytes,
    read_metadata,
    validate_metadata,
)

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


def write_jpeg(path: Path, seed: int = 0) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def make_kaggle(root: Path, lower_copies: bool = True) -> Path:
    """Kaggle layout: ids split across the parts, plus lower-case copies of both folders."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "HAM10000_metadata.csv").write_text(csv_text())
    (root / "hmnist_8_8_RGB.csv").write_text("pixel0000,label\n1,2\n")  # Kaggle ships these
    for i, image_id in enumerate(IDS):
        part = "HAM10000_images_part_1" if i < 3 else "HAM10000_images_part_2"
        write_jpeg(root / part / f"{image_id}.jpg", seed=i)
    if lower_copies:
        for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
            shutil.copytree(root / part, root / part.lower())
    return root


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


# ---------------------------------------------------------------- Kaggle


def test_kaggle_lower_case_copies_give_each_image_once(tmp_path):
    source = open_source(make_kaggle(tmp_path / "kaggle"))
    assert isinstance(source, Source)
    assert source.layout == "kaggle"
    assert source.root == (tmp_path / "kaggle").resolve()
    assert source.metadata_path.name == "HAM10000_metadata.csv"
    assert list(source.images) == IDS  # metadata order, each id once
    for i, image_id in enumerate(IDS):
        part = "HAM10000_images_part_1" if i < 3 else "HAM10000_images_part_2"
        assert source.images[image_id] == str(source.root / part / f"{image_id}.jpg")
    assert missing_images(source) == []
    assert source.warnings == ()
    pd.testing.assert_frame_equal(source.metadata, expected_frame())


def test_kaggle_image_only_in_lower_case_folder_is_found(tmp_path):
    root = make_kaggle(tmp_path)
    (root / "HAM10000_images_part_2" / "ISIC_0000005.jpg").unlink()
    source = open_source(root)
    assert source.images["ISIC_0000005"].endswith("ham10000_images_part_2/ISIC_0000005.jpg")
    assert len(source.images) == len(IDS)


def test_kaggle_missing_images_are_listed_sorted(tmp_path):
    root = make_kaggle(tmp_path, lower_copies=False)
    (root / "HAM10000_images_part_2" / "ISIC_0000006.jpg").unlink()
    (root / "HAM10000_images_part_1" / "ISIC_0000002.jpg").unlink()
    source = open_source(root)
    assert missing_images(source) == ["ISIC_0000002", "ISIC_0000006"]
    assert len(source.metadata) == len(IDS)


def test_images_without_metadata_row_are_ignored_with_a_warning(tmp_path):
    root = make_kaggle(tmp_path, lower_copies=False)
    write_jpeg(root / "HAM10000_images_part_1" / "ISIC_9999999.jpg")
    source = open_source(root)
    assert "ISIC_9999999" not in source.images
    assert any("ISIC_9999999" in w and "1 images" in w for w in source.warnings)


def test_part_folders_without_metadata_is_an_error(tmp_path):
    root = make_kaggle(tmp_path)
    (root / "HAM10000_metadata.csv").unlink()
    with pytest.raises(HamdataError, match="HAM10000_metadata.csv"):
        open_source(root)


# ---------------------------------------------------------------- Harvard Dataverse


def test_dataverse_folders_with_tab_metadata_and_dataset_column(tmp_path):
    root = make_kaggle(tmp_path, lower_copies=False)
    (root / "HAM10000_metadata.csv").unlink()
    header = METADATA_COLUMNS + ("dataset",)
    datasets = ["vidir_modern", "vidir_modern", "rosendahl", "vienna_dias", "vidir_molemax",
                "rosendahl"]
    rows = [r + (d,) for r, d in zip(ROWS, datasets)]
    (root / "HAM10000_metadata.tab").write_text(csv_text(rows, header, sep="\t"))
    source = open_source(root)
    assert source.layout == "dataverse"
    assert source.metadata_path.name == "HAM10000_metadata.tab"
    assert tuple(source.metadata.columns) == header
    pd.testing.assert_frame_equal(source.metadata, expected_frame(dataset=datasets))
    assert list(source.images) == IDS


def make_zips(root: Path) -> dict[str, bytes]:
    """The two Dataverse zips, images inside a sub-folder, plus macOS clutter."""
    root.mkdir(parents=True, exist_ok=True)
    data = {}
    for part, ids in (("HAM10000_images_part_1", IDS[:3]), ("HAM10000_images_part_2", IDS[3:])):
        with zipfile.ZipFile(root / f"{part}.zip", "w") as zf:
            zf.writestr(f"{part}/", b"")
            for image_id in ids:
                data[image_id] = write_jpeg(tmp := root / "tmp.jpg", seed=IDS.index(image_id))
                zf.write(tmp, f"{part}/{image_id}.jpg")
            zf.writestr(f"__MACOSX/{part}/._{ids[0]}.jpg", b"resource fork")
            zf.writestr(f"{part}/ATTRIBUTION.txt", b"text")
    (root / "tmp.jpg").unlink()
    return data


def test_dataverse_zips_with_extensionless_metadata(tmp_path):
    root = tmp_path / "dv"
    data = make_zips(root)
    header = METADATA_COLUMNS + ("dataset",)
    (root / "HAM10000_metadata").write_text(csv_text([r + ("rosendahl",) for r in ROWS], header))
    source = open_source(root)
    assert source.layout == "dataverse"
    assert list(source.images) == IDS
    for i, image_id in enumerate(IDS):
        part = "HAM10000_images_part_1" if i < 3 else "HAM10000_images_part_2"
        zip_path = source.root / f"{part}.zip"
        assert source.images[image_id] == f"zip:{zip_path}!{part}/{image_id}.jpg"
        assert read_image_bytes(source.images[image_id]) == data[image_id]
    assert list(source.metadata["dataset"]) == ["rosendahl"] * len(IDS)
    assert source.warnings == ()  # __MACOSX forks and ATTRIBUTION.txt are not images


def test_dataverse_tab_metadata_with_zips(tmp_path):
    root = tmp_path / "dv"
    make_zips(root)
    (root / "HAM10000_metadata.tab").write_text(csv_text(sep="\t"))
    source = open_source(root)
    assert source.layout == "dataverse"
    assert missing_images(source) == []
    pd.testing.assert_frame_equal(source.metadata, expected_frame())


def test_zip_members_read_in_forked_workers(tmp_path):
    data = make_zips(tmp_path / "dv")
    (tmp_path / "dv" / "HAM10000_metadata.csv").write_text(csv_text())
    source = open_source(tmp_path / "dv")
    locators = [source.images[i] for i in IDS] * 3
    assert read_image_bytes(locators[0]) == data[IDS[0]]  # the parent caches an open zip
    with multiprocessing.get_context("fork").Pool(2) as pool:
        got = pool.map(read_image_bytes, locators, chunksize=1)
    assert got == [data[i] for i in IDS] * 3


def test_read_image_bytes_of_a_file_and_errors(tmp_path):
    data = write_jpeg(tmp_path / "a.jpg")
    assert read_image_bytes(str(tmp_path / "a.jpg")) == data
    with pytest.raises(HamdataError, match="nope.jpg"):
        read_image_bytes(str(tmp_path / "nope.jpg"))
    make_zips(tmp_path / "dv")
    zip_path = (tmp_path / "dv" / "HAM10000_images_part_1.zip").resolve()
    with pytest.raises(HamdataError, match="ISIC_0000099"):
        read_image_bytes(f"zip:{zip_path}!HAM10000_images_part_1/ISIC_0000099.jpg")
    with pytest.raises(HamdataError, match="missing.zip"):
        read_image_bytes(f"zip:{tmp_path}/missing.zip!a.jpg")


# ---------------------------------------------------------------- ISIC 2018 Task 3


def isic_truth(rows=ROWS, one="1.0", zero="0.0") -> str:
    lines = ["image," + ",".join(ISIC2018_COLUMNS)]
    for r in rows:
        hot = [one if c.lower() == r[2] else zero for c in ISIC2018_COLUMNS]
        lines.append(",".join([r[1]] + hot))
    return "\n".join(lines) + "\n"


def make_isic(root: Path, where: str = "", groupings: bool = True, truth: str | None = None):
    folder = root / "ISIC2018_Task3_Training_Input"
    for i, image_id in enumerate(IDS):
        write_jpeg(folder / f"{image_id}.jpg", seed=i)
    (folder / "ATTRIBUTION.txt").write_text("credits")
    (folder / "LICENSE.txt").write_text("licence")
    csv_dir = root / where
    csv_dir.mkdir(parents=True, exist_ok=True)
    (csv_dir / "ISIC2018_Task3_Training_GroundTruth.csv").write_text(truth or isic_truth())
    if groupings:
        lines = ["image,lesion_id,diagnosis_confirm_type"]
        confirm = {"histo": "histopathology", "follow_up": "serial imaging showing no change",
                   "consensus": "single image expert consensus"}
        lines += [f"{r[1]},{r[0]},{confirm[r[3]]}" for r in ROWS]
        (root / "ISIC2018_Task3_Training_LesionGroupings.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize(
    "where", ["", "ISIC2018_Task3_Training_Input", "ISIC2018_Task3_Training_GroundTruth"]
)
def test_isic2018_with_groupings(tmp_path, where):
    source = open_source(make_isic(tmp_path, where))
    assert source.layout == "isic2018"
    assert source.metadata_path.name == "ISIC2018_Task3_Training_GroundTruth.csv"
    assert source.metadata_path.parent == (source.root / where).resolve()
    md = source.metadata
    assert tuple(md.columns) == METADATA_COLUMNS
    assert list(md["image_id"]) == IDS
    assert list(md["dx"]) == [r[2] for r in ROWS]
    assert list(md["lesion_id"]) == [r[0] for r in ROWS]
    assert list(md["dx_type"]) == [r[3] for r in ROWS]  # confirm types mapped back
    assert md["age"].isna().all() and set(md["sex"]) == {"unknown"}
    assert set(md["localization"]) == {"unknown"}
    assert list(source.images) == IDS and missing_images(source) == []


def test_isic2018_without_groupings_each_image_is_its_own_lesion(tmp_path):
    source = open_source(make_isic(tmp_path, groupings=False, truth=isic_truth(one="1", zero="0")))
    assert list(source.metadata["lesion_id"]) == IDS
    assert list(source.metadata["dx"]) == [r[2] for r in ROWS]
    assert any("LesionGroupings" in w and "own lesion" in w for w in source.warnings)


@pytest.mark.parametrize("values, needle", [
    ("1.0,1.0,0.0,0.0,0.0,0.0,0.0", "row 2 (ISIC_0000002)"),  # two classes
    ("0,0,0,0,0,0,0", "row 2 (ISIC_0000002)"),  # none
    ("1.0,0.5,0,0,0,0,0", "row 2 (ISIC_0000002)"),  # not 0/1
    ("1,0,0,0,0,0,yes", "row 2 (ISIC_0000002)"),  # not a number
])
def test_isic2018_not_one_hot_is_an_error_naming_the_row(tmp_path, values, needle):
    truth = isic_truth().splitlines()
    truth[2] = "ISIC_0000002," + values
    make_isic(tmp_path, truth="\n".join(truth) + "\n")
    with pytest.raises(HamdataError, match="exactly one 1") as info:
        open_source(tmp_path)
    assert needle in str(info.value) and "row 1 " not in str(info.value)


def test_isic2018_groupings_with_a_duplicate_image_is_an_error(tmp_path):
    make_isic(tmp_path)
    groups = tmp_path / "ISIC2018_Task3_Training_LesionGroupings.csv"
    groups.write_text(groups.read_text() + "ISIC_0000001,HAM_0000009,histopathology\n")
    duplicate = r"LesionGroupings.csv: duplicate image_id ISIC_0000001 \(rows 1, 7\)"
    with pytest.raises(HamdataError, match=duplicate):
        open_source(tmp_path)


def test_isic2018_without_ground_truth_names_it(tmp_path):
    make_isic(tmp_path)
    (tmp_path / "ISIC2018_Task3_Training_GroundTruth.csv").unlink()
    with pytest.raises(HamdataError, match="ISIC2018_Task3_Training_GroundTruth.csv"):
        open_source(tmp_path)


# ---------------------------------------------------------------- flat


def test_flat_folder_with_mixed_extensions_and_clutter(tmp_path):
    names = ["ISIC_0000001.jpg", "ISIC_0000002.JPG", "ISIC_0000003.jpeg", "ISIC_0000004.JPEG",
             "ISIC_0000005.png", "ISIC_0000006.PNG"]
    for i, name in enumerate(names):
        write_jpeg(tmp_path / name, seed=i)
    (tmp_path / ".DS_Store").write_bytes(b"\0\0")
    (tmp_path / "._ISIC_0000001.jpg").write_bytes(b"resource fork")
    (tmp_path / "ATTRIBUTION.txt").write_text("credits")
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")  # not metadata: no image_id/dx
    (tmp_path / "labels.csv").write_text(csv_text())
    source = open_source(tmp_path)
    assert source.layout == "flat"
    assert source.metadata_path.name == "labels.csv"
    assert source.images == {i: str(source.root / n) for i, n in zip(IDS, names)}
    assert source.warnings == ()  # the clutter is not taken for images


def test_flat_with_several_metadata_csvs_names_them(tmp_path):
    write_jpeg(tmp_path / "ISIC_0000001.jpg")
    (tmp_path / "a.csv").write_text(csv_text())
    (tmp_path / "b.csv").write_text(csv_text())
    with pytest.raises(HamdataError, match=r"a\.csv, b\.csv"):
        open_source(tmp_path)


def test_same_image_id_in_two_files_names_both(tmp_path):
    write_jpeg(tmp_path / "ISIC_0000001.jpg")
    write_jpeg(tmp_path / "ISIC_0000001.png")
    (tmp_path / "meta.csv").write_text(csv_text())
    with pytest.raises(HamdataError) as info:
        open_source(tmp_path)
    assert "ISIC_0000001.jpg" in str(info.value) and "ISIC_0000001.png" in str(info.value)


def test_flat_images_without_csv_and_csv_without_images(tmp_path):
    write_jpeg(tmp_path / "imgs" / "ISIC_0000001.jpg")
    with pytest.raises(HamdataError, match="no metadata CSV"):
        open_source(tmp_path / "imgs")
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "meta.csv").write_text(csv_text())
    with pytest.raises(HamdataError, match="no images found"):
        open_source(tmp_path / "meta")


def test_unrecognised_or_missing_directory_says_what_was_looked_for(tmp_path):
    (tmp_path / "readme.txt").write_text("hello")
    for path in (tmp_path, tmp_path / "absent", tmp_path / "readme.txt"):
        with pytest.raises(HamdataError) as info:
            open_source(path)
        message = str(info.value)
        assert "HAM10000_metadata.csv" in message and "ISIC2018_Task3_Training_Input" in message
        assert "flat" in message and "\n" not in message


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


def test_real_images_in_a_flat_layout(tmp_path, real_metadata_csv, real_images_dir):
    shutil.copy(real_metadata_csv, tmp_path / "HAM10000_metadata.csv")
    for image in sorted(real_images_dir.glob("*.jpg")):
        os.symlink(image, tmp_path / image.name)
    source = open_source(tmp_path)
    assert source.layout == "flat"
    assert len(source.images) == 23
    assert len(missing_images(source)) == 9_992
    some_id = sorted(source.images)[0]
    assert read_image_bytes(source.images[some_id])[:2] == b"\xff\xd8"


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
