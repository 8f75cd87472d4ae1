"""Images per second of a recipe's training step alone: the trainers' own loop, fed one fixed batch.

    python bench/step.py SHARDS_DIR --recipe phase5 [--arch A] [--image-size S] [--batch-size B]
                         [--precision auto|bf16|fp16|fp32] [--compile] [--metadata] [--steps 100] [--device auto]

The pieces are those `train RECIPE` assembles (trainers.run): the recipe's model (with metadata fusion under
--metadata, fitted on the build's train split), channels_last weights (on the CPU, the convolutions' gradients
of trainers/convgrad.py), its optimizer (AdamW, fused), loss, schedule, CutMix/MixUp and EMA where the
recipe has them, the autocast of --precision, torch.compile under --compile; and the step is
trainers.loop.train_one_epoch itself (the finiteness watch, the loss sums, the EMA), over a "loader" that hands it
the same uint8 batch every step, so that no decoding or augmentation is counted: only the copy to the device, the
normalisation and the step. A first epoch of --warmup steps (cudnn autotuning, the compilation) is not timed.

Compare with bench/loader.py (the loader alone) and with `train`'s own images_per_s in metrics.jsonl (end to
end). Prints the peak GPU memory of the timed epoch, and as its last line ``images/s: X``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from hamdata.errors import HamdataError  # noqa: E402
from trainers.config import PRECISIONS, RECIPES  # noqa: E402


class SameBatch:
    """A loader of ``steps`` batches that are all one batch (train_one_epoch asks len(loader.dataset))."""

    def __init__(self, batch: dict, steps: int):
        self.batch, self.dataset = batch, range(steps)

    def __iter__(self):
        return (self.batch for _ in self.dataset)

    def __len__(self):
        return len(self.dataset)


class RecipeStep:
    """The pieces `train RECIPE` assembles (trainers.run) for ``config`` on ``device``, and its train_one_epoch over
    any loader: a SameBatch (the step alone) or the trainers' own loader (the step fed by it: bench/loader.py)."""

    def __init__(self, build, config, device: torch.device, steps: int):
        from trainers.data import fit_metadata
        from trainers.dist import Dist
        from trainers.losses import make_loss
        from trainers.loop import compiled, make_env, make_optimizer
        from trainers.convgrad import cpu_conv_grads
        from trainers.models import build_model
        from trainers.regularize import make_ema, make_mix
        from trainers.schedules import make_scheduler

        self.metadata = fit_metadata(build) if config.metadata else None
        if build.train_stats is None:
            raise HamdataError(f"{build.path}: no train statistics (an empty train split?)")
        self.env = make_env(Dist(), device, build.train_stats.as_dict(), config.precision)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.config, self.device, self.classes = config, device, len(build.classes)
        torch.manual_seed(0)
        model = build_model(config.arch, "none", self.classes, metadata=self.metadata).to(device)
        model = model.to(memory_format=torch.channels_last)  # as train's, on every device
        if device.type == "cpu":
            cpu_conv_grads(model)  # as train's on the CPU (trainers/convgrad.py)
        self.opt = make_optimizer(config, model)
        self.sched = make_scheduler(config, self.opt, steps)
        self.loss_fn = make_loss(config, [1.0] * self.classes).to(device)
        self.net = compiled(model) if config.compile else model  # as train --compile does
        self.pieces = dict(mix=make_mix(config, self.classes), ema=make_ema(config, model))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.env.scaled)

    def fixed_batch(self) -> dict:
        """One random uint8 batch of the config's size (pinned on CUDA), with metadata under fusion."""
        generator = torch.Generator().manual_seed(0)
        size, batch = self.config.image_size, self.config.batch_size
        sample = {"images": torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator),
                  "labels": torch.randint(0, self.classes, (batch,), generator=generator)}
        if self.metadata is not None:
            from trainers.fusion import MetadataEncoding

            sample["meta"] = torch.rand((batch, MetadataEncoding.from_dict(self.metadata).dim), generator=generator)
        if self.device.type == "cuda":
            sample = {k: v.pin_memory() for k, v in sample.items()}
        return sample

    def epoch(self, loader, epoch: int) -> dict:
        """trainers.loop.train_one_epoch over ``loader``: images, seconds, loader_wait_s, ..."""
        from trainers.loop import train_one_epoch

        return train_one_epoch(self.env, self.net, loader, self.opt, self.sched, self.scaler, self.loss_fn,
                               **self.pieces, epoch=epoch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", help="a build folder (its train statistics and, with --metadata, its train split)")
    parser.add_argument("--recipe", choices=RECIPES, default="phase5")
    parser.add_argument("--arch", help="backbone (default: the recipe's)")
    parser.add_argument("--image-size", type=int, help="crop side (default: the recipe's)")
    parser.add_argument("--batch-size", type=int, help="batch (default: the recipe's)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model, as train --compile does")
    parser.add_argument("--metadata", action="store_true", default=None, help="metadata fusion (phase6's default)")
    parser.add_argument("--steps", type=int, default=100, help="steps timed")
    parser.add_argument("--warmup", type=int, default=10, help="steps run first, untimed")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    args = parser.parse_args()

    from trainers.data import open_build
    from trainers.recipes import recipe_config

    try:
        build = open_build(args.shards)
        config = recipe_config(args.recipe, arch=args.arch, image_size=args.image_size, batch_size=args.batch_size,
                               precision=args.precision, compile=args.compile, metadata=args.metadata,
                               weights="none", device=args.device)
        device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                              else "cpu")
        runner = RecipeStep(build, config, device, args.warmup + args.steps)
    except HamdataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sample, size, batch, metadata = runner.fixed_batch(), config.image_size, config.batch_size, runner.metadata

    started = time.perf_counter()
    runner.epoch(SameBatch(sample, args.warmup), epoch=0)
    warm = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    stats = runner.epoch(SameBatch(sample, args.steps), epoch=1)
    rate = stats["images"] / stats["seconds"]  # the epoch ends with its one read: the device has finished
    memory = f"{torch.cuda.max_memory_allocated() / 2 ** 30:.2f} GiB peak" if device.type == "cuda" else "CPU"
    print(f"{args.recipe} {config.arch} {size}px batch {batch} on {device} ({runner.env.precision}"
          f"{', compiled' if config.compile else ''}{', metadata fusion' if metadata else ''}): "
          f"step alone {rate:.1f} images/s ({1000 * batch / rate:.1f} ms a batch), {memory}; warm-up {warm:.1f} s")
    print(f"images/s: {rate:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
