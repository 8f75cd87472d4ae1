"""The class list belongs to the build: on an ISIC 2019 (8-class) build, verify, balance, train, evaluate, predict,
ensemble, stats and report follow dataset.json's ``classes``, not HAM10000's seven.

build-shards cannot make such a build from synthetic data yet, so helpers.relabel_build rewrites the session's
HAM10000 build into one (akiec -> ak; with scc_every, every 4th nv lesion -> scc; without it scc is empty).
"""

import csv
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from hamdata.inputs.classes import CLASS_NAMES, HAM10000_CLASSES, ISIC2019_CLASSES, ISIC2019_COLUMNS
from hamdata.stats import run_stats
from helpers import cli, cli_error, relabel_build, shard_members, verify
from trainers import metrics
from trainers.checkpoints import load_checkpoint, model_from_checkpoint

ISIC, HAM = list(ISIC2019_CLASSES), list(HAM10000_CLASSES)
TINY = ("--epochs", 1, "--weights", "none", "--image-size", 32, "--batch-size", 16, "--lr", 2e-3, "--device", "cpu",
        "--workers", 0, "--seed", 7, "--max-steps", 2)


@pytest.fixture(scope="module")
def isic(build, tmp_path_factory) -> Path:
    """An 8-class build with samples of every class in train."""
    return relabel_build(build, tmp_path_factory.mktemp("isic") / "shards", scc_every=4)


@pytest.fixture(scope="module")
def no_scc(build, tmp_path_factory) -> Path:
    """An 8-class build of HAM10000 images alone: no scc sample anywhere."""
    return relabel_build(build, tmp_path_factory.mktemp("no-scc") / "shards")


@pytest.fixture(scope="module")
def run(isic, tmp_path_factory) -> tuple[Path, list]:
    """A phase5 run on `isic`, and every confusion matrix its evaluation computed."""
    out, matrices = tmp_path_factory.mktemp("run") / "p5", []
    real = metrics.confusion_counts
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "confusion_counts", lambda *a, **k: matrices.append(real(*a, **k)) or matrices[-1])
        result = cli("train", "phase5", "--shards", isic, "--out", out, "--train-set", "train", *TINY)
    assert result.exit_code == 0, result.output
    return out, matrices


def card(folder: Path) -> dict:
    return json.loads((folder / "dataset.json").read_text())


def test_the_relabelled_builds_verify_with_their_eight_classes(isic, no_scc, tmp_path):
    assert verify(isic) == (0, []) and verify(no_scc) == (0, [])
    for folder in (isic, no_scc):
        assert card(folder)["classes"] == ISIC and all(list(c) == ISIC for c in card(folder)["counts"].values())
    assert card(isic)["counts"]["train"]["scc"] > 0 and card(isic)["counts"]["train"]["ak"] > 0
    assert all(c["scc"] == 0 for c in card(no_scc)["counts"].values())
    members = dict(shard_members(isic))
    labels = {(int(members[f"{key}.cls"]), json.loads(members[f"{key}.json"])["dx"])
              for key in (name[:-4] for name in members if name.endswith(".cls"))}
    assert labels == set(enumerate(ISIC))  # each of the 8 occurs, its label an index into the build's list
    # verify reads labels against the card's list: the same shards under HAM10000's list are wrong
    copy = tmp_path / "copy"
    shutil.copytree(isic, copy)
    (copy / "dataset.json").write_text(json.dumps({**card(isic), "classes": HAM}))
    code, problems = verify(copy)
    assert code != 0 and any("label 6 disagrees with json dx 'scc'" in p for p in problems), problems


