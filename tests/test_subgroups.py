"""Figures per subgroup (`evaluate --by`, `ensemble --by`): each figure recomputed independently (scikit-learn, by
hand), n/a where a group is too small, bootstrap intervals over lesions that hold the point figure and shrink
as a group grows, and one clear line for a field a build does not carry."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, recall_score, roc_auc_score

from helpers import cli, cli_error

from trainers.subgroups import age_band, bootstrap_balanced_accuracy, group_figures


def _two_groups(seed: int = 0, n_a: int = 300, n_b: int = 300):
    """Three classes; group "a" is predicted well (80% right), group "b" badly (40% right); lesions of 1-3 images."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([rng.integers(0, 3, n_a), rng.integers(0, 3, n_b)])
    groups = ["a"] * n_a + ["b"] * n_b
    right = np.concatenate([rng.random(n_a) < 0.8, rng.random(n_b) < 0.4])
    wrong = (labels + rng.integers(1, 3, len(labels))) % 3
    predicted = np.where(right, labels, wrong)
    probs = rng.dirichlet(np.ones(3), len(labels)) * 0.5
    probs[np.arange(len(labels)), predicted] += 0.6
    probs /= probs.sum(1, keepdims=True)
    lesions = [f"L{k // 2}" for k in range(len(labels))]
    return labels, probs, groups, lesions


