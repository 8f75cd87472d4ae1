"""The training step reads nothing back from the device: the host looks at the loss's finiteness every
CHECK_EVERY steps and once at the end of the epoch (issue: training at the GPU's pace). On the CPU a read costs
nothing, so the test counts the reads that the training loop's own code makes (trainers/loop.py and the EMA in
trainers/regularize.py): each would be a host-GPU sync on CUDA. And --precision: what it resolves to, what a run
records, what the CPU refuses; AdamW fused, on the CPU as on CUDA."""

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


# ------------------------------------------------------------------ --precision


def test_precision_auto_is_fp32_on_the_cpu_and_fp16_there_is_refused():
    cpu = torch.device("cpu")
    assert loop.resolve_precision("auto", cpu) == "fp32" and loop.resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(loop.HamdataError, match="fp16 needs a CUDA GPU"):
        loop.resolve_precision("fp16", cpu)
    env = loop.make_env(Dist(), cpu, {"mean": [0.5] * 3, "std": [0.25] * 3}, "bf16")
    with env.autocast():
        assert torch.nn.Linear(4, 2)(torch.ones(1, 4)).dtype == torch.bfloat16
    assert not env.scaled
    with loop.make_env(Dist(), cpu, {"mean": [0.5] * 3, "std": [0.25] * 3}).autocast():
        assert torch.nn.Linear(4, 2)(torch.ones(1, 4)).dtype == torch.float32


def test_a_bf16_cpu_run_records_its_precision_and_fp16_on_the_cpu_is_one_line(build, tmp_path):
    import json

    from helpers import cli, one_error_line

    args = ["--shards", build, "--weights", "none", "--epochs", 1, "--max-steps", 2, "--image-size", 32,
            "--batch-size", 8, "--workers", 0, "--device", "cpu"]
    result = cli("train", "phase5", *args, "--out", tmp_path / "bf16", "--precision", "bf16")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["precision"] == "bf16" and config["config"]["precision"] == "bf16"
    assert all(line["train_loss"] == line["train_loss"] for line in map(json.loads, (tmp_path / "bf16" / "metrics.jsonl").open()))
    resumed = cli("train", "phase5", "--resume", tmp_path / "bf16", "--epochs", 2, "--precision", "fp32")
    assert resumed.exit_code == 0, resumed.output  # the precision may change on --resume (a GPU run resumed on a CPU)
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["precision"] == "fp32"
    refused = cli("train", "phase5", *args, "--out", tmp_path / "fp16", "--precision", "fp16")
    assert refused.exit_code == 2 and "--precision fp16" in one_error_line(refused)
    assert not (tmp_path / "fp16").exists()


def test_adamw_is_fused_on_the_cpu_and_on_cuda():
    from trainers.config import TrainConfig

    model = torch.nn.Linear(4, 2)
    optimizer = loop.make_optimizer(TrainConfig(recipe="phase5", arch="resnet18"), model)
    assert [group["fused"] for group in optimizer.param_groups] == [True, True]
    if torch.cuda.is_available():
        fused = loop.make_optimizer(TrainConfig(recipe="phase5", arch="resnet18"), model.cuda()).defaults["fused"]
        assert fused is True


def test_optimizer_state_saved_nchw_resumes_on_channels_last_weights_as_if_never_stopped():
    """A checkpoint's AdamW moments in NCHW (saved before the weights were channels_last on the CPU) loaded beside
    channels_last weights: the fused kernel walks both in memory order, so they must take the weights' layout."""
    import copy

    from trainers.config import TrainConfig

    config = TrainConfig(recipe="phase5", arch="resnet18", lr=0.1)
    torch.manual_seed(0)
    nchw = torch.nn.Conv2d(3, 8, 3)
    x = torch.randn(4, 3, 6, 6)

    def step(model, optimizer, inputs):
        optimizer.zero_grad()
        model(inputs).square().mean().backward()
        optimizer.step()

    first = loop.make_optimizer(config, nchw)
    step(nchw, first, x)
    saved_weights, saved_state = copy.deepcopy(nchw.state_dict()), copy.deepcopy(first.state_dict())  # as torch.save
    assert not saved_state["state"][0]["exp_avg"].is_contiguous(memory_format=torch.channels_last)
    step(nchw, first, x)  # the run that was never stopped

    resumed = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    resumed.load_state_dict(saved_weights)
    second = loop.make_optimizer(config, resumed)
    loop.load_optimizer_state(second, saved_state)
    assert second.state[resumed.weight]["exp_avg"].stride() == resumed.weight.stride()
    assert second.param_groups[0]["fused"] is True
    step(resumed, second, x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(resumed.weight, nchw.weight, atol=1e-6)
