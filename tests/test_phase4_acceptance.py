"""The Phase 4 recipe learns the synthetic classes (a label or pipeline bug would show here).

Measured on the 2-core CPU of the development machine, one torch thread, from random weights: a synthetic build of
1750 images, 250 per class (the test split ~37 per class), drawn at half HAM10000's size (tests/helpers.SOURCE_SIZE,
300x225) and built without hair removal or CLAHE (tests/test_phase5_acceptance.py and the build tests cover those;
this one is about the recipe: CutMix/MixUp, EMA, EfficientNet-B0); 32 px crops, batch 32, learning rate 3e-3, 5
epochs with a quarter epoch of warmup (the recipe's is one epoch).

- Test macro-F1 0.970 / 0.936 / 0.906 / 0.962 / 0.966 (seeds 1-5; 2026-12-05, trainers/convgrad.py with the 1x1
  convolutions' gradients as matrix products). On the 2-core VM the set takes ~11 s to draw and build, the run
  ~37-40 s. With 300 per class: 0.945 / 0.967 / 0.907 / 0.997 / 0.923, ~13 s and ~42-45 s; with 200 per class:
  0.717 / 0.687 / - / 0.806 / 0.934 (too few steps). At learning rate 2e-3 (300 per class): 0.882 / 0.780 / 0.951
  (with the tap-by-tap gradients alone, whose rounding differs: 0.949 / 0.882 / 0.961); at 4e-3: 0.897 / 0.635 /
  0.929; 4 epochs at 3e-3: 0.914 / 0.939 / 0.818. Phase 4's macro-F1 after a few epochs swings with the seed and
  with the float rounding of the gradients, so the bound is judged on several seeds.
- Before the 1x1 products, at 2e-3, 300 per class: the same set drawn at the full 600x450: 0.965 / 0.935 / 0.958,
  ~30 s to draw and build; at full size with hair removal and CLAHE: 0.843 / 0.968 / 0.922, ~56 s; at half size
  with them (the kernel scaled to 9 px, as tests/test_phase5_acceptance.py does): 0.974 / 0.773 (seeds 1-2, before
  convgrad.py); drawn at a quarter size (150x112): 0.694 (seed 1).
- Fewer epochs are not enough: 4 epochs (full size, no preprocessing) gave 0.897 / 0.819 / 0.913; 200 images per
  class for 6 epochs (full size, preprocessed): 0.918 / 0.843 / 0.835. Batch 16 for 3 epochs (as many steps, less
  work a step): 0.789 (seed 1), and hardly quicker.
- CutMix/MixUp and EMA make phase4 slow to leave the all-one-class start (the first epoch ends there whatever the
  warmup). On a set with the real proportions its test macro-F1 swung from 0.60 to 0.99 with the seed, because only
  3-4 df and vasc images were in the test split: so phase4 is judged on classes large enough to measure.
"""

import csv
import json
from pathlib import Path

from hamdata.inputs.classes import CLASSES
from helpers import build_once
from trainers import run_recipe

FAST = {"weights": "none", "batch_size": 32, "lr": 3e-3, "workers": 0, "device": "cpu", "seed": 1}


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


def test_phase4_reaches_macro_f1_08_on_a_balanced_synthetic_set(tmp_path_factory, tmp_path):
    table = balanced_metadata(tmp_path_factory.mktemp("tables") / "balanced-250.csv", 250)
    build = build_once(tmp_path_factory, 0, 64, metadata=table, hair_removal=False, clahe=False)
    summary = run_recipe("phase4", {**FAST, "shards": str(build), "out": str(tmp_path / "phase4"), "image_size": 32,
                                    "epochs": 5, "warmup_epochs": 0.25}, echo=lambda *a: None)
    metrics = json.loads((tmp_path / "phase4" / "metrics.json").read_text())
    assert summary["test"]["macro_f1"] == metrics["macro_f1"]
    assert metrics["macro_f1"] >= 0.8, (metrics["macro_f1"], [h["val_macro_f1"] for h in summary["history"]])
    assert metrics["samples"] == sum(json.loads((build / "dataset.json").read_text())["counts"]["test"].values())
