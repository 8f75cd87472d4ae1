"""Learning-rate schedules: pure functions of the optimizer step, wrapped as torch schedulers stepped per batch."""

from __future__ import annotations

import math

import torch

from .config import TrainConfig


def cosine_factor(step: int, total: int, warmup: int, floor: float) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine from 1 down to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer, total: int, warmup: int, floor: float):
    """cosine_factor as a LambdaLR over ``total`` optimizer steps."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, total, warmup, floor))


def warm_restarts(optimizer, cycle_steps: int, min_lr: float):
    """CosineAnnealingWarmRestarts with its cycle in optimizer steps (stepped once per batch)."""
    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=cycle_steps, eta_min=min_lr)


def make_scheduler(config: TrainConfig, optimizer, steps_per_epoch: int):
    """The config's schedule (one of config.SCHEDULES), stepped once per optimizer step."""
    if config.schedule == "warm_restarts":
        return warm_restarts(optimizer, config.restart_epochs * steps_per_epoch, config.min_lr)
    return warmup_cosine(optimizer, config.epochs * steps_per_epoch, round(config.warmup_epochs * steps_per_epoch),
                         min(1.0, config.min_lr / config.lr))
