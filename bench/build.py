"""Benchmark `build-shards`: throughput per stage, parallel speed-up, peak memory.

    python bench/build.py                       # full-size synthetic set (10,015 images)
    python bench/build.py --data data/HAM10000  # any HAM10000 copy

Without --data it draws a full-size synthetic HAM10000 (ids, lesions and labels
of the real metadata table when ../shared has it) into bench/out/synth-full, once.
For each worker count it builds the shards in this process and samples the
resident memory of the whole process tree (this process and its workers) every
50 ms. It then checks that every worker count gave the same sha256 for every
tar and for manifest.csv, and that no lesion is in two splits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hamdata.build import BuildConfig, build_shards  # noqa: E402
from hamdata.store.manifest import read_card, read_manifest  # noqa: E402
from hamdata.image.preprocess import PreprocessConfig, parse_size  # noqa: E402
from hamdata.split.stratified import split_fractions  # noqa: E402
from hamdata.synth.ham import make_synthetic  # noqa: E402

REAL_METADATA = ROOT.parent / "shared" / "data" / "ham10000" / "HAM10000_metadata.csv"
STAGES = ("read", "decode", "hair_removal", "clahe", "resize", "encode", "write")


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            with open(f"/proc/{current}/statm") as handle:
                total += int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            pass
    return total


class PeakMemory:
    """Samples tree_rss(own pid) in a thread; .peak holds the maximum in bytes."""

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(os.getpid()))
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def ensure_data(args) -> Path:
    if args.data:
        return Path(args.data)
    data = Path(args.work) / "synth-full"
    if not (data / "HAM10000_metadata.csv").exists():
        metadata = REAL_METADATA if REAL_METADATA.exists() else None
        print(f"drawing a full-size synthetic HAM10000 into {data} ...", flush=True)
        make_synthetic(data, n_images=10015, seed=0, metadata=metadata, workers=os.cpu_count())
    return data


def digest(folder: Path) -> dict:
    card = read_card(folder)
    shards = {s["path"]: s["sha256"] for s in card["shards"]}
    shards["manifest.csv"] = hashlib.sha256((folder / "manifest.csv").read_bytes()).hexdigest()
    return shards


def run(data: Path, out: Path, workers: int, size: str) -> dict:
    cfg = BuildConfig(data=str(data), out=str(out), preprocess=PreprocessConfig(size=parse_size(size)), allow_missing=True)
    with PeakMemory() as memory:
        summary = build_shards(cfg, workers=workers, overwrite=True)
    n = summary["samples"]
    stage = summary["stage_seconds"]
    busy = sum(stage.values())
    return {"workers": workers, "images": n, "wall_s": round(summary["seconds"], 2),
            "images_per_s": round(n / summary["seconds"], 1),
            "stage_ms_per_image": {k: round(1000 * stage.get(k, 0.0) / n, 2) for k in STAGES},
            "stage_images_per_s": {k: round(n / stage[k], 1) for k in STAGES if stage.get(k)},
            "sum_of_stages_ms": round(1000 * busy / n, 2),
            "efficiency": round(busy / workers / summary["seconds"], 3),
            "peak_rss_mib": round(memory.peak / 2 ** 20, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="HAM10000 copy (default: a full-size synthetic set)")
    parser.add_argument("--work", default=str(ROOT / "bench" / "out"), help="scratch folder")
    parser.add_argument("--workers-list", default="1,2", help="worker counts to time, comma separated")
    parser.add_argument("--size", default="256")
    args = parser.parse_args()
    data = ensure_data(args)
    results, digests = [], {}
    for workers in [int(w) for w in args.workers_list.split(",")]:
        out = Path(args.work) / f"shards-w{workers}"
        print(f"\nbuild-shards with {workers} workers ...", flush=True)
        results.append(run(data, out, workers, args.size))
        digests[workers] = digest(out)
        print(json.dumps(results[-1], indent=1), flush=True)
    manifest = read_manifest(out).query("source == 'original'")
    lesions_across = int((manifest.groupby("lesion_id")["split"].nunique() > 1).sum())
    fractions = split_fractions(manifest)
    worst = float((fractions - [0.70, 0.15, 0.15]).abs().max().max())
    identical = all(d == digests[next(iter(digests))] for d in digests.values())
    base = results[0]
    print("\n| workers | images/s | wall s | efficiency vs sum of stages | peak memory (tree) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['workers']} | {r['images_per_s']} | {r['wall_s']} | {r['efficiency']:.0%} | {r['peak_rss_mib']} MiB |")
    print("\nper-image stage cost, ms: " + ", ".join(f"{k} {v}" for k, v in base["stage_ms_per_image"].items()))
    if len(results) > 1:
        print(f"speed-up {results[-1]['workers']} vs {base['workers']} workers: {results[-1]['images_per_s'] / base['images_per_s']:.2f}x")
    print(f"same sha256 for every tar and manifest.csv across worker counts: {identical}")
    print(f"lesions in more than one split: {lesions_across}; worst per-class split fraction error: {worst * 100:.2f} points")
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    (Path(args.work) / "build.json").write_text(json.dumps({"results": results, "identical": identical,
                                                            "lesions_across_splits": lesions_across}, indent=1))
    return 0 if identical and lesions_across == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
