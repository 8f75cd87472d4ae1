"""hamdata command line: options in, one call, a summary out.

    python cli.py synth --out data/synth
    python cli.py build-shards --data data/HAM10000 --out shards
    python cli.py verify shards
    python cli.py stats shards
    python cli.py demo
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from hamdata.errors import HamdataError, exit_on_user_error


user_errors = exit_on_user_error("interrupted: nothing was left that looks complete")


def _workers(value: int | None) -> int:
    return value if value else (os.cpu_count() or 1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name=None, version=__import__("hamdata").__version__, prog_name="hamdata")
def main():
    """HAM10000 as preprocessed, lesion-aware, class-balanced WebDataset shards."""


@main.command()
@click.option("--out", default="data/synth", show_default=True, type=click.Path(file_okay=False), help="Folder to write (Kaggle layout).")
@click.option("--images", "n_images", default=1000, show_default=True, type=int, help="Number of images (ignored with --metadata).")
@click.option("--seed", default=42, show_default=True, type=int, help="Seed for metadata and pixels.")
@click.option("--metadata", type=click.Path(dir_okay=False), default=None, help="Take ids, lesions and labels from this HAM10000 metadata CSV.")
@click.option("--workers", type=int, default=None, help="Processes (default: CPU count).")
@click.option("--overwrite", is_flag=True, help="Replace an existing folder.")
@user_errors
def synth(out, n_images, seed, metadata, workers, overwrite):
    """Write a synthetic HAM10000 (600x450 JPEGs, real class proportions, hair)."""
    from hamdata.synth import make_synthetic

    if metadata is not None and not Path(metadata).is_file():
        raise HamdataError(f"--metadata: no such file: {metadata}")
    summary = make_synthetic(Path(out), n_images=n_images, seed=seed, metadata=metadata, workers=_workers(workers), overwrite=overwrite)
    counts = ", ".join(f"{dx} {n}" for dx, n in summary["counts"].items())
    click.echo(f"wrote {summary['images']} images of {summary['lesions']} lesions to {summary['out']} ({counts})")


@main.command("build-shards")
@click.option("--data", default="data/HAM10000", show_default=True, help="HAM10000 copy (Kaggle, Dataverse, ISIC 2018 or flat layout).")
@click.option("--out", default="shards", show_default=True, help="Output folder.")
@click.option("--size", default="256", show_default=True, help="N (NxN) or WxH, e.g. 300x225 to keep the aspect.")
@click.option("--format", "fmt", default="jpg", show_default=True, type=click.Choice(["jpg", "png"]))
@click.option("--quality", default=95, show_default=True, type=int, help="JPEG quality.")
@click.option("--shard-size", default=500, show_default=True, type=int, help="Samples per tar.")
@click.option("--workers", type=int, default=None, help="Processes (default: CPU count); does not change the output.")
@click.option("--on-error", default="fail", show_default=True, type=click.Choice(["fail", "skip"]), help="Unreadable image: stop, or skip and record it.")
@click.option("--allow-missing", is_flag=True, help="Build the images that exist; list the missing ones as skipped.")
@click.option("--overwrite", is_flag=True, help="Replace an existing build.")
@click.option("--no-hair-removal", is_flag=True, help="Skip hair removal.")
@click.option("--no-clahe", is_flag=True, help="Skip CLAHE.")
@click.option("--val", default=0.15, show_default=True, type=float, help="Validation fraction (fresh splits).")
@click.option("--test", "test_frac", default=0.15, show_default=True, type=float, help="Test fraction (fresh splits).")
@click.option("--seed", default=42, show_default=True, type=int, help="Seed for a fresh split and the sample order.")
@click.option("--split-manifest", default=None, help="Take the split from this CSV (image_id, split).")
@click.option("--fresh-split", is_flag=True, help="Split anew even when the canonical HAM10000 split applies.")
@user_errors
def build_shards_cmd(data, out, size, fmt, quality, shard_size, workers, on_error, allow_missing, overwrite,
                     no_hair_removal, no_clahe, val, test_frac, seed, split_manifest, fresh_split):
    """Preprocess, split by lesion and write WebDataset shards."""
    from hamdata.build import BuildConfig, build_shards
    from hamdata.preprocess import PreprocessConfig, parse_size
    from hamdata.split import SplitConfig

    cfg = BuildConfig(
        data=data, out=out, format=fmt, quality=quality, shard_size=shard_size, on_error=on_error, allow_missing=allow_missing,
        preprocess=PreprocessConfig(hair_removal=not no_hair_removal, clahe=not no_clahe, size=parse_size(size)),
        split=SplitConfig(val=val, test=test_frac, seed=seed, manifest=split_manifest, fresh=fresh_split),
    )
    summary = build_shards(cfg, workers=_workers(workers), overwrite=overwrite)
    click.echo(format_build_summary(summary))


def format_build_summary(summary: dict) -> str:
    split = summary["split"]
    how = {"canonical": f"the canonical HAM10000 split ({split.get('file')})", "file": f"the split in {split.get('file')}",
           "fresh": f"a fresh lesion-aware split (val {split.get('val')}, test {split.get('test')}, seed {split.get('seed')})"}[split["source"]]
    lines = [f"warning: {w}" for w in summary["warnings"]]
    lines.append(f"split: {how}")
    for name, per_class in summary["counts"].items():
        lines.append(f"  {name:<5} {sum(per_class.values()):>6}  " + " ".join(f"{dx}={n}" for dx, n in per_class.items()))
    lines.append(f"wrote {summary['samples']} samples in {summary['shards']} shards to {summary['out']} "
                 f"({summary['images_per_second']:.1f} images/s, {summary['workers']} workers); skipped {summary['skipped']}"
                 + (" (listed in dataset.json)" if summary["skipped"] else ""))
    return "\n".join(lines)


@main.command()
@click.argument("folder", default="shards", type=click.Path())
@user_errors
def verify(folder):
    """Re-read every shard and check it against dataset.json and manifest.csv; audit leakage."""
    from hamdata.verify import verify_tree

    problems = verify_tree(Path(folder))
    for line in problems:
        click.echo(line)
    if problems:
        click.echo(f"verify: {len(problems)} problems in {folder}", err=True)
        sys.exit(1)
    click.echo(f"verify: {folder} is intact (shards, manifest, schema, no leakage)")


@main.command()
@click.argument("folder", default="shards", type=click.Path())
@click.option("--out", default=None, help="Where to save the PNG plots (default: FOLDER/stats).")
@user_errors
def stats(folder, out):
    """EDA of a build or of a raw HAM10000 copy: tables and PNG plots."""
    from hamdata.stats import run_stats

    result = run_stats(Path(folder), Path(out) if out else None)
    click.echo(result["text"])
    click.echo(f"plots: {', '.join(result['plots'])}")


@main.command()
@click.option("--target", required=True, type=int, help="Samples per class in the balanced set.")
@click.option("--shards", default="shards", show_default=True, help="The build to balance (its train split only).")
@click.option("--out", default=None, help="Where to write balanced-N/ (default: inside --shards).")
@click.option("--seed", default=42, show_default=True, type=int, help="Seed for selection, order and augmentation.")
@click.option("--workers", type=int, default=None, help="Processes (default: CPU count); does not change the output.")
@click.option("--strong-below", default=0.5, show_default=True, type=float,
              help="Classes with fewer originals than this x TARGET get the strong policy, others light.")
@click.option("--overwrite", is_flag=True, help="Replace an existing balanced-N.")
@user_errors
def balance(target, shards, out, seed, workers, strong_below, overwrite):
    """Write balanced-N/: exactly N train samples per class, rare classes augmented offline."""
    from hamdata.balance import BalanceConfig, balance_build

    cfg = BalanceConfig(target=target, seed=seed, strong_below=strong_below)
    summary = balance_build(Path(shards), cfg, out=Path(out) if out else None, workers=_workers(workers), overwrite=overwrite)
    for line in summary.get("warnings", []):
        click.echo(f"warning: {line}", err=True)
    for dx, row in summary["classes"].items():
        click.echo(f"  {dx:<6} originals {row['originals']:>5} kept {row['kept']:>5} copies {row['copies']:>5}  policy {row['policy']}")
    click.echo(f"wrote {summary['samples']} samples ({target} per class) to {summary['out']} "
               f"({summary['samples_per_second']:.1f} samples/s, {summary['workers']} workers)")


@main.command()
@click.argument("folder", default="shards", type=click.Path())
@click.option("--out", default=None, help="HTML file to write (default: FOLDER/report.html).")
@user_errors
def report(folder, out):
    """One self-contained HTML report of a build, a balanced set or a training run."""
    from hamdata.report import write_report

    path = write_report(Path(folder), Path(out) if out else None)
    click.echo(f"report: {path}")


@main.command()
@click.option("--out", default="demo", show_default=True, help="Work folder for the demo.")
@click.option("--images", "n_images", default=1000, show_default=True, type=int, help="Synthetic images.")
@click.option("--workers", type=int, default=None, help="Processes (default: CPU count).")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--target", default=200, show_default=True, type=int, help="Samples per class of the balanced set.")
@click.option("--epochs", default=5, show_default=True, type=int, help="Phase 5 epochs on the CPU (0: no training).")
@user_errors
def demo(out, n_images, workers, seed, target, epochs):
    """synth -> build-shards -> balance -> stats -> verify -> train phase5 -> report, in one folder."""
    from demo import run_demo

    run_demo(Path(out), n_images=n_images, workers=_workers(workers), seed=seed, target=target, epochs=epochs, echo=click.echo)


def _register_trainers() -> None:
    """Training commands live in trainers/; torch is imported only when one runs."""
    try:
        from trainers.commands import register
    except ImportError as exc:
        if getattr(exc, "name", "") not in ("trainers", "trainers.commands"):
            raise
        return
    register(main, user_errors)


_register_trainers()

if __name__ == "__main__":
    main()
