"""`demo`: the whole pipeline on a synthetic HAM10000, in one work folder.

It composes both packages (hamdata's data steps, then a short trainers run), so
it sits above them, beside cli.py: hamdata never imports trainers. The work
folder is marked as a demo folder so that a rerun may replace what an earlier
demo wrote, but never a folder the user made for something else.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from hamdata.errors import HamdataError

MARKER = ".hamdata-demo"


def _claim(work: Path) -> None:
    if work.exists() and any(work.iterdir()) and not (work / MARKER).exists():
        raise HamdataError(f"{work} exists and is not a hamdata demo folder; choose another --out")
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("written by `hamdata demo`; its contents are replaced by the next demo run\n")


def run_demo(work: Path, n_images: int = 1000, workers: int = 2, seed: int = 42, target: int = 200,
             epochs: int = 5, echo=print) -> dict:
    """synth -> build-shards -> balance -> stats -> verify -> a short Phase 5 run -> reports.

    ``epochs=0`` skips training. Returns the paths it made.
    """
    from hamdata.balance import BalanceConfig, balance_build
    from hamdata.build import BuildConfig, build_shards
    from hamdata.report import write_report
    from hamdata.split import SplitConfig
    from hamdata.stats import run_stats
    from hamdata.synth import make_synthetic
    from hamdata.verify import verify_tree

    _claim(work)
    data, shards, run_dir = work / "data", work / "shards", work / "runs" / "phase5"
    started = time.perf_counter()
    steps = 7 if epochs else 6

    echo(f"[1/{steps}] synth: {n_images} synthetic 600x450 images -> {data}")
    make_synthetic(data, n_images=n_images, seed=seed, workers=workers, overwrite=True)

    echo(f"[2/{steps}] build-shards: hair removal, CLAHE, 256x256, lesion-aware split -> {shards}")
    cfg = BuildConfig(data=str(data), out=str(shards), split=SplitConfig(seed=seed))
    summary = build_shards(cfg, workers=workers, overwrite=True)
    echo(f"      {summary['samples']} samples, {summary['shards']} shards, {summary['images_per_second']:.1f} images/s")

    echo(f"[3/{steps}] balance --target {target}: train split only, rare classes augmented offline")
    balanced = balance_build(shards, BalanceConfig(target=target, seed=seed), workers=workers, overwrite=True)
    for line in balanced["warnings"]:
        echo(f"      warning: {line}")
    echo(f"      {balanced['samples']} samples in {balanced['out']}")

    echo(f"[4/{steps}] stats -> {shards / 'stats'}")
    result = run_stats(shards)
    echo(result["text"])

    echo(f"[5/{steps}] verify {shards} (and {Path(balanced['out']).name})")
    problems = verify_tree(shards)
    for line in problems:
        echo(line)
    if problems:
        raise HamdataError(f"demo: verify found {len(problems)} problems in {shards}")

    paths = {"data": data, "shards": shards, "balanced": Path(balanced["out"]), "plots": result["plots"]}
    if epochs:
        echo(f"[6/{steps}] train phase5: {epochs} epochs at 64 px on the CPU, then the test split")
        paths.update(_train(shards, run_dir, epochs, seed, echo))
    echo(f"[{steps}/{steps}] report")
    paths["report"] = write_report(shards)
    echo(f"      {paths['report']}")
    if epochs:
        paths["run_report"] = write_report(run_dir)
        echo(f"      {paths['run_report']}")
    echo(f"demo done in {time.perf_counter() - started:.0f} s")
    return paths


def _train(shards: Path, run_dir: Path, epochs: int, seed: int, echo) -> dict:
    """A short Phase 5 run sized for a laptop CPU; an earlier demo run is replaced."""
    from trainers import run_recipe

    if run_dir.exists():
        shutil.rmtree(run_dir)
    summary = run_recipe("phase5", {"shards": str(shards), "out": str(run_dir), "weights": "none", "epochs": epochs,
                                    "image_size": 64, "batch_size": 32, "lr": 2e-3, "workers": 0, "device": "cpu",
                                    "seed": seed}, echo=lambda line: echo(f"      {line}"))
    test = summary["test"]
    echo(f"      test macro-F1 {test['macro_f1']:.3f}, balanced accuracy {test['balanced_accuracy']:.3f} -> {run_dir}")
    return {"run": run_dir, "test": test}
