"""Inputs as their publishers ship them: today's ISIC-archive exports (and those of 2024-2026 and before), a
collection CSV from the archive website, ISIC 2020 (challenge files with the duplicate list, and the Kaggle
copy), BCN20000 as its authors publish it, and ISIC 2019 re-saved with ``nan`` in its empty cells.

Every fixture is written with the exact public header; each names where that header comes from. The images
are tiny random-noise JPEGs (no two the same picture), so that only the tables decide.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import cli, cli_error, shard_members, verify

from hamdata.inputs.hierarchy import diagnosis_tree, site_of, site_tree
from hamdata.store.manifest import read_manifest
from hamdata.inputs.vocabulary import SITES, load_label_map

SIZE = ("--size", "32", "--workers", "1")

# ImageMarkup/isic-cli isic_cli/cli/utils.py::_extract_metadata (3072b15): isic_id, attribution, copyright_license,
# then every field some row fills, sorted; `isic image download` adds pixels_x, pixels_y (the API's own fields).
# The field names of today (2026) are those of ImageMarkup/isic-metadata 562f25c (metadata.py MetadataRow).
TODAY_HEADER = ("isic_id,attribution,copyright_license,acquisition_day,age_approx,anatom_site_1,anatom_site_2,"
                "anatom_site_3,anatom_site_4,anatom_site_5,anatom_site_special,clin_size_long_diam_mm,"
                "concomitant_biopsy,dermoscopic_type,diagnosis_1,diagnosis_2,diagnosis_3,diagnosis_4,diagnosis_5,"
                "diagnosis_confirm_type,family_hx_mm,fitzpatrick_skin_type,image_manipulation,image_type,lesion_id,"
                "mel_mitotic_index,mel_thick_mm,mel_ulcer,melanocytic,patient_id,personal_hx_mm,pixels_x,pixels_y,"
                "rcm_case_id,sex,tbp_tile_type").split(",")
# 2024-10 .. 2026-05 (ImageMarkup/isic, before migration 0039_drop_anatom_site_general): anatom_site_general beside
# diagnosis_1..5; the website's collection CSV has no pixels_x/y (isic/core/services image_metadata_csv).
ERA_2025_HEADER = ("isic_id,attribution,copyright_license,acquisition_day,age_approx,anatom_site_general,"
                   "anatom_site_special,clin_size_long_diam_mm,concomitant_biopsy,dermoscopic_type,diagnosis_1,"
                   "diagnosis_2,diagnosis_3,diagnosis_4,diagnosis_5,diagnosis_confirm_type,family_hx_mm,"
                   "fitzpatrick_skin_type,image_manipulation,image_type,lesion_id,mel_mitotic_index,mel_thick_mm,"
                   "mel_ulcer,melanocytic,patient_id,personal_hx_mm,rcm_case_id,sex,tbp_tile_type").split(",")
# Legacy (2022 .. 2024-03, isic-cli of then): the flat diagnosis and benign_malignant (isic-metadata before
# 0201f6f and 6b1c5b8).
LEGACY_HEADER = ("isic_id,attribution,copyright_license,acquisition_day,age_approx,anatom_site_general,"
                 "benign_malignant,clin_size_long_diam_mm,dermoscopic_type,diagnosis,diagnosis_confirm_type,"
                 "family_hx_mm,image_type,lesion_id,mel_class,mel_mitotic_index,mel_thick_mm,mel_type,mel_ulcer,"
                 "melanocytic,nevus_type,patient_id,personal_hx_mm,pixels_x,pixels_y,sex,tbp_tile_type").split(",")
# ISIC 2020 challenge files (first rows as published; copies in public repositories, e.g.
# caitlinruble/Skin-Cancer-Image-Detection), the duplicate list (425 pairs) and Kaggle's train.csv (ages 45.0).
ISIC2020_V2_HEADER = ["image_name", "patient_id", "lesion_id", "sex", "age_approx", "anatom_site_general_challenge",
                      "diagnosis", "benign_malignant", "target"]
ISIC2020_V1_HEADER = [c for c in ISIC2020_V2_HEADER if c != "lesion_id"]
# BCN20000 (imatge-upc/BCN20000: bcn_20k_train.csv read by bcn_filename, diagnosis, lesion_id; Sci Data 2024).
BCN_HEADER = ["bcn_filename", "age_approx", "anatom_site_general", "diagnosis", "lesion_id", "capture_date", "sex",
              "split"]


def _image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path, quality=90)


def _write(path: Path, header, rows, crlf: bool = False) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n" if crlf else "\n")
        writer.writerow(header)
        writer.writerows(rows)


def _rows(header, records: list[dict]) -> list[list[str]]:
    return [[str(r.get(c, "")) for c in header] for r in records]


def _card(build: Path) -> dict:
    return json.loads((build / "dataset.json").read_text())


def _samples(build: Path) -> dict[str, dict]:
    return {n.rsplit(".", 1)[0]: json.loads(d) for n, d in shard_members(build) if n.endswith(".json")}


def _build(tmp_path: Path, *data, name="b", extra=()):
    out = tmp_path / name
    args = ["build-shards", "--out", out, "--fresh-split", *SIZE, *extra]
    for d in data:
        args += ["--data", d]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return out, result


def _no_group_across_splits(build: Path) -> None:
    manifest = read_manifest(build)
    assert manifest.groupby("group")["split"].nunique().max() == 1


# ---------------------------------------------------------------- the hierarchies hamdata ships


def test_every_diagnosis_node_maps_to_a_class_or_is_deliberately_dropped():
    nodes = diagnosis_tree()
    assert len(nodes) == 418  # isic-metadata 562f25c: 3 / 41 / 200 / 137 / 37 nodes per level
    assert {n[0] for n in nodes} == {"Benign", "Indeterminate", "Malignant"}
    for class_set in ("ham10000", "isic2019", "malignancy"):
        label_map = load_label_map(class_set)
        undecided = [n for n in nodes if label_map.resolve("isic-archive", tuple(reversed(n)))[0] is None]
        assert undecided == [], (class_set, undecided[:5])


@pytest.mark.parametrize("path, ham, isic2019, malignancy", [
    (("Benign", "Benign melanocytic proliferations", "Nevus", "Nevus, NOS, Compound"), "nv", "nv", "benign"),
    (("Benign", "Benign soft tissue proliferations - Vascular", "Hemangioma", "Hemangioma, Cherry"), "vasc", "vasc",
     "benign"),
    (("Malignant", "Malignant epidermal proliferations", "Squamous cell carcinoma, Invasive"), "", "scc", "malignant"),
    (("Indeterminate", "Indeterminate epidermal proliferations", "Solar or actinic keratosis"), "akiec", "ak", ""),
    (("Benign", "Inflammatory or infectious diseases", "Verruca"), "", "", "benign"),
    (("Benign", "Benign soft tissue proliferations - Fibro-histiocytic", "Scar"), "", "", "benign"),
])
def test_deep_diagnoses_fall_back_to_the_level_the_map_knows(path, ham, isic2019, malignancy):
    for class_set, want in (("ham10000", ham), ("isic2019", isic2019), ("malignancy", malignancy)):
        assert load_label_map(class_set).resolve("isic-archive", tuple(reversed(path)))[0] == want, class_set


def test_every_site_node_has_a_site_and_the_known_ones_are_right():
    tree = site_tree()
    assert len(tree) == 206 and set(tree.values()) <= set(SITES)  # isic-metadata anatom_site_hierarchical.py
    assert site_of(("Trunk", "Posterior trunk", "Upper back")) == "posterior torso"
    assert site_of(("Trunk", "Anterior trunk", "Anterior abdomen")) == "anterior torso"
    assert site_of(("Anogenital region",)) == "oral/genital"
    assert site_of(("Upper extremity", "Hand", "Palm of hand", "Thenar eminence")) == "palms/soles"
    assert site_of(("Lower extremity", "Foot", "Sole of foot", "Heel")) == "palms/soles"
    assert site_of(("Head and neck", "Head", "Ear", "Pinna")) == "head/neck"
    assert site_of(("Lower extremity", "Foot"), "acral palms or soles") == "palms/soles"
    assert site_of(("Trunk", "Lateral trunk", "Axilla", "Not a node")) == "lateral torso"  # its parent's
    assert site_of(()) == ""  # nothing known: anatom_site_general or the site table decides


# ---------------------------------------------------------------- ISIC archive: today's export


def _today_export(root: Path) -> tuple[Path, list[dict]]:
    """An `isic image download` folder of 2026 (CRLF, as Python's csv module writes): deep diagnoses,
    hierarchical sites, three image types that are not dermoscopic, missing values spelled as the archive
    and pandas spell them."""
    d = ("Benign", "Benign melanocytic proliferations", "Nevus")
    v = ("Benign", "Benign soft tissue proliferations - Vascular")
    records = [
        dict(isic_id="ISIC_9000001", dx=(*d, "Nevus, NOS, Compound"), site=("Trunk", "Posterior trunk", "Upper back"),
             lesion_id="IL_0000001", patient_id="IP_0000001", image_type="dermoscopic", want="nv"),
        dict(isic_id="ISIC_9000002", dx=(*d, "Blue nevus", "Blue nevus, Cellular"), site=("Anogenital region",),
             lesion_id="IL_0000002", patient_id="IP_0000001", image_type="dermoscopic", want="nv"),
        dict(isic_id="ISIC_9000003", dx=(*v, "Hemangioma", "Hemangioma, Cherry"),
             site=("Upper extremity", "Hand", "Palm of hand"), lesion_id="", patient_id="nan",
             image_type="dermoscopic", want="vasc"),
        dict(isic_id="ISIC_9000004", dx=(*v, "Angiokeratoma"), site=("Head and neck", "Neck"), lesion_id="NaN",
             patient_id="", image_type="dermoscopic", want="vasc"),
        dict(isic_id="ISIC_9000005", dx=("Malignant", "Malignant melanocytic proliferations (Melanoma)",
                                         "Melanoma in situ", "Melanoma in situ, Lentigo maligna type"),
             site=("Head and neck", "Head", "Face", "Cheek"), lesion_id="IL_0000005", patient_id="IP_0000002",
             image_type="dermoscopic", want="mel"),
        dict(isic_id="ISIC_9000006", dx=("Indeterminate", "Indeterminate epidermal proliferations",
                                         "Solar or actinic keratosis", "Actinic keratosis, Bowenoid"),
             site=(), special="acral palms or soles", lesion_id="IL_0000006", patient_id="IP_0000003",
             image_type="dermoscopic", want="akiec"),
        dict(isic_id="ISIC_9000007", dx=("Benign", "Benign epidermal proliferations", "Seborrheic keratosis",
                                         "Seborrheic keratosis, Clonal"), site=("Trunk",), lesion_id="IL_0000007",
             patient_id="IP_0000004", image_type="dermoscopic", want="bkl"),
        dict(isic_id="ISIC_9000008", dx=("Benign", "Inflammatory or infectious diseases", "Verruca"),
             site=("Lower extremity", "Knee"), lesion_id="IL_0000008", patient_id="IP_0000004",
             image_type="dermoscopic", want=""),
        dict(isic_id="ISIC_9000009", dx=(*d,), site=("Trunk", "Anterior trunk"), lesion_id="IL_0000001",
             patient_id="IP_0000001", image_type="clinical: overview", want="type"),
        dict(isic_id="ISIC_9000010", dx=(*d,), site=("Trunk", "Anterior trunk"), lesion_id="IL_0000010",
             patient_id="IP_0000005", image_type="clinical: close-up", want="type"),
        dict(isic_id="ISIC_9000011", dx=("Malignant", "Malignant melanocytic proliferations (Melanoma)"),
             site=("Trunk",), lesion_id="IL_0000011", patient_id="IP_0000006", image_type="RCM: tile", want="type"),
        dict(isic_id="ISIC_9000012", dx=("Benign", "Benign melanocytic proliferations", "Nevus", "Nevus, Spitz"),
             site=("Lower extremity", "Thigh"), lesion_id="IL_0000012", patient_id="IP_0000007",
             image_type="dermoscopic", want="nv"),
    ]
    root.mkdir(parents=True)
    rows = []
    for k, r in enumerate(records):
        _image(root / f"{r['isic_id']}.jpg", 500 + k)
        row = {"isic_id": r["isic_id"], "attribution": "Hospital Clínic de Barcelona", "copyright_license": "CC-BY",
               "age_approx": "" if k % 5 == 4 else 35 + 5 * k, "anatom_site_special": r.get("special", ""),
               "diagnosis_confirm_type": "histopathology", "image_type": r["image_type"],
               "dermoscopic_type": "contact polarized" if r["image_type"] == "dermoscopic" else "",
               "lesion_id": r["lesion_id"], "patient_id": r["patient_id"], "pixels_x": 64, "pixels_y": 48,
               "sex": ("female", "male", "")[k % 3]}
        row.update({f"diagnosis_{i + 1}": v for i, v in enumerate(r["dx"])})
        row.update({f"anatom_site_{i + 1}": v for i, v in enumerate(r["site"])})
        rows.append(row)
    _write(root / "metadata.csv", TODAY_HEADER, _rows(TODAY_HEADER, rows), crlf=True)
    (root / "attribution.txt").write_text("Hospital Clínic de Barcelona")
    return root, records


def test_todays_archive_export_builds_with_no_label_map(tmp_path):
    data, records = _today_export(tmp_path / "arc")
    out, result = _build(tmp_path, data)
    samples = _samples(out)
    want = {r["isic_id"]: r["want"] for r in records if r["want"] not in ("", "type")}
    assert {k: s["dx"] for k, s in samples.items()} == want
    # sites through the hierarchy (and anatom_site_special), the path kept as the original value
    site = {k: s["site"] for k, s in samples.items()}
    assert site["ISIC_9000001"] == "posterior torso" and site["ISIC_9000002"] == "oral/genital"
    assert site["ISIC_9000003"] == "palms/soles" and site["ISIC_9000006"] == "palms/soles"
    assert site["ISIC_9000005"] == site["ISIC_9000004"] == "head/neck" and site["ISIC_9000007"] == "torso"
    assert samples["ISIC_9000001"]["localization"] == "Trunk > Posterior trunk > Upper back"
    # missing ids never join a group; the two lesions of patient IP_0000001 share one
    assert samples["ISIC_9000003"]["patient_id"] is None and samples["ISIC_9000004"]["lesion_id"] == "ISIC_9000004"
    assert samples["ISIC_9000001"]["group"] == samples["ISIC_9000002"]["group"]
    card = _card(out)
    # clinical and RCM images left out and counted per type; Verruca counted as a label no class takes
    assert card["left_out"]["isic-archive"] == {
        t: {"rows": 1, "reason": "image type not chosen (--image-types dermoscopic)", "inputs": [0]}
        for t in ("RCM: tile", "clinical: close-up", "clinical: overview")}
    assert card["unmapped"]["isic-archive"]["Verruca"]["rows"] == 1
    taken = len(samples) + sum(e["rows"] for per in (card["left_out"], card["unmapped"])
                               for entries in per.values() for e in entries.values())
    assert taken == len(records)  # every row once: built, or counted with its reason
    assert "image types: 3 rows left out" in result.output and "labels no class takes: 1 rows" in result.output
    assert not any("site" in w for w in card["input"]["warnings"])
    assert verify(out) == (0, [])


def test_image_types_option_takes_others_and_rejects_a_typo(tmp_path):
    data, _ = _today_export(tmp_path / "arc")
    out, _ = _build(tmp_path, data, extra=("--image-types", "dermoscopic,clinical: close-up"))
    assert "ISIC_9000010" in _samples(out) and "ISIC_9000009" not in _samples(out)
    out, _ = _build(tmp_path, data, name="all", extra=("--image-types", "all"))
    assert {"ISIC_9000009", "ISIC_9000010", "ISIC_9000011"} <= set(_samples(out)) and _card(out)["left_out"] == {}
    line = cli_error("build-shards", "--data", data, "--out", tmp_path / "c", "--image-types", "dermoscopy", *SIZE)
    assert "unknown image type dermoscopy" in line and "clinical: close-up" in line
    assert not (tmp_path / "c").exists()


def test_a_hierarchy_value_never_seen_is_one_named_warning_and_reads_through_its_parent(tmp_path):
    data, _ = _today_export(tmp_path / "arc")
    table = pd.read_csv(data / "metadata.csv", dtype=str, keep_default_na=False)
    table.loc[0, "diagnosis_4"] = "Nevus, Brand new kind"
    table.loc[1, "anatom_site_2"] = "Hind quarters"
    table.to_csv(data / "metadata.csv", index=False)
    out, result = _build(tmp_path, data)
    assert _samples(out)["ISIC_9000001"]["dx"] == "nv"
    warnings = [w for w in _card(out)["input"]["warnings"] if "hierarchy" in w]
    assert len(warnings) == 2
    assert any("metadata.csv" in w and "diagnosis_1..5" in w and "'Nevus, Brand new kind'" in w for w in warnings)
    assert any("anatom_site_1..5" in w and "'Hind quarters'" in w for w in warnings)
    assert _samples(out)["ISIC_9000002"]["site"] == "oral/genital"  # Anogenital region > (new): its parent's
    assert "warning:" in result.output


def test_malignancy_build_of_an_archive_export_takes_diagnosis_1(tmp_path):
    data, records = _today_export(tmp_path / "arc")
    out, _ = _build(tmp_path, data, extra=("--classes", "malignancy"))
    samples = _samples(out)
    assert _card(out)["classes"] == ["benign", "malignant"]
    top = {r["isic_id"]: r["dx"][0] for r in records if r["image_type"] == "dermoscopic"}
    assert {k: s["dx"] for k, s in samples.items()} == {
        k: t.lower() for k, t in top.items() if t != "Indeterminate"}
    assert _card(out)["unmapped"]["isic-archive"]["Indeterminate"]["rows"] == 1


# ---------------------------------------------------------------- ISIC archive: older exports, website CSV


def test_website_collection_csv_of_2025_beside_images(tmp_path):
    root = tmp_path / "collection"
    rows = []
    for k, (d2, d3, site) in enumerate([("Benign melanocytic proliferations", "Nevus", "posterior torso"),
                                        ("Malignant adnexal epithelial proliferations - Follicular",
                                         "Basal cell carcinoma", "head/neck"),
                                        ("Benign melanocytic proliferations", "Nevus", "palms/soles")]):
        image_id = f"ISIC_800000{k}"
        _image(root / "images" / f"{image_id}.jpg", 700 + k)
        rows.append({"isic_id": image_id, "attribution": "Anonymous", "copyright_license": "CC-0",
                     "age_approx": 60, "anatom_site_general": site, "diagnosis_1": "Benign" if k != 1 else "Malignant",
                     "diagnosis_2": d2, "diagnosis_3": d3, "image_type": "dermoscopic", "sex": "male"})
    _write(root / "hospital-clinic-barcelona_metadata_2025-03-01.csv", ERA_2025_HEADER, _rows(ERA_2025_HEADER, rows))
    out, _ = _build(tmp_path, root)
    samples = _samples(out)
    assert {k: (s["dx"], s["site"]) for k, s in samples.items()} == {
        "ISIC_8000000": ("nv", "posterior torso"), "ISIC_8000001": ("bcc", "head/neck"),
        "ISIC_8000002": ("nv", "palms/soles")}
    assert _card(out)["inputs"][0]["layout"] == "isic-archive"
    assert verify(out) == (0, [])


def test_legacy_export_counts_unknown_and_empty_diagnoses_and_reads_jpg_in_capitals(tmp_path):
    root = tmp_path / "legacy"
    spec = [("nevus", "benign"), ("melanoma", "malignant"), ("unknown", "benign"), ("", ""),
            ("seborrheic keratosis", "benign"), ("nevus", "indeterminate/benign"), ("basal cell carcinoma", "malignant")]
    rows = []
    for k, (dx, bm) in enumerate(spec):
        image_id = f"ISIC_00{k:05d}"
        _image(root / f"{image_id}.JPG", 800 + k)  # isic-cli 2022 wrote .JPG
        rows.append({"isic_id": image_id, "attribution": "ViDIR", "copyright_license": "CC-BY-NC",
                     "age_approx": "nan" if k == 2 else 40, "anatom_site_general": "anterior torso",
                     "benign_malignant": bm, "diagnosis": dx, "image_type": "dermoscopic",
                     "lesion_id": "None" if k == 3 else f"IL_{k:07d}", "sex": "female"})
    _write(root / "metadata.csv", LEGACY_HEADER, _rows(LEGACY_HEADER, rows), crlf=True)
    out, _ = _build(tmp_path, root)
    assert {k: s["dx"] for k, s in _samples(out).items()} == {
        "ISIC_0000000": "nv", "ISIC_0000001": "mel", "ISIC_0000004": "bkl", "ISIC_0000005": "nv",
        "ISIC_0000006": "bcc"}
    unmapped = _card(out)["unmapped"]["isic-archive"]
    assert unmapped["(none)"]["rows"] == 2 and unmapped["(none)"]["reason"].startswith("no diagnosis")
    assert verify(out) == (0, [])
    # malignancy: the row's own benign_malignant; indeterminate/benign is counted, not guessed
    out, _ = _build(tmp_path, root, name="mal", extra=("--classes", "malignancy"))
    assert {k: s["dx"] for k, s in _samples(out).items()} == {
        "ISIC_0000000": "benign", "ISIC_0000001": "malignant", "ISIC_0000002": "benign", "ISIC_0000004": "benign",
        "ISIC_0000006": "malignant"}
    assert _card(out)["unmapped"]["isic-archive"]["indeterminate/benign"]["rows"] == 1


# ---------------------------------------------------------------- ISIC 2020


ISIC2020_ROWS = [  # the first rows of the published v2 table, then made-up ones of the same shape
    ["ISIC_2637011", "IP_7279968", "IL_7972535", "male", "45", "head/neck", "unknown", "benign", "0"],
    ["ISIC_0015719", "IP_3075186", "IL_4649854", "female", "45", "upper extremity", "unknown", "benign", "0"],
    ["ISIC_0052212", "IP_2842074", "IL_9087444", "female", "50", "lower extremity", "nevus", "benign", "0"],
    ["ISIC_0068279", "IP_6890425", "IL_4255399", "female", "45", "head/neck", "unknown", "benign", "0"],
    ["ISIC_0074268", "IP_8723313", "IL_6898037", "female", "55", "upper extremity", "unknown", "benign", "0"],
    ["ISIC_0074311", "IP_2950485", "IL_3593551", "female", "40", "lower extremity", "unknown", "benign", "0"],
    ["ISIC_0074542", "IP_4698288", "IL_5017890", "male", "25", "lower extremity", "unknown", "benign", "0"],
    ["ISIC_0075663", "IP_6017204", "IL_1711395", "female", "35", "torso", "unknown", "benign", "0"],
    ["ISIC_0149568", "IP_0962375", "IL_0000101", "female", "55", "upper extremity", "melanoma", "malignant", "1"],
    ["ISIC_0188432", "IP_0962375", "IL_0000102", "female", "55", "", "melanoma", "malignant", "1"],
    ["ISIC_0207268", "IP_0000201", "IL_0000103", "", "", "torso", "seborrheic keratosis", "benign", "0"],
    ["ISIC_0232101", "IP_0000202", "IL_0000104", "male", "70", "palms/soles", "lentigo NOS", "benign", "0"],
    ["ISIC_0247330", "IP_0000203", "IL_0000105", "male", "60", "oral/genital", "lichenoid keratosis", "benign", "0"],
    ["ISIC_0250839", "IP_0000204", "IL_0000106", "female", "30", "torso", "nevus", "benign", "0"],
    ["ISIC_0254994", "IP_0000205", "IL_0000107", "male", "65", "torso", "melanoma", "malignant", "1"],
    ["ISIC_0261000", "IP_0000206", "IL_0000108", "female", "50", "torso", "nevus", "benign", "0"],
]
# (image_name_1, image_name_2): a pair of one lesion, a pair of two patients, and a chain of three images.
ISIC2020_PAIRS = [("ISIC_0052212", "ISIC_0015719"), ("ISIC_0149568", "ISIC_0254994"),
                  ("ISIC_0250839", "ISIC_0261000"), ("ISIC_0261000", "ISIC_0232101")]


def _isic2020(root: Path, v2: bool = True, kaggle: bool = False, pairs=ISIC2020_PAIRS) -> Path:
    header = ISIC2020_V2_HEADER if v2 else ISIC2020_V1_HEADER
    rows = [r if v2 else r[:2] + r[3:] for r in ISIC2020_ROWS]
    folder = root / ("jpeg/train" if kaggle else "train")
    for k, r in enumerate(ISIC2020_ROWS):
        _image(folder / f"{r[0]}.jpg", 900 + k)
    if kaggle:
        rows = [r[:3] + [f"{float(r[3]):.1f}" if r[3] else ""] + r[4:] for r in rows]
        _write(root / "train.csv", header, rows)
        _write(root / "test.csv", header[:5], [])
        return root
    name = "ISIC_2020_Training_GroundTruth_v2.csv" if v2 else "ISIC_2020_Training_GroundTruth.csv"
    _write(root / name, header, rows, crlf=True)
    if pairs is not None:
        _write(root / "ISIC_2020_Training_Duplicates.csv", ["image_name_1", "image_name_2"], pairs, crlf=True)
    return root


def test_isic2020_honours_its_duplicate_list(tmp_path):
    data = _isic2020(tmp_path / "isic2020")
    out, result = _build(tmp_path, data, extra=("--classes", "malignancy", "--no-duplicate-search"))
    samples = _samples(out)
    dropped = {"ISIC_0015719", "ISIC_0254994", "ISIC_0261000", "ISIC_0232101"}
    assert set(samples) == {r[0] for r in ISIC2020_ROWS} - dropped
    assert {k: s["dx"] for k, s in samples.items()} == {
        r[0]: ("malignant" if r[8] == "1" else "benign") for r in ISIC2020_ROWS if r[0] not in dropped}
    card = _card(out)
    listed = [d for d in card["duplicates"] if d["evidence"]["method"] == "ISIC 2020 duplicate list"]
    assert {(d["kept"], d["dropped"]) for d in listed} == {
        ("ISIC_0052212", "ISIC_0015719"), ("ISIC_0149568", "ISIC_0254994"), ("ISIC_0250839", "ISIC_0261000"),
        ("ISIC_0250839", "ISIC_0232101")}
    assert card["duplicate_lists"][0]["pairs"] == 4 and "duplicate list" in result.output
    assert samples["ISIC_0149568"]["patient_id"] == "IP_0962375" and samples["ISIC_0149568"]["age"] == 55
    assert verify(out) == (0, [])
    # --keep-duplicates: both images of every pair kept, in one group and one split
    out, _ = _build(tmp_path, data, name="keep", extra=("--classes", "malignancy", "--no-duplicate-search",
                                                         "--keep-duplicates"))
    samples = _samples(out)
    assert len(samples) == len(ISIC2020_ROWS)
    for a, b in ISIC2020_PAIRS:
        assert samples[a]["group"] == samples[b]["group"] and samples[a]["split"] == samples[b]["split"]
    _no_group_across_splits(out)
    assert verify(out) == (0, [])


def test_isic2020_diagnoses_through_the_map_unknown_counted(tmp_path):
    data = _isic2020(tmp_path / "isic2020")
    out, _ = _build(tmp_path, data, extra=("--no-duplicate-search",))
    samples = _samples(out)
    assert {k: s["dx"] for k, s in samples.items()} == {
        "ISIC_0052212": "nv", "ISIC_0149568": "mel", "ISIC_0188432": "mel", "ISIC_0207268": "bkl",
        "ISIC_0247330": "bkl", "ISIC_0250839": "nv"}
    unmapped = _card(out)["unmapped"]["isic2020"]
    assert unmapped["(none)"]["rows"] == 7  # "unknown" is missing: counted, never a label
    # ISIC_0015719 ("unknown") and ISIC_0232101 (lentigo NOS) are not built: their listed pairs drop nothing
    assert _card(out)["duplicate_lists"][0] == {"input": 0, "file": str(data / "ISIC_2020_Training_Duplicates.csv"),
                                                "pairs": 4, "applied": 2, "outside": 2}
    assert unmapped["lentigo NOS"]["reason"] == "dropped by the label map"
    assert samples["ISIC_0188432"]["site"] == "unknown" and samples["ISIC_0207268"]["sex"] == "unknown"


@pytest.mark.parametrize("v2, kaggle", [(False, False), (False, True)])
def test_isic2020_v1_and_kaggle_copy(tmp_path, v2, kaggle):
    data = _isic2020(tmp_path / "isic2020", v2=v2, kaggle=kaggle)
    out, _ = _build(tmp_path, data, extra=("--classes", "malignancy", "--no-duplicate-search"))
    samples = _samples(out)
    card = _card(out)
    assert card["inputs"][0]["layout"] == ("isic2020-kaggle" if kaggle else "isic2020")
    expected = len(ISIC2020_ROWS) - (0 if kaggle else 4)  # Kaggle ships no duplicate list
    assert len(samples) == expected
    assert samples["ISIC_2637011"]["age"] == 45 and samples["ISIC_2637011"]["lesion_id"] == "ISIC_2637011"
    # patients are groups: the two melanomas of IP_0962375 share a split
    assert samples["ISIC_0149568"]["group"] == samples["ISIC_0188432"]["group"]
    _no_group_across_splits(out)
    assert verify(out) == (0, [])


def test_a_duplicate_list_naming_unknown_ids_is_one_line(tmp_path):
    data = _isic2020(tmp_path / "isic2020", pairs=[("ISIC_0052212", "ISIC_9999999")])
    line = cli_error("build-shards", "--data", data, "--out", tmp_path / "b", *SIZE)
    assert "ISIC_2020_Training_Duplicates.csv" in line and "row 1 (ISIC_9999999)" in line
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- BCN20000


def _bcn(root: Path) -> tuple[Path, list[list[str]]]:
    rows = [["BCN_0000000001.jpg", "55.0", "anterior torso", "MEL", "BCN_0003884", "2012-05-16", "male", "train"]]
    codes = ["NV", "MEL", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]
    for k in range(2, 18):
        rows.append([f"BCN_{k:010d}.jpg", "" if k == 5 else f"{30 + k}.0", "nan" if k == 6 else "lower extremity",
                     codes[k % 8], f"BCN_{k // 2:07d}" if k % 3 else "", "2015-01-01", "female", "train"])
    folder = root / "BCN_20k_train" / "bcn_20k_train"  # as the release's mirrors unpack
    for k, r in enumerate(rows):
        _image(folder / r[0], 1000 + k)
    _write(root / "bcn_20k_train.csv", BCN_HEADER, rows)
    return root, rows


def test_bcn20000_as_published(tmp_path):
    data, rows = _bcn(tmp_path / "bcn")
    out, _ = _build(tmp_path, data, extra=("--classes", "isic2019"))
    samples = _samples(out)
    assert len(samples) == len(rows)
    assert {k: s["dx"] for k, s in samples.items()} == {r[0][:-4]: r[3].lower() for r in rows}
    assert samples["BCN_0000000001"]["collection"] == "bcn20000" and samples["BCN_0000000001"]["age"] == 55
    assert samples["BCN_0000000006"]["site"] == "unknown" and samples["BCN_0000000005"]["age"] is None
    # a lesion's images share a group; images without a lesion id are their own
    assert samples["BCN_0000000004"]["group"] == samples["BCN_0000000005"]["group"]
    assert samples["BCN_0000000003"]["lesion_id"] == "BCN_0000000003"
    _no_group_across_splits(out)
    assert verify(out) == (0, [])


# ---------------------------------------------------------------- missing values, one rule


@pytest.mark.parametrize("spelling", ["", "nan", "NaN", "None", "null", "NA"])
def test_isic2019_tables_with_missing_spellings_build_like_the_clean_ones(tmp_path, spelling):
    from hamdata.synth.isic import write_isic2019

    clean = tmp_path / "clean"
    write_isic2019(clean, images=40, seed=3, size=(48, 36), workers=1, progress=False)
    spelled = tmp_path / "spelled"
    spelled.mkdir()
    (spelled / "ISIC_2019_Training_Input").symlink_to(clean / "ISIC_2019_Training_Input")
    (spelled / "ISIC_2019_Training_GroundTruth.csv").write_bytes((clean / "ISIC_2019_Training_GroundTruth.csv").read_bytes())
    meta = pd.read_csv(clean / "ISIC_2019_Training_Metadata.csv", dtype=str, keep_default_na=False)
    assert (meta["lesion_id"] == "").sum() > 5 and (meta["age_approx"] == "").sum() + (meta["sex"] == "").sum() >= 0
    meta = meta.replace("", spelling)
    meta.to_csv(spelled / "ISIC_2019_Training_Metadata.csv", index=False)
    a, _ = _build(tmp_path, clean, name="a", extra=("--no-duplicate-search",))
    b, _ = _build(tmp_path, spelled, name="b", extra=("--no-duplicate-search",))
    ma, mb = read_manifest(a), read_manifest(b)
    assert list(ma["image_id"]) == list(mb["image_id"]) and list(ma["split"]) == list(mb["split"])
    assert list(ma["group"]) == list(mb["group"])
    assert not any(g.endswith(f":{spelling}") for g in mb["group"] if spelling)


@pytest.mark.parametrize("spelling", ["nan", "NaN", "None", "null", "NA", "unknown"])
def test_every_layout_reads_missing_spellings_as_missing(tmp_path, spelling):
    from hamdata.inputs.layouts import open_source

    # ISIC 2020 (v2): patient and lesion ids, age, sex, site
    rows = [r[:] for r in ISIC2020_ROWS[:4]]
    rows[0][1] = rows[0][2] = rows[0][3] = rows[0][4] = rows[0][5] = spelling
    root = tmp_path / "i20"
    for k, r in enumerate(rows):
        _image(root / "train" / f"{r[0]}.jpg", k)
    _write(root / "ISIC_2020_Training_GroundTruth_v2.csv", ISIC2020_V2_HEADER, rows)
    table = open_source(root).metadata.set_index("image_id")
    first = table.loc["ISIC_2637011"]
    assert first["patient_id"] == first["lesion_id"] == first["sex"] == first["localization"] == ""
    assert np.isnan(first["age"])
    # BCN20000: lesion id, age, site, sex
    root = tmp_path / "bcn"
    _image(root / "BCN_0000000001.jpg", 1)
    _write(root / "bcn_20k_train.csv", BCN_HEADER,
           [["BCN_0000000001.jpg", spelling, spelling, "NV", spelling, "", spelling, "train"]])
    row = open_source(root).metadata.iloc[0]
    assert row["lesion_id"] == row["sex"] == row["localization"] == "" and np.isnan(row["age"])
    # today's archive export: lesion, patient, age, site levels
    root = tmp_path / "arc"
    _image(root / "ISIC_9000001.jpg", 2)
    record = {"isic_id": "ISIC_9000001", "diagnosis_1": "Benign", "diagnosis_2": "Benign melanocytic proliferations",
              "diagnosis_3": spelling, "lesion_id": spelling, "patient_id": spelling, "age_approx": spelling,
              "anatom_site_1": spelling, "sex": spelling, "image_type": "dermoscopic"}
    _write(root / "metadata.csv", TODAY_HEADER, _rows(TODAY_HEADER, [record]))
    row = open_source(root).metadata.iloc[0]
    assert row["lesion_id"] == row["patient_id"] == row["sex"] == row["localization"] == ""
    assert row["labels"] == ("Benign melanocytic proliferations", "Benign") and np.isnan(row["age"])
    # HAM10000: sex, localization, age read as unknown / empty; a lesion id spelled missing is named
    root = tmp_path / "ham"
    _image(root / "ISIC_0024306.jpg", 3)
    header = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    _write(root / "HAM10000_metadata.csv", header, [["HAM_0000118", "ISIC_0024306", "nv", "histo", spelling, spelling,
                                                     spelling]])
    row = open_source(root).metadata.iloc[0]
    assert row["sex"] == row["localization"] == "unknown" and np.isnan(row["age"])


# ---------------------------------------------------------------- layouts that are not there


def test_a_header_that_matches_no_layout_is_one_line(tmp_path):
    root = tmp_path / "odd"
    _image(root / "ISIC_0000001.jpg", 1)
    _write(root / "train.csv", ["image", "label"], [["ISIC_0000001", "nevus"]])
    line = cli_error("build-shards", "--data", root, "--out", tmp_path / "b", *SIZE)
    assert "no metadata CSV" in line or "no HAM10000 or ISIC copy" in line
    assert "ISIC_2020_Training_GroundTruth" in line or "image_id and dx" in line
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- the malignancy class set downstream


def test_a_malignancy_run_writes_image_target_and_gives_auc_first(build, tmp_path):
    """A two-class build of the session's synthetic HAM10000 images trains, and its evaluation leads with the AUC,
    which the test recomputes from the ISIC CSV (image,target) with scikit-learn."""
    from sklearn.metrics import roc_auc_score

    out, _ = _build(tmp_path, build.parent / "data", extra=("--classes", "malignancy", "--no-duplicate-search"))
    card = _card(out)
    assert card["classes"] == ["benign", "malignant"] and card["unmapped"]["ham10000"]["akiec"]["rows"] > 0
    run = tmp_path / "run"
    result = cli("train", "phase5", "--shards", out, "--out", run, "--train-set", "train", "--epochs", 1,
                 "--weights", "none", "--image-size", 32, "--batch-size", 16, "--device", "cpu", "--workers", 0,
                 "--seed", 7, "--max-steps", 2)
    assert result.exit_code == 0, result.output
    with open(run / "predictions_isic2018.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert header == ["image", "target"]
    truth = {k: s["dx"] for k, s in _samples(out).items() if s["split"] == "test"}
    assert sorted(r[0] for r in rows) == sorted(truth)
    evaluation = json.loads((run / "metrics.json").read_text())
    assert "AUC " in result.output.split("test (")[-1]  # the run says its AUC first
    expected = roc_auc_score([truth[r[0]] == "malignant" for r in rows], [float(r[1]) for r in rows])
    assert evaluation["auc"] == pytest.approx(expected, abs=1e-5)


def test_stats_and_report_show_image_types_left_out_and_listed_pairs(tmp_path):
    from hamdata.report import render_report
    from hamdata.stats import run_stats

    data, _ = _today_export(tmp_path / "arc")
    out, _ = _build(tmp_path, data)
    stats = run_stats(out, tmp_path / "stats", progress=False)
    assert "image types left out: 3 rows" in stats["text"]
    assert stats["tables"]["left_out"]["rows"].sum() == 3
    page = render_report(out)
    assert "Image types left out (3 rows)" in page and "RCM: tile" in page
    listed, _ = _build(tmp_path, _isic2020(tmp_path / "isic2020"), name="i20",
                       extra=("--classes", "malignancy", "--no-duplicate-search"))
    page = render_report(listed)
    assert "4 by a published duplicate list" in page and "listed in ISIC_2020_Training_Duplicates.csv" in page
    assert "duplicate list" in run_stats(listed, tmp_path / "s2", progress=False)["text"]


# ---------------------------------------------------------------- found in review


def test_a_listed_chain_through_an_image_not_built_still_keeps_its_ends_together(tmp_path):
    # ISIC_2637011 is "unknown": not built in a ham10000 build; the pairs around it still make one picture
    pairs = [("ISIC_0052212", "ISIC_2637011"), ("ISIC_2637011", "ISIC_0250839")]
    data = _isic2020(tmp_path / "isic2020", pairs=pairs)
    out, _ = _build(tmp_path, data, extra=("--no-duplicate-search", "--keep-duplicates", "--seed", "1"))
    samples = _samples(out)
    assert samples["ISIC_0052212"]["group"] == samples["ISIC_0250839"]["group"]
    assert samples["ISIC_0052212"]["split"] == samples["ISIC_0250839"]["split"]
    out, _ = _build(tmp_path, data, name="drop", extra=("--no-duplicate-search",))
    assert "ISIC_0250839" not in _samples(out) and "ISIC_0052212" in _samples(out)
    assert verify(out) == (0, [])


def test_a_listed_pair_that_content_finds_too_is_recorded_once_with_the_input_it_came_from(tmp_path):
    data = _isic2020(tmp_path / "isic2020", pairs=[("ISIC_0052212", "ISIC_0015719")])
    (data / "train" / "ISIC_0015719.jpg").write_bytes((data / "train" / "ISIC_0052212.jpg").read_bytes())
    out, _ = _build(tmp_path, data, extra=("--classes", "malignancy", "--keep-duplicates"))
    records = [d for d in _card(out)["duplicates"] if {d["kept"], d["dropped"]} == {"ISIC_0052212", "ISIC_0015719"}]
    assert len(records) == 1 and records[0]["evidence"]["method"] == "ISIC 2020 duplicate list"
    assert records[0]["kept_input"] == records[0]["input"] == 0


def test_a_label_map_row_decides_before_the_rows_own_malignancy_field(tmp_path):
    data, _ = _today_export(tmp_path / "arc")
    override = tmp_path / "ak.csv"
    _write(override, ["collection", "label", "class"], [["isic-archive", "Solar or actinic keratosis", "malignant"]])
    out, _ = _build(tmp_path, data, extra=("--classes", "malignancy", "--label-map", override))
    assert _samples(out)["ISIC_9000006"]["dx"] == "malignant"  # diagnosis_1 Indeterminate would drop it


def test_every_row_of_a_type_not_chosen_is_one_line_naming_the_types(tmp_path):
    data, _ = _today_export(tmp_path / "arc")
    table = pd.read_csv(data / "metadata.csv", dtype=str, keep_default_na=False)
    table["image_type"] = "clinical: close-up"
    table.to_csv(data / "metadata.csv", index=False)
    line = cli_error("build-shards", "--data", data, "--out", tmp_path / "b", *SIZE)
    assert "clinical: close-up" in line and "--image-types" in line


def test_a_site_path_whose_top_is_unknown_falls_back_to_anatom_site_general(tmp_path):
    # 2026-02 .. 2026-05 exports hold both the site path and anatom_site_general (ImageMarkup/isic 0036, 0039)
    root = tmp_path / "arc"
    _image(root / "ISIC_9100001.jpg", 1)
    header = ["isic_id", "attribution", "copyright_license", "anatom_site_1", "anatom_site_general", "diagnosis_1",
              "diagnosis_2", "diagnosis_3", "image_type"]
    _write(root / "metadata.csv", header, [["ISIC_9100001", "x", "CC-0", "Torso", "posterior torso", "Benign",
                                            "Benign melanocytic proliferations", "Nevus", "dermoscopic"]])
    out, _ = _build(tmp_path, root)
    assert _samples(out)["ISIC_9100001"]["site"] == "posterior torso"
    assert any("'Torso'" in w and "read as unknown site" in w for w in _card(out)["input"]["warnings"])


def test_a_duplicate_list_of_no_pairs_and_a_browser_renamed_collection_csv(tmp_path):
    data = _isic2020(tmp_path / "isic2020", pairs=[])
    out, _ = _build(tmp_path, data, extra=("--classes", "malignancy", "--no-duplicate-search"))
    assert _card(out)["duplicate_lists"][0]["pairs"] == 0 and len(_samples(out)) == len(ISIC2020_ROWS)
    root = tmp_path / "collection"
    _image(root / "images" / "ISIC_8000001.jpg", 5)
    record = {"isic_id": "ISIC_8000001", "diagnosis_1": "Benign", "diagnosis_2": "Benign melanocytic proliferations",
              "diagnosis_3": "Nevus", "image_type": "dermoscopic"}
    _write(root / "hospital_metadata_2025-03-01 (1).csv", ERA_2025_HEADER, _rows(ERA_2025_HEADER, [record]))
    out, _ = _build(tmp_path, root, name="c")
    assert set(_samples(out)) == {"ISIC_8000001"}


def test_build_config_takes_all_image_types():
    from hamdata.build import BuildConfig

    assert BuildConfig(image_types="all").image_types is None
    assert BuildConfig(image_types="Dermoscopic, clinical: close-up").image_types == ("dermoscopic",
                                                                                      "clinical: close-up")
