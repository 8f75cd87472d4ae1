"""ISIC 2020 at full size: the real training table and duplicate list, honoured by a build.

Takes the published ``ISIC_2020_Training_GroundTruth_v2.csv`` (or v1) and ``ISIC_2020_Training_Duplicates.csv``
(not shipped: download them from the ISIC 2020 challenge page), draws a tiny distinct JPEG for each of its
33,126 images in ``train/``, builds ``--classes malignancy`` without the search by content (so that only the
list decides), and checks every listed pair: the second image dropped (or both kept in one split with
--keep-duplicates), no pair across splits, and class counts equal to the table's.

    python bench/isic2020_list.py --truth ISIC_2020_Training_GroundTruth_v2.csv \
        --duplicates ISIC_2020_Training_Duplicates.csv --work /tmp/isic2020 [--keep-duplicates]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def tiny_jpeg(k: int) -> bytes:
    pixels = np.random.default_rng(k).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", required=True)
    ap.add_argument("--duplicates", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--keep-duplicates", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    data = work / "isic2020"
    if not (data / "train").is_dir():
        (data / "train").mkdir(parents=True)
        truth = pd.read_csv(args.truth, dtype=str, keep_default_na=False)
        for k, name in enumerate(truth["image_name"]):
            (data / "train" / f"{name}.jpg").write_bytes(tiny_jpeg(k))
        v2 = "lesion_id" in truth.columns
        shutil.copy(args.truth, data / f"ISIC_2020_Training_GroundTruth{'_v2' if v2 else ''}.csv")
        shutil.copy(args.duplicates, data / "ISIC_2020_Training_Duplicates.csv")
    out = work / ("build-keep" if args.keep_duplicates else "build")
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    cmd = [sys.executable, str(ROOT / "cli.py"), "build-shards", "--data", str(data), "--out", str(out),
           "--classes", "malignancy", "--no-duplicate-search", "--size", "16", "--no-hair-removal", "--no-clahe"]
    if args.keep_duplicates:
        cmd.append("--keep-duplicates")
    done = subprocess.run(cmd, capture_output=True, text=True)
    print(done.stdout[-3000:], done.stderr[-2000:] if done.returncode else "")
    if done.returncode:
        return done.returncode
    seconds = time.perf_counter() - started
    manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    split = dict(zip(manifest["image_id"], manifest["split"]))
    pairs = pd.read_csv(args.duplicates, dtype=str)
    card = json.loads((out / "dataset.json").read_text())
    across = [(a, b) for a, b in zip(pairs["image_name_1"], pairs["image_name_2"])
              if a in split and b in split and split[a] != split[b]]
    both = sum(a in split and b in split for a, b in zip(pairs["image_name_1"], pairs["image_name_2"]))
    seconds_kept = sum(b in split for b in pairs["image_name_2"])
    listed = [d for d in card["duplicates"] if d["evidence"]["method"] == "ISIC 2020 duplicate list"]
    truth = pd.read_csv(args.truth, dtype=str, keep_default_na=False)
    expected = truth[~truth["image_name"].isin(set(pairs["image_name_2"]) if not args.keep_duplicates else set())]
    counts = {c: sum(n for part in card["counts"].values() for d, n in part.items() if d == c)
              for c in ("benign", "malignant")}
    want = {"benign": int((expected["target"] == "0").sum()), "malignant": int((expected["target"] == "1").sum())}
    verify = subprocess.run([sys.executable, str(ROOT / "cli.py"), "verify", str(out)], capture_output=True, text=True)
    print(json.dumps({"rows": len(truth), "samples": len(manifest), "pairs": len(pairs), "listed_records": len(listed),
                      "pairs_with_both_built": both, "second_images_built": seconds_kept,
                      "pairs_across_splits": len(across), "counts": counts, "table_counts": want,
                      "verify": verify.returncode, "seconds": round(seconds, 1)}, indent=1))
    ok = not across and counts == want and verify.returncode == 0 and len(listed) == len(pairs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
