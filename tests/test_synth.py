"""Tests for hamdata.synth.ham: the synthetic HAM10000 generator (Kaggle layout)."""

import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from hamdata.synth import draw
from hamdata.synth import ham as synth
from hamdata.inputs.classes import CLASSES
from hamdata.errors import HamdataError
from hamdata.inputs.layouts import missing_images, open_source
from hamdata.synth.draw import draw_lesion
from hamdata.synth.ham import make_synthetic, synthetic_metadata

# Written out again from the HAM10000 paper rather than imported, so that a
# typo in synth.py's tables cannot make these tests agree with it.
HAM_COUNTS = {"nv": 6705, "mel": 1113, "bkl": 1099, "bcc": 514, "akiec": 327, "vasc": 142, "df": 115}
HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization"
LOCALIZATIONS = {"back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest", "foot",
                 "unknown", "neck", "scalp", "hand", "ear", "genital", "acral"}
PARTS = ("HAM10000_images_part_1", "HAM10000_images_part_2")


def read_table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "HAM10000_metadata.csv", dtype=str, keep_default_na=False)


def image_files(out: Path) -> dict[str, Path]:
    """image_id -> path, over both part folders."""
    return {p.stem: p for part in PARTS for p in sorted((out / part).iterdir())}


def blackhat_fraction(rgb: np.ndarray) -> float:
    """Fraction of pixels the hair remover would inpaint (17x17 cross blackhat, threshold 10)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (17, 17))
    return float((cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, kernel) > 10).mean())


def read_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A 40-image synthetic dataset drawn by 2 worker processes, and its summary."""
    out = tmp_path_factory.mktemp("synth") / "ham"
    return out, make_synthetic(out, n_images=40, seed=0, workers=2, progress=False)


@pytest.fixture(scope="module")
def table_1000():
    return synthetic_metadata(1000, np.random.default_rng(0))


@pytest.fixture
def small_csv(tmp_path):
    """A HAM10000-style CSV of 8 synthetic rows (no real data needed)."""
    path = tmp_path / "meta.csv"
    synthetic_metadata(8, np.random.default_rng(3)).to_csv(path, index=False)
    return path


# ---------------------------------------------------------------- layout


def test_kaggle_layout_and_columns(built):
    out, summary = built
    assert sorted(p.name for p in out.iterdir()) == ["HAM10000_images_part_1", "HAM10000_images_part_2",
                                                      "HAM10000_metadata.csv"]
    assert (out / "HAM10000_metadata.csv").read_text().splitlines()[0] == HEADER
    table = read_table(out)
    files = image_files(out)
    assert sorted(files) == sorted(table["image_id"])
    assert all(p.suffix == ".jpg" for p in files.values())
    part_1 = sorted(p.stem for p in (out / PARTS[0]).iterdir())
    part_2 = sorted(p.stem for p in (out / PARTS[1]).iterdir())
    assert len(part_1) == len(part_2) == 20
    assert max(part_1) < min(part_2), "the first half of the image ids belongs in part 1"
    # The temporary sibling folder was moved into place, not left beside it.
    assert [p.name for p in out.parent.iterdir()] == ["ham"]


def test_images_are_600x450_rgb_jpegs(built):
    out, _ = built
    for path in image_files(out).values():
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (600, 450)), path.name


def test_summary_matches_what_was_written(built):
    out, summary = built
    table = read_table(out)
    assert summary["images"] == 40 == len(table)
    assert summary["lesions"] == table["lesion_id"].nunique()
    assert summary["counts"] == {dx: int((table["dx"] == dx).sum()) for dx in CLASSES}
    assert list(summary["counts"]) == list(CLASSES)
    assert summary["out"] == str(out)


def test_sources_reads_it_back_as_a_kaggle_copy(built):
    out, _ = built
    source = open_source(out)
    assert (source.layout, source.warnings) == ("kaggle", ())
    assert sorted(source.images) == sorted(read_table(out)["image_id"])
    assert missing_images(source) == []


# ---------------------------------------------------------------- metadata


def test_metadata_ids_and_lesions(table_1000):
    table = table_1000
    assert tuple(table.columns) == tuple(HEADER.split(","))
    assert table["image_id"].is_unique
    assert table["image_id"].str.fullmatch(r"SYN_\d{7}").all()
    assert table["lesion_id"].str.fullmatch(r"SYNL_\d{7}").all()
    by_lesion = table.groupby("lesion_id")
    assert (by_lesion["dx"].nunique() == 1).all(), "a lesion has one diagnosis"
    assert (by_lesion[["dx_type", "sex", "localization"]].nunique() == 1).all().all()
    sizes = by_lesion.size()
    assert (sizes >= 2).sum() > 100, "several images per lesion, as in HAM10000 (about a quarter of lesions)"
    assert sizes.max() <= 6
    assert 1.2 < len(table) / len(sizes) < 1.5  # HAM10000: 10,015 images / 7,470 lesions = 1.34


