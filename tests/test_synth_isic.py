"""Tests for hamdata.synth.isic: synthetic ISIC 2019 Task 1 and ISIC-archive layouts, with planted duplicates."""

import csv
import hashlib
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import synthetic_data
from PIL import Image

from hamdata.errors import HamdataError
from hamdata.inputs.layouts import open_source
from hamdata.inputs.metadata import has_required_columns
from hamdata.synth.isic import write_isic2019, write_isic_archive

# Written out here rather than imported, so that a typo in synth_isic cannot make the tests agree with it.
ISIC2019_COUNTS = {"MEL": 4522, "NV": 12875, "BCC": 3323, "AK": 867, "BKL": 2624, "DF": 239, "VASC": 253, "SCC": 628}
TRUTH_HEADER = ["image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
META_HEADER = ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]
ARCHIVE_HEADER = ["isic_id", "attribution", "copyright_license", "age_approx", "anatom_site_general",
                  "benign_malignant", "diagnosis_1", "diagnosis_2", "diagnosis_3", "diagnosis_confirm_type",
                  "image_type", "lesion_id", "patient_id", "sex"]
PLANTED_HEADER = ["copy_id", "original_id", "original_input", "kind", "transform"]
SITES = {"anterior torso", "posterior torso", "lateral torso", "head/neck", "upper extremity", "lower extremity",
         "palms/soles", "oral/genital", ""}
HAM_TO_COLUMN = {"akiec": "AK", "bcc": "BCC", "bkl": "BKL", "df": "DF", "mel": "MEL", "nv": "NV", "vasc": "VASC"}
HAM_TO_ARCHIVE_CLASS = {"akiec": "ak", "bcc": "bcc", "bkl": "bkl", "df": "df", "mel": "mel", "nv": "nv", "vasc": "vasc"}
# diagnosis_3 -> (diagnosis_1, diagnosis_2, ISIC 2019 class or None), from the ISIC taxonomy (isic-metadata).
TAXONOMY = {
    "Nevus": ("Benign", "Benign melanocytic proliferations", "nv"),
    "Melanoma Invasive": ("Malignant", "Malignant melanocytic proliferations (Melanoma)", "mel"),
    "Melanoma in situ": ("Malignant", "Malignant melanocytic proliferations (Melanoma)", "mel"),
    "Melanoma, NOS": ("Malignant", "Malignant melanocytic proliferations (Melanoma)", "mel"),
    "Basal cell carcinoma": ("Malignant", "Malignant adnexal epithelial proliferations - Follicular", "bcc"),
    "Squamous cell carcinoma in situ": ("Malignant", "Malignant epidermal proliferations", "scc"),
    "Squamous cell carcinoma, Invasive": ("Malignant", "Malignant epidermal proliferations", "scc"),
    "Squamous cell carcinoma, NOS": ("Malignant", "Malignant epidermal proliferations", "scc"),
    "Solar or actinic keratosis": ("Indeterminate", "Indeterminate epidermal proliferations", "ak"),
    "Seborrheic keratosis": ("Benign", "Benign epidermal proliferations", "bkl"),
    "Solar lentigo": ("Benign", "Benign epidermal proliferations", "bkl"),
    "Pigmented benign keratosis": ("Benign", "Benign epidermal proliferations", "bkl"),
    "Lichen planus like keratosis": ("Benign", "Benign epidermal proliferations", "bkl"),
    "Dermatofibroma": ("Benign", "Benign soft tissue proliferations - Fibro-histiocytic", "df"),
    "Hemangioma": ("Benign", "Benign soft tissue proliferations - Vascular", "vasc"),
    "Angiokeratoma": ("Benign", "Benign soft tissue proliferations - Vascular", "vasc"),
    "Pyogenic granuloma": ("Benign", "Benign soft tissue proliferations - Vascular", "vasc"),
    "Scar": ("Benign", "Benign soft tissue proliferations - Fibro-histiocytic", None),
    "Verruca": ("Benign", "Inflammatory or infectious diseases", None),
    "Atypical intraepithelial melanocytic proliferation": (
        "Indeterminate", "Indeterminate melanocytic proliferations", None),
}
BOX = (48, 36)  # small images: the layouts, not the pixels, are under test
DRAWN, SAME, NEW, WITHIN = 300, 4, 4, 4
OPTIONS = dict(images=DRAWN, seed=5, size=BOX, same_id=SAME, new_id=NEW, within=WITHIN, progress=False)
WRITERS = {"isic2019": write_isic2019, "isic-archive": write_isic_archive}


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        return next(csv.reader(f))


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), np.float32)


