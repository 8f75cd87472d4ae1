"""hamdata.inputs.layouts: layout detection, image lookup and reading.

Every fixture dataset is built in tmp_path with 8x8 JPEGs; the real table and
the 23 real images come from tests/conftest.py and are skipped when absent.
"""

import io
import multiprocessing
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from metadata_rows import IDS, ROWS, csv_text, expected_frame
from PIL import Image

from hamdata.inputs.classes import ISIC2018_COLUMNS
from hamdata.errors import HamdataError
from hamdata.inputs.containers import read_image_bytes
from hamdata.inputs.layouts import Source, missing_images, open_source
from hamdata.inputs.metadata import METADATA_COLUMNS


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
