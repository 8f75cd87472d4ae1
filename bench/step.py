"""Images per second of a recipe's training step alone: the trainers' own loop, fed one fixed batch.

    python bench/step.py SHARDS_DIR --recipe phase5 [--arch A] [--image-size S] [--batch-size B]
                         [--precision auto|bf16|fp16|fp32] [--compile] [--metadata] [--steps 100] [--device auto]

The pieces are those `train RECIPE` assembles (trainers.run): the recipe's model (with metadata fusion under
--metadata, fitted on the build's train split), channels_last on CUDA, its optimizer (AdamW, fused), loss,
schedule, CutMix/MixUp and EMA where the recipe has them, the autocast of --precision, torch.compile under
--compile; and the step is trainers.loop.train_one_epoch itself (the finiteness watch, the loss sums, the EMA),
over a "loader" that hands it the same uint8 batch every step, so that no decoding or augmentation is counted:
only the copy to the device, the normalisation and the step. A first epoch of --warmup steps (cudnn autotuning,
the compilation) is not timed.

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

    from trainers.data import fit_metadata, open_build
    from trainers.dist import Dist
    from trainers.losses import make_loss
    from trainers.loop import compiled, make_env, make_optimizer, train_one_epoch
    from trainers.models import build_model
    from trainers.recipes import recipe_config
    from trainers.regularize import make_ema, make_mix
    from trainers.schedules import make_scheduler

    try:
        build = open_build(args.shards)
        config = recipe_config(args.recipe, arch=args.arch, image_size=args.image_size, batch_size=args.batch_size,
                               precision=args.precision, compile=args.compile, metadata=args.metadata,
                               weights="none", device=args.device)
        device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                              else "cpu")
        metadata = fit_metadata(build) if config.metadata else None
        if build.train_stats is None:
            raise HamdataError(f"{build.path}: no train statistics (an empty train split?)")
        env = make_env(Dist(), device, build.train_stats.as_dict(), config.precision)
    except HamdataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    classes = len(build.classes)
    torch.manual_seed(0)
    model = build_model(config.arch, "none", classes, metadata=metadata).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(config, model)
    sched = make_scheduler(config, opt, args.warmup + args.steps)
    loss_fn = make_loss(config, [1.0] * classes).to(device)
    net = compiled(model) if config.compile else model  # as train --compile does
    generator = torch.Generator().manual_seed(0)
    size, batch = config.image_size, config.batch_size
    sample = {"images": torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator),
              "labels": torch.randint(0, classes, (batch,), generator=generator)}
    if metadata is not None:
        from trainers.fusion import MetadataEncoding

        sample["meta"] = torch.rand((batch, MetadataEncoding.from_dict(metadata).dim), generator=generator)
    if device.type == "cuda":
        sample = {k: v.pin_memory() for k, v in sample.items()}
    pieces = dict(mix=make_mix(config, classes), ema=make_ema(config, model))
    scaler = torch.amp.GradScaler(device.type, enabled=env.scaled)

    started = time.perf_counter()
    train_one_epoch(env, net, SameBatch(sample, args.warmup), opt, sched, scaler, loss_fn, **pieces, epoch=0)
    warm = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    stats = train_one_epoch(env, net, SameBatch(sample, args.steps), opt, sched, scaler, loss_fn, **pieces, epoch=1)
    rate = stats["images"] / stats["seconds"]  # the epoch ends with its one read: the device has finished
    memory = f"{torch.cuda.max_memory_allocated() / 2 ** 30:.2f} GiB peak" if device.type == "cuda" else "CPU"
    print(f"{args.recipe} {config.arch} {size}px batch {batch} on {device} ({env.precision}"
          f"{', compiled' if config.compile else ''}{', metadata fusion' if metadata else ''}): "
          f"step alone {rate:.1f} images/s ({1000 * batch / rate:.1f} ms a batch), {memory}; warm-up {warm:.1f} s")
    print(f"images/s: {rate:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
