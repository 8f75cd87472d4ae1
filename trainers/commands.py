"""Click commands of the trainers: ``train <recipe>`` (one per config.RECIPES), ``evaluate``, ``predict``.

cli.py calls ``register(main)`` at import. Nothing here imports torch at
module level, so the data commands stay fast; each command imports it when run.
"""

from __future__ import annotations

import json

import click

from hamdata import runfiles
from hamdata.errors import HamdataError, exit_on_user_error

from .config import ARCHS, DECODES, DEVICES, EVAL_SPLITS, LOSSES, PRECISIONS, RECIPES, TrainConfig
from .recipes import check_paths, recipe_config, recipe_doc, run_recipe

COMMON = ("shards", "out", "train_set", "arch", "weights", "epochs", "batch_size", "lr", "image_size", "device",
          "workers", "decode", "precision", "compile", "seed", "max_steps", "stop_after", "loss", "cb_beta", "metadata", "metadata_columns")


# Ctrl-C: a run keeps its checkpoints (each written whole, then renamed); an evaluation or ensemble folder is
# written whole or not at all, as hamdata's outputs are
train_errors = exit_on_user_error("interrupted: the run's last checkpoint is intact; --resume continues from it")
user_errors = exit_on_user_error("interrupted: nothing was left that looks complete")


def _train_options(d: TrainConfig):
    """The options every recipe takes; None means the recipe's default (shown in --help)."""
    options = [
        click.option("--shards", default=None, help=f"Build folder (dataset.json, train/ val/ test/).  [default: {d.shards}]"),
        click.option("--out", default=None, help="Run folder.  [default: runs/<recipe>-<timestamp>]"),
        click.option("--train-set", default=None, help=f"auto (the one balanced-N, else train), train or balanced-N.  [default: {d.train_set}]"),
        click.option("--arch", default=None, type=click.Choice(ARCHS), help=f"Backbone.  [default: {d.arch}]"),
        click.option("--weights", default=None, help=f"imagenet (torchvision, downloads once), none, or a state-dict / checkpoint file.  [default: {d.weights}]"),
        click.option("--epochs", default=None, type=int, help=f"Epochs.  [default: {d.epochs}]"),
        click.option("--batch-size", default=None, type=int, help=f"Batch per process.  [default: {d.batch_size}]"),
        click.option("--lr", default=None, type=float, help=f"Peak learning rate (AdamW).  [default: {d.lr:g}]"),
        click.option("--image-size", default=None, type=int, help=f"Side of the crop the network sees.  [default: {d.image_size}]"),
        click.option("--device", default=None, type=click.Choice(DEVICES), help=f"auto: CUDA when there is a GPU.  [default: {d.device}]"),
        click.option("--workers", default=None, type=int, help=f"DataLoader processes per training process.  [default: {d.workers}]"),
        click.option("--decode", default=None, type=click.Choice(DECODES),
                     help="cpu: loader workers decode and augment; gpu: they only read tars, and the JPEGs are decoded "
                          "(nvJPEG) and augmented on the GPU (falls back to cpu, with a warning, where there is none).  "
                          f"[default: {d.decode}]"),
        click.option("--precision", default=None, type=click.Choice(PRECISIONS),
                     help="Autocast: auto is bf16 on a GPU that has it, else fp16 with a loss scaler, and fp32 on the "
                          f"CPU; fp32 switches autocast off.  [default: {d.precision}]"),
        click.option("--compile/--no-compile", "compile", default=None,
                     help="torch.compile the model for the training steps (inductor; the first steps wait for the "
                          "compilation). Checkpoints keep plain weights: evaluate, predict, ensemble and Grad-CAM load "
                          f"them uncompiled, and --resume works with or without it.  [default: {'on' if d.compile else 'off'}]"),
        click.option("--seed", default=None, type=int, help=f"Seed for weights, sampling and augmentation.  [default: {d.seed}]"),
        click.option("--loss", default=None, type=click.Choice(LOSSES),
                     help=f"focal: alpha ~ 1/n; cb_focal: class-balanced alpha (Cui et al.), over the training stream's counts.  [default: {d.loss}]"),
        click.option("--cb-beta", default=None, type=float, help=f"cb_focal: beta of the effective number.  [default: {d.cb_beta:g}]"),
        click.option("--metadata/--no-metadata", default=None,
                     help=f"Fuse age, sex and site (an MLP beside the image features).  [default: {'on' if d.metadata else 'off'}]"),
        click.option("--metadata-columns", default=None,
                     help="Numeric columns of the build's samples to fuse too, comma-separated (ISIC 2024: e.g. "
                          "tbp_lv_areaMM2,tbp_lv_deltaLBnorm; `stats` lists them); each scaled with train statistics, "
                          "plus a missing flag.  [default: none]"),
        click.option("--resume", default=None, help=f"Continue the run in this folder (or from this {runfiles.LAST})."),
        click.option("--allow-other-build", is_flag=True,
                     help="With --resume: continue although the build (or balanced set) differs from the one the run started on."),
        click.option("--max-steps", default=None, type=int, help="At most this many steps per epoch (smoke runs)."),
        click.option("--stop-after", default=None, type=int, help="Stop after this epoch, resumable (split a run into jobs)."),
    ]

    def apply(func):
        for option in reversed(options):
            func = option(func)
        return func

    return apply


