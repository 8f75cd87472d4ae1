"""Focal loss with per-class alpha (inverse frequency, or class-balanced after Cui et al.), for hard or soft targets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def inverse_frequency_alpha(counts: Sequence[float]) -> list[float]:
    """Per-class weights proportional to 1 / count, with mean 1 over the classes present.

    Classes with no samples get 1.0: they never occur as a target, so the value
    does not matter, and 1.0 keeps the vector readable. Equal counts give all ones.
    """
    present = [c for c in counts if c > 0]
    if not present:
        return [1.0] * len(counts)
    inverse = [1.0 / c if c > 0 else 0.0 for c in counts]
    scale = len(present) / sum(inverse)
    return [v * scale if c > 0 else 1.0 for v, c in zip(inverse, counts)]


def class_balanced_alpha(counts: Sequence[float], beta: float) -> list[float]:
    """Cui et al. (CVPR 2019): weights proportional to 1 / effective number = (1 - beta) / (1 - beta^n_c).

    Normalised to mean 1 over the classes present; a class with no samples gets 1.0 (as in
    ``inverse_frequency_alpha``). beta = 0 gives equal weights, beta -> 1 tends to 1 / n_c.
    """
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    present = [c for c in counts if c > 0]
    if not present:
        return [1.0] * len(counts)
    raw = [(1.0 - beta) / (1.0 - beta ** c) if c > 0 else 0.0 for c in counts]
    scale = len(present) / sum(raw)
    return [v * scale if c > 0 else 1.0 for v, c in zip(raw, counts)]


class FocalLoss(nn.Module):
    """-alpha_y (1 - p_y)^gamma log p_y, averaged over the batch (Lin et al., 2017).

    ``target`` is either class indices (B,) or class probabilities (B, C); for
    the latter the loss is the target-weighted sum over classes. Computed in
    float32 whatever the autocast dtype of the logits.
    """

    def __init__(self, alpha: Sequence[float] | None = None, gamma: float = 2.0):
        super().__init__()
        self.gamma = float(gamma)
        self.register_buffer("alpha", None if alpha is None else torch.tensor(list(alpha), dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=1)
        if target.dtype in (torch.int64, torch.int32):
            target = F.one_hot(target.long(), log_p.shape[1]).float()
        weight = (1.0 - log_p.exp()).clamp(min=0).pow(self.gamma)
        per_class = -weight * log_p * target.float()
        if self.alpha is not None:
            per_class = per_class * self.alpha
        return per_class.sum(1).mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={None if self.alpha is None else [round(a, 3) for a in self.alpha.tolist()]}"


def loss_alpha(config, stream_counts: Sequence[float]) -> list[float] | None:
    """The per-class alpha of the config's focal loss over the training stream's class counts; None otherwise."""
    if config.loss == "focal":
        return inverse_frequency_alpha(stream_counts)
    if config.loss == "cb_focal":
        return class_balanced_alpha(stream_counts, config.cb_beta)
    return None


def make_loss(config, stream_counts: Sequence[float]) -> nn.Module:
    """The config's loss; a focal loss's alpha from the class counts of the training stream (``loss_alpha``)."""
    if config.loss in ("focal", "cb_focal"):
        return FocalLoss(loss_alpha(config, stream_counts), config.focal_gamma)
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)


def alpha_by_class(loss_fn, classes: tuple[str, ...]) -> dict | None:
    """A focal loss's per-class alpha by class name (config.json records it), None for other losses."""
    alpha = getattr(loss_fn, "alpha", None)
    return None if alpha is None else dict(zip(classes, alpha.tolist()))