def centre(image: np.ndarray) -> np.ndarray:
    """The middle half of a grey image (both ways), as a 64x64 vector."""
    h, w = image.shape
    return cv2.resize(image[h // 4:h - h // 4, w // 4:w - w // 4], (64, 64), interpolation=cv2.INTER_AREA).ravel()


def crop3(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    dx, dy = int(0.03 * w + 0.5), int(0.03 * h + 0.5)
    return image[dy:h - dy, dx:w - dx]


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


@pytest.fixture(scope="module")
def ham(tmp_path_factory) -> Path:
    return synthetic_data(tmp_path_factory, 40, seed=3)


@pytest.fixture(scope="module")
def ham_rows(ham) -> dict[str, dict]:
    return {r["image_id"]: r for r in read_csv(ham / "HAM10000_metadata.csv")}


@pytest.fixture(scope="module")
def made(tmp_path_factory, ham) -> dict:
    """Both layouts with 4 copies of each kind, drawn by 2 worker processes, and their summaries."""
    root = tmp_path_factory.mktemp("isic")
    return {layout: (root / layout, write(root / layout, duplicates_of=ham, workers=2, **OPTIONS))
            for layout, write in WRITERS.items()}


@pytest.fixture(scope="module")
def isic2019(made):
    out = made["isic2019"][0]
    return out, read_csv(out / "ISIC_2019_Training_GroundTruth.csv"), read_csv(out / "ISIC_2019_Training_Metadata.csv")


@pytest.fixture(scope="module")
def archive(made):
    out = made["isic-archive"][0]
    return out, read_csv(out / "metadata.csv")


def planted(out: Path) -> list[dict]:
    return read_csv(out / "planted_duplicates.csv")


# ---------------------------------------------------------------- ISIC 2019


def test_isic2019_files_headers_and_one_image_per_row(isic2019, made):
    out, truth, meta = isic2019
    assert sorted(p.name for p in out.iterdir()) == [
        "ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Input", "ISIC_2019_Training_Metadata.csv",
        "planted_duplicates.csv"]
    assert header(out / "ISIC_2019_Training_GroundTruth.csv") == TRUTH_HEADER
    assert header(out / "ISIC_2019_Training_Metadata.csv") == META_HEADER
    names = [r["image"] for r in truth]
    assert names == [r["image"] for r in meta] == sorted(names) and len(set(names)) == len(names)
    assert len(names) == DRAWN + SAME + NEW + WITHIN == made["isic2019"][1]["images"]
    files = sorted(p.name for p in (out / "ISIC_2019_Training_Input").iterdir())
    assert files == [f"{n}.jpg" for n in names]


def test_isic2019_ground_truth_is_one_hot_with_unk_zero(isic2019):
    _, truth, _ = isic2019
    for row in truth:
        values = [row[c] for c in TRUTH_HEADER[1:]]
        assert set(values) <= {"1.0", "0.0"}, row
        assert values.count("1.0") == 1 and row["UNK"] == "0.0", row


def test_isic2019_drawn_classes_follow_the_real_proportions(isic2019):
    _, truth, _ = isic2019
    copies = {r["copy_id"] for r in planted(isic2019[0])}
    drawn = Counter(next(c for c in TRUTH_HEADER[1:] if r[c] == "1.0") for r in truth if r["image"] not in copies)
    total = sum(ISIC2019_COUNTS.values())
    for column, real in ISIC2019_COUNTS.items():
        assert abs(drawn[column] - DRAWN * real / total) < 1, (column, drawn)  # largest remainder
    assert drawn["UNK"] == 0


def test_isic2019_metadata_values_are_as_in_the_real_file(isic2019):
    _, _, meta = isic2019
    copies = {r["copy_id"]: r for r in planted(isic2019[0])}
    for row in meta:
        age = row["age_approx"]
        assert age == "" or (re.fullmatch(r"\d+\.0", age) and float(age) % 5 == 0 and 0 <= float(age) <= 85), row
        assert row["anatom_site_general"] in SITES and row["sex"] in ("male", "female", ""), row
        if row["image"] not in copies or copies[row["image"]]["kind"] != "same_id":
            assert re.fullmatch(r"(BCN_\d{7})?", row["lesion_id"]), row
            assert re.fullmatch(r"ISIC_00\d{5}(_downsampled)?", row["image"]), row
    drawn = [r for r in meta if r["image"] not in copies]
    empty = sum(r["lesion_id"] == "" for r in drawn) / len(drawn)
    assert 0.2 < empty < 0.5  # about a third, as in the real file
    sizes = Counter(r["lesion_id"] for r in drawn if r["lesion_id"])
    assert max(sizes.values()) >= 2  # several images of one lesion
    assert sum(r["age_approx"] != "" for r in drawn) > 0.9 * len(drawn)  # 1.7% of ages are missing


def test_isic2019_downsampled_names_match_their_files(isic2019):
    out, truth, meta = isic2019
    down = [r["image"] for r in truth if r["image"].endswith("_downsampled")]
    assert 3 <= len(down) <= 35  # about 5% of 300
    metadata_names = {r["image"] for r in meta}
    for name in down:
        assert re.fullmatch(r"ISIC_00\d{5}_downsampled", name)
        assert (out / "ISIC_2019_Training_Input" / f"{name}.jpg").is_file() and name in metadata_names


def test_isic2019_images_come_in_several_shapes_within_the_box(isic2019):
    out = isic2019[0]
    copies = {r["copy_id"] for r in planted(out)}
    shapes = Counter(Image.open(p).size for p in (out / "ISIC_2019_Training_Input").iterdir() if p.stem not in copies)
    for w, h in shapes:
        assert max(w, h) <= max(BOX) and min(w, h) <= min(BOX)
    assert (48, 36) in shapes and (36, 36) in shapes  # 600x450 and 1024x1024 scaled into the box
    assert len(shapes) >= 3


# ---------------------------------------------------------------- ISIC archive


def test_archive_files_header_and_crlf(archive, made):
    out, rows = archive
    assert {p.name for p in out.iterdir() if p.suffix != ".jpg"} == {"metadata.csv", "attribution.txt",
                                                                     "planted_duplicates.csv"}
    assert header(out / "metadata.csv") == ARCHIVE_HEADER
    assert (out / "metadata.csv").read_bytes().count(b"\r\n") == len(rows) + 1  # Python's csv, as isic-cli
    ids = [r["isic_id"] for r in rows]
    assert ids == sorted(ids) and len(ids) == DRAWN + SAME + NEW + WITHIN == made["isic-archive"][1]["images"]
    assert sorted(p.stem for p in out.glob("*.jpg")) == ids
    attributions = (out / "attribution.txt").read_text(encoding="utf-8").split("\n\n")
    assert set(attributions) == {r["attribution"] for r in rows}


def test_archive_diagnoses_follow_the_isic_taxonomy(archive):
    _, rows = archive
    unmapped = 0
    for row in rows:
        assert row["diagnosis_3"] in TAXONOMY, row
        dx1, dx2, cls = TAXONOMY[row["diagnosis_3"]]
        assert (row["diagnosis_1"], row["diagnosis_2"]) == (dx1, dx2), row
        assert row["benign_malignant"] == dx1.lower()
        unmapped += cls is None
    assert 1 <= unmapped <= 20
    classes = Counter(TAXONOMY[r["diagnosis_3"]][2] for r in rows)
    assert set(classes) - {None} == {"ak", "bcc", "bkl", "df", "mel", "nv", "scc", "vasc"}
    assert classes.most_common(1)[0][0] == "nv"


def test_archive_patients_lesions_and_metadata(archive):
    out, rows = archive
    copies = {r["copy_id"]: r for r in planted(out)}
    drawn = [r for r in rows if r["isic_id"] not in copies]
    for row in rows:
        assert re.fullmatch(r"(IL_\d{7})?", row["lesion_id"]) and re.fullmatch(r"(IP_\d{7})?", row["patient_id"]), row
        assert row["age_approx"] == "" or (row["age_approx"].isdigit() and int(row["age_approx"]) % 5 == 0), row
        assert row["anatom_site_general"] in SITES and row["sex"] in ("male", "female", ""), row
        assert row["image_type"] in ("dermoscopic", "clinical: close-up") and row["copyright_license"], row
    for row in drawn:
        assert re.fullmatch(r"ISIC_\d{7}", row["isic_id"]) and not 24306 <= int(row["isic_id"][5:]) <= 34320
        assert (row["lesion_id"] == "") == (row["patient_id"] == ""), row
    patient_of = {}
    for row in rows:
        if row["lesion_id"]:
            assert patient_of.setdefault(row["lesion_id"], row["patient_id"]) == row["patient_id"], row
    lesions_per_patient = Counter(patient_of.values())
    images_per_lesion = Counter(r["lesion_id"] for r in drawn if r["lesion_id"])
    assert max(lesions_per_patient.values()) >= 2 and max(images_per_lesion.values()) >= 2
    assert any(r["lesion_id"] == "" for r in drawn)


# ---------------------------------------------------------------- planted duplicates


@pytest.mark.parametrize("layout", WRITERS)
def test_planted_file_lists_exactly_the_copies(made, ham, ham_rows, layout):
    out, summary = made[layout]
    assert header(out / "planted_duplicates.csv") == PLANTED_HEADER
    assert not has_required_columns(out / "planted_duplicates.csv")  # never taken for a metadata table
    records = planted(out)
    assert Counter(r["kind"] for r in records) == {"same_id": SAME, "new_id": NEW, "within": WITHIN}
    assert summary["planted"] == {"same_id": SAME, "new_id": NEW, "within": WITHIN} and summary["drawn"] == DRAWN
    folder = out / "ISIC_2019_Training_Input" if layout == "isic2019" else out
    ids = {p.stem for p in folder.glob("*.jpg")}
    copy_ids = [r["copy_id"] for r in records]
    assert len(set(copy_ids)) == len(copy_ids) and set(copy_ids) <= ids
    assert ids & set(ham_rows) == {r["copy_id"] for r in records if r["kind"] == "same_id"}  # no other HAM id
    ham_images = open_source(ham).images
    drawn = ids - set(copy_ids)
    assert len(drawn) == DRAWN
    for r in records:
        copy = (folder / f"{r['copy_id']}.jpg").read_bytes()
        if r["kind"] == "within":
            assert (r["original_input"], r["transform"]) in (("self", "reencode_q85"),
                                                            ("self", "crop3_resize0.8_bright1.1_q85"))
            assert r["original_id"] in drawn and r["copy_id"] != r["original_id"]
            original = (folder / f"{r['original_id']}.jpg").read_bytes()
        else:
            assert r["original_input"] == str(ham.resolve()) and r["original_id"] in ham_rows
            assert (r["copy_id"] == r["original_id"]) == (r["kind"] == "same_id")
            assert r["transform"] == ("reencode_q85" if r["kind"] == "same_id" else "crop3_resize0.8_bright1.1_q85")
            original = Path(ham_images[r["original_id"]]).read_bytes()
        assert copy != original  # re-encoded at quality 85 at least


def test_isic2019_copies_carry_their_originals_labels_and_lesions(isic2019, ham_rows):
    out, truth, meta = isic2019
    label = {r["image"]: next(c for c in TRUTH_HEADER[1:] if r[c] == "1.0") for r in truth}
    lesion = {r["image"]: r["lesion_id"] for r in meta}
    for r in planted(out):
        if r["kind"] == "within":
            assert label[r["copy_id"]] == label[r["original_id"]]
            assert lesion[r["copy_id"]] != lesion[r["original_id"]] or lesion[r["copy_id"]] == ""
            continue
        ham_row = ham_rows[r["original_id"]]
        assert label[r["copy_id"]] == HAM_TO_COLUMN[ham_row["dx"]]
        if r["kind"] == "same_id":  # ISIC 2019 lists HAM images with their HAM lesion ids
            assert lesion[r["copy_id"]] == ham_row["lesion_id"]
        else:  # empty or unrelated: only the content can find it
            assert lesion[r["copy_id"]] == "" or re.fullmatch(r"BCN_\d{7}", lesion[r["copy_id"]])


def test_archive_copies_carry_their_originals_diagnoses(archive, ham_rows):
    out, rows = archive
    by_id = {r["isic_id"]: r for r in rows}
    for r in planted(out):
        copy = by_id[r["copy_id"]]
        if r["kind"] == "within":
            assert copy["diagnosis_3"] == by_id[r["original_id"]]["diagnosis_3"]
        else:
            assert TAXONOMY[copy["diagnosis_3"]][2] == HAM_TO_ARCHIVE_CLASS[ham_rows[r["original_id"]]["dx"]]
        if r["kind"] != "same_id":
            assert copy["lesion_id"] == "" or copy["lesion_id"] not in {x["lesion_id"] for x in rows if x is not copy}


@pytest.mark.parametrize("layout", WRITERS)
def test_new_id_copy_is_its_original_cropped_resized_and_brightened(made, ham, layout):
    out = made[layout][0]
    folder = out / "ISIC_2019_Training_Input" if layout == "isic2019" else out
    ham_images = {k: Path(v) for k, v in open_source(ham).images.items()}
    centres = {k: centre(crop3(grey(p))) for k, p in ham_images.items()}
    for r in planted(out):
        if r["kind"] != "new_id":
            continue
        path = folder / f"{r['copy_id']}.jpg"
        original = grey(ham_images[r["original_id"]])
        copy = grey(path)
        assert path.read_bytes() != ham_images[r["original_id"]].read_bytes()
        cropped = crop3(original)
        assert copy.shape == tuple(int(0.8 * s + 0.5) for s in cropped.shape)
        assert 1.03 < copy.mean() / cropped.mean() < 1.12
        scores = {k: correlation(c, centre(copy)) for k, c in centres.items()}
        assert scores[r["original_id"]] > 0.9
        assert max(scores, key=scores.get) == r["original_id"]  # the copy is most like its own original


def test_within_copies_are_pictures_of_their_originals(made):
    out = made["isic2019"][0]
    folder = out / "ISIC_2019_Training_Input"
    for r in planted(out):
        if r["kind"] == "within":
            original, copy = grey(folder / f"{r['original_id']}.jpg"), grey(folder / f"{r['copy_id']}.jpg")
            if r["transform"].startswith("crop"):
                original = crop3(original)
            assert correlation(centre(original), centre(copy)) > 0.85


def test_real_ham10000_copies_keep_their_isic_ids_and_ham_lesions(real_images_dir, tmp_path):
    data = real_images_dir.parent
    summary = write_isic2019(tmp_path / "out", images=8, seed=1, size=BOX, duplicates_of=data, same_id=3, new_id=3,
                             workers=1, progress=False)
    assert summary["images"] == 14
    meta = {r["image"]: r for r in read_csv(tmp_path / "out" / "ISIC_2019_Training_Metadata.csv")}
    for r in planted(tmp_path / "out"):
        assert re.fullmatch(r"ISIC_00\d{5}", r["copy_id"])
        if r["kind"] == "same_id":
            assert re.fullmatch(r"HAM_\d{7}", meta[r["copy_id"]]["lesion_id"])
        else:  # a new id never takes one of the real HAM10000 ids
            assert not 24306 <= int(r["copy_id"][5:]) <= 34320


# ---------------------------------------------------------------- determinism


@pytest.mark.parametrize("layout", WRITERS)
def test_same_seed_same_bytes_with_one_worker_other_seed_other_bytes(made, ham, tmp_path, layout):
    out = made[layout][0]
    WRITERS[layout](tmp_path / "again", duplicates_of=ham, workers=1, **OPTIONS)
    assert digests(tmp_path / "again") == digests(out)
    WRITERS[layout](tmp_path / "other", duplicates_of=ham, workers=1, **{**OPTIONS, "seed": 6})
    first, other = digests(out), digests(tmp_path / "other")
    assert first != other
    table = "ISIC_2019_Training_GroundTruth.csv" if layout == "isic2019" else "metadata.csv"
    assert first[table] != other[table]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("options, needle", [
    (dict(same_id=30, new_id=11), "only 40 images"),
    (dict(same_id=41), "only 40 images"),
    (dict(new_id=-1), "new_id must be an integer >= 0"),
    (dict(within=-2), "within must be an integer >= 0"),
    (dict(within=9), "more copies than the 8 images"),
    (dict(same_id=1.5), "same_id must be an integer"),
    (dict(images=7), "images must be an integer >= 8"),
    (dict(size=(8, 8)), "size must be"),
    (dict(seed=-1), "seed must be"),
    (dict(duplicates_of=None, same_id=1), "pass duplicates_of"),
])
def test_bad_arguments_are_one_line_errors_and_write_nothing(ham, tmp_path, options, needle):
    arguments = {**dict(images=8, size=BOX, duplicates_of=ham, workers=1, progress=False), **options}
    with pytest.raises(HamdataError) as caught:
        write_isic2019(tmp_path / "out", **arguments)
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("write", WRITERS.values())
def test_duplicates_of_a_folder_without_images_is_a_one_line_error(tmp_path, write):
    (tmp_path / "empty").mkdir()
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx\nL1,I1,nv\n")
    for folder in ("empty", "meta", "missing"):
        with pytest.raises(HamdataError) as caught:
            write(tmp_path / "out", images=9, size=BOX, duplicates_of=tmp_path / folder, new_id=1, workers=1,
                  progress=False)
        assert str(tmp_path / folder) in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_an_existing_output_is_kept_without_overwrite(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(HamdataError, match="overwrite"):
        write_isic_archive(tmp_path / "out", images=9, size=BOX, workers=1, progress=False)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    write_isic_archive(tmp_path / "out", images=9, size=BOX, workers=1, progress=False, overwrite=True)
    assert not (tmp_path / "out" / "keep.txt").exists() and (tmp_path / "out" / "metadata.csv").is_file()
