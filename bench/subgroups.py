"""Figures per subgroup on a build of two collections, the second made harder: does `evaluate --by collection`
show the gap, and do its figures agree with the predictions recomputed by hand?

Synthetic HAM10000 (--ham images) and synthetic ISIC 2019 (--isic images) whose pictures are then blurred
(Gaussian, sigma --blur px at 600 px: 40, about 4 px at the 64 px the network sees), halved in contrast and
tinted (a random colour cast of 0.6-1.4 per channel and image), built together at 64 px with a fresh split, one
Phase 5 run (MobileNetV3-Large, --weights none, --epochs), then

    evaluate RUN --by collection

The script recomputes every group's accuracy and balanced accuracy (over the classes with 2 images or more) from
predictions_isic2018.csv and the build's manifest, and checks each bootstrap interval holds its point figure.

    python bench/subgroups.py --work /tmp/by [--ham 1500] [--isic 1500] [--epochs 8]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def harden(folder: Path, blur: float, seed: int = 0) -> int:
    """Blur and tint every JPEG under `folder` in place; returns how many."""
    import cv2

    rng = np.random.default_rng(seed)
    done = 0
    for path in sorted(folder.rglob("*.jpg")):
        bgr = cv2.imread(str(path))
        sigma = blur * bgr.shape[1] / 600
        bgr = cv2.GaussianBlur(bgr, (0, 0), sigma)
        cast = rng.uniform(0.6, 1.4, 3)  # a strong colour cast of its own per image: colour tells less
        pixels = bgr.astype(np.float32)
        pixels = (pixels - pixels.mean()) * 0.5 + pixels.mean()  # half the contrast
        bgr = np.clip(pixels * cast, 0, 255).astype(np.uint8)
        cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        done += 1
    return done


def run(cmd: list) -> str:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, cmd)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    print(f"{cmd[0]}: {time.perf_counter() - started:.0f} s", flush=True)
    return done.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--ham", type=int, default=1500)
    ap.add_argument("--isic", type=int, default=1500)
    ap.add_argument("--blur", type=float, default=40.0)
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    work = Path(args.work)
    ham, isic, build, out = work / "ham", work / "isic", work / "build", work / "run"
    if not isic.is_dir():
        from hamdata.synth.ham import make_synthetic
        from hamdata.synth.isic import write_isic2019

        make_synthetic(ham, n_images=args.ham, seed=1, workers=2, progress=False)
        write_isic2019(isic, images=args.isic, seed=2, workers=2, progress=False)
        print(f"blurred and tinted {harden(isic, args.blur)} ISIC images", flush=True)
    if not (build / "dataset.json").exists():
        run(["build-shards", "--data", ham, "--data", isic, "--out", build, "--size", 64, "--fresh-split",
             "--workers", 2, "--no-duplicate-search"])
    if not (out / "best.pt").exists():
        print(run(["train", "phase5", "--shards", build, "--out", out, "--weights", "none", "--image-size", 64,
                   "--epochs", args.epochs, "--device", "cpu", "--workers", 2]).strip().splitlines()[-1])
    shutil.rmtree(work / "eval", ignore_errors=True)
    text = run(["evaluate", out, "--by", "collection,age", "--device", "cpu", "--workers", 2, "--out", work / "eval"])
    print(text)

    from hamdata.store.manifest import read_manifest
    from trainers.metrics import read_isic_csv

    metrics = json.loads((work / "eval" / "metrics.json").read_text())
    ids, probs = read_isic_csv(work / "eval" / "predictions_isic2018.csv")
    classes = json.loads((build / "dataset.json").read_text())["classes"]
    manifest = read_manifest(build).set_index("image_id")
    labels = np.array([classes.index(manifest.at[i, "dx"]) for i in ids])
    collection = np.array([manifest.at[i, "collection"] for i in ids])
    worst = 0.0
    with open(work / "eval" / "by_collection.csv", newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            here = collection == row["group"]
            y, yhat = labels[here], probs[here].argmax(1)
            enough = [c for c in range(len(classes)) if (y == c).sum() >= 2]
            ba = np.mean([np.mean(yhat[y == c] == c) for c in enough])
            worst = max(worst, abs(float(row["balanced_accuracy"]) - ba), abs(float(row["accuracy"]) - np.mean(y == yhat)))
            low, high = float(row["balanced_accuracy_ci_low"]), float(row["balanced_accuracy_ci_high"])
            print(f"{row['group']}: {row['images']} images, balanced accuracy {float(row['balanced_accuracy']):.3f} "
                  f"[{low:.3f}, {high:.3f}] (by hand {ba:.3f}; interval holds it: {low <= ba <= high})")
    print(f"largest difference from the hand computation: {worst:.2e}")
    print(json.dumps({"overall": {k: metrics[k] for k in ("macro_f1", "balanced_accuracy", "accuracy")},
                      "max_abs_difference": worst}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
