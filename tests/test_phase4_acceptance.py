"""The Phase 4 and Phase 5 recipes learn the synthetic classes (a label or pipeline bug would show here).

Measured on the 2-core CPU of the development machine, one torch thread, from
random weights, on synthetic builds at 64 px:

- phase5, 1000 images, imbalanced as HAM10000 is but with every class at least 100
  images (as the demo's set): the test split holds 57 nv and 15-16 of each other class.
  64 px crops, 6 epochs: test macro-F1 0.982 / 0.916 (seeds 1-2), ~48 s a run on the
  2-core VM of 2026-12-05 (building the set ~28 s); 5 epochs gave 0.868 / 0.857 / 0.981
  (seeds 1-3; 0.994 / 0.981 / 0.955 before a small set's shuffle buffer was cut to one
  epoch of samples, trainers/data.py SHUFFLE_BUFFER). With the real proportions the
  test split held only 1-2 df and vasc images, so one miss moved macro-F1 by ~0.07:
  0.941 / 0.750 / 0.853 (seeds 1-3, AdamW fused; 0.926 / 0.946 / 0.928 with the
  per-tensor AdamW before), a bound that a platform's rounding could cross.
- phase4, 2100 images, 300 per class (test ~45 per class): 32 px crops, batch 32,
  5 epochs with a quarter epoch of warmup (the recipe's is one epoch): test macro-F1
  0.934 / 0.920 / 0.974 (seeds 1-3; AdamW fused on the CPU). Measured on the 2-core VM of
  2026-12-05, where an epoch takes ~21 s: the set's pictures ~23 s, the build ~37 s, the run
  ~110 s. Fewer epochs are not enough: 4 epochs gave 0.860 / 0.728 (seeds 1-2); 6 epochs
  with the recipe's warmup gave 0.990 (seed 1) but cost 30 s more.
  CutMix/MixUp and EMA make phase4 slow to leave the all-one-class start (the first
  epoch ends there whatever the warmup). On the real-proportion set its test macro-F1
  swung from 0.60 to 0.99 with the seed, because only 3-4 df and vasc images were in the
  test split. So phase4 is judged on classes large enough to measure. From pictures drawn
  at half size, or built without hair removal, it scored lower (4 epochs: 0.77-0.79).
"""

import csv
import json
from pathlib import Path

import pytest

from hamdata.inputs.classes import CLASSES
from helpers import build_once
from trainers import run_recipe

FAST = {"weights": "none", "batch_size": 32, "lr": 2e-3, "workers": 0, "device": "cpu", "seed": 1}


def balanced_metadata(path: Path, per_class: int) -> Path:
    """A HAM10000-style table with ``per_class`` images of each class, two images per lesion."""
    rows = [{"lesion_id": f"HAM_{9_000_000 + k // 2:07d}", "image_id": f"ISIC_{9_000_000 + k:07d}", "dx": dx,
             "dx_type": "histo", "age": 50, "sex": "male", "localization": "back"}
            for k, dx in enumerate(dx for dx in CLASSES for _ in range(per_class))]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def build_of(data: str, factory: pytest.TempPathFactory) -> Path:
    """The synthetic build named ``data``, made once per test run. Its pictures are HAM10000's full 600x450 (the
    figures above were measured so): from half-size pictures the same runs scored lower (phase5 seed 1: 0.826,
    phase4 seed 1: 0.848), too near the bound to judge the recipes by."""
    if data == "imbalanced":
        return build_once(factory, 1000, 64, image_size=(600, 450), min_per_class=100)
    table = balanced_metadata(factory.mktemp("tables") / "balanced-300.csv", 300)
    return build_once(factory, 0, 64, metadata=table, image_size=(600, 450))


@pytest.mark.parametrize("recipe, data, image_size, epochs, warmup", [("phase5", "imbalanced", 64, 6, None),
                                                                      ("phase4", "balanced", 32, 5, 0.25)])
def test_recipe_reaches_macro_f1_08_on_synthetic_data(tmp_path_factory, tmp_path, recipe, data, image_size, epochs,
                                                      warmup):
    build = build_of(data, tmp_path_factory)
    options = {} if warmup is None else {"warmup_epochs": warmup}
    summary = run_recipe(recipe, {**FAST, "shards": str(build), "out": str(tmp_path / recipe), "image_size": image_size,
                                  "epochs": epochs, **options}, echo=lambda *a: None)
    metrics = json.loads((tmp_path / recipe / "metrics.json").read_text())
    assert summary["test"]["macro_f1"] == metrics["macro_f1"]
    assert metrics["macro_f1"] >= 0.8, (recipe, metrics["macro_f1"], [h["val_macro_f1"] for h in summary["history"]])
    assert metrics["samples"] == sum(json.loads((build / "dataset.json").read_text())["counts"]["test"].values())
