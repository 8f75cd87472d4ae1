"""Runs of the Phase 4 and Phase 5 recipes on a tiny synthetic build: outputs, resume, evaluate, predict, bad input."""

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hamdata.inputs.classes import CLASSES, ISIC2018_COLUMNS
from hamdata.errors import HamdataError
from helpers import cli, cli_error, go_offline, poison_the_loss
from trainers import evaluate_checkpoint, run_recipe
from trainers.checkpoints import load_checkpoint
from trainers.predict import predict_images

TINY = {"weights": "none", "image_size": 32, "batch_size": 16, "lr": 2e-3, "workers": 0, "device": "cpu", "seed": 7,
        "max_steps": 3}


@pytest.fixture(scope="module")
def phase4_run(build, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("phase4") / "run"
    return run_recipe("phase4", {**TINY, "shards": str(build), "out": str(out), "epochs": 2}, echo=lambda *a: None)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_run_writes_every_output(phase4_run, build):
    out = Path(phase4_run["out"])
    for name in ("config.json", "metrics.jsonl", "curves.png", "best.pt", "best_ema.pt", "last.pt", "metrics.json",
                 "confusion_matrix.png", "classification_report.txt", "predictions_isic2018.csv"):
        assert (out / name).is_file(), name
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]
    for key in ("train_loss", "lr", "val_macro_f1", "val_balanced_accuracy", "seconds", "images_per_s", "val_ema_macro_f1"):
        assert all(np.isfinite(x[key]) for x in lines), key
    # the loader wait is part of the epoch's training time, and the training time part of the epoch's
    assert all(0 <= x["loader_wait_s"] <= x["train_seconds"] <= x["seconds"] for x in lines)
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "per_class"):
        assert key in metrics
    assert set(metrics["per_class"]) == set(CLASSES)
    assert {"precision", "recall", "f1", "auc", "support"} <= set(metrics["per_class"]["nv"])
    assert list((out / "gradcam").glob("*.png")), "phase4 writes Grad-CAM overlays"
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["train_set"] == "train" and config["classes"] == list(CLASSES)


def test_checkpoints_hold_everything_to_resume(phase4_run):
    _, last = load_checkpoint(Path(phase4_run["out"]) / "last.pt")
    for key in ("model", "ema", "optimizer", "scheduler", "scaler", "epoch", "rng", "config", "classes", "data", "progress"):
        assert key in last, key
    assert last["classes"] == list(CLASSES) and last["epoch"] == 2
    assert last["data"]["preprocess"]["size"] == [32, 32]