def _print_summary(summary: dict) -> None:
    if summary.get("stopped"):
        return
    test = summary.get("test")
    if test:
        click.echo(f"{summary['recipe']}: best epoch {summary['best_epoch']} (val macro-F1 {summary['best_val_macro_f1']:.3f}); "
                   f"test macro-F1 {test['macro_f1']:.3f}, balanced acc {test['balanced_accuracy']:.3f} "
                   f"({summary['evaluated']}); {summary['seconds']:.0f} s; outputs in {summary['out']}")


def _train_command(name: str, wrap) -> click.Command:
    @click.command(name, help=recipe_doc(name), context_settings={"max_content_width": 100})
    @_train_options(recipe_config(name))
    @wrap
    def command(resume, allow_other_build, **options):
        given = {k: v for k, v in options.items() if v is not None}
        if given.get("metadata_columns") and "metadata" not in given:
            given["metadata"] = True  # numeric columns are fused by the metadata MLP
        _print_summary(run_recipe(name, given, resume=resume, echo=click.echo, allow_other_build=allow_other_build))

    return command


def _evaluate_command(wrap) -> click.Command:
    @click.command("evaluate")
    @click.argument("checkpoint")
    @click.option("--shards", default=None, help="Build folder.  [default: the one the checkpoint was trained on]")
    @click.option("--split", default="test", show_default=True, type=click.Choice(EVAL_SPLITS))
    @click.option("--tta", is_flag=True, help="Average the 8 flips and 90-degree rotations.")
    @click.option("--out", default=None, help="Output folder.  [default: eval-<checkpoint>-<split> beside the checkpoint]")
    @click.option("--device", default="auto", show_default=True, type=click.Choice(DEVICES))
    @click.option("--batch-size", default=64, show_default=True, type=int)
    @click.option("--workers", default=2, show_default=True, type=int)
    @click.option("--by-lesion", is_flag=True, help="Lesion-level voting: every image of a lesion gets the mean of their probabilities.")
    @click.option("--calibrate", is_flag=True,
                  help="Fit a temperature on the val split, store it in the checkpoint (predict and ensemble apply it) and apply it.")
    @click.option("--by", default=None, metavar="FIELD[,FIELD]",
                  help="Figures per group of these fields too: collection, site, sex, age (15-year bands), image_type, "
                       "or another field of the build's samples.")
    @click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
    @wrap
    def evaluate(checkpoint, shards, split, tta, out, device, batch_size, workers, by_lesion, calibrate, by, overwrite):
        """Metrics, classification report, confusion matrix and ISIC CSV of a checkpoint (file or run folder)."""
        check_paths(checkpoints=[checkpoint], shards=shards)  # before torch: a wrong path answers at once
        from . import evaluate_checkpoint

        evaluate_checkpoint(checkpoint, shards=shards, split=split, tta=tta, out=out, device=device,
                            batch_size=batch_size, workers=workers, by_lesion=by_lesion, calibrate_on_val=calibrate,
                            by=by, overwrite=overwrite, echo=click.echo)

    return evaluate


