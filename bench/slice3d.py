"""ISIC 2024 (SLICE-3D) at full size on this machine: 401,059 crops in one HDF5 file, built, balanced, verified.

Writes a SLICE-3D-shaped input (the real 55-column header of train-metadata.csv; 401,059 rows, 393 malignant,
1,042 patients with the real skew, 94.5% of lesion ids empty; smooth synthetic crops of 100-160 px as JPEG
bytes in train-image.hdf5, one scalar dataset per isic_id), then times

    build-shards --data DIR --classes malignancy --workers 2 --size 128      (duplicate search on)
    balance --target 2000 ; verify

and samples the resident memory of the whole process tree (parent and workers, from /proc) every 0.5 s.

    python bench/slice3d.py --work /tmp/slice3d [--images 401059] [--no-duplicate-search]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from hamdata.inputs.metadata_slice3d import NUMERIC_COLUMNS  # noqa: E402

HEADER = ("isic_id,target,patient_id,age_approx,sex,anatom_site_general,clin_size_long_diam_mm,image_type,"
          "tbp_tile_type,tbp_lv_A,tbp_lv_Aext,tbp_lv_B,tbp_lv_Bext,tbp_lv_C,tbp_lv_Cext,tbp_lv_H,tbp_lv_Hext,tbp_lv_L,"
          "tbp_lv_Lext,tbp_lv_areaMM2,tbp_lv_area_perim_ratio,tbp_lv_color_std_mean,tbp_lv_deltaA,tbp_lv_deltaB,"
          "tbp_lv_deltaL,tbp_lv_deltaLB,tbp_lv_deltaLBnorm,tbp_lv_eccentricity,tbp_lv_location,"
          "tbp_lv_location_simple,tbp_lv_minorAxisMM,tbp_lv_nevi_confidence,tbp_lv_norm_border,tbp_lv_norm_color,"
          "tbp_lv_perimeterMM,tbp_lv_radial_color_std_max,tbp_lv_stdL,tbp_lv_stdLExt,tbp_lv_symm_2axis,"
          "tbp_lv_symm_2axis_angle,tbp_lv_x,tbp_lv_y,tbp_lv_z,attribution,copyright_license,lesion_id,iddx_full,"
          "iddx_1,iddx_2,iddx_3,iddx_4,iddx_5,mel_mitotic_index,mel_thick_mm,tbp_lv_dnn_lesion_confidence").split(",")
REAL = {"images": 401059, "malignant": 393, "patients": 1042, "no_lesion": 379001 / 401059}
SITES = ("posterior torso", "lower extremity", "anterior torso", "upper extremity", "head/neck", "")


def crop(rng: np.random.Generator) -> bytes:
    """A distinct synthetic crop of about the real size and weight (100-160 px, a few KB): a smooth random
    field over a skin tone, and a darker blob; no two are alike (the duplicate search sees them apart)."""
    from PIL import Image

    w = int(rng.integers(100, 161))
    field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((w, w), Image.BICUBIC)
    tone = rng.integers(150, 230, 3).astype(np.float32)
    yy, xx = np.mgrid[0:w, 0:w]
    c = w / 2 + rng.uniform(-10, 10, 2)
    blob = np.exp(-(((xx - c[0]) ** 2 + (yy - c[1]) ** 2) / (2 * (w * rng.uniform(0.08, 0.25)) ** 2)))[..., None]
    pixels = tone * (1 - 0.5 * blob) * 0.7 + np.asarray(field, np.float32) * 0.3
    buf = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_input(data: Path, n: int, seed: int = 0) -> None:
    import h5py

    rng = np.random.default_rng(seed)
    data.mkdir(parents=True, exist_ok=True)
    patients = max(1, round(REAL["patients"] * n / REAL["images"]))
    weights = rng.pareto(1.2, patients) + 1  # a few patients with thousands of crops, as in the real set
    patient_of = rng.choice(patients, size=n, p=weights / weights.sum())
    malignant = set(rng.choice(n, size=max(1, round(REAL["malignant"] * n / REAL["images"])), replace=False).tolist())
    col = {name: i for i, name in enumerate(HEADER)}
    with open(data / "train-metadata.csv", "w", newline="", encoding="utf-8") as f, \
            h5py.File(data / "train-image.hdf5", "w") as h5:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        for k in range(n):
            image_id = f"ISIC_{1_000_000 + k:07d}"  # never a HAM10000 id (ISIC_0024306 .. ISIC_0034320)
            row = [""] * len(HEADER)
            bad = k in malignant
            row[col["isic_id"]], row[col["target"]] = image_id, "1" if bad else "0"
            row[col["patient_id"]] = f"IP_{patient_of[k]:07d}"
            row[col["age_approx"]] = "" if rng.random() < 0.007 else f"{5 * int(rng.integers(4, 18))}.0"
            row[col["sex"]] = ("male", "female", "")[int(rng.choice(3, p=[0.662, 0.309, 0.029]))]
            row[col["anatom_site_general"]] = SITES[int(rng.integers(0, len(SITES)))]
            row[col["image_type"]], row[col["tbp_tile_type"]] = "TBP tile: close-up", "3D: XP"
            for name in NUMERIC_COLUMNS:
                row[col[name]] = f"{rng.normal(10, 5):.6f}"
            row[col["tbp_lv_location"]] = row[col["tbp_lv_location_simple"]] = "Torso Back"
            row[col["attribution"]], row[col["copyright_license"]] = "ACEMID MIA", "CC-0"
            row[col["lesion_id"]] = f"IL_{k:07d}" if bad or rng.random() > REAL["no_lesion"] else ""
            iddx = ["Malignant", "Malignant melanocytic proliferations (Melanoma)"] if bad else ["Benign"]
            row[col["iddx_full"]] = "::".join(iddx)
            for i, v in enumerate(iddx):
                row[col[f"iddx_{i + 1}"]] = v
            writer.writerow(row)
            h5.create_dataset(image_id, data=np.bytes_(crop(rng)))
            if k % 50000 == 0:
                print(f"  wrote {k} of {n}", flush=True)


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (/proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            continue
    return total


def timed(cmd: list[str]) -> dict:
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, samples = 0, []
    done = threading.Event()

    def watch():
        nonlocal peak
        while not done.is_set():
            rss = tree_rss(proc.pid)
            peak = max(peak, rss)
            samples.append((round(time.perf_counter() - started, 1), rss))
            time.sleep(0.5)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    output = proc.communicate()[0]
    done.set()
    thread.join()
    return {"seconds": round(time.perf_counter() - started, 1), "peak_rss_mib": round(peak / 2 ** 20),
            "rc": proc.returncode, "tail": output[-1500:], "rss_over_time_mib": [(t, round(r / 2 ** 20))
                                                                                   for t, r in samples[::20]]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True)
    ap.add_argument("--images", type=int, default=REAL["images"])
    ap.add_argument("--no-duplicate-search", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    work = Path(args.work)
    data = work / f"isic2024-{args.images}"
    if not (data / "train-image.hdf5").is_file():
        started = time.perf_counter()
        write_input(data, args.images)
        print(f"input written in {time.perf_counter() - started:.0f} s", flush=True)
    out = work / "build"
    subprocess.run(["rm", "-rf", str(out)])
    cli = [sys.executable, str(ROOT / "cli.py")]
    build = [*cli, "build-shards", "--data", str(data), "--out", str(out), "--classes", "malignancy", "--workers",
             str(args.workers), "--size", "128"] + (["--no-duplicate-search"] if args.no_duplicate_search else [])
    results = {"images": args.images, "build": timed(build)}
    print(json.dumps(results["build"], indent=1), flush=True)
    if results["build"]["rc"] == 0:
        card = json.loads((out / "dataset.json").read_text())
        results["samples"] = sum(s["samples"] for s in card["shards"])
        results["counts"] = card["counts"]
        results["balance"] = timed([*cli, "balance", "--shards", str(out), "--target", "2000", "--workers",
                                     str(args.workers)])
        results["verify"] = timed([*cli, "verify", str(out)])
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps({k: (v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items() if kk != "tail"})
                      for k, v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