def test_balance_gives_n_of_each_of_the_eight_classes(isic, tmp_path):
    result = cli("balance", "--shards", isic, "--target", 6, "--workers", 1, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    balanced = tmp_path / "balanced-6"
    assert card(balanced)["classes"] == ISIC and card(balanced)["counts"] == {"train": dict.fromkeys(ISIC, 6)}
    rows = pd.read_csv(balanced / "manifest.csv")
    assert rows["dx"].value_counts().to_dict() == dict.fromkeys(ISIC, 6)
    assert (rows["label"] == [ISIC.index(dx) for dx in rows["dx"]]).all()
    assert verify(balanced) == (0, [])


def test_balance_with_an_empty_class_is_one_line(no_scc, tmp_path):
    line = cli_error("balance", "--shards", no_scc, "--target", 5, "--workers", 1, "--out", tmp_path)
    assert "no scc samples" in line and ", ".join(ISIC) in line
    assert not (tmp_path / "balanced-5").exists()


def test_a_run_has_eight_outputs_and_writes_the_isic2019_csv(run, isic):
    out, matrices = run
    _, state = load_checkpoint(out / "best.pt")
    assert state["classes"] == ISIC and json.loads((out / "config.json").read_text())["classes"] == ISIC
    assert model_from_checkpoint(state, torch.device("cpu"))(torch.zeros(1, 3, 32, 32)).shape == (1, 8)
    with open(out / "predictions_isic2018.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert header == ["image", *ISIC2019_COLUMNS] and header[-1] == "UNK"
    assert len(rows) == sum(card(isic)["counts"]["test"].values())
    assert {r[-1] for r in rows} == {"0.000000"} and all(abs(sum(map(float, r[1:-1])) - 1) < 1e-4 for r in rows)
    ids, probs = metrics.read_isic_csv(out / "predictions_isic2018.csv")  # mapped by name: back in the build's order
    assert probs.shape == (len(rows), 8) and probs[0, ISIC.index("ak")] == float(rows[0][header.index("AK")])
    assert [m.shape for m in matrices] == [(8, 8)] and matrices[0].sum() == len(rows)
    evaluation = json.loads((out / "metrics.json").read_text())
    assert list(evaluation["per_class"]) == ISIC
    report = (out / "classification_report.txt").read_text().split()
    assert "ak" in report and "scc" in report and "akiec" not in report


def test_another_class_list_is_refused_in_one_line(run, isic, build, tmp_path):
    out, _ = run
    both = (str(ISIC), str(HAM))
    line = cli_error("evaluate", out / "best.pt", "--shards", build, "--device", "cpu", "--workers", 0,
                     "--out", tmp_path / "eval")
    assert all(text in line for text in both) and not (tmp_path / "eval").exists()
    before = sorted(p.name for p in out.iterdir())
    line = cli_error("train", "phase5", "--resume", out, "--shards", build, "--epochs", 2)
    assert all(text in line for text in both) and sorted(p.name for p in out.iterdir()) == before
    ham = tmp_path / "ham.pt"
    torch.save({**torch.load(out / "best.pt", weights_only=True), "classes": HAM}, ham)
    line = cli_error("ensemble", out, ham, "--device", "cpu", "--workers", 0, "--out", tmp_path / "ensemble")
    assert all(text in line for text in both) and not (tmp_path / "ensemble").exists()
    # on a build of its own list it evaluates, and predict names its classes
    assert cli("evaluate", out, "--split", "val", "--device", "cpu", "--workers", 0, "--out", tmp_path / "val").exit_code == 0
    assert (tmp_path / "val" / "predictions_isic2018.csv").read_text().startswith("image," + ",".join(ISIC2019_COLUMNS))
    image = next((build.parent / "data").rglob("*.jpg"))
    result = cli("predict", out, image, "--device", "cpu", "--json")
    prediction = json.loads(result.output.splitlines()[-1])
    assert list(prediction["probabilities"]) == ISIC and prediction["dx"] in ISIC


def test_stats_and_report_list_the_eight_classes(isic, tmp_path):
    tables = run_stats(isic, tmp_path / "stats", progress=False)["tables"]
    assert tables["class_counts"].index.tolist() == [*ISIC, "total"]
    assert tables["class_counts"].loc["scc", "total"] == sum(c["scc"] for c in card(isic)["counts"].values())
    assert list(tables["age_by_class"].index) == [*ISIC, "all"]
    assert cli("report", isic, "--out", tmp_path / "r.html").exit_code == 0
    page = (tmp_path / "r.html").read_text()
    assert all(f"<h3>{dx}: {CLASS_NAMES[dx]} (" in page for dx in ISIC) and "<h3>akiec:" not in page
