"""Regularisers a config switches on: one of CutMix / MixUp per batch, and an EMA of the weights."""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel
from torchvision.transforms import v2

from .config import TrainConfig


def make_mix(config: TrainConfig, num_classes: int):
    """One of CutMix / MixUp per batch (torchvision.transforms.v2) over the build's ``num_classes`` classes, or None
    when both alphas are 0."""
    choices = []
    if config.cutmix_alpha > 0:
        choices.append(v2.CutMix(num_classes=num_classes, alpha=config.cutmix_alpha))
    if config.mixup_alpha > 0:
        choices.append(v2.MixUp(num_classes=num_classes, alpha=config.mixup_alpha))
    return v2.RandomChoice(choices) if choices else None


def ema_decay_at(decay: float, updates: int) -> float:
    """EMA decay warmed up over the first updates, so that short runs get a useful average."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


def make_ema(config: TrainConfig, model):
    """torch.optim.swa_utils.AveragedModel keeping an EMA of weights and buffers, or None."""
    if not config.ema_decay:
        return None

    def update(ema_params, params, n_averaged):
        decay = ema_decay_at(config.ema_decay, int(n_averaged))
        if ema_params[0].is_floating_point():
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        else:  # integer buffers (BatchNorm's num_batches_tracked)
            for e, p in zip(ema_params, params):
                e.copy_(p)

    return AveragedModel(model, multi_avg_fn=update, use_buffers=True)
