"""report: one self-contained HTML page of a build, a balanced set or a training run.

The build is the demo's (synthetic, 100 images); the balanced set is made from
it; the training run is a hand-made folder with the files the trainers write.
Pages are checked as text (sections, embedded images, nothing external) and,
where Debian's chromium is installed, opened in headless Chromium: every image
must load and the screenshot must not be blank.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cli import main
from hamdata.inputs.classes import CLASSES
from hamdata.errors import HamdataError
from hamdata.report import render_report, write_report
from hamdata.verify import verify_tree
from helpers import IMG_SRC, assert_looks_right, open_in_chromium



@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    from demo import run_demo

    return run_demo(tmp_path_factory.mktemp("report") / "demo", n_images=100, workers=1, seed=7, target=20, epochs=0,
                    echo=lambda *a: None)  # its "report": the build's page, written by its last step


@pytest.fixture(scope="module")
def balanced(demo) -> Path:
    from hamdata.balance import BalanceConfig, balance_build

    out = Path(balance_build(demo["shards"], BalanceConfig(target=8, seed=3), workers=1, progress=False)["out"])
    write_report(out)
    return out


def _png(path: Path, width: int = 600, height: int = 300) -> None:
    figure = Figure(figsize=(width / 100, height / 100))
    FigureCanvasAgg(figure)
    figure.add_subplot().imshow(np.random.default_rng(0).random((10, 20)))
    figure.savefig(path, dpi=100)


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """What a finished training run writes (trainers/run.py), with made-up numbers."""
    run = tmp_path_factory.mktemp("run") / "phase4-test"
    (run / "gradcam").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({
        "arch": "resnet18", "device": "cpu", "world_size": 1, "versions": {"torch": "x"},
        "config": {"recipe": "phase4", "epochs": 3, "batch_size": 8, "lr": 0.001, "seed": 1},
        "data": {"build": "shards", "train_set": "balanced-8", "image_size": 64}}))
    lines = [{"epoch": e, "train_loss": 2.0 / e, "lr": 1e-3 / e, "val_macro_f1": 0.2 * e, "val_balanced_accuracy": 0.25 * e,
              "seconds": 1.0} for e in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    per_class = {dx: {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "support": 4, "auc": None} for dx in CLASSES}
    (run / "metrics.json").write_text(json.dumps({"split": "test", "samples": 28, "accuracy": 0.75, "balanced_accuracy": 0.5,
                                                  "macro_f1": 0.4321, "macro_auc": None, "per_class": per_class}))
    (run / "classification_report.txt").write_text("              precision    recall  f1-score   support\n<b>akiec</b>\n")
    (run / "predictions_isic2018.csv").write_text("image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\nSYN_1,0.1,0.3,0.1,0.1,0.2,0.1,0.1\n")
    _png(run / "curves.png")
    _png(run / "confusion_matrix.png", 1200, 520)
    _png(run / "gradcam" / "akiec_correct_SYN_0000001.png")
    _png(run / "gradcam" / "mel_wrong_SYN_0000002.png")
    (run / "best.pt").write_bytes(b"not a real checkpoint")
    write_report(run)
    return run


def image_sources(page: str) -> list[str]:
    return IMG_SRC.findall(page)


def assert_self_contained(page: str) -> None:
    """Every image a data: URI; no script, stylesheet, font or address outside the file."""
    sources = image_sources(page)
    assert sources and all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in sources)
    lowered = page.lower()
    for forbidden in ("<script", "<link", "<iframe", "<object", "<embed", "@import", "@font-face", "url(", "http://", "https://"):
        assert forbidden not in lowered, forbidden
    assert not re.search(r"\b(?:src|href)=\"(?!data:|#)", page), "only data: URIs and in-page anchors"
    assert 'loading="lazy"' not in page


def test_build_report(demo):
    path = demo["report"]
    assert path == demo["shards"] / "report.html"
    page = path.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert path.stat().st_size < 5_000_000
    for title in ("Dataset card", "Class distribution", "Samples before and after preprocessing", "Shards"):
        assert f">{title}<" in page
    for dx in CLASSES:
        assert f"<h3>{dx}: " in page
    cards = page.count('<div class="card">')
    assert cards >= len(CLASSES)
    # each sample: raw, hair removed, stored; the raw file reproduces the stored bytes
    assert page.count('alt="raw ') == page.count('alt="hair removed ') == page.count('alt="stored ') == cards
    assert page.count("raw file reproduces the stored image") == cards
    assert page.count("data:image/png") >= 5  # the distribution plots
    assert verify_tree(demo["shards"], progress=False) == []  # report.html is an allowed extra file


def test_build_report_is_deterministic(demo):
    assert render_report(demo["shards"]) == demo["report"].read_text(encoding="utf-8")
    assert render_report(demo["shards"], seed=1) != demo["report"].read_text(encoding="utf-8")  # seed 0


def test_build_report_without_raw_data(demo, tmp_path):
    moved = tmp_path / "shards"
    shutil.copytree(demo["shards"], moved)
    card = json.loads((moved / "dataset.json").read_text())
    card["input"]["root"] = str(tmp_path / "deleted-data")
    for entry in card.get("inputs", []):  # format 2: every input's root
        entry["root"] = str(tmp_path / "deleted-data")
    (moved / "dataset.json").write_text(json.dumps(card))
    page = write_report(moved).read_text(encoding="utf-8")
    assert f"the raw data is no longer at {tmp_path / 'deleted-data'}: only the preprocessed images are shown" in page
    assert 'alt="raw ' not in page and 'alt="hair removed ' not in page
    assert page.count('alt="stored ') == page.count('<div class="card">') >= len(CLASSES)


def test_balanced_report(demo, balanced):
    page = (balanced / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert ">Augmented copies beside their parents<" in page and ">Plan<" in page
    copies = page.count('alt="copy ')
    assert copies > 0 and page.count('alt="parent ') == copies
    assert page.count("replay reproduces this copy") == copies
    assert "recipe: policy " in page and "Original and augmented samples" in page
    assert verify_tree(demo["shards"], progress=False) == []  # balanced-N/report.html is allowed too


def test_run_report(run_folder):
    page = (run_folder / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    for title in ("Metrics", "Training curves", "Confusion matrix", "Grad-CAM gallery", "Run", "Files"):
        assert f">{title}<" in page
    assert "0.4321" in page and "phase4" in page and "balanced-8" in page
    assert "true akiec, correct: SYN_0000001" in page and "true mel, wrong: SYN_0000002" in page
    assert "&lt;b&gt;akiec&lt;/b&gt;" in page  # file text is escaped, never markup
    assert "best.pt" in page and "predictions_isic2018.csv (1 images)" in page
    assert len(image_sources(page)) == 4  # curves drawn from metrics.jsonl, confusion matrix, 2 Grad-CAM


def test_evaluation_folder_and_partial_history(tmp_path):
    folder = tmp_path / "eval"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"split": "val", "macro_f1": 0.5}))
    page = write_report(folder).read_text(encoding="utf-8")
    assert "no training history (metrics.jsonl)" in page and "no confusion_matrix.png" in page
    assert ">Grad-CAM gallery<" not in page and ">Run<" not in page  # nothing to show: no section at all
    (folder / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0, "lr": 0.1}\n{"epoch": 2, "train_lo')
    page = write_report(folder).read_text(encoding="utf-8")
    assert "metrics.jsonl: 1 lines are not JSON objects" in page and 'alt="training curves"' in page


def test_out_option_and_cli(demo, run_folder, tmp_path):
    target = write_report(run_folder, tmp_path / "nested" / "run.html")
    assert target == tmp_path / "nested" / "run.html" and target.is_file()
    assert write_report(run_folder, tmp_path / "nested") == tmp_path / "nested" / "report.html"
    result = CliRunner().invoke(main, ["report", str(demo["shards"]), "--out", str(tmp_path / "cli.html")])
    assert result.exit_code == 0 and result.output.strip() == f"report: {tmp_path / 'cli.html'}"
    assert not list(tmp_path.glob(".*.tmp-*"))


@pytest.mark.parametrize("setup, message", [
    (lambda d: None, "neither a build or balanced set (no dataset.json) nor a training run"),
    (lambda d: d.rmdir(), "no such folder"),
])
def test_not_a_report_folder(tmp_path, setup, message):
    folder = tmp_path / "something"
    folder.mkdir()
    setup(folder)
    with pytest.raises(HamdataError, match=re.escape(message)):
        write_report(folder)
    result = CliRunner().invoke(main, ["report", str(folder)])
    assert result.exit_code == 2 and result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1


# ------------------------------------------------------------------ in a real browser

def test_demo_report_in_chromium(demo, tmp_path):
    check, pixels = open_in_chromium(demo["report"], tmp_path)
    assert_looks_right(demo["report"], check, pixels)


def test_balanced_and_run_reports_in_chromium(balanced, run_folder, tmp_path):
    for report in (balanced / "report.html", run_folder / "report.html"):
        check, pixels = open_in_chromium(report, tmp_path)
        assert_looks_right(report, check, pixels)
