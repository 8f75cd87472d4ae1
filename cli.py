"""hamdata command line: options in, one call, a summary out.

    python cli.py synth --out data/synth
    python cli.py build-shards --data data/HAM10000 --out shards
    python cli.py verify shards
    python cli.py stats shards
    python cli.py train phase5 --shards shards
    python cli.py demo
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hamdata.errors import HamdataError, exit_on_user_error


user_errors = exit_on_user_error("interrupted: nothing was left that looks complete")


def _workers(value: int | None) -> int | None:
    """--workers as given; None when not given: the library then takes the CPU count, or fewer for a small input
    (hamdata.parallel.pool_size)."""
    return value if value else None


def _processes(workers: int) -> str:
    return "in this process" if workers <= 1 else f"{workers} worker processes"


class OneLineErrors(click.Group):
    """click's own usage errors (a bad choice, a missing argument, an unknown option, a value of the wrong type)
    under the one error contract: a single line ``error: ...`` naming what was expected, the command's --help as
    the hint, exit 2; the same as every HamdataError."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except getattr(click.exceptions, "NoArgsIsHelpError", ()) as exc:  # `hamdata`, `hamdata train`: the help
            click.echo(exc.ctx.get_help())
            sys.exit(0)
        except click.exceptions.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else (prog_name or "hamdata")
            message = " ".join(exc.format_message().split())
            click.echo(f"error: {message} (see `{where} --help`)", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name=None, version=__import__("hamdata").__version__, prog_name="hamdata")
def main():
    """HAM10000 as preprocessed, lesion-aware, class-balanced WebDataset shards."""


