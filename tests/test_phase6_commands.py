"""`ensemble`, `evaluate --by-lesion/--calibrate` and `predict` with metadata, on two tiny Phase 6 runs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hamdata.inputs.classes import CLASSES
from hamdata.store.manifest import read_manifest
from helpers import SOURCE_SIZE, build_once, cli, cli_error
from trainers import run_recipe
from trainers.metrics import read_isic_csv

TINY = {"weights": "none", "image_size": 32, "epochs": 1, "max_steps": 3, "batch_size": 16, "workers": 0,
        "device": "cpu", "gradcam": False, "ema_decay": 0.0}


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    """140 synthetic images at 32 px, 20 per class, every lesion two images (so val and test hold lesions of two)."""
    rows = [{"lesion_id": f"HAM_{8_000_000 + k // 2:07d}", "image_id": f"ISIC_{8_000_000 + k:07d}", "dx": dx,
             "dx_type": "histo", "age": 30 + 5 * (k % 9), "sex": ("male", "female")[k // 2 % 2],
             "localization": ("back", "face", "trunk")[k // 2 % 3]}
            for k, dx in enumerate(dx for dx in CLASSES for _ in range(20))]
    table = tmp_path_factory.mktemp("tables") / "pairs-140.csv"
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return build_once(tmp_path_factory, 0, 32, shard_size=50, metadata=table)


@pytest.fixture(scope="module")
def runs(build, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("phase6-runs")
    made = {}
    for name, arch, seed in (("a", "mobilenet_v3_large", 1), ("b", "resnet18", 2)):
        run_recipe("phase6", {**TINY, "arch": arch, "seed": seed, "shards": str(build), "out": str(root / name)},
                   echo=lambda *a: None)
        made[name] = root / name
    return made


def evaluation(folder: Path) -> tuple[list[str], np.ndarray, dict]:
    ids, probs = read_isic_csv(folder / "predictions_isic2018.csv")
    return ids, probs, json.loads((folder / "metrics.json").read_text())


def test_ensemble_is_the_mean_of_the_members_evaluations(runs, build, tmp_path):
    for name in ("a", "b"):
        assert cli("evaluate", runs[name], "--split", "test", "--device", "cpu", "--workers", 0,
                   "--out", tmp_path / f"eval-{name}").exit_code == 0
    result = cli("ensemble", runs["a"], runs["b"], "--device", "cpu", "--workers", 0, "--out", tmp_path / "ens")
    assert result.exit_code == 0, result.output
    ids_a, probs_a, _ = evaluation(tmp_path / "eval-a")
    ids_b, probs_b, _ = evaluation(tmp_path / "eval-b")
    ids, probs, metrics = evaluation(tmp_path / "ens")
    assert ids == ids_a == ids_b and len(ids) == metrics["samples"]
    assert np.abs(probs - (probs_a + probs_b) / 2).max() <= 1e-5
    record = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert [m["weight"] for m in record["members"]] == [1.0, 1.0]
    assert record["members"][0]["scores"]["macro_f1"] == pytest.approx(evaluation(tmp_path / "eval-a")[2]["macro_f1"])
    page = (tmp_path / "ens" / "report.html").read_text()
    assert "Ensemble members" in page and "mobilenet_v3_large" in page and "resnet18" in page


def test_ensemble_by_lesion_gives_each_lesion_one_row_and_its_balanced_accuracy_is_the_csv_mean_recall(runs, build, tmp_path):
    out = tmp_path / "ens"
    result = cli("ensemble", runs["a"], runs["b"], "--by-lesion", "--select", "greedy", "--calibrate", "--device", "cpu",
                 "--workers", 0, "--out", out)
    assert result.exit_code == 0, result.output
    ids, probs, metrics = evaluation(out)
    manifest = read_manifest(build).set_index("image_id")
    lesions = manifest.loc[ids, "lesion_id"].tolist()
    labels = manifest.loc[ids, "label"].astype(int).to_numpy()
    rows = {}
    for lesion, row in zip(lesions, probs):
        rows.setdefault(lesion, []).append(row)
    assert any(len(r) > 1 for r in rows.values())  # the test means something: some lesions have several images
    for lesion, same in rows.items():
        assert all(np.array_equal(same[0], r) for r in same), lesion
    predicted = probs.argmax(1)
    recalls = [np.mean(predicted[labels == c] == c) for c in np.unique(labels)]
    assert metrics["balanced_accuracy"] == pytest.approx(np.mean(recalls), abs=1e-9)
    assert metrics["by_lesion"] is True and "lesion-level" in metrics["csv_holds"]
    assert set(metrics["image_level"]) >= {"macro_f1", "balanced_accuracy"}
    record = json.loads((out / "ensemble.json").read_text())
    assert sum(record["selection"]["counts"]) == record["selection"]["rounds_kept"] >= 1
    assert record["weights"] == record["selection"]["weights"] and sum(record["weights"]) == pytest.approx(1.0)
    assert metrics["calibration"]["val_nll_after"] <= metrics["calibration"]["val_nll_before"] + 1e-9
    assert (out / "reliability.png").is_file()


def test_evaluate_calibrate_stores_the_temperature_that_predict_and_ensemble_apply(runs, build, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["b"], run)
    result = cli("evaluate", run, "--calibrate", "--by-lesion", "--device", "cpu", "--workers", 0, "--out", tmp_path / "cal")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "cal" / "metrics.json").read_text())
    state = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert state["calibration"]["temperature"] == pytest.approx(metrics["calibration"]["temperature"])
    assert metrics["temperature"] == metrics["calibration"]["temperature"]
    assert metrics["calibration"]["val_nll_after"] <= metrics["calibration"]["val_nll_before"] + 1e-9
    image = next((build.parent / "data").rglob("*.jpg"))
    before = json.loads(cli("predict", runs["b"], image, "--json", "--device", "cpu").output.splitlines()[-1])
    after = json.loads(cli("predict", run, image, "--json", "--device", "cpu").output.splitlines()[-1])
    from trainers.calibration import apply_temperature

    expected = apply_temperature(np.array([[before["probabilities"][dx] for dx in CLASSES]]), state["calibration"]["temperature"])
    assert [after["probabilities"][dx] for dx in CLASSES] == pytest.approx(expected[0].tolist(), abs=1e-5)


def test_predict_reads_metadata_and_warns_on_values_never_seen(runs, build, tmp_path):
    image = next((build.parent / "data").rglob("*.jpg"))
    one = cli("predict", runs["a"], image, "--age", 55, "--sex", "female", "--site", "mars", "--device", "cpu")
    assert one.exit_code == 0 and "site 'mars' never occurs in the training data; read as unknown" in one.output
    none = cli("predict", runs["a"], image, "--device", "cpu")
    assert none.output.count("given no metadata") == 1
    table = tmp_path / "meta.csv"
    table.write_text(f"image,age,sex,localization\n{image.name},55,female,back\n")
    many = cli("predict", runs["a"], image, "--metadata", table, "--json", "--device", "cpu")
    assert many.exit_code == 0 and json.loads(many.output.splitlines()[-1])["image"] == str(image)
    # the metadata reaches the model: another age and site give other probabilities
    young = cli("predict", runs["a"], image, "--age", 5, "--sex", "male", "--site", "face", "--json", "--device", "cpu")
    assert json.loads(young.output.splitlines()[-1])["probabilities"] != json.loads(many.output.splitlines()[-1])["probabilities"]


def test_bad_input_is_one_line(runs, build, tmp_path):
    image = next((build.parent / "data").rglob("*.jpg"))
    cli_error("ensemble", runs["a"], "--device", "cpu", "needs at least two members")
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((runs["b"] / "best.pt").read_bytes()[:5000])
    assert str(damaged) in cli_error("ensemble", runs["a"], damaged, "--device", "cpu")
    other = tmp_path / "other.pt"
    state = torch.load(runs["b"] / "best.pt", map_location="cpu", weights_only=True)
    torch.save({**state, "classes": list(CLASSES[:6]) + ["scc"]}, other)
    assert "classes" in cli_error("ensemble", runs["a"], other, "--device", "cpu")
    table = tmp_path / "meta.csv"
    table.write_text("image,age,sex\nx.jpg,50,male\n")
    assert "no column localization" in cli_error("predict", runs["a"], image, "--metadata", table, "--device", "cpu")
    table.write_text("image,age,sex,localization\nother.jpg,50,male,back\n")
    assert f"no row for image {image.name}" in cli_error("predict", runs["a"], image, "--metadata", table, "--device", "cpu")


def test_metadata_on_a_build_without_metadata_is_one_line(tmp_path):
    from hamdata.synth.ham import make_synthetic

    data = tmp_path / "data"
    make_synthetic(data, n_images=60, seed=3, workers=1, progress=False, image_size=SOURCE_SIZE)
    table = data / "HAM10000_metadata.csv"
    with open(table, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row.update(age="", sex="unknown", localization="unknown")
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    bare = tmp_path / "bare"
    assert cli("build-shards", "--data", data, "--out", bare, "--size", 32, "--workers", 1).exit_code == 0
    line = cli_error("train", "phase6", "--shards", bare, "--weights", "none", "--device", "cpu", "--epochs", 1)
    assert "no metadata" in line and "--no-metadata" in line
