"""Regularisers a config switches on: one of CutMix / MixUp per batch, and an EMA of the weights."""

from __future__ import annotations

import itertools

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


class EMA(AveragedModel):
    """An exponential moving average of the weights and buffers whose update never reads a device value.

    torch.optim.swa_utils.AveragedModel asks its device counter ``n_averaged`` whether this is the first update
    (two reads a step, each a host-GPU sync). The count is kept on the host as well: 0 when made, read once from
    the buffer after a checkpoint is loaded. The arithmetic is AveragedModel's with the decay of ema_decay_at:
    the first update copies, the next ones lerp towards the model by 1 - decay.
    """

    def __init__(self, model, decay: float):
        super().__init__(model, use_buffers=True)
        self.decay = decay
        self.updates = 0  # the host's copy of n_averaged

    @torch.no_grad()
    def update_parameters(self, model) -> None:
        mine = list(itertools.chain(self.module.parameters(), self.module.buffers()))
        theirs = [p.detach().to(m.device) for m, p in zip(mine, itertools.chain(model.parameters(), model.buffers()))]
        if self.updates == 0:
            for m, p in zip(mine, theirs):
                m.detach().copy_(p)
        else:
            weight = 1.0 - ema_decay_at(self.decay, self.updates)
            groups: dict = {}
            for m, p in zip(mine, theirs):
                if m.is_floating_point():
                    pair = groups.setdefault((m.device, m.dtype), ([], []))
                    pair[0].append(m.detach())
                    pair[1].append(p)
                else:  # integer buffers (BatchNorm's num_batches_tracked)
                    m.detach().copy_(p)
            for averaged, current in groups.values():
                torch._foreach_lerp_(averaged, current, weight)
        self.n_averaged += 1
        self.updates += 1

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.updates = int(self.n_averaged)  # one read, when a run resumes
        return result


def make_ema(config: TrainConfig, model):
    """The EMA of the weights and buffers (``EMA``), or None."""
    if not config.ema_decay:
        return None
    return EMA(model, config.ema_decay)
