"""The Phase 5 recipe learns the synthetic classes of an imbalanced set (a label or pipeline bug would show here).

Measured on the 2-core CPU of the development machine, one torch thread, from random weights: a synthetic build of
1000 images, imbalanced as HAM10000 is but with every class at least 100 images (as the demo's set), so that the test
split holds 57 nv and 15-16 of each other class; 64 px crops, batch 32, 5 epochs.

- Pictures drawn at half HAM10000's size (tests/helpers.SOURCE_SIZE, 300x225) and built with the hair-removal kernel
  at half its size too (9 px instead of 17, as the pictures' hairs and structures are half as wide): test macro-F1
  0.991 / 0.887 / 0.888 after 5 epochs (seeds 1-3; 2026-12-05, the 2-core VM, trainers/convgrad.py with the 1x1
  convolutions' gradients as matrix products), ~23-26 s a run; the set ~9 s to draw and build. With the tap-by-tap
  gradients alone: 0.934 / 0.976 / 0.985 after 5 epochs, 0.982 / 0.985 / 0.990 after 6 (the warm restarts are per
  epoch, so the first 5 epochs of a 6-epoch run are the 5-epoch run), ~28 s a run of 5. Before convgrad.py:
  0.982 / 0.928 / 0.908 after 6 epochs, ~45 s a run.
- Full-size pictures (600x450, kernel 17), as measured before: 0.982 / 0.916 (seeds 1-2; 5 epochs: 0.868 / 0.857 /
  0.981), the set ~28 s. Half-size pictures with the full-size kernel scored lower (seed 1: 0.826): a 17 px
  black-hat at half size takes the classes' dots and streaks for hairs.
- With the real proportions the test split held only 1-2 df and vasc images, so one miss moved macro-F1 by ~0.07:
  0.941 / 0.750 / 0.853 (seeds 1-3), a bound that a platform's rounding could cross.
"""

import json

from helpers import build_once
from trainers import run_recipe

FAST = {"weights": "none", "batch_size": 32, "lr": 2e-3, "workers": 0, "device": "cpu", "seed": 1}


def test_phase5_reaches_macro_f1_08_on_an_imbalanced_synthetic_set(tmp_path_factory, tmp_path):
    build = build_once(tmp_path_factory, 1000, 64, min_per_class=100, hair_kernel=9)
    summary = run_recipe("phase5", {**FAST, "shards": str(build), "out": str(tmp_path / "phase5"), "image_size": 64,
                                    "epochs": 5}, echo=lambda *a: None)
    metrics = json.loads((tmp_path / "phase5" / "metrics.json").read_text())
    assert summary["test"]["macro_f1"] == metrics["macro_f1"]
    assert metrics["macro_f1"] >= 0.8, (metrics["macro_f1"], [h["val_macro_f1"] for h in summary["history"]])
    assert metrics["samples"] == sum(json.loads((build / "dataset.json").read_text())["counts"]["test"].values())