def _predict_command(wrap) -> click.Command:
    @click.command("predict")
    @click.argument("checkpoint")
    @click.argument("images", nargs=-1, required=True)
    @click.option("--tta", is_flag=True, help="Average the 8 flips and 90-degree rotations.")
    @click.option("--device", default="auto", show_default=True, type=click.Choice(DEVICES))
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
    @click.option("--age", default=None, type=float, help="Metadata of the one image: age in years.")
    @click.option("--sex", default=None, help="Metadata of the one image: male, female or unknown.")
    @click.option("--site", default=None, help="Metadata of the one image: anatomical site (HAM10000 localization).")
    @click.option("--metadata", "metadata_csv", default=None, type=click.Path(dir_okay=False),
                  help="Metadata of many images: a CSV with columns image,age,sex,localization (and the numeric "
                       "columns a checkpoint trained with --metadata-columns fuses).")
    @wrap
    def predict(checkpoint, images, tta, device, as_json, age, sex, site, metadata_csv):
        """Class probabilities of raw images, preprocessed as the checkpoint's build was."""
        check_paths(checkpoints=[checkpoint], images=images)
        from .predict import predict_images, read_metadata_csv

        metadata = None
        single = any(v is not None for v in (age, sex, site))
        if single and metadata_csv:
            raise HamdataError("predict: give --age/--sex/--site for one image, or --metadata CSV, not both")
        if single:
            if len(images) != 1:
                raise HamdataError(f"--age/--sex/--site describe one image, but {len(images)} were given; use --metadata CSV")
            metadata = {images[0]: {"age": age, "sex": sex, "localization": site}}
        elif metadata_csv:
            metadata = read_metadata_csv(metadata_csv, images)
        for result in predict_images(checkpoint, images, tta=tta, device=device, metadata=metadata, echo=click.echo):
            if as_json:
                click.echo(json.dumps(result))
            else:
                probs = " ".join(f"{dx} {p:.4f}" for dx, p in result["probabilities"].items())
                click.echo(f"{result['image']}: {result['dx']} ({probs})")

    return predict


def _ensemble_command(wrap) -> click.Command:
    @click.command("ensemble")
    @click.argument("members", nargs=-1, required=True)
    @click.option("--shards", default=None, help="Build folder.  [default: the one the first member was trained on]")
    @click.option("--split", default="test", show_default=True, type=click.Choice(EVAL_SPLITS))
    @click.option("--tta", is_flag=True, help="Each member averages the 8 flips and 90-degree rotations.")
    @click.option("--by-lesion", is_flag=True, help="Lesion-level voting of the ensemble's probabilities.")
    @click.option("--select", default=None, type=click.Choice(["greedy"]),
                  help="greedy: forward selection of members (repeats allowed) on the val split by macro-F1 "
                       "(two classes: by the partial AUC above 80% TPR).")
    @click.option("--calibrate", is_flag=True, help="Fit one temperature to the ensemble on the val split and apply it.")
    @click.option("--out", default=None,
                  help="Output folder.  [default: ensemble-<runs>-<split> beside the first member's run folder]")
    @click.option("--device", default="auto", show_default=True, type=click.Choice(DEVICES))
    @click.option("--batch-size", default=64, show_default=True, type=int)
    @click.option("--workers", default=2, show_default=True, type=int)
    @click.option("--by", default=None, metavar="FIELD[,FIELD]",
                  help="Figures per group of these fields too: collection, site, sex, age (15-year bands), image_type, "
                       "or another field of the build's samples.")
    @click.option("--overwrite", is_flag=True, help="Replace an existing --out folder.")
    @wrap
    def ensemble(members, shards, split, tta, by_lesion, select, calibrate, out, device, batch_size, workers, by,
                 overwrite):
        """Soft voting over runs or checkpoints (MEMBERS: run folders use their best.pt); writes what evaluate writes."""
        check_paths(checkpoints=members, shards=shards)
        if len(members) < 2:
            raise HamdataError(f"ensemble: needs at least two members (runs or checkpoints), got {len(members)}")
        from .ensemble import run_ensemble

        run_ensemble(list(members), shards=shards, split=split, tta=tta, by_lesion=by_lesion, select=select,
                     calibrate=calibrate, out=out, device=device, batch_size=batch_size, workers=workers, by=by,
                     overwrite=overwrite, echo=click.echo)

    return ensemble


def register(main: click.Group) -> None:
    """Add ``train`` (with one subcommand per recipe), ``evaluate``, ``predict`` and ``ensemble`` to ``main``."""

    @main.group(help=f"Train a recipe on a build's shards ({', '.join(RECIPES)}).", context_settings={"max_content_width": 100})
    def train():
        pass

    for name in RECIPES:
        train.add_command(_train_command(name, train_errors))
    main.add_command(_evaluate_command(user_errors))
    main.add_command(_predict_command(user_errors))
    main.add_command(_ensemble_command(user_errors))