def test_each_group_figure_is_what_scikit_learn_computes_on_that_group_alone():
    labels, probs, groups, lesions = _two_groups()
    rows = {r["group"]: r for r in group_figures(labels, probs, groups, lesions, ["x", "y", "z"])}
    assert set(rows) == {"a", "b"}
    for name, row in rows.items():
        here = np.asarray(groups) == name
        y, p = labels[here], probs[here]
        yhat = p.argmax(1)
        assert row["images"] == here.sum()
        assert row["counts"] == {dx: int((y == c).sum()) for c, dx in enumerate("xyz")}
        assert row["accuracy"] == pytest.approx(np.mean(y == yhat), abs=1e-12)
        assert row["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, yhat), abs=1e-12)
        assert row["macro_f1"] == pytest.approx(f1_score(y, yhat, average="macro", labels=[0, 1, 2]), abs=1e-12)
        recalls = recall_score(y, yhat, average=None, labels=[0, 1, 2])
        assert [row["recall"][dx] for dx in "xyz"] == pytest.approx(list(recalls), abs=1e-12)
        assert row["auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    assert rows["a"]["balanced_accuracy"] > rows["b"]["balanced_accuracy"] + 0.3  # the gap is there


def test_a_class_with_fewer_than_two_images_in_a_group_has_no_figure_never_a_number_from_nothing():
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    probs = np.eye(2)[[0, 0, 1, 1, 0, 0, 1, 1]] * 0.8 + 0.1
    groups = ["g", "g", "g", "g", "h", "h", "h", "h"]  # g: one image of class 1; h: one of class 0
    rows = {r["group"]: r for r in group_figures(labels, probs, groups, [str(k) for k in range(8)], ["benign", "malignant"])}
    g, h = rows["g"], rows["h"]
    assert g["recall"] == {"benign": pytest.approx(2 / 3), "malignant": None}
    assert g["balanced_accuracy"] == pytest.approx(2 / 3) and g["auc"] is None  # AUC needs 2 of each class
    assert h["recall"] == {"benign": None, "malignant": pytest.approx(2 / 3)}
    lone = group_figures(np.array([1]), np.array([[0.2, 0.8]]), ["only"], ["L"], ["benign", "malignant"])[0]
    assert lone["accuracy"] is None and lone["balanced_accuracy"] is None and lone["macro_f1"] is None
    assert lone["balanced_accuracy_ci95"] is None


def test_bootstrap_intervals_hold_the_point_figure_and_shrink_as_the_group_grows():
    widths = []
    for n in (30, 300, 3000):
        labels, probs, groups, lesions = _two_groups(seed=n, n_a=n, n_b=2)
        row = group_figures(labels, probs, groups, lesions, ["x", "y", "z"])[0]
        low, high = row["balanced_accuracy_ci95"]
        assert low <= row["balanced_accuracy"] <= high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] > 0
    assert widths[0] > 3 * widths[2]  # width ~ 1/sqrt(n): 10x the images, about a third of the width


def test_the_bootstrap_resamples_lesions_not_images():
    """Twenty lesions of ten identical images each: resampling images would give a far narrower interval than
    resampling the twenty lesions, whose images stand or fall together."""
    labels = np.repeat(np.arange(20) % 2, 10)
    right = np.repeat(np.arange(20) % 4 < 3, 10)  # 15 of 20 lesions right, all their images alike
    predicted = np.where(right, labels, 1 - labels)
    by_lesion = bootstrap_balanced_accuracy(labels, predicted, [f"L{k // 10}" for k in range(200)], [0, 1], seed=0)
    by_image = bootstrap_balanced_accuracy(labels, predicted, [f"I{k}" for k in range(200)], [0, 1], seed=0)
    assert (by_lesion[1] - by_lesion[0]) > 2 * (by_image[1] - by_image[0])


def test_age_bands_are_fifteen_years_wide_with_unknown():
    assert [age_band(a) for a in (0, 14, 15, 44.0, 45, 85, None, float("nan"))] == [
        "0-14", "0-14", "15-29", "30-44", "45-59", "75-89", "unknown", "unknown"]


# ------------------------------------------------------------------ the commands


@pytest.fixture(scope="module")
def run(build, tmp_path_factory) -> Path:
    from trainers import run_recipe

    out = tmp_path_factory.mktemp("by") / "p5"
    run_recipe("phase5", {"weights": "none", "image_size": 32, "epochs": 1, "max_steps": 2, "batch_size": 16,
                          "workers": 0, "device": "cpu", "gradcam": False, "shards": str(build), "out": str(out)},
               echo=lambda *a: None)
    return out


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("by_lesion", [False, True], ids=["images", "lesion-voted"])
def test_evaluate_by_sex_and_age_writes_figures_that_the_predictions_csv_gives_back(run, build, tmp_path, by_lesion):
    """The CSV holds what the figures were computed from: image probabilities, or under --by-lesion the
    lesion-voted ones, so the group figures follow --by-lesion as the overall ones do."""
    from hamdata.store.manifest import read_manifest
    from trainers.metrics import read_isic_csv

    out = tmp_path / "eval"
    result = cli("evaluate", run, "--device", "cpu", "--workers", 0, "--by", "sex,age", "--out", out,
                 *(["--by-lesion"] if by_lesion else []))
    assert result.exit_code == 0, result.output
    assert "by sex:" in result.output and "by age:" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["by_lesion"] is by_lesion
    ids, probs = read_isic_csv(out / "predictions_isic2018.csv")
    card = json.loads((build / "dataset.json").read_text())
    classes = card["classes"]
    manifest = read_manifest(build).set_index("image_id")
    labels = np.array([classes.index(manifest.at[i, "dx"]) for i in ids])
    from hamdata import open_build
    from trainers.subgroups import split_records

    records = split_records(open_build(build), "test")
    for field in ("sex", "age"):
        values = np.array([age_band(records[i]["age"]) if field == "age" else (records[i]["sex"] or "unknown")
                           for i in ids])
        table = {r["group"]: r for r in _csv_rows(out / f"by_{field}.csv")}
        assert set(table) == set(values.tolist()) == {r["group"] for r in metrics["by"][field]}
        assert (out / f"by_{field}.png").stat().st_size > 1000
        for name, row in table.items():
            here = values == name
            y, yhat = labels[here], probs[here].argmax(1)
            assert int(row["images"]) == here.sum()
            enough = [c for c in range(len(classes)) if (y == c).sum() >= 2]
            if not enough:
                assert row["balanced_accuracy"] == "n/a"
                continue
            by_hand = np.mean([np.mean(yhat[y == c] == c) for c in enough])
            assert abs(float(row["balanced_accuracy"]) - by_hand) < 1e-9
            assert abs(float(row["accuracy"]) - np.mean(y == yhat)) < 1e-9
    report = (out / "report.html") if (out / "report.html").exists() else None
    if report is None:
        from hamdata.report import write_report

        report = Path(write_report(out))
    assert "Figures per subgroup" in report.read_text(encoding="utf-8")


def test_by_a_field_the_build_does_not_carry_is_one_line_before_any_prediction(run, build, tmp_path):
    line = cli_error("evaluate", run, "--device", "cpu", "--workers", 0, "--by", "eye_colour", "--out", tmp_path / "e")
    assert line.startswith("error: --by eye_colour: unknown field: expected one of") and "sex" in line
    line = cli_error("evaluate", run, "--device", "cpu", "--workers", 0, "--by", "image_type", "--out", tmp_path / "e")
    assert "--by image_type: the samples of" in line and "do not carry image_type" in line
    line = cli_error("evaluate", run, "--device", "cpu", "--workers", 0, "--by", " , ", "--out", tmp_path / "e")
    assert "--by: no field given" in line
    assert not (tmp_path / "e").exists()


def test_the_overall_intervals_are_over_lesions_and_hold_the_point_figures():
    """write_evaluation's macro-F1 and balanced-accuracy intervals: each holds its point figure, a lesion of many
    alike images widens them against the same images counted as lesions of their own, and classes under 10 images
    are flagged in the headline."""
    from trainers.metrics import classification_metrics, headline, lesion_intervals, small_classes

    labels, probs, _, _ = _two_groups(seed=3, n_a=200, n_b=200)
    predicted = probs.argmax(1)
    point = classification_metrics(labels, probs, ["x", "y", "z"])
    rank = np.empty(len(labels), dtype=int)
    rank[np.argsort(predicted == labels, kind="stable")] = np.arange(len(labels))
    alike = [f"L{r // 10}" for r in rank]  # lesions of 10 images that are all right or all wrong together
    wide = lesion_intervals(labels, predicted, alike, 3)
    narrow = lesion_intervals(labels, predicted, [f"I{k}" for k in range(len(labels))], 3)
    for name in ("macro_f1", "balanced_accuracy"):
        low, high = wide[f"{name}_ci95"]
        assert low <= point[name] <= high
        assert high - low > 1.5 * (narrow[f"{name}_ci95"][1] - narrow[f"{name}_ci95"][0])
    assert small_classes(np.array([0, 0, 1] + [2] * 12), ["x", "y", "z", "w"]) == {"x": 2, "y": 1, "w": 0}
    line = headline({**point, **wide, "small_classes": {"df": 3}})
    assert f"[{wide['macro_f1_ci95'][0]:.3f}, {wide['macro_f1_ci95'][1]:.3f}]" in line and "few images: df 3" in line


def test_evaluate_refuses_an_existing_out_and_overwrite_replaces_evaluations_only(run, build, tmp_path):
    out = tmp_path / "eval"
    args = ("evaluate", run, "--device", "cpu", "--workers", 0)
    assert cli(*args, "--out", out).exit_code == 0
    assert "exists already: pass --overwrite" in cli_error(*args, "--out", out)
    (out / "marker.txt").write_text("old")
    assert cli(*args, "--out", out, "--overwrite").exit_code == 0
    assert not (out / "marker.txt").exists() and (out / "metrics.json").is_file()  # the old evaluation replaced
    # never the run, the build, a folder holding them, or a file
    for target in (run, build, run.parent):
        line = cli_error(*args, "--out", target, "--overwrite")
        assert "which this command reads: choose another --out" in line, line
    assert (run / "best.pt").is_file() and (build / "dataset.json").is_file()
    (tmp_path / "a-file").write_text("x")
    assert "is a file" in cli_error(*args, "--out", tmp_path / "a-file", "--overwrite")
    other = tmp_path / "not-an-eval"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert "replaces evaluations only" in cli_error(*args, "--out", other, "--overwrite")
    assert (other / "notes.txt").read_text() == "mine"
