"""build-shards --hold-out COLLECTION: a whole collection (and what its groups pull along) in a fourth split,
``heldout``, never trained on; the rest split as without it; a run evaluates test and heldout."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import SOURCE_SIZE, cli, cli_error, verify

from hamdata.store.manifest import read_manifest


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Synthetic HAM10000 (the images of 60 lesions of the canonical split) and ISIC 2019 (60) with planted copies of HAM images under new ids, whose
    content pairs link HAM groups to ISIC ones (tests/test_stats_report_collections.py's inputs)."""
    from hamdata.synth.ham import make_synthetic
    from hamdata.synth.isic import write_isic2019

    from hamdata.split.stratified import canonical_path

    root = tmp_path_factory.mktemp("holdout")
    # HAM10000 ids, lesions and labels of the canonical split (the first 60 lesions, whole), so that it applies,
    # written with the header of the real HAM10000_metadata.csv (Harvard Dataverse doi:10.7910/DVN/DBW86T, the
    # Kaggle copy: lesion_id,image_id,dx,dx_type,age,sex,localization)
    canonical = pd.read_csv(canonical_path(), dtype=str)
    rows = canonical[canonical["lesion_id"].isin(sorted(set(canonical["lesion_id"]))[:60])]
    table = rows.assign(dx_type="histo", age="50.0", sex="female", localization="back")
    table[["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]].to_csv(root / "ham.csv", index=False)
    make_synthetic(root / "ham", seed=3, metadata=root / "ham.csv", workers=1, progress=False, image_size=SOURCE_SIZE)
    write_isic2019(root / "isic", images=60, seed=3, size=(200, 150), duplicates_of=root / "ham", same_id=0,
                   new_id=6, within=2, workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def held(inputs) -> Path:
    out = inputs / "b-held"
    result = cli("build-shards", "--data", inputs / "ham", "--data", inputs / "isic", "--out", out, "--size", "32",
                 "--workers", "1", "--hold-out", "isic2019", "--keep-duplicates")
    assert result.exit_code == 0, result.output
    assert "held out: isic2019:" in result.output and "heldout" in result.output
    return out


def test_every_image_of_the_collection_is_held_out_with_what_its_groups_pull_along(held):
    manifest = read_manifest(held)
    card = json.loads((held / "dataset.json").read_text())
    isic = manifest[manifest["collection"] == "isic2019"]
    assert len(isic) >= 60 and (isic["split"] == "heldout").all()  # 60 drawn, and the planted copies
    assert manifest.groupby("group")["split"].nunique().max() == 1  # no group spans two splits
    record = card["split"]["held_out"]
    pulled = manifest[(manifest["split"] == "heldout") & (manifest["collection"] != "isic2019")]
    assert sorted(p["image_id"] for p in record["pulled_along"]) == sorted(pulled["image_id"])
    assert len(pulled) >= 1, "the planted copies link HAM groups to ISIC ones"
    assert record["collections"] == ["isic2019"] and record["images"] == int((manifest["split"] == "heldout").sum())
    assert sum(card["counts"]["heldout"].values()) == record["images"]
    info = json.loads((held / "_info.json").read_text())
    assert info["splits"]["heldout"]["num_samples"] == record["images"]
    assert verify(held)[0] == 0


def test_ham10000_keeps_its_canonical_split_except_for_the_images_pulled_out(held):
    from hamdata.split.stratified import canonical_path

    canonical = pd.read_csv(canonical_path(), dtype=str).set_index("image_id")["split"]
    manifest = read_manifest(held)
    ham = manifest[(manifest["collection"] == "ham10000") & (manifest["split"] != "heldout")]
    known = ham[ham["image_id"].isin(canonical.index)]
    assert len(known) >= 40 and json.loads((held / "dataset.json").read_text())["split"]["source"] == "canonical"  # what is left is all HAM10000
    assert (known["split"].to_numpy() == canonical[known["image_id"]].to_numpy()).all()


def test_a_run_reports_test_and_heldout_and_evaluate_takes_the_heldout_split(held, tmp_path):
    result = cli("train", "phase5", "--shards", held, "--out", tmp_path / "run", "--weights", "none", "--image-size", 32,
                 "--epochs", 1, "--max-steps", 2, "--batch-size", 16, "--device", "cpu", "--workers", 0)
    assert result.exit_code == 0, result.output
    assert "\ntest (" in result.output and "\nheldout (" in result.output
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())
    heldout = json.loads((tmp_path / "run" / "eval-heldout" / "metrics.json").read_text())
    card = json.loads((held / "dataset.json").read_text())
    assert test["split"] == "test" and heldout["split"] == "heldout"
    assert heldout["samples"] == sum(card["counts"]["heldout"].values())
    result = cli("evaluate", tmp_path / "run", "--split", "heldout", "--device", "cpu", "--workers", 0,
                 "--by", "collection", "--out", tmp_path / "ev")
    assert result.exit_code == 0, result.output
    by = json.loads((tmp_path / "ev" / "metrics.json").read_text())["by"]["collection"]
    assert {r["group"] for r in by} >= {"isic2019"}


def test_stats_and_report_take_a_build_with_a_heldout_split(held, tmp_path):
    assert cli("stats", held, "--out", tmp_path / "stats").exit_code == 0
    result = cli("report", held, "--out", tmp_path / "report.html")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "heldout" in page
    assert "mappingproxy" not in page and "held_out {&#x27;collections&#x27;: [" in page  # the card's values as JSON has them


def test_bad_hold_outs_are_one_line(inputs, tmp_path):
    line = cli_error("build-shards", "--data", inputs / "ham", "--data", inputs / "isic", "--out", tmp_path / "b",
                     "--size", "32", "--workers", "1", "--hold-out", "bcn20000")
    assert "--hold-out bcn20000: the build holds no image of collection 'bcn20000'" in line
    line = cli_error("build-shards", "--data", inputs / "ham", "--out", tmp_path / "b", "--size", "32",
                     "--workers", "1", "--hold-out", "ham10000")
    assert "every image of the build would be held out" in line
    assert not (tmp_path / "b").exists()


def test_evaluate_heldout_of_a_build_without_one_is_one_line(build, tmp_path):
    from trainers import run_recipe

    run_recipe("phase5", {"weights": "none", "image_size": 32, "epochs": 1, "max_steps": 1, "batch_size": 16,
                          "workers": 0, "device": "cpu", "gradcam": False, "shards": str(build),
                          "out": str(tmp_path / "run")}, echo=lambda *a: None)
    line = cli_error("evaluate", tmp_path / "run", "--split", "heldout", "--device", "cpu", "--workers", 0)
    assert "--split heldout:" in line and "has no heldout split (build-shards --hold-out COLLECTION writes one)" in line


def test_a_held_out_picture_dropped_as_a_copy_takes_its_kept_twin_out_of_training(inputs, tmp_path):
    """Without --keep-duplicates the later copy is dropped: an ISIC 2019 copy of a HAM10000 picture is not
    built, so its kept HAM10000 twin is what stands for it, and goes to heldout with its group (else the held-out
    picture would train under the other collection's name)."""
    out = tmp_path / "b"
    result = cli("build-shards", "--data", inputs / "ham", "--data", inputs / "isic", "--out", out, "--size", "32",
                 "--workers", "1", "--hold-out", "isic2019")
    assert result.exit_code == 0, result.output
    card = json.loads((out / "dataset.json").read_text())
    manifest = read_manifest(out).set_index("image_id")
    twins = [d["kept"] for d in card["duplicates"] if d["action"] == "dropped" and d["input"] == 1 and d["kept_input"] == 0]
    assert twins, "the planted ISIC copies of HAM pictures are dropped as duplicates"
    assert (manifest.loc[twins, "split"] == "heldout").all()
    assert set(twins) <= {p["image_id"] for p in card["split"]["held_out"]["pulled_along"]}
    assert verify(out)[0] == 0