def test_metadata_values_are_plausible(table_1000):
    table = table_1000
    assert set(table["dx"]) == set(CLASSES)
    assert set(table["dx_type"]) <= {"histo", "follow_up", "consensus", "confocal"}
    assert set(table["sex"]) <= {"male", "female", "unknown"}
    assert set(table["localization"]) <= LOCALIZATIONS
    assert table["age"].dtype == float
    ages = table["age"].dropna()
    assert ages.between(0, 85).all() and (ages % 5 == 0).all()
    # Histopathology confirms every malignant diagnosis in HAM10000.
    assert (table.loc[table["dx"].isin(["mel", "bcc", "akiec"]), "dx_type"] == "histo").all()
    # Shuffled: a table sorted by class would change dx only 6 times.
    assert (table["dx"] != table["dx"].shift()).sum() > 200


def test_metadata_has_a_few_missing_ages_and_unknown_sexes():
    table = synthetic_metadata(10015, np.random.default_rng(0))
    assert 10 < table["age"].isna().sum() < 150
    assert 10 < (table["sex"] == "unknown").sum() < 150


def test_class_proportions_close_to_ham10000(table_1000):
    counts = table_1000["dx"].value_counts()
    total = sum(HAM_COUNTS.values())
    for dx, real in HAM_COUNTS.items():
        assert abs(counts[dx] - 1000 * real / total) < 1, dx  # largest remainder: off by less than one


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=7, max_value=20000))
def test_class_counts_sum_to_n_with_every_class(n):
    counts = synth.apportion(n, {dx: synth.REAL_CLASS_COUNTS[dx] for dx in CLASSES})
    assert sum(counts.values()) == n
    assert min(counts.values()) >= 1
    if n >= 88:  # from here every class's exact share is at least one image
        total = sum(HAM_COUNTS.values())
        assert all(abs(counts[dx] - n * HAM_COUNTS[dx] / total) < 1 for dx in CLASSES)


def test_seven_images_give_one_per_class():
    table = synthetic_metadata(7, np.random.default_rng(0))
    assert sorted(table["dx"]) == sorted(CLASSES)


def test_metadata_is_deterministic_for_a_seed():
    a = synthetic_metadata(300, np.random.default_rng(5))
    pd.testing.assert_frame_equal(a, synthetic_metadata(300, np.random.default_rng(5)))
    assert not a.equals(synthetic_metadata(300, np.random.default_rng(6)))


# ---------------------------------------------------------------- reproducibility


