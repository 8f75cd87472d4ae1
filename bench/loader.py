"""Images per second that the trainers' own loader delivers as training-ready batches.

    python bench/loader.py SHARDS_DIR [--workers 1] [--image-size 224] [--batches 60]
                           [--batch-size 48] [--decode cpu|gpu] [--train-set train]

The train stream of ``trainers.data.make_loader`` (shuffle, train preset,
batching) over a build's train split or one of its balanced sets, with W
DataLoader worker processes. Timed from the end of a warm-up (worker start,
the shuffle buffer filling, two batches per worker) over N batches.

What counts: reading tars, shuffling, decoding, the train preset (crop,
flips, colour jitter), collation into uint8 (B, 3, S, S) batches and the
hand-over to the main process. Not counted: normalisation and the copy to
the device, which the training loop does on the device. With ``--decode gpu``
the workers only read tars; the main process decodes (nvJPEG) and augments
each batch on the GPU, and the clock stops after a CUDA synchronise. With
``--decode gpu --raw-only`` only the workers' side is timed (no GPU needed).

With ``--arch`` (e.g. mobilenet_v3_large, Phase 5's) it also times the
trainers' own training step of ``--recipe`` (default phase5) on the device,
as bench/step.py does (trainers.loop.train_one_epoch with the recipe's
optimizer, loss, schedule, mixing, EMA and --precision auto): the step alone
on one fixed batch, and the step fed by this loader, and says whether the
loader or the step is the bottleneck.

Prints the per-worker figure too. Last line: ``images/s: X`` (the loader alone).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]  # the repo; bench/step.py

import torch  # noqa: E402

from hamdata.errors import HamdataError  # noqa: E402
from trainers.config import RECIPES  # noqa: E402
from trainers.data import StreamSpec, find_train_set, make_loader, open_build  # noqa: E402
from trainers.decode import batch_images  # noqa: E402


def images_per_s(batches, step, device: torch.device, warmup: int) -> float:
    """Rate of ``step`` over an iterable of (images, labels), timed after ``warmup`` batches."""
    started, images = None, 0
    for i, (x, y) in enumerate(batches):
        step(x, y)
        if i + 1 == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        elif started is not None:
            images += len(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - started)


def compare_with_steps(args, spec: StreamSpec, loader_rate: float, build) -> None:
    """The trainers' own training step (bench/step.py's RecipeStep: the recipe's optimizer, loss, schedule, mixing,
    EMA and precision, trainers.loop.train_one_epoch) on one fixed batch and fed by this loader, against the
    loader's own rate."""
    from step import RecipeStep, SameBatch
    from trainers.recipes import recipe_config

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = recipe_config(args.recipe, arch=args.arch, image_size=args.image_size, batch_size=args.batch_size,
                           weights="none", device=device.type)
    warmup = 2 * max(1, args.workers)
    runner = RecipeStep(build, config, device, 2 * (warmup + args.batches))
    sample = runner.fixed_batch()
    runner.epoch(SameBatch(sample, warmup), epoch=0)
    stats = runner.epoch(SameBatch(sample, args.batches), epoch=1)
    alone = stats["images"] / stats["seconds"]

    def loader(epoch: int, batches: int):
        return make_loader(dataclasses.replace(spec, epoch=epoch, batches=batches), args.workers,
                           pin_memory=device.type == "cuda")

    runner.epoch(loader(1, warmup), epoch=2)
    stats = runner.epoch(loader(2, args.batches), epoch=3)
    fed = stats["images"] / stats["seconds"]
    print(f"{args.recipe} {args.arch} on {device} ({runner.env.precision}): step alone {alone:.1f} images/s "
          f"({1000 * args.batch_size / alone:.1f} ms a batch); loader alone {loader_rate:.1f} images/s "
          f"({1000 * args.batch_size / loader_rate:.1f} ms a batch); step fed by the loader {fed:.1f} images/s, "
          f"{100 * stats['loader_wait_s'] / stats['seconds']:.0f}% of it waiting for data (worker start-up included, as "
          f"in train): " + ("loader-bound" if loader_rate < alone else "not loader-bound"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", help="a build folder (holds dataset.json)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes (0: in the main process)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", type=int, default=60, help="batches timed after the warm-up")
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--decode", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--train-set", default="train", help="train or balanced-N")
    parser.add_argument("--raw-only", action="store_true",
                        help="with --decode gpu: time only what the CPU workers deliver (tar bytes); needs no GPU")
    parser.add_argument("--arch", help="also time training steps of this model on the device (CUDA when there is one)")
    parser.add_argument("--recipe", choices=RECIPES, default="phase5", help="with --arch: whose training step")
    args = parser.parse_args()
    if args.raw_only and args.decode != "gpu":
        print("error: --raw-only: only with --decode gpu", file=sys.stderr)
        return 2
    if args.decode == "gpu" and not args.raw_only and not torch.cuda.is_available():
        print("error: --decode gpu: no CUDA GPU is visible to PyTorch on this machine", file=sys.stderr)
        return 2
    try:
        build = Path(args.shards)
        card = open_build(build)
        train_set, _ = find_train_set(card, args.train_set)
    except HamdataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    device = torch.device("cuda" if args.decode == "gpu" and not args.raw_only else "cpu")
    warmup = 2 * max(1, args.workers)
    spec = StreamSpec(train_set.shards, "train", args.image_size, args.batch_size, seed=0, epoch=0,
                      batches=warmup + args.batches, decode=args.decode)
    last = {}

    def delivered(batch):
        last["x"] = batch["labels"] if args.raw_only else batch_images(batch, device)
        return last["x"], None

    loader = make_loader(spec, args.workers, pin_memory=device.type == "cuda")
    rate = images_per_s((delivered(b) for b in loader), lambda x, y: None, device, warmup)
    x = last["x"]
    assert args.raw_only or (x.shape[1:] == (3, args.image_size, args.image_size) and x.dtype == torch.uint8)
    images = args.batches * args.batch_size
    seconds = images / rate
    workers = max(1, args.workers)
    if args.arch:
        compare_with_steps(args, spec, rate, card)
    print(f"{images} images ({args.batches} batches of {args.batch_size}) in {seconds:.2f} s; {args.workers} workers, "
          f"decode {args.decode}{' (raw batches only)' if args.raw_only else ''}, {train_set.name} of {build}, "
          f"{os.cpu_count()} CPUs")
    print(f"per worker: {rate / workers:.1f} images/s")
    print(f"images/s: {rate:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
