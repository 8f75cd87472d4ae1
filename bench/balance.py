"""Benchmark `balance --target N` with several worker counts on one build.

    python bench/balance.py                       # synth 10,015 images, build them, balance to 2000
    python bench/balance.py --shards shards       # balance an existing build
    python bench/balance.py --workers-list 1,2,4 --target 1000

Prints seconds and samples/s per worker count, and checks that every worker
count wrote the same shards (sha256 from dataset.json). Goal on 2 cores:
--target 2000 of the full-size synthetic set in under 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hamdata.balance import BalanceConfig, balance_build  # noqa: E402
from hamdata.store.manifest import read_card  # noqa: E402

SHARED_METADATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000" / "HAM10000_metadata.csv"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=Path, default=None, help="existing build to balance (default: make one under --work)")
    parser.add_argument("--work", type=Path, default=Path("bench/out/balance"), help="folder for the synthetic data, build and balanced sets")
    parser.add_argument("--images", type=int, default=10015, help="synthetic images when no --shards is given")
    parser.add_argument("--metadata", type=Path, default=SHARED_METADATA if SHARED_METADATA.is_file() else None,
                        help="take ids, lesions and labels from this HAM10000 metadata (default: the shared copy when present)")
    parser.add_argument("--size", default="256", help="image size of the build made when no --shards is given")
    parser.add_argument("--build-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--target", type=int, default=2000, help="samples per class")
    parser.add_argument("--workers-list", default="1,2", help="comma-separated worker counts to time")
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args(argv)


def make_build(args) -> Path:
    """Synthesise and build once; later runs reuse the build under --work."""
    from hamdata.build import BuildConfig, build_shards
    from hamdata.image.preprocess import PreprocessConfig, parse_size
    from hamdata.synth.ham import make_synthetic

    raw, build = args.work / "raw", args.work / "build"
    if (build / "dataset.json").is_file():
        print(f"reusing build {build}")
        return build
    if not (raw / "HAM10000_metadata.csv").is_file():
        t0 = time.perf_counter()
        make_synthetic(raw, n_images=args.images, seed=args.seed, metadata=str(args.metadata) if args.metadata else None, workers=args.build_workers, overwrite=True)
        print(f"synth: {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    cfg = BuildConfig(data=str(raw), out=str(build), preprocess=PreprocessConfig(size=parse_size(args.size)))
    summary = build_shards(cfg, workers=args.build_workers, overwrite=True)
    print(f"build: {summary['samples']} samples in {time.perf_counter() - t0:.1f} s")
    return build


def main(argv=None) -> int:
    args = parse_args(argv)
    build = args.shards if args.shards is not None else make_build(args)
    train = read_card(build)["counts"]["train"]
    print(f"build {build}: train {sum(train.values())} ({', '.join(f'{dx} {n}' for dx, n in train.items())})")
    cfg = BalanceConfig(target=args.target, seed=args.seed)
    results, hashes = [], {}
    for workers in [int(w) for w in args.workers_list.split(",")]:
        out = args.work / "runs" / f"w{workers}"
        summary = balance_build(build, cfg, out=out, workers=workers, overwrite=True)
        hashes[workers] = [s["sha256"] for s in read_card(Path(summary["out"]))["shards"]]
        copies = sum(c["copies"] for c in summary["classes"].values())
        results.append({"workers": workers, "samples": summary["samples"], "copies": copies,
                        "seconds": round(summary["seconds"], 2), "samples_per_second": round(summary["samples_per_second"], 1),
                        "copies_per_second": round(copies / summary["seconds"], 1)})
        print(f"workers {workers}: {summary['samples']} samples ({copies} copies) in {summary['seconds']:.1f} s "
              f"= {summary['samples_per_second']:.1f} samples/s, {copies / summary['seconds']:.1f} copies/s")
        for line in summary["warnings"]:
            print(f"  warning: {line}")
    same = len({tuple(h) for h in hashes.values()}) == 1
    print(f"same shards for every worker count: {'yes' if same else 'NO'}")
    print(json.dumps({"target": args.target, "cpus": os.cpu_count(), "results": results, "identical": same}))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
