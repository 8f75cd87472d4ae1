"""The demo end to end, small: every step runs and leaves what it promises, and its report pages (a build of one
input, a run, an ensemble) show no empty section in headless Chromium."""

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from cli import main
from helpers import BROWSERS, assert_looks_right, open_in_chromium


def test_demo_runs_every_step_and_evaluates_the_run(tmp_path):
    work = tmp_path / "demo"
    result = CliRunner().invoke(main, ["demo", "--out", str(work), "--images", "120", "--workers", "1",
                                       "--target", "40", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    for step in ("synth", "build-shards", "balance --target 40", "stats", "verify", "train phase5", "train phase6",
                 "ensemble phase5 + phase6", "report"):
        assert step in result.output, step
    shards, run = work / "shards", work / "runs" / "phase5"
    assert (shards / "dataset.json").is_file() and (shards / "balanced-40" / "dataset.json").is_file()
    assert (shards / "report.html").is_file() and (run / "report.html").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    manifest = (shards / "manifest.csv").read_text().splitlines()
    assert metrics["split"] == "test" and metrics["samples"] == sum(",test," in row for row in manifest)
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # one line per epoch
    assert len((run / "predictions_isic2018.csv").read_text().splitlines()) == metrics["samples"] + 1
    run6, ensemble = work / "runs" / "phase6", work / "runs" / "ensemble"
    config6 = json.loads((run6 / "config.json").read_text())
    assert config6["config"]["metadata"] is True and config6["config"]["loss"] == "cb_focal"
    assert set(config6["data"]["metadata"]) == {"age_mean", "age_std", "sexes", "sites", "site_field"}
    assert json.loads((run6 / "metrics.json").read_text())["samples"] == metrics["samples"]
    record = json.loads((ensemble / "ensemble.json").read_text())
    assert [Path(m["checkpoint"]).parent.name for m in record["members"]] == ["phase5", "phase6"]
    assert record["by_lesion"] and record["tta"]
    assert json.loads((ensemble / "metrics.json").read_text())["samples"] == metrics["samples"]
    assert (ensemble / "report.html").is_file() and (run6 / "report.html").is_file()
    if any(shutil.which(name) for name in BROWSERS):  # where there is no browser, test_report says so once
        for page in (shards / "report.html", run / "report.html", run6 / "report.html", ensemble / "report.html"):
            assert_looks_right(page, *open_in_chromium(page, tmp_path, screenshot=False))
    again = CliRunner().invoke(main, ["demo", "--out", str(work), "--images", "40", "--workers", "1",
                                      "--target", "20", "--epochs", "0"])
    assert again.exit_code == 0, again.output  # a demo folder may be reused
    assert len((shards / "manifest.csv").read_text().splitlines()) == 41


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a hamdata demo folder" in result.output
    assert (tmp_path / "mine.txt").read_text() == "precious"