def test_isic_csv_follows_the_task3_rules_and_matches_metrics(phase4_run, build):
    out = Path(phase4_run["out"])
    with open(out / "predictions_isic2018.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["image", *ISIC2018_COLUMNS]
    body = rows[1:]
    card = json.loads((build / "dataset.json").read_text())
    assert len(body) == sum(card["counts"]["test"].values())
    ids = [r[0] for r in body]
    assert len(set(ids)) == len(ids) and not any(i.endswith(".jpg") for i in ids)
    probs = np.array([[float(v) for v in r[1:]] for r in body])
    assert ((probs >= 0) & (probs <= 1)).all() and np.allclose(probs.sum(1), 1, atol=1e-4)
    truth = pd.read_csv(build / "manifest.csv").set_index("image_id")["dx"]
    predicted = [ISIC2018_COLUMNS[j].lower() for j in probs.argmax(1)]
    true = [truth[i] for i in ids]
    recalls = [np.mean([p == dx for p, t in zip(predicted, true) if t == dx]) for dx in sorted(set(true))]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["balanced_accuracy"] == pytest.approx(np.mean(recalls), abs=1e-9)


def test_resume_matches_an_uninterrupted_run_phase5(build, tmp_path):
    """Two epochs straight, and one epoch + --resume to two: the same epoch-2 train loss."""
    base = {**TINY, "shards": str(build)}
    straight = run_recipe("phase5", {**base, "out": str(tmp_path / "a"), "epochs": 2}, echo=lambda *a: None)
    run_recipe("phase5", {**base, "out": str(tmp_path / "b"), "epochs": 1}, echo=lambda *a: None)
    resumed = run_recipe("phase5", {"epochs": 2}, resume=str(tmp_path / "b"), echo=lambda *a: None)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["history"][1]["train_loss"] == straight["history"][1]["train_loss"]
    assert resumed["history"][1]["val_macro_f1"] == straight["history"][1]["val_macro_f1"]


def test_resume_after_an_interruption_phase4(build, tmp_path, phase4_run):
    """CutMix/MixUp, EMA and the cosine schedule continue exactly (--stop-after stands in for a crash)."""
    args = {**TINY, "shards": str(build), "out": str(tmp_path / "c"), "epochs": 2, "stop_after": 1}
    stopped = run_recipe("phase4", args, echo=lambda *a: None)
    assert stopped["stopped"] and not (tmp_path / "c" / "metrics.json").exists()
    resumed = run_recipe("phase4", None, resume=str(tmp_path / "c" / "last.pt"), echo=lambda *a: None)
    assert resumed["history"][1]["train_loss"] == phase4_run["history"][1]["train_loss"]
    assert resumed["history"][1]["val_ema_macro_f1"] == phase4_run["history"][1]["val_ema_macro_f1"]
    with pytest.raises(HamdataError, match="--lr"):
        run_recipe("phase4", {"lr": 0.5}, resume=str(tmp_path / "c"), echo=lambda *a: None)
    with pytest.raises(HamdataError, match="phase4 run"):
        run_recipe("phase5", None, resume=str(tmp_path / "c"), echo=lambda *a: None)


def test_evaluate_any_checkpoint_with_tta(phase4_run, tmp_path):
    result = evaluate_checkpoint(Path(phase4_run["out"]) / "best.pt", split="val", tta=True, out=tmp_path / "ev",
                                 echo=lambda *a: None)
    assert result["metrics"]["tta"] is True and result["metrics"]["split"] == "val"
    for name in ("metrics.json", "confusion_matrix.png", "classification_report.txt", "predictions_isic2018.csv"):
        assert (tmp_path / "ev" / name).is_file()


def test_predict_applies_the_builds_preprocessing(phase4_run, build):
    """A raw image through `predict` gets the probabilities its shard sample got in the evaluation."""
    out = Path(phase4_run["out"])
    with open(out / "predictions_isic2018.csv", newline="") as handle:
        row = list(csv.DictReader(handle))[0]
    raw = next((build.parent / "data").rglob(f"{row['image']}.jpg"))
    _, best = load_checkpoint(out / phase4_run["evaluated"])
    result = predict_images(out / phase4_run["evaluated"], [raw], device="cpu")[0]
    for dx in CLASSES:
        assert result["probabilities"][dx] == pytest.approx(float(row[dx.upper()]), abs=2e-4)


def test_cli_train_evaluate_predict(build, tmp_path):
    result = cli("train", "phase5", "--shards", build, "--out", tmp_path / "r", "--weights", "none", "--epochs", 1,
                 "--max-steps", 2, "--image-size", 32, "--batch-size", 16, "--workers", 0, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "training set: train split" in result.output and "test macro-F1" in result.output
    result = cli("evaluate", tmp_path / "r", "--workers", 0)
    assert result.exit_code == 0 and (tmp_path / "r" / "eval-best-test" / "metrics.json").is_file(), result.output
    image = next((build.parent / "data").rglob("*.jpg"))
    result = cli("predict", tmp_path / "r", image)
    assert result.exit_code == 0 and result.output.startswith(str(image)), result.output


# ------------------------------------------------------------------ bad input: one line, exit 2


def test_bad_input_is_one_clear_line(tmp_path, phase4_run, build):
    assert "not a hamdata build" in cli_error("train", "phase5", "--shards", tmp_path, "--weights", "none")
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in cli_error("train", "phase5", "--shards", build, "--device", "cuda", "--weights", "none")
    assert "holds a run already" in cli_error("train", "phase4", "--shards", build, "--out", phase4_run["out"], "--weights", "none")
    assert "no such checkpoint" in cli_error("evaluate", tmp_path / "nothing.pt")
    assert "--batch-size" in cli_error("train", "phase5", "--shards", build, "--batch-size", 4096, "--weights", "none")
    result = cli("train", "phase9")
    assert result.exit_code == 2 and "phase9" in result.output
    for name, content in (("empty.pt", b""), ("text.pt", b"not a checkpoint\n")):
        (tmp_path / name).write_bytes(content)
        line = cli_error("train", "phase5", "--shards", build, "--out", tmp_path / "w", "--weights", tmp_path / name)
        assert "not a readable PyTorch state dict" in line
    assert not (tmp_path / "w").exists()


def test_a_checkpoint_with_another_class_list_is_refused(phase4_run, tmp_path):
    state = torch.load(Path(phase4_run["out"]) / "best.pt", weights_only=True)
    state["classes"] = ["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"]
    torch.save(state, tmp_path / "other.pt")
    assert "hamdata uses" in cli_error("evaluate", str(tmp_path / "other.pt"))
    assert "hamdata uses" in cli_error("predict", str(tmp_path / "other.pt"), __file__)


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(build, tmp_path, monkeypatch):
    args = {**TINY, "shards": str(build), "out": str(tmp_path / "n")}
    run_recipe("phase5", {**args, "epochs": 1}, echo=lambda *a: None)
    before = sha(tmp_path / "n" / "last.pt")
    poison_the_loss(monkeypatch, float("nan"), at_call=2)  # epoch 2, step 2
    with pytest.raises(HamdataError, match=r"epoch 2, step 2.*last good checkpoint"):
        run_recipe("phase5", {"epochs": 2}, resume=str(tmp_path / "n"), echo=lambda *a: None)
    assert sha(tmp_path / "n" / "last.pt") == before


def test_imagenet_weights_without_network_leave_no_run_folder(build, tmp_path, monkeypatch):
    go_offline(monkeypatch)
    line = cli_error("train", "phase5", "--shards", build, "--out", tmp_path / "r", "--image-size", 32, "--workers", 0)
    assert "--weights imagenet" in line and "--weights none" in line
    assert not (tmp_path / "r").exists()
