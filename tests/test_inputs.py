"""Several inputs in one build: ISIC 2019 and ISIC-archive layouts, label maps, the class set, one site
vocabulary, image ids taken once, groups of lesions and patients, and the errors for inputs that disagree.

The inputs here are small and made by hand (tiny random-noise JPEGs, so that no two are the same picture),
to pin each rule to a row; tests/test_duplicates.py covers duplicates found by content on real images.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import cli, cli_error, one_error_line, shard_members, verify

from hamdata.inputs.classes import HAM10000_CLASSES, ISIC2019_CLASSES
from hamdata.store.manifest import read_manifest

SIZE = ("--size", "32", "--workers", "1")


def _image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path, quality=90)


def _csv(path: Path, header, rows) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def ham_flat(root: Path, rows, seed: int = 0) -> Path:
    """A flat HAM10000 folder: rows (image_id, lesion_id, dx[, localization])."""
    root.mkdir(parents=True)
    table = []
    for k, (image, lesion, dx, *site) in enumerate(rows):
        _image(root / f"{image}.jpg", seed * 1000 + k)
        table.append([lesion, image, dx, "histo", 50, "male", site[0] if site else "back"])
    _csv(root / "HAM10000_metadata.csv", ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"], table)
    return root


def isic2019(root: Path, rows, seed: int = 1) -> Path:
    """An ISIC 2019 Task 1 folder: rows (image name, label column, lesion_id, site). Headers as the challenge
    publishes them: ISIC_2019_Training_GroundTruth.csv (image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK) and
    ISIC_2019_Training_Metadata.csv (image,age_approx,anatom_site_general,lesion_id,sex)."""
    images = root / "ISIC_2019_Training_Input"
    images.mkdir(parents=True)
    labels = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
    truth, meta = [], []
    for k, (name, label, lesion, site) in enumerate(rows):
        _image(images / f"{name}.jpg", seed * 1000 + k)
        truth.append([name] + ["1.0" if c == label else "0.0" for c in labels])
        meta.append([name, "55.0", site, lesion, "female"])
    _csv(root / "ISIC_2019_Training_GroundTruth.csv", ("image",) + labels, truth)
    _csv(root / "ISIC_2019_Training_Metadata.csv", ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"], meta)
    return root


def archive(root: Path, rows, seed: int = 2, diagnosis: bool = True, top: str = "Benign") -> Path:
    """An isic-cli export of 2024-2025 (diagnosis_1..3 beside benign_malignant and anatom_site_general): rows
    (isic_id, diagnosis_2, diagnosis_3, lesion_id, patient_id), diagnosis_1 `top`. The header follows the writer,
    ImageMarkup/isic-cli isic_cli/cli/utils.py::_extract_metadata (3072b15): isic_id, attribution,
    copyright_license, then the fields some row fills, sorted (tests/test_published_formats.py has the full
    headers of each era)."""
    root.mkdir(parents=True)
    table = []
    for k, (image, d2, d3, lesion, patient) in enumerate(rows):
        _image(root / f"{image}.jpg", seed * 1000 + k)
        table.append([image, "Somewhere", "CC-BY", "40", "posterior torso", "benign", top, d2, d3, lesion, patient, "male"])
    header = ["isic_id", "attribution", "copyright_license", "age_approx", "anatom_site_general", "benign_malignant",
              "diagnosis_1", "diagnosis_2", "diagnosis_3", "lesion_id", "patient_id", "sex"]
    if not diagnosis:
        header = [h if not h.startswith("diagnosis") else f"x{h}" for h in header]
    _csv(root / "metadata.csv", header, table)
    return root


def members(build: Path, ext: str) -> dict[str, bytes]:
    """key -> the `ext` member of every sample of a build."""
    return {name.rsplit(".", 1)[0]: data for name, data in shard_members(build) if name.endswith("." + ext)}


def samples(build: Path) -> dict[str, dict]:
    """key -> json record of every sample of a build."""
    return {key: json.loads(data) for key, data in members(build, "json").items()}


def card(build: Path) -> dict:
    return json.loads((build / "dataset.json").read_text())


HAM_ROWS = [(f"HAMX_{i:04d}", f"HAML_{i // 2:04d}", dx) for i, dx in enumerate(["nv"] * 12 + ["mel"] * 6 + ["bkl"] * 6)]
ISIC_ROWS = [("ISIC_0000001", "NV", "BCN_0000001", "anterior torso"),
             ("ISIC_0000002_downsampled", "MEL", "", "head/neck"),
             ("ISIC_0000003", "AK", "BCN_0000002", "lower extremity"),
             ("ISIC_0000004", "SCC", "BCN_0000003", "palms/soles"),
             ("ISIC_0000005", "UNK", "", ""),
             ("ISIC_0000006", "BKL", "BCN_0000004", "posterior torso")]


def test_isic2019_input_maps_labels_and_sites_and_strips_downsampled(tmp_path):
    data = isic2019(tmp_path / "isic", ISIC_ROWS)
    result = cli("build-shards", "--data", data, "--out", tmp_path / "b", "--fresh-split", *SIZE)
    assert result.exit_code == 0, result.output
    records = samples(tmp_path / "b")
    # ham10000 classes: AK -> akiec; SCC and UNK have no HAM10000 class and are dropped, and counted
    assert {k: r["dx"] for k, r in records.items()} == {
        "ISIC_0000001": "nv", "ISIC_0000002": "mel", "ISIC_0000003": "akiec", "ISIC_0000006": "bkl"}
    assert records["ISIC_0000002"]["file_id"] == "ISIC_0000002_downsampled"
    assert records["ISIC_0000002"]["lesion_id"] == "ISIC_0000002"  # no lesion id: its own lesion
    assert records["ISIC_0000001"]["site"] == "anterior torso" and records["ISIC_0000001"]["collection"] == "isic2019"
    assert records["ISIC_0000003"]["age"] == 55 and records["ISIC_0000003"]["sex"] == "female"
    unmapped = card(tmp_path / "b")["unmapped"]["isic2019"]
    assert unmapped["SCC"]["rows"] == 1 and unmapped["UNK"]["rows"] == 1
    assert unmapped["SCC"]["reason"] == "dropped by the label map"
    assert verify(tmp_path / "b") == (0, [])


def test_classes_isic2019_keeps_scc_and_names_ak(tmp_path):
    data = isic2019(tmp_path / "isic", ISIC_ROWS)
    ham = ham_flat(tmp_path / "ham", [("HAMX_0001", "HAML_0001", "akiec"), ("HAMX_0002", "HAML_0002", "nv")])
    result = cli("build-shards", "--data", data, "--data", ham, "--classes", "isic2019", "--out", tmp_path / "b",
                 "--fresh-split", *SIZE)
    assert result.exit_code == 0, result.output
    built = card(tmp_path / "b")
    assert tuple(built["classes"]) == ISIC2019_CLASSES and built["format_version"] == 2
    records = samples(tmp_path / "b")
    assert records["ISIC_0000004"]["dx"] == "scc" and records["ISIC_0000003"]["dx"] == "ak"
    assert records["HAMX_0001"]["dx"] == "ak" and records["HAMX_0001"]["collection"] == "ham10000"
    assert records["HAMX_0001"]["input"] == 1 and records["ISIC_0000001"]["input"] == 0
    labels = {key: int(data) for key, data in members(tmp_path / "b", "cls").items()}
    assert all(ISIC2019_CLASSES[labels[k]] == r["dx"] for k, r in records.items())
    assert [i["layout"] for i in built["inputs"]] == ["isic2019", "flat"]
    assert verify(tmp_path / "b") == (0, [])


def test_archive_label_is_the_most_specific_diagnosis(tmp_path):
    rows = [("ISIC_1000001", "Benign melanocytic proliferations", "Nevus", "IL_0000001", "IP_0000001"),
            ("ISIC_1000002", "Benign melanocytic proliferations", "", "IL_0000002", "IP_0000001"),
            ("ISIC_1000003", "Malignant adnexal epithelial proliferations - Follicular", "Basal cell carcinoma", "IL_0000003", "IP_0000002"),
            ("ISIC_1000004", "Benign epidermal proliferations", "Solar lentigo", "", "")]
    data = archive(tmp_path / "arc", rows)
    result = cli("build-shards", "--data", data, "--out", tmp_path / "b", "--fresh-split", *SIZE)
    assert result.exit_code == 0, result.output
    records = samples(tmp_path / "b")
    assert {k: r["dx"] for k, r in records.items()} == {
        "ISIC_1000001": "nv", "ISIC_1000002": "nv", "ISIC_1000003": "bcc", "ISIC_1000004": "bkl"}
    assert records["ISIC_1000001"]["patient_id"] == "IP_0000001"
    # one patient: one group, so one split
    assert records["ISIC_1000001"]["group"] == records["ISIC_1000002"]["group"]
    assert records["ISIC_1000001"]["split"] == records["ISIC_1000002"]["split"]
    assert records["ISIC_1000003"]["group"] != records["ISIC_1000001"]["group"]


def test_label_without_map_entry_is_one_line_or_skipped_and_counted(tmp_path):
    rows = [("ISIC_1000001", "", "Nevus", "IL_1", ""), ("ISIC_1000002", "", "Mystery lesion", "IL_2", ""),
            ("ISIC_1000003", "", "Mystery lesion", "IL_3", ""), ("ISIC_1000004", "", "Scar", "IL_4", "")]
    data = archive(tmp_path / "arc", rows, top="")  # no level the map knows above the label
    line = cli_error("build-shards", "--data", data, "--out", tmp_path / "b", *SIZE)
    assert "'Mystery lesion' (2 rows)" in line and "--label-map" in line and "--on-error skip" in line
    assert not (tmp_path / "b").exists()
    result = cli("build-shards", "--data", data, "--out", tmp_path / "b", "--on-error", "skip", "--fresh-split", *SIZE)
    assert result.exit_code == 0, result.output
    unmapped = card(tmp_path / "b")["unmapped"]["isic-archive"]
    assert unmapped["Mystery lesion"] == {"rows": 2, "reason": "no entry in the label map", "inputs": [0]}
    assert unmapped["Scar"]["reason"] == "dropped by the label map"
    assert set(samples(tmp_path / "b")) == {"ISIC_1000001"}


def test_label_map_overrides_and_rejects_an_unknown_class(tmp_path):
    rows = [("ISIC_1000001", "", "Nevus", "IL_1", ""), ("ISIC_1000002", "", "Scar", "IL_2", "")]
    data = archive(tmp_path / "arc", rows)
    good = tmp_path / "map.csv"
    _csv(good, ["collection", "label", "class"], [["isic-archive", "scar", "bkl"]])
    result = cli("build-shards", "--data", data, "--out", tmp_path / "b", "--label-map", good, "--fresh-split", *SIZE)
    assert result.exit_code == 0, result.output
    assert samples(tmp_path / "b")["ISIC_1000002"]["dx"] == "bkl"
    bad = tmp_path / "bad.csv"
    _csv(bad, ["collection", "label", "class"], [["isic-archive", "Scar", "scc"]])
    line = cli_error("build-shards", "--data", data, "--out", tmp_path / "c", "--label-map", bad, *SIZE)
    assert "'scc' is not in the ham10000 classes" in line and "row 1" in line


def test_archive_without_diagnosis_column_is_one_line(tmp_path):
    data = archive(tmp_path / "arc", [("ISIC_1000001", "", "Nevus", "IL_1", "")], diagnosis=False)
    line = cli_error("build-shards", "--data", data, "--out", tmp_path / "b", *SIZE)
    assert "no diagnosis column" in line and "metadata.csv" in line


def test_same_id_in_two_inputs_is_one_sample_first_input_wins(tmp_path):
    ham = ham_flat(tmp_path / "ham", [("ISIC_0000001", "HAM_0000001", "nv"), ("ISIC_0000009", "HAM_0000009", "mel")])
    data = isic2019(tmp_path / "isic", ISIC_ROWS[:3], seed=7)
    result = cli("build-shards", "--data", ham, "--data", data, "--out", tmp_path / "b", "--fresh-split",
                 "--no-duplicate-search", *SIZE)
    assert result.exit_code == 0, result.output
    records = samples(tmp_path / "b")
    assert records["ISIC_0000001"]["collection"] == "ham10000" and records["ISIC_0000001"]["input"] == 0
    listed = [d for d in card(tmp_path / "b")["duplicates"] if d["dropped"] == "ISIC_0000001"]
    assert len(listed) == 1 and listed[0]["kept_input"] == 0 and listed[0]["input"] == 1
    assert listed[0]["evidence"]["method"] == "image id"
    # the later copy's lesion still links its group: BCN_0000001 and HAM_0000001 are one group
    assert records["ISIC_0000001"]["group"] in ("ham10000:HAM_0000001", "isic2019:BCN_0000001")


def test_inputs_that_disagree_on_a_label_or_lesion_name_both(tmp_path):
    ham = ham_flat(tmp_path / "ham", [("ISIC_0000001", "HAM_0000001", "mel")])
    data = isic2019(tmp_path / "isic", [("ISIC_0000001", "NV", "HAM_0000001", "")])
    line = cli_error("build-shards", "--data", ham, "--data", data, "--out", tmp_path / "b", *SIZE)
    assert "ISIC_0000001 is mel in" in line and "but nv in" in line
    assert str(ham.resolve()) in line and str(data.resolve()) in line
    data2 = isic2019(tmp_path / "isic2", [("ISIC_0000001", "MEL", "HAM_0000777", "")])
    line = cli_error("build-shards", "--data", ham, "--data", data2, "--out", tmp_path / "c", *SIZE)
    assert "lesion HAM_0000001" in line and "lesion HAM_0000777" in line


def test_bad_options_are_one_line(tmp_path):
    ham = ham_flat(tmp_path / "ham", HAM_ROWS[:4])
    line = one_error_line(cli("build-shards", "--data", ham, "--data", ham, "--out", tmp_path / "b", *SIZE))
    assert "given twice" in line
    assert "no such folder" in cli_error("build-shards", "--data", ham, "--data", tmp_path / "nope", "--out", tmp_path / "b", *SIZE)
    assert "no such file" in cli_error("build-shards", "--data", ham, "--label-map", tmp_path / "x.csv", "--out", tmp_path / "b", *SIZE)


def test_groups_never_span_splits_and_manifest_has_them(tmp_path):
    # 30 archive images of 10 patients, 3 lesions each: a fresh split must keep each patient in one split
    rows = [(f"ISIC_2{i:06d}", "", "Nevus" if i % 3 else "Melanoma Invasive", f"IL_{i:07d}", f"IP_{i // 3:07d}")
            for i in range(30)]
    data = archive(tmp_path / "arc", rows)
    result = cli("build-shards", "--data", data, "--out", tmp_path / "b", "--fresh-split", "--val", "0.3",
                 "--test", "0.3", *SIZE)
    assert result.exit_code == 0, result.output
    records = samples(tmp_path / "b")
    by_patient: dict[str, set] = {}
    for r in records.values():
        by_patient.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_patient.values()), by_patient
    assert len({s for v in by_patient.values() for s in v}) == 3  # the patients do spread over the three splits
    manifest = read_manifest(tmp_path / "b")
    assert set(manifest["collection"]) == {"isic-archive"}
    assert manifest.groupby("group")["split"].nunique().max() == 1
    assert card(tmp_path / "b")["groups"]["count"] == 10
    assert verify(tmp_path / "b") == (0, [])


def test_split_file_that_splits_a_group_is_refused(tmp_path):
    rows = [(f"ISIC_2{i:06d}", "", "Nevus", f"IL_{i:07d}", f"IP_{i // 2:07d}") for i in range(12)]
    data = archive(tmp_path / "arc", rows)
    assert cli("build-shards", "--data", data, "--out", tmp_path / "b", "--fresh-split", *SIZE).exit_code == 0
    manifest = read_manifest(tmp_path / "b")
    # a split file that puts the two images of one patient into train and test is refused
    split_file = tmp_path / "split.csv"
    first = manifest.sort_values("key")["image_id"].tolist()
    _csv(split_file, ["image_id", "split"], [[i, "test" if i == first[0] else "train"] for i in first])
    line = cli_error("build-shards", "--data", data, "--out", tmp_path / "c", "--split-manifest", split_file, *SIZE)
    assert "several splits" in line and "group" in line


@pytest.mark.parametrize("classes", [HAM10000_CLASSES])
def test_ham_only_build_keeps_format_1_fields_first(tmp_path, classes):
    ham = ham_flat(tmp_path / "ham", HAM_ROWS)
    assert cli("build-shards", "--data", ham, "--out", tmp_path / "b", *SIZE).exit_code == 0
    records = samples(tmp_path / "b")
    first = next(iter(records.values()))
    assert list(first)[:11] == ["image_id", "lesion_id", "dx", "dx_type", "age", "sex", "localization",
                                "split", "source", "parent", "recipe"]
    assert first["collection"] == "ham10000" and first["site"] == "posterior torso"  # HAM "back"
    assert all(r["group"] == f"ham10000:{r['lesion_id']}" for r in records.values())
    assert tuple(card(tmp_path / "b")["classes"]) == classes


def test_isic2019_zip_layout_nested_folder_and_no_metadata_file(tmp_path):
    from hamdata.inputs.layouts import open_source

    data = isic2019(tmp_path / "isic", ISIC_ROWS[:3])
    nested = data / "ISIC_2019_Training_Input" / "ISIC_2019_Training_Input"
    nested.mkdir()
    for image in (data / "ISIC_2019_Training_Input").glob("*.jpg"):
        image.rename(nested / image.name)
    (data / "ISIC_2019_Training_Metadata.csv").unlink()
    source = open_source(data)
    assert source.layout == "isic2019" and source.collection == "isic2019"
    assert set(source.images) == {"ISIC_0000001", "ISIC_0000002", "ISIC_0000003"}
    assert source.images["ISIC_0000002"].endswith("ISIC_0000002_downsampled.jpg")
    assert any("ISIC_2019_Training_Metadata.csv" in w and "own lesion" in w for w in source.warnings)


def test_archive_export_is_not_taken_for_a_flat_folder(tmp_path):
    from hamdata.inputs.layouts import open_source

    data = archive(tmp_path / "arc", [("ISIC_1000001", "", "Nevus", "IL_1", "IP_1")])
    source = open_source(data)
    assert source.layout == "isic-archive" and list(source.metadata["label"]) == ["Nevus"]