def test_same_seed_same_bytes_whatever_the_worker_count(built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    make_synthetic(again, n_images=40, seed=0, workers=1, progress=False)
    assert (again / "HAM10000_metadata.csv").read_bytes() == (out / "HAM10000_metadata.csv").read_bytes()
    first, second = image_files(out), image_files(again)
    assert sorted(first) == sorted(second)
    for image_id, path in first.items():
        assert path.read_bytes() == second[image_id].read_bytes(), image_id


def test_different_seed_different_pixels(small_csv, tmp_path):
    make_synthetic(tmp_path / "s0", seed=0, metadata=small_csv, workers=1, progress=False)
    make_synthetic(tmp_path / "s1", seed=1, metadata=small_csv, workers=1, progress=False)
    first, second = image_files(tmp_path / "s0"), image_files(tmp_path / "s1")
    assert sorted(first) == sorted(second)
    for image_id in first:
        assert not np.array_equal(read_rgb(first[image_id]), read_rgb(second[image_id])), image_id


def test_pixels_depend_on_seed_and_image_id_only():
    a = draw_lesion("nv", synth.image_rng(4, "SYN_0000001"))
    assert np.array_equal(a, draw_lesion("nv", synth.image_rng(4, "SYN_0000001")))
    assert not np.array_equal(a, draw_lesion("nv", synth.image_rng(4, "SYN_0000002")))


# ---------------------------------------------------------------- --metadata


def test_metadata_mode_copies_real_rows(real_metadata_csv, tmp_path):
    real = pd.read_csv(real_metadata_csv, dtype=str, keep_default_na=False).head(30)
    source = tmp_path / "real30.csv"
    real.to_csv(source, index=False)
    out = tmp_path / "out"
    summary = make_synthetic(out, n_images=500, metadata=source, workers=2, progress=False)
    written = read_table(out)
    pd.testing.assert_frame_equal(written, real[list(HEADER.split(","))])
    assert sorted(image_files(out)) == sorted(real["image_id"])
    assert summary["images"] == 30, "n_images is ignored when a metadata table is given"
    assert summary["lesions"] == real["lesion_id"].nunique() < 30


def test_metadata_mode_reads_tab_separated_files(small_csv, tmp_path):
    rows = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    tab = tmp_path / "HAM10000_metadata.tab"
    rows.to_csv(tab, sep="\t", index=False)
    summary = make_synthetic(tmp_path / "out", metadata=tab, workers=1, progress=False)
    assert read_table(tmp_path / "out")["image_id"].tolist() == rows["image_id"].tolist()
    assert summary["images"] == 8


# ---------------------------------------------------------------- pixels


def test_hair_is_there_for_the_hair_remover(built):
    out, _ = built
    fractions = [blackhat_fraction(read_rgb(p)) for p in image_files(out).values()]
    assert sum(f > 0.001 for f in fractions) >= 0.8 * len(fractions)


def test_hair_is_what_the_blackhat_finds_on_plain_skin():
    hairy = bare = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        skin = draw._add_noise(draw._skin(rng, 600, 450), rng, 2.2)
        assert blackhat_fraction(skin) < 1e-4, "noise alone must not look like hair"
        with_hair = skin.copy()
        draw._add_hair(with_hair, rng, 1.0)
        if np.array_equal(with_hair, skin):
            bare += 1
        else:
            hairy += 1
            assert blackhat_fraction(with_hair) > 1e-3
    assert hairy >= 12 and bare >= 1, "most images have hair, some none"


def test_classes_are_separable_by_a_nearest_centroid():
    def thumbnail(rgb):  # 16x16 of the central third, where the lesion is
        h, w = rgb.shape[:2]
        centre = rgb[h // 3: 2 * h // 3, w // 3: 2 * w // 3]
        return cv2.resize(centre, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()

    train = {dx: [thumbnail(draw_lesion(dx, np.random.default_rng([k, i]))) for i in range(20)]
             for k, dx in enumerate(CLASSES)}
    centroids = np.stack([np.mean(train[dx], axis=0) for dx in CLASSES])
    correct = total = 0
    for k, dx in enumerate(CLASSES):
        for i in range(20, 30):  # held-out draws
            x = thumbnail(draw_lesion(dx, np.random.default_rng([k, i])))
            correct += int(np.argmin(((centroids - x) ** 2).sum(axis=1)) == k)
            total += 1
    assert correct / total >= 0.8


@pytest.mark.parametrize("dx", CLASSES)
def test_draw_lesion_shape_dtype_and_determinism(dx):
    image = draw_lesion(dx, np.random.default_rng(1))
    assert image.shape == (450, 600, 3) and image.dtype == np.uint8
    assert np.array_equal(image, draw_lesion(dx, np.random.default_rng(1)))
    assert not np.array_equal(image, draw_lesion(dx, np.random.default_rng(2)))
    assert image.std() > 5, "not a blank image"


def test_draw_lesion_other_sizes():
    assert draw_lesion("mel", np.random.default_rng(0), size=(300, 200)).shape == (200, 300, 3)


def test_draw_lesion_ignores_global_numpy_random_state():
    np.random.seed(1)
    a = draw_lesion("bcc", np.random.default_rng(9))
    np.random.seed(2)
    b = draw_lesion("bcc", np.random.default_rng(9))
    assert np.array_equal(a, b)
    _, keys, position, *_ = np.random.get_state()
    draw_lesion("bcc", np.random.default_rng(9))
    _, keys_after, position_after, *_ = np.random.get_state()
    assert position_after == position and np.array_equal(keys_after, keys), "global numbers were consumed"


def test_draw_lesion_unknown_dx():
    with pytest.raises(HamdataError, match="expected one of akiec"):
        draw_lesion("melanoma", np.random.default_rng(0))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("n", [0, 6, -1, 7.5, "10"])
def test_too_few_images(n, tmp_path):
    with pytest.raises(HamdataError, match=">= 7"):
        make_synthetic(tmp_path / "out", n_images=n, progress=False)
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(HamdataError, match=re.escape(f"{out} exists; pass --overwrite")):
        make_synthetic(out, n_images=7, workers=1, progress=False)
    assert (out / "keep.txt").read_text() == "mine"


def test_overwrite_replaces_the_old_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    summary = make_synthetic(out, n_images=7, workers=1, overwrite=True, progress=False)
    assert not (out / "old.txt").exists()
    assert len(image_files(out)) == summary["images"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no temporary or old folder left behind"


def test_an_empty_existing_folder_and_a_relative_path_are_fine(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    summary = make_synthetic("out", n_images=7, workers=1, progress=False)
    assert summary["images"] == 7 and summary["out"] == "out"
    assert len(image_files(tmp_path / "out")) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _bad_csv(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    (HEADER + "\nL1,I1,nv,histo,40,male,back\nL2,I2,melanoma,histo,40,male,back\n",
     r"unknown dx in row 2 \('melanoma'\): expected one of akiec"),
    ("lesion_id,image_id,dx,age,sex,localization\nL1,I1,nv,40,male,back\n",
     r"missing column\(s\) dx_type; expected lesion_id,image_id,dx"),
    ("lesion_id,image_id,dx_type,age,sex,localization\nL1,I1,histo,40,male,back\n", "missing column dx"),
    (HEADER + "\nL1,I1,nv,histo,40,male,back\nL2,I1,nv,histo,40,male,back\n",
     r"duplicate image_id I1 \(rows 1, 2\)"),
    (HEADER + "\nL1,../I1,nv,histo,40,male,back\n", "bad image_id in row 1"),
    (HEADER + "\n,I1,nv,histo,40,male,back\n", "empty lesion_id in row 1"),
    (HEADER + "\nL1,I1,nv,histo,40,male,back\nL1,I2,mel,histo,40,male,back\n",
     "lesion L1 has images of several diagnoses"),
    (HEADER + "\n", "no data rows"),
    ("", "not a readable CSV table"),
])
def test_bad_metadata_is_named(tmp_path, text, message):
    path = _bad_csv(tmp_path, text)
    with pytest.raises(HamdataError, match=message) as err:
        make_synthetic(tmp_path / "out", metadata=path, workers=1, progress=False)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_missing_metadata_file(tmp_path):
    with pytest.raises(HamdataError, match=r"metadata file .*nope\.csv not found"):
        make_synthetic(tmp_path / "out", metadata=tmp_path / "nope.csv", progress=False)


def test_a_smaller_image_size_draws_the_same_table_smaller(tmp_path):
    full = make_synthetic(tmp_path / "full", n_images=7, seed=5, workers=1, progress=False)
    small = make_synthetic(tmp_path / "small", n_images=7, seed=5, workers=1, progress=False, image_size=(300, 225))
    assert small["counts"] == full["counts"]
    assert (tmp_path / "small" / "HAM10000_metadata.csv").read_bytes() == (tmp_path / "full" / "HAM10000_metadata.csv").read_bytes()
    pictures = sorted((tmp_path / "small").rglob("*.jpg"))
    assert len(pictures) == 7 and {Image.open(p).size for p in pictures} == {(300, 225)}


@pytest.mark.parametrize("option", [{"workers": 0}, {"seed": -1}, {"image_size": (16, 16)}, {"image_size": 300},
                                    {"image_size": (300.0, 225)}])
def test_bad_options(option, tmp_path):
    with pytest.raises(HamdataError, match=next(iter(option))):
        make_synthetic(tmp_path / "out", n_images=7, progress=False, **option)


def test_no_temporary_folder_left_after_a_failure(tmp_path, monkeypatch):
    def fail(task):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth, "_render", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        make_synthetic(tmp_path / "out", n_images=7, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_class_floor_raises_the_rare_classes_from_the_largest_and_keeps_the_total():
    """The demo's synthetic set (min_per_class=80 of 1,000) gives its 15% test split 10 images or more of every
    class; without a floor the proportions are HAM10000's (df 11, vasc 14 of 1,000)."""
    import numpy as np

    from hamdata.synth.ham import synthetic_metadata, with_floor

    assert with_floor({"nv": 670, "df": 11, "vasc": 14}, 80) == {"nv": 535, "df": 80, "vasc": 80}
    floored = synthetic_metadata(1000, np.random.default_rng(42), 80)["dx"].value_counts()
    plain = synthetic_metadata(1000, np.random.default_rng(42))["dx"].value_counts()
    assert len(floored) == 7 and floored.min() == 80 and floored.sum() == 1000
    assert plain["df"] == 11 and plain["vasc"] == 14
    assert synthetic_metadata(21, np.random.default_rng(0), 80)["dx"].value_counts().min() == 3  # at most n/7
