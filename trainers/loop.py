"""The pieces of the training loop every recipe shares: the optimizer, one training epoch, and predictions
of a split (with TTA); processes and devices (DDP) are in ``dist.py``.

The run built from them (run folders, resume, checkpoint saving, the final test
evaluation) is in ``run.py``; checkpoint files in ``checkpoints.py``; evaluate and
predict of a saved checkpoint in ``predict.py``; the learning-rate schedules in
``schedules.py``; EMA and MixUp/CutMix in ``regularize.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from tqdm import tqdm

from hamdata.errors import HamdataError

from .config import TrainConfig
from .data import StreamSpec, make_loader, normalize
from .dist import Dist, gather
from .decode import batch_images


# ------------------------------------------------------------------ pure pieces


def batches_per_rank(samples: int, world: int, batch_size: int, max_steps: int) -> int:
    """Full batches every rank runs per epoch (all ranks the same)."""
    batches = (samples // world) // batch_size
    if batches == 0:
        raise HamdataError(f"--batch-size {batch_size}: larger than the {samples // world} training samples "
                           f"per process; use a smaller batch")
    return min(batches, max_steps) if max_steps else batches


# ------------------------------------------------------------------ environment


# ------------------------------------------------------------------ building blocks


class NonFiniteLoss(HamdataError):
    pass


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms and biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    # one kernel for all parameters instead of one per tensor: on CUDA, and on the CPU too (torch >= 2.4), where it is
    # 4-5x faster than the per-tensor loop (ResNet-18: 12 ms a step instead of 67, one thread)
    fused = next(model.parameters()).device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=config.lr, fused=fused or None)


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """``opt.load_state_dict(state)`` (a checkpoint's), keeping this machine's kernel choice (fused / foreach, not
    the saver's) and giving each per-parameter tensor of the state its parameter's memory layout. torch keeps the
    saved layout, and the fused and foreach kernels walk parameter, gradient and moments in memory order: NCHW
    moments beside channels_last weights (a checkpoint from before the weights were channels_last on the CPU, or
    saved by another version) would pair each weight with another weight's moments, silently."""
    kernels = [(g.get("fused"), g.get("foreach")) for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, (fused, foreach) in zip(opt.param_groups, kernels):
        group["fused"], group["foreach"] = fused, foreach
    for param, values in opt.state.items():
        for name, value in values.items():
            if torch.is_tensor(value) and value.shape == param.shape and value.stride() != param.stride():
                values[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


# ------------------------------------------------------------------ one epoch, one evaluation


@dataclass(frozen=True)
class Env:
    """Where and how tensors run: shared by training and evaluation."""

    dist: Dist
    device: torch.device
    mean: torch.Tensor  # build's train mean, [0, 1] units, on device
    std: torch.Tensor
    precision: str = "fp32"  # resolved: bf16 | fp16 | fp32 (resolve_precision)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def scaled(self) -> bool:
        """fp16 gradients need a loss scaler; bf16's range does not."""
        return self.precision == "fp16"

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(images.to(self.device, non_blocking=True), self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last)  # as the model's weights (run._trainer)

    def autocast(self):
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.precision != "fp32")


def resolve_precision(choice: str, device: torch.device) -> str:
    """--precision auto: bf16 on a CUDA GPU that has it (no loss scaler), fp16 on an older one, fp32 on the CPU."""
    if choice != "auto":
        if choice == "fp16" and device.type != "cuda":
            raise HamdataError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU")
        return choice
    if device.type != "cuda":
        return "fp32"
    # native bf16 only (Ampere and later): an older GPU emulates it, far slower than its fp16 tensor cores
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def make_env(dist: Dist, device: torch.device, stats: dict, precision: str = "auto") -> Env:
    """How tensors run. On CUDA this also sets PyTorch's process-wide TF32 switches: on (fp32 matmuls and
    convolutions on the tensor cores) unless the precision asked is fp32."""
    as_tensor = lambda v: torch.tensor(v, dtype=torch.float32, device=device)  # noqa: E731
    resolved = resolve_precision(precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = resolved != "fp32"
    return Env(dist, device, as_tensor(stats["mean"]), as_tensor(stats["std"]), resolved)


def compiled(net: nn.Module) -> nn.Module:
    """``net`` through torch.compile (--compile), for the training steps only: it shares its parameters with the
    plain module, which validation, the EMA and the checkpoints use as it is (plain state_dict keys, no
    ``_orig_mod.``), so the last, partial evaluation batch never waits for a recompilation."""
    return torch.compile(net)


def is_compile_error(exc: BaseException) -> bool:
    """Whether torch.compile (dynamo or inductor) raised ``exc``, at the first step it compiled."""
    return type(exc).__module__.startswith(("torch._dynamo", "torch._inductor"))


def compile_error_reason(exc: BaseException) -> str:
    """The first line of what the compiler itself said (dynamo wraps it)."""
    cause = getattr(exc, "inner_exception", None) or exc.__cause__ or exc
    return (f"{type(cause).__name__}: {cause}".strip().splitlines() or [""])[0][:300]


CHECK_EVERY = 25  # steps between two looks of the host at the step's finiteness flag (all ranks at once)
NO_BAD_STEP = 2 ** 62  # "no non-finite loss yet", as a step number that every real one is below


class FiniteWatch:
    """Whether every loss of an epoch was finite, kept on the device: a step only queues work, and the host
    looks every CHECK_EVERY steps and at the end (one read each; under DDP all ranks together, so that they
    stop together). Raises NonFiniteLoss naming the first bad step and its value."""

    def __init__(self, env: Env, epoch: int):
        self.env, self.epoch = env, epoch
        self.first = torch.full((), NO_BAD_STEP, dtype=torch.int64, device=env.device)
        self.value = torch.zeros((), dtype=torch.float64, device=env.device)

    def see(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach()) & (self.first == NO_BAD_STEP)
        self.first = torch.where(bad, torch.full_like(self.first, step), self.first)
        self.value = torch.where(bad, loss.detach().double(), self.value)

    def flag(self) -> torch.Tensor:
        """The first bad step of any rank (NO_BAD_STEP when none), still on the device."""
        first = self.first.clone()
        if self.env.dist.world > 1:
            torch_dist.all_reduce(first, op=torch_dist.ReduceOp.MIN)
        return first

    def raise_if_bad(self, first: int) -> None:
        if first == NO_BAD_STEP:
            return
        mine = int(self.first.item()) == first  # only on the way out: the run stops here
        value = float(self.value.item()) if mine else "non-finite on another process"
        raise NonFiniteLoss(f"loss is {value} at epoch {self.epoch + 1}, step {first}")


def forward(model, x: torch.Tensor, batch: dict, env: Env) -> torch.Tensor:
    """The model's logits; a metadata-fusion model also gets the batch's metadata."""
    if "meta" in batch:
        return model(x, batch["meta"].to(env.device, non_blocking=True))
    return model(x)


def train_one_epoch(env: Env, model, loader, opt, sched, scaler, loss_fn, *, mix=None, ema=None, epoch: int = 0) -> dict:
    """One pass over ``loader``; returns mean loss (over all ranks), steps, images and seconds.

    Nothing in a step reads a value back from the device, so the host queues the next step while the device
    works: the finiteness of the loss is watched on the device (FiniteWatch: the host looks every CHECK_EVERY
    steps), the loss sums stay there until the epoch ends, and the EMA counts its updates on the host.
    """
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=env.device)  # the epoch's summed loss, on the device
    watch = FiniteWatch(env, epoch)
    started, steps, waited, images = time.perf_counter(), 0, 0.0, 0
    bar = tqdm(loader, total=len(loader.dataset), desc=f"epoch {epoch + 1}",
               leave=False, disable=None if env.dist.main else True, dynamic_ncols=True)
    # waited: host time blocked on the loader, from the end of one step to the next batch; the GPU may still be
    # working through the steps queued before, so this bounds the GPU's idle time from above.
    tick = time.perf_counter()
    for steps, batch in enumerate(bar, 1):
        waited += time.perf_counter() - tick
        x, y = env.batch(batch_images(batch, env.device)), batch["labels"].to(env.device, non_blocking=True)
        if mix is not None:
            x, y = mix(x, y)
        with env.autocast():
            loss = loss_fn(forward(model, x, batch, env), y)
        watch.see(loss, steps)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        if ema is not None:
            ema.update_parameters(model.module if hasattr(model, "module") else model)
        total += loss.detach().double() * len(x)
        images += len(x)  # on the host: a count copied to the device each step would wait for it
        if steps % CHECK_EVERY == 0:
            watch.raise_if_bad(int(watch.flag().item()))
        tick = time.perf_counter()
    sums = torch.stack([total, torch.full_like(total, images)])
    if env.dist.world > 1:
        torch_dist.all_reduce(sums)
    first, loss_sum, images = torch.cat([watch.flag().double().view(1), sums]).tolist()  # the epoch's one read
    watch.raise_if_bad(int(first))
    seconds = time.perf_counter() - started
    return {"loss": loss_sum / max(images, 1), "steps": steps, "images": int(images), "seconds": seconds,
            "loader_wait_s": waited}


def tta_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips and 90-degree rotations of a batch (lesions have no up or left)."""
    flipped = torch.flip(x, dims=(3,))
    return [torch.rot90(v, k, dims=(2, 3)) for v in (x, flipped) for k in range(4)]


@torch.no_grad()
def predict_batches(env: Env, model, loader, tta: bool = False, *, num_classes: int) -> tuple[list, list, np.ndarray]:
    """Ids, labels and probabilities (n x num_classes: the build's class list) of every batch of ``loader``."""
    model.eval()
    ids, labels, probs = [], [], []
    for batch in loader:
        x = env.batch(batch["images"])
        views = tta_views(x) if tta else [x]
        with env.autocast():
            p = torch.stack([torch.softmax(forward(model, v, batch, env).float(), 1) for v in views]).mean(0)
        ids += batch["image_ids"]
        labels += batch["labels"].tolist()  # the loader's host tensor: no device read
        probs.append(p)  # kept on the device: one copy at the end, not a sync per batch
    return ids, labels, torch.cat(probs).cpu().numpy() if probs else np.zeros((0, num_classes))


def predict_split(env: Env, model, shards, expected: int, *, image_size: int, batch_size: int, workers: int,
                  num_classes: int, tta: bool = False, what: str = "split", metadata: str = "",
                  guard: tuple = ()) -> tuple[list, np.ndarray, np.ndarray]:
    """Predictions for every sample of a split (all ranks together), sorted by image id, checked complete.

    num_classes: the model's outputs (the length of the build's class list).

    metadata: the model's MetadataEncoding as JSON (a fusion model), empty for an image-only model.
    guard: the folders whose replacement stops the reading (trainers.data.check_unchanged).
    """
    spec = StreamSpec.evaluation(shards, image_size=image_size, batch_size=batch_size, rank=env.dist.rank,
                                 world=env.dist.world, metadata=metadata, guard=guard)
    mine = predict_batches(env, model, make_loader(spec, workers, pin_memory=env.cuda), tta, num_classes=num_classes)
    ids, labels, probs = [], [], []
    for part_ids, part_labels, part_probs in gather(mine, env.dist):
        ids += part_ids
        labels += part_labels
        probs.append(part_probs)
    if len(ids) != expected or len(set(ids)) != len(ids):
        raise HamdataError(f"{what}: evaluation saw {len(ids)} samples ({len(set(ids))} distinct), "
                           f"dataset.json lists {expected}; the shards do not match their card")
    order = np.argsort(ids, kind="stable")
    return [ids[i] for i in order], np.asarray(labels)[order], np.concatenate(probs)[order]
