"""Phase 4: EfficientNet-B0 with CutMix/MixUp, EMA and early stopping.

\b
    python cli.py train phase4 --shards shards

\b
- Data: the train split with class-aware repeat-factor resampling (a
  balanced set with ``--train-set balanced-N``).
- Per batch, one of CutMix (alpha 1.0) or MixUp (alpha 0.2) from
  torchvision.transforms.v2; cross-entropy on the mixed soft targets.
- AdamW (weight decay 0.05, none on norms and biases); one epoch of linear
  warmup, then cosine to 1e-6, stepped per batch.
- EMA of the weights (torch.optim.swa_utils.AveragedModel, decay 0.999,
  warmed up over the first steps); both the model and the EMA are validated
  every epoch; checkpoints best.pt, best_ema.pt and last.pt.
- Early stopping after 8 epochs without a better validation macro-F1.
- At the end the better of best / best_ema (by validation macro-F1) is
  evaluated on the test split, with Grad-CAM overlays of one correct and one
  wrong test image per class where they exist.
"""

from __future__ import annotations

import math

from hamdata.classes import CLASSES
from trainers import TrainConfig

CONFIG = TrainConfig(
    recipe="phase4",
    arch="efficientnet_b0",
    train_set="train",
    epochs=30,
    batch_size=64,
    lr=1e-3,
    weight_decay=0.05,
    loss="cross_entropy",
    schedule="cosine",
    warmup_epochs=1.0,
    min_lr=1e-6,
    mixup_alpha=0.2,
    cutmix_alpha=1.0,
    ema_decay=0.999,
    patience=8,
    gradcam=True,
)


# The pieces Phase 4 switches on. torch is imported inside them, so that the CLI
# can read CONFIG (for --help) without importing torch.


def cosine_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine from 1 down to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer, total: int, warmup: int, floor: float):
    """cosine_factor as a LambdaLR over ``total`` optimizer steps."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, total, warmup, floor))


def make_mix(config: TrainConfig):
    """One of CutMix / MixUp per batch (torchvision.transforms.v2), or None when both alphas are 0."""
    from torchvision.transforms import v2

    choices = []
    if config.cutmix_alpha > 0:
        choices.append(v2.CutMix(num_classes=len(CLASSES), alpha=config.cutmix_alpha))
    if config.mixup_alpha > 0:
        choices.append(v2.MixUp(num_classes=len(CLASSES), alpha=config.mixup_alpha))
    return v2.RandomChoice(choices) if choices else None


def ema_decay_at(decay: float, updates: int) -> float:
    """EMA decay warmed up over the first updates, so that short runs get a useful average."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


def make_ema(config: TrainConfig, model):
    """torch.optim.swa_utils.AveragedModel keeping an EMA of weights and buffers, or None."""
    if not config.ema_decay:
        return None
    import torch
    from torch.optim.swa_utils import AveragedModel

    def update(ema_params, params, n_averaged):
        decay = ema_decay_at(config.ema_decay, int(n_averaged))
        if ema_params[0].is_floating_point():
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        else:  # integer buffers (BatchNorm's num_batches_tracked)
            for e, p in zip(ema_params, params):
                e.copy_(p)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
