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


def run_demo(work: Path, n_images: int = 1000, workers: int | None = None, seed: int = 42, target: int = 200,
             epochs: int = 5, echo=print) -> dict:
    """synth -> build-shards -> balance -> stats -> verify -> short Phase 5 and Phase 6 runs -> their ensemble -> reports.

    ``epochs=0`` skips training. Returns the paths it made.
    """
    from hamdata.balance import BalanceConfig, balance_build
    from hamdata.build import BuildConfig, build_shards
    from hamdata.report import write_report
    from hamdata.split.stratified import SplitConfig
    from hamdata.stats import run_stats
    from hamdata.synth.ham import make_synthetic
    from hamdata.verify import verify_tree

    _claim(work)
    data, shards, run_dir = work / "data", work / "shards", work / "runs" / "phase5"
    started = time.perf_counter()
    steps = 9 if epochs else 6

    echo(f"[1/{steps}] synth: {n_images} synthetic 600x450 images -> {data}")
    # every class at least a tenth of the images (80 of 1,000): the 15% test split then holds 10 or more of
    # each, so no printed figure rests on one or two df or vasc images
    make_synthetic(data, n_images=n_images, seed=seed, workers=workers, overwrite=True,
                   min_per_class=min(80, n_images // 10))

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
        echo(f"[7/{steps}] train phase6: ResNet-18 with metadata fusion and class-balanced focal loss, {epochs} epochs at 64 px")
        paths.update(_train_phase6(shards, work / "runs" / "phase6", epochs, seed, echo))
        echo(f"[8/{steps}] ensemble phase5 + phase6: TTA, lesion-level voting, temperature fitted on val")
        paths.update(_ensemble([run_dir, paths["run6"]], work / "runs" / "ensemble", echo))
    echo(f"[{steps}/{steps}] report")
    paths["report"] = write_report(shards)
    echo(f"      {paths['report']}")
    if epochs:
        paths["run_report"] = write_report(run_dir)
        paths["run6_report"] = write_report(paths["run6"])
        echo(f"      {paths['run_report']}\n      {paths['run6_report']}\n      {paths['ensemble_report']}")
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


def _train_phase6(shards: Path, run_dir: Path, epochs: int, seed: int, echo) -> dict:
    """A short Phase 6 run (metadata fusion, cb_focal) on a small backbone; an earlier demo run is replaced."""
    from trainers import run_recipe

    if run_dir.exists():
        shutil.rmtree(run_dir)
    summary = run_recipe("phase6", {"shards": str(shards), "out": str(run_dir), "arch": "resnet18", "weights": "none",
                                    "epochs": epochs, "image_size": 64, "batch_size": 32, "lr": 2e-3, "warmup_epochs": 0.0,
                                    "ema_decay": 0.0, "patience": 0, "workers": 0, "device": "cpu", "seed": seed},
                         echo=lambda line: echo(f"      {line}"))
    test = summary["test"]
    echo(f"      test macro-F1 {test['macro_f1']:.3f}, balanced accuracy {test['balanced_accuracy']:.3f} -> {run_dir}")
    return {"run6": run_dir, "test6": test}


def _ensemble(runs: list[Path], out: Path, echo) -> dict:
    """Soft voting of the demo's runs on the test split; an earlier demo ensemble is replaced."""
    from trainers.ensemble import run_ensemble

    if out.exists():
        shutil.rmtree(out)
    result = run_ensemble([str(r) for r in runs], tta=True, by_lesion=True, calibrate=True, out=out, device="cpu",
                          workers=0, echo=lambda line: echo(f"      {line}"))
    return {"ensemble": out, "ensemble_test": result["metrics"], "ensemble_report": Path(result["report"])}