@main.command()
@click.option("--out", default="data/synth", show_default=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option("--layout", default="kaggle", show_default=True, type=click.Choice(["kaggle", "isic2019", "isic-archive"]),
              help="HAM10000 (Kaggle layout), ISIC 2019 Task 1 training, or an ISIC-archive export (isic-cli).")
@click.option("--images", "n_images", default=1000, show_default=True, type=int, help="Number of images drawn (ignored with --metadata).")
@click.option("--seed", default=42, show_default=True, type=int, help="Seed for metadata and pixels.")
@click.option("--metadata", type=click.Path(dir_okay=False), default=None, help="Kaggle layout: take ids, lesions and labels from this HAM10000 metadata CSV.")
@click.option("--size", default=None, help="ISIC layouts: WxH box each image's real shape is scaled down to fit (default 600x450).")
@click.option("--duplicates-of", type=click.Path(file_okay=False), default=None, help="ISIC layouts: a HAM10000 folder whose images --same-id and --new-id copy.")
@click.option("--same-id", default=0, show_default=True, type=int, help="Copies of --duplicates-of images under their own ids (re-encoded, quality 85).")
@click.option("--new-id", default=0, show_default=True, type=int, help="Copies of --duplicates-of images under new ids (cropped, resized, brightened).")
@click.option("--within", default=0, show_default=True, type=int, help="Copies of this output's own images under new ids.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Processes (default, or 0: CPU count, fewer for a small input).")
@click.option("--overwrite", is_flag=True, help="Replace an existing folder.")
@user_errors
def synth(out, layout, n_images, seed, metadata, size, duplicates_of, same_id, new_id, within, workers, overwrite):
    """Write a synthetic HAM10000, ISIC 2019 or ISIC-archive copy (real class proportions, hair), optionally with planted duplicates."""
    if layout == "kaggle":
        isic_only = [name for name, value in (("--size", size), ("--duplicates-of", duplicates_of), ("--same-id", same_id),
                                              ("--new-id", new_id), ("--within", within)) if value]
        if isic_only:
            raise HamdataError(f"{', '.join(isic_only)}: only with --layout isic2019 or isic-archive")
        from hamdata.synth.ham import make_synthetic

        if metadata is not None and not Path(metadata).is_file():
            raise HamdataError(f"--metadata: no such file: {metadata}")
        summary = make_synthetic(Path(out), n_images=n_images, seed=seed, metadata=metadata, workers=_workers(workers), overwrite=overwrite)
        counts = ", ".join(f"{dx} {n}" for dx, n in summary["counts"].items())
        click.echo(f"wrote {summary['images']} images of {summary['lesions']} lesions to {summary['out']} ({counts})")
        return
    if metadata is not None:
        raise HamdataError("--metadata: only with --layout kaggle")
    from hamdata.image.preprocess import parse_size
    from hamdata.synth.draw import IMAGE_SIZE
    from hamdata.synth.isic import LAYOUT_WRITERS

    summary = LAYOUT_WRITERS[layout](Path(out), images=n_images, seed=seed, size=parse_size(size) if size else IMAGE_SIZE,
                                     duplicates_of=duplicates_of, same_id=same_id, new_id=new_id, within=within,
                                     workers=_workers(workers), overwrite=overwrite)
    counts = ", ".join(f"{c} {n}" for c, n in summary["counts"].items())
    planted = ", ".join(f"{k} {n}" for k, n in summary["planted"].items() if n)
    click.echo(f"wrote {summary['images']} images ({summary['drawn']} drawn{'; planted ' + planted if planted else ''}) "
               f"in the {layout} layout to {summary['out']} ({counts})")


@main.command("build-shards")
@click.option("--data", default=["data/HAM10000"], show_default=True, multiple=True,
              help="Input folder: HAM10000 (Kaggle, Dataverse, ISIC 2018, flat), ISIC 2019 Task 1 or an ISIC-archive "
                   "export. Repeat for several inputs; an image id in several is taken from the first.")
@click.option("--out", default="shards", show_default=True, help="Output folder.")
@click.option("--classes", "class_set", default="ham10000", show_default=True,
              type=click.Choice(["ham10000", "isic2019", "malignancy"]),
              help="Class set of the build: the 7 HAM10000 classes, the 8 ISIC 2019 classes, or benign/malignant.")
@click.option("--image-types", default="dermoscopic", show_default=True,
              help="ISIC-archive image types to take, comma-separated (e.g. 'dermoscopic,clinical: close-up'), or all; "
                   "the others are left out and counted.")
@click.option("--label-map", default=None, help="CSV collection,label,class over the shipped map (empty class drops a label).")
@click.option("--keep-duplicates", is_flag=True, help="Keep both images of a duplicate pair (always in one split).")
@click.option("--no-duplicate-search", is_flag=True, help="Do not search duplicates by content (same ids are still one sample).")
@click.option("--size", default="256", show_default=True, help="N (NxN) or WxH, e.g. 300x225 to keep the aspect.")
@click.option("--format", "fmt", default="jpg", show_default=True, type=click.Choice(["jpg", "png"]))
@click.option("--quality", default=95, show_default=True, type=int, help="JPEG quality.")
@click.option("--shard-size", default=500, show_default=True, type=int, help="Samples per tar.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Processes (default, or 0: CPU count, fewer for a small input); does not change the output.")
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
@click.option("--hold-out", default="", metavar="COLLECTION[,COLLECTION]",
              help="Write every image of these collections (e.g. bcn20000), and whatever their lesion, patient and "
                   "duplicate groups pull along, to a fourth split, heldout; the rest splits as without it.")
@user_errors
def build_shards_cmd(data, out, class_set, image_types, label_map, keep_duplicates, no_duplicate_search, size, fmt, quality, shard_size,
                     workers, on_error, allow_missing, overwrite, no_hair_removal, no_clahe, val, test_frac, seed,
                     split_manifest, fresh_split, hold_out):
    """Preprocess, split by lesion, patient and duplicate group, and write WebDataset shards."""
    from hamdata.inputs.merge import check_paths
    from hamdata.image.preprocess import PreprocessConfig, parse_size
    from hamdata.split.stratified import SplitConfig

    check_paths(data, out)  # before hamdata.build, which loads OpenCV: a wrong path answers at once
    preprocess = PreprocessConfig(hair_removal=not no_hair_removal, clahe=not no_clahe, size=parse_size(size))
    split = SplitConfig(val=val, test=test_frac, seed=seed, manifest=split_manifest, fresh=fresh_split)
    from hamdata.build import BuildConfig, build_shards

    cfg = BuildConfig(
        data=tuple(data), out=out, format=fmt, quality=quality, shard_size=shard_size, on_error=on_error,
        allow_missing=allow_missing, classes=class_set, label_map=label_map, find_duplicates=not no_duplicate_search,
        image_types=image_types,  # "all" is None: BuildConfig reads it through inputs.check_image_types
        keep_duplicates=keep_duplicates, hold_out=hold_out,
        preprocess=preprocess, split=split,
    )
    summary = build_shards(cfg, workers=_workers(workers), overwrite=overwrite)
    click.echo(format_build_summary(summary))


def _counted(entries: dict, limit: int = 4) -> tuple[int, str]:
    """(rows, "'a' 3, 'b' 1 and 2 more") of dataset.json's {collection: {value: {rows, reason}}}."""
    flat = sorted(((int(e["rows"]), value, e.get("reason", "")) for per in entries.values() for value, e in per.items()),
                  key=lambda t: (-t[0], t[1]))
    shown = ", ".join(f"{value!r} {n} ({reason})" for n, value, reason in flat[:limit])
    return sum(n for n, _, _ in flat), shown + (f" and {len(flat) - limit} more" if len(flat) > limit else "")


def untaken_lines(summary: dict) -> list[str]:
    """What the build did not take of the tables, said in the terminal as well as in dataset.json."""
    lines = []
    if any(summary.get("unmapped") or {}):
        rows, shown = _counted(summary["unmapped"])
        lines.append(f"labels no class takes: {rows} rows left out: {shown} (dataset.json \"unmapped\")")
    if any((summary.get("left_out") or {}).values()):
        rows, shown = _counted(summary["left_out"])
        lines.append(f"image types: {rows} rows left out: {shown} (dataset.json \"left_out\")")
    from hamdata.pages.collections import duplicate_list_lines

    return lines + duplicate_list_lines(summary.get("duplicate_lists"))


def format_build_summary(summary: dict) -> str:
    split = summary["split"]
    fresh = f"val {split.get('val')}, test {split.get('test')}, seed {split.get('seed')}"
    how = {"canonical": f"the canonical HAM10000 split ({split.get('file')})", "file": f"the split in {split.get('file')}",
           "fresh": f"a fresh group-aware split ({fresh})",
           "canonical+fresh": f"the canonical HAM10000 split for its {split.get('pinned')} images and their groups, "
                              f"the rest split around them ({fresh})"}[split["source"]]
    lines = [f"warning: {w}" for w in summary["warnings"]]
    lines += untaken_lines(summary)
    lines.append(f"split: {how}")
    held = split.get("held_out")
    if held:
        pulled = held["pulled_along"]
        lines.append(f"held out: {', '.join(held['collections'])}: {held['images']} images in {held['groups']} groups"
                     + (f", {len(pulled)} of them of other collections pulled along by their groups (dataset.json "
                        f"split.held_out)" if pulled else ""))
    for name, per_class in summary["counts"].items():
        lines.append(f"  {name:<7} {sum(per_class.values()):>6}  " + " ".join(f"{dx}={n}" for dx, n in per_class.items()))
    lines.append(f"wrote {summary['samples']} samples in {summary['shards']} shards to {summary['out']} "
                 f"({summary['images_per_second']:.1f} images/s, {_processes(summary['workers'])}); skipped {summary['skipped']}"
                 + (" (listed in dataset.json)" if summary["skipped"] else "")
                 + (f"; {summary['duplicates']} duplicates (listed in dataset.json)" if summary.get("duplicates") else ""))
    return "\n".join(lines)


@main.command()
@click.argument("folder", default="shards", type=click.Path())
@user_errors
def verify(folder):
    """Re-read every shard and check it against dataset.json and manifest.csv; audit leakage."""
    from hamdata.verify import verify_tree

    if not Path(folder).exists() and not any(Path(folder).parent.glob(f".{Path(folder).name}.tmp-*")):
        # a user's mistake (one line, exit 2), not a damaged or unfinished build (problem lines, exit 1)
        raise HamdataError(f"{folder}: no such folder (expected a build made by `hamdata build-shards`, or a "
                           f"balanced set in it)")
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
    """EDA of a build or of a raw copy (HAM10000, ISIC 2019, ISIC archive): tables and PNG plots."""
    from hamdata.stats import run_stats

    result = run_stats(Path(folder), Path(out) if out else None)
    click.echo(result["text"])
    click.echo(f"plots: {', '.join(result['plots'])}")


@main.command()
@click.option("--target", required=True, type=int, help="Samples per class in the balanced set.")
@click.option("--shards", default="shards", show_default=True, help="The build to balance (its train split only).")
@click.option("--out", default=None, help="Where to write balanced-N/ (default: inside --shards).")
@click.option("--seed", default=42, show_default=True, type=int, help="Seed for selection, order and augmentation.")
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Processes (default, or 0: CPU count, fewer for a small input); does not change the output.")
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
               f"({summary['samples_per_second']:.1f} samples/s, {_processes(summary['workers'])})")


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
@click.option("--workers", type=click.IntRange(min=0), default=None, help="Processes (default, or 0: CPU count, fewer for a small input).")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--target", default=200, show_default=True, type=int, help="Samples per class of the balanced set.")
@click.option("--epochs", default=5, show_default=True, type=int, help="Epochs of each CPU run, Phase 5 and Phase 6 (0: no training).")
@user_errors
def demo(out, n_images, workers, seed, target, epochs):
    """synth -> build-shards -> balance -> stats -> verify -> train phase5 and phase6 -> ensemble -> reports, in one
    folder."""
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
    register(main)


_register_trainers()

if __name__ == "__main__":
    main()
