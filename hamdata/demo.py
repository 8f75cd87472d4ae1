"""`demo`: the whole pipeline on a synthetic HAM10000, in one work folder.

The work folder is marked as a demo folder so that a rerun may replace what
an earlier demo wrote, but never a folder the user made for something else.
"""

from __future__ import annotations

import time
from pathlib import Path

from .errors import HamdataError

MARKER = ".hamdata-demo"


def _claim(work: Path) -> None:
    if work.exists() and any(work.iterdir()) and not (work / MARKER).exists():
        raise HamdataError(f"{work} exists and is not a hamdata demo folder; choose another --out")
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("written by `hamdata demo`; its contents are replaced by the next demo run\n")


def run_demo(work: Path, n_images: int = 1000, workers: int = 2, seed: int = 42, target: int = 200, echo=print) -> dict:
    """synth -> build-shards -> balance -> stats -> verify; returns the paths it made."""
    from .balance import BalanceConfig, balance_build
    from .report import write_report
    from .build import BuildConfig, build_shards
    from .split import SplitConfig
    from .stats import run_stats
    from .synth import make_synthetic
    from .verify import verify_tree

    _claim(work)
    data, shards = work / "data", work / "shards"
    started = time.perf_counter()

    echo(f"[1/5] synth: {n_images} synthetic 600x450 images -> {data}")
    make_synthetic(data, n_images=n_images, seed=seed, workers=workers, overwrite=True)

    echo(f"[2/5] build-shards: hair removal, CLAHE, 256x256, lesion-aware split -> {shards}")
    cfg = BuildConfig(data=str(data), out=str(shards), split=SplitConfig(seed=seed))
    summary = build_shards(cfg, workers=workers, overwrite=True)
    echo(f"      {summary['samples']} samples, {summary['shards']} shards, {summary['images_per_second']:.1f} images/s")

    echo(f"[3/5] balance --target {target}: train split only, rare classes augmented offline")
    balanced = balance_build(shards, BalanceConfig(target=target, seed=seed), workers=workers, overwrite=True)
    for line in balanced["warnings"]:
        echo(f"      warning: {line}")
    echo(f"      {balanced['samples']} samples in {balanced['out']}")

    echo(f"[4/5] stats -> {shards / 'stats'}")
    result = run_stats(shards)
    echo(result["text"])

    echo(f"[5/5] verify {shards} (and {Path(balanced['out']).name})")
    problems = verify_tree(shards)
    for line in problems:
        echo(line)
    if problems:
        raise HamdataError(f"demo: verify found {len(problems)} problems in {shards}")
    report = write_report(shards)
    echo(f"demo done in {time.perf_counter() - started:.0f} s: shards in {shards}, plots in {shards / 'stats'}")
    echo(f"report: {report}")
    return {"data": data, "shards": shards, "balanced": Path(balanced["out"]), "plots": result["plots"], "report": report}
