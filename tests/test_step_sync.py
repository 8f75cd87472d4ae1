"""The training step reads nothing back from the device: the host looks at the loss's finiteness every
CHECK_EVERY steps and once at the end of the epoch (issue: training at the GPU's pace). On the CPU a read costs
nothing, so the test counts the reads that the training loop's own code makes (trainers/loop.py and the EMA in
trainers/regularize.py): each would be a host-GPU sync on CUDA."""

from __future__ import annotations

import sys

import pytest
import torch

from trainers import loop
from trainers.dist import Dist
from trainers.regularize import EMA

READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu", "numpy")
OURS = ("trainers/loop.py", "trainers/regularize.py")


class Batches:
    """A loader of ``n`` fixed batches (the loop asks len(loader.dataset) for its progress bar)."""

    def __init__(self, n: int, poison_at: int = 0):
        generator = torch.Generator().manual_seed(0)
        self.dataset = [{"images": torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8, generator=generator),
                         "labels": torch.randint(0, 3, (4,), generator=generator)} for _ in range(n)]
        self.poison_at = poison_at

    def __iter__(self):
        return iter(self.dataset)


def run_epoch(batches: Batches, monkeypatch) -> tuple[dict, list]:
    reads = []

    def counting(name):
        real = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename.replace("\\\\", "/")
            if caller.endswith(OURS):
                reads.append(f"{name} at {caller.rsplit('/', 1)[-1]}:{sys._getframe(1).f_lineno}")
            return real(self, *args, **kwargs)
        return read

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    env = loop.make_env(Dist(), torch.device("cpu"), {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    calls = [0]

    def loss_fn(logits, labels):
        calls[0] += 1
        loss = torch.nn.functional.cross_entropy(logits, labels)
        return loss * float("nan") if calls[0] == batches.poison_at else loss

    ema = EMA(model, 0.99)
    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    try:
        result = loop.train_one_epoch(env, model, batches, opt, sched, torch.amp.GradScaler("cpu", enabled=False),
                                      loss_fn, ema=ema)
    finally:
        monkeypatch.undo()
    return result, reads


def test_an_epoch_reads_the_device_once_per_check_interval_and_at_its_end(monkeypatch):
    result, reads = run_epoch(Batches(60), monkeypatch)
    assert result["steps"] == 60 and result["images"] == 240
    assert len(reads) <= 60 // loop.CHECK_EVERY + 1, reads  # 2 looks at the flag, then the epoch's one read


def test_a_non_finite_loss_still_names_its_step(monkeypatch):
    with pytest.raises(loop.NonFiniteLoss, match=r"loss is nan at epoch 1, step 30$"):
        run_epoch(Batches(60, poison_at=30), monkeypatch)
