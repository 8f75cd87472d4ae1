"""The training loop both recipes share: epochs, validation, checkpoints, resume, DDP.

A run folder holds config.json, metrics.jsonl (one line per epoch), curves.png,
last.pt (everything needed to resume), best.pt (best validation macro-F1;
best_ema.pt likewise for the EMA weights) and, at the end, the test split's
evaluation of the best checkpoint. Only rank 0 writes; checkpoints are written
to a temporary file and renamed, so a crash never leaves a torn one.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from tqdm import tqdm

from hamdata.classes import CLASSES
from hamdata.errors import HamdataError
from hamdata.workspace import _alive as process_alive

from . import TrainConfig
from .data import (StreamSpec, TrainSet, find_train_set, make_loader, normalize, open_build, repeat_factors,
                   split_shards)
from .decode import batch_images
from .losses import make_loss
from .metrics import plot_curves, write_evaluation
from .models import build_model
from .phase4 import make_ema, make_mix

CHECKPOINT_FORMAT = "hamdata-checkpoint-1"
# May change on --resume; nothing else may. A new --epochs also moves the end of phase4's cosine schedule.
RESUMABLE = ("epochs", "device", "workers", "decode", "stop_after")


# ------------------------------------------------------------------ pure pieces


def batches_per_rank(samples: int, world: int, batch_size: int, max_steps: int) -> int:
    """Full batches every rank runs per epoch (all ranks the same)."""
    batches = (samples // world) // batch_size
    if batches == 0:
        raise HamdataError(f"--batch-size {batch_size}: larger than the {samples // world} training samples "
                           f"per process; use a smaller batch")
    return min(batches, max_steps) if max_steps else batches


# ------------------------------------------------------------------ environment


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the process group torchrun set up (WORLD_SIZE > 1); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not torch_dist.is_initialized():
        cuda = device != "cpu" and torch.cuda.is_available()
        torch_dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(torch_dist.get_rank(), torch_dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str, dist: Dist) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise HamdataError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu or auto")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(dist.local_rank)
    torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its fastest kernels once
    return torch.device("cuda", dist.local_rank)


def gather(obj, dist: Dist) -> list:
    if dist.world == 1:
        return [obj]
    out = [None] * dist.world
    torch_dist.all_gather_object(out, obj)
    return out


def broadcast(obj, dist: Dist):
    if dist.world == 1:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(dist: Dist) -> None:
    if dist.world > 1:
        torch_dist.barrier()


# ------------------------------------------------------------------ checkpoints


# Every checkpoint holds these (and data holds DATA_FIELDS); last.pt adds TRAINING_FIELDS to resume from.
CHECKPOINT_FIELDS = ("classes", "arch", "config", "data", "epoch", "model")
DATA_FIELDS = ("build", "train_counts", "preprocess", "format", "quality", "mean", "std", "image_size")
TRAINING_FIELDS = ("optimizer", "scheduler", "scaler", "ema", "rng", "progress")


def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file, then rename: a kill during the save leaves the previous ``path`` whole."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def remove_stale_temporaries(out: Path) -> None:
    """Half-written ``.NAME.tmp-PID`` files that a killed run left in its folder."""
    for tmp in out.glob(".*.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if tmp.is_file() and pid.isdigit() and (int(pid) == os.getpid() or not process_alive(int(pid))):
            tmp.unlink(missing_ok=True)


def _short(what, limit: int = 120) -> str:
    """An exception (or text) on one line, cut to ``limit`` characters."""
    text = " ".join(str(what).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _load_failure(path: Path, exc: Exception) -> str:
    """Why torch.load failed, in a few words (torch's own messages run to paragraphs)."""
    if path.stat().st_size == 0:
        return "empty file"
    if isinstance(exc, pickle.UnpicklingError):  # never suggest weights_only=False for a file we cannot trust
        return "UnpicklingError: not a file of tensors and plain values"
    text = re.sub(r"^\[enforce fail at [^\]]*\]\W*", "", " ".join(str(exc).split()))  # c10's location prefix
    return f"{exc.__class__.__name__}: {_short(text.split('. ')[0])}"


def load_checkpoint(path, default_name: str = "best.pt") -> tuple[Path, dict]:
    """A hamdata checkpoint (a file, or a run folder's ``default_name``), checked for its fields and class list.

    A file cut short, random bytes, another zip or pickle, or a dict without the fields is one HamdataError.
    """
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    if not path.is_file():
        raise HamdataError(f"{path}: no such checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files that are not its own
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and torch errors alike
        raise HamdataError(f"{path}: not a readable checkpoint; the file is damaged, cut short or not a checkpoint "
                           f"({_load_failure(path, exc)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise HamdataError(f"{path}: not a hamdata checkpoint (expected format {CHECKPOINT_FORMAT})")
    problems = [f"no {name}" for name in CHECKPOINT_FIELDS if name not in state]
    problems += [f"{name} is not a mapping" for name in ("model", "data", "config") if not isinstance(state.get(name, {}), dict)]
    if isinstance(state.get("data"), dict):
        problems += [f"no data.{name}" for name in DATA_FIELDS if name not in state["data"]]
    if problems:
        raise HamdataError(f"{path}: damaged hamdata checkpoint ({', '.join(problems)})")
    classes = state["classes"]
    if not isinstance(classes, (list, tuple)) or tuple(classes) != CLASSES:
        raise HamdataError(f"{path}: trained for classes {classes}, but hamdata uses {list(CLASSES)}")
    return path, state


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def model_from_checkpoint(state: dict, device: torch.device, path="checkpoint") -> nn.Module:
    model = build_model(state["arch"], "none")
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise HamdataError(f"{path}: damaged hamdata checkpoint (its weights do not fit a {state['arch']}: {_short(exc)})") from None
    return model.to(device).eval()


# ------------------------------------------------------------------ building blocks


class NonFiniteLoss(HamdataError):
    pass


def make_scheduler(config: TrainConfig, optimizer, steps_per_epoch: int):
    """The config's schedule, stepped once per optimizer step."""
    if config.schedule == "warm_restarts":
        from .phase5 import warm_restarts

        return warm_restarts(optimizer, config.restart_epochs * steps_per_epoch, config.min_lr)
    from .phase4 import warmup_cosine

    return warmup_cosine(optimizer, config.epochs * steps_per_epoch, round(config.warmup_epochs * steps_per_epoch),
                         min(1.0, config.min_lr / config.lr))


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms and biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr)


# ------------------------------------------------------------------ one epoch, one evaluation


@dataclass(frozen=True)
class Env:
    """Where and how tensors run: shared by training and evaluation."""

    dist: Dist
    device: torch.device
    mean: torch.Tensor  # build's train mean, [0, 1] units, on device
    std: torch.Tensor

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        x = normalize(images.to(self.device, non_blocking=True), self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.cuda)


def make_env(dist: Dist, device: torch.device, stats: dict) -> Env:
    as_tensor = lambda v: torch.tensor(v, dtype=torch.float32, device=device)  # noqa: E731
    return Env(dist, device, as_tensor(stats["mean"]), as_tensor(stats["std"]))


def all_finite(loss: torch.Tensor, dist: Dist) -> bool:
    """Whether the loss is finite on every rank (so that all ranks stop together)."""
    bad = (~torch.isfinite(loss.detach())).float()
    if dist.world > 1:
        torch_dist.all_reduce(bad)
    return not bad.item()


def train_one_epoch(env: Env, model, loader, opt, sched, scaler, loss_fn, *, mix=None, ema=None, epoch: int = 0) -> dict:
    """One pass over ``loader``; returns mean loss (over all ranks), steps, images and seconds."""
    model.train()
    total = torch.zeros(2, dtype=torch.float64, device=env.device)
    started, steps = time.perf_counter(), 0
    bar = tqdm(loader, total=len(loader.dataset), desc=f"epoch {epoch + 1}",
               leave=False, disable=None if env.dist.main else True, dynamic_ncols=True)
    for steps, batch in enumerate(bar, 1):
        x, y = env.batch(batch_images(batch, env.device)), batch["labels"].to(env.device, non_blocking=True)
        if mix is not None:
            x, y = mix(x, y)
        with env.autocast():
            loss = loss_fn(model(x), y)
        if not all_finite(loss, env.dist):
            value = loss.item() if not torch.isfinite(loss) else "non-finite on another process"
            raise NonFiniteLoss(f"loss is {value} at epoch {epoch + 1}, step {steps}")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        if ema is not None:
            ema.update_parameters(model.module if hasattr(model, "module") else model)
        total += torch.stack([loss.detach().double() * len(x), torch.tensor(float(len(x)), device=env.device, dtype=torch.float64)])
    if env.dist.world > 1:
        torch_dist.all_reduce(total)
    seconds = time.perf_counter() - started
    loss_sum, images = total.tolist()
    return {"loss": loss_sum / max(images, 1), "steps": steps, "images": int(images), "seconds": seconds}


def tta_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips and 90-degree rotations of a batch (lesions have no up or left)."""
    flipped = torch.flip(x, dims=(3,))
    return [torch.rot90(v, k, dims=(2, 3)) for v in (x, flipped) for k in range(4)]


@torch.no_grad()
def predict_batches(env: Env, model, loader, tta: bool = False) -> tuple[list, list, np.ndarray]:
    model.eval()
    ids, labels, probs = [], [], []
    for batch in loader:
        x = env.batch(batch["images"])
        views = tta_views(x) if tta else [x]
        with env.autocast():
            p = torch.stack([torch.softmax(model(v).float(), 1) for v in views]).mean(0)
        ids += batch["image_ids"]
        labels += batch["labels"].tolist()
        probs.append(p.cpu().numpy())
    return ids, labels, np.concatenate(probs) if probs else np.zeros((0, len(CLASSES)))


def predict_split(env: Env, model, shards, expected: int, *, image_size: int, batch_size: int, workers: int,
                  tta: bool = False, what: str = "split") -> tuple[list, np.ndarray, np.ndarray]:
    """Predictions for every sample of a split (all ranks together), sorted by image id, checked complete."""
    spec = StreamSpec(tuple(shards), "eval", image_size, batch_size, seed=0, epoch=0, rank=env.dist.rank, world=env.dist.world)
    mine = predict_batches(env, model, make_loader(spec, workers, pin_memory=env.cuda), tta)
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


# ------------------------------------------------------------------ a run


def resume_config(state: dict, overrides: dict, path: Path) -> TrainConfig:
    """The checkpoint's config; only RESUMABLE options may change (--stop-after resets)."""
    try:
        saved = TrainConfig.from_dict(state["config"])
    except TypeError as exc:  # a field missing
        raise HamdataError(f"--resume {path}: damaged hamdata checkpoint (config: {_short(exc)})") from None
    if overrides.get("recipe", saved.recipe) != saved.recipe:
        raise HamdataError(f"--resume {path}: a {saved.recipe} run; continue it with `train {saved.recipe} --resume`")
    changed = {k: v for k, v in overrides.items() if v is not None and getattr(saved, k, None) != v}
    fixed = sorted(k for k in changed if k not in RESUMABLE + ("shards",))
    if fixed:
        was = ", ".join(f"--{k.replace('_', '-')} {getattr(saved, k, None)}" for k in fixed)
        raise HamdataError(f"--resume {path}: the run used {was}; these cannot change on resume "
                           f"(only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE)} and --shards can)")
    return saved.replace(**{"stop_after": 0, **changed, "out": str(path.parent)})


def _run_dir(config: TrainConfig, dist: Dist, resuming: bool) -> Path:
    """The run folder's path (rank 0 decides, everyone learns it); refuses to write over another run."""
    answer = None
    if dist.main:
        if config.out:
            out = Path(config.out)
            if not resuming and (out / "last.pt").exists():
                answer = ("error", f"--out {out} holds a run already; continue it with --resume {out} or choose another folder")
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / f"{config.recipe}-{stamp}"
            for n in range(2, 100):
                if not out.exists():
                    break
                out = Path("runs") / f"{config.recipe}-{stamp}-{n}"
        if answer is None:
            answer = ("ok", str(out))
    kind, value = broadcast(answer, dist)
    if kind == "error":
        raise HamdataError(value)
    return Path(value)


def _write_json(path: Path, record) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_history(out: Path, upto: int | None = None) -> list[dict]:
    """metrics.jsonl lines (of epochs <= upto, rewriting the file when it had more: a resumed run)."""
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    lines, torn = [], False
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:  # cut short by a kill while it was appended; its epoch is run again
            torn = torn or bool(text.strip())
    if torn or (upto is not None and any(h["epoch"] > upto for h in lines)):
        lines = [h for h in lines if upto is None or h["epoch"] <= upto]
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(json.dumps(h, sort_keys=True) + "\n" for h in lines), encoding="utf-8")
        os.replace(tmp, path)
    return lines


def describe_train_set(train_set, factors, note: str) -> str:
    counts = ", ".join(f"{dx} {n}" for dx, n in train_set.counts.items())
    what = "train split" if train_set.name == "train" else f"balanced set {train_set.name}"
    how = ("class-aware resampling, repeats per sample " + ", ".join(f"{dx} {r:.2f}" for dx, r in factors.items())
           if factors else "no resampling")
    return f"training set: {what} of {train_set.folder} ({train_set.samples} samples: {counts}); {how}" + (f" [{note}]" if note else "")


def run(config: TrainConfig | None = None, *, resume=None, overrides: dict | None = None, echo=print) -> dict:
    """Train (or, with ``resume``, continue) a run; returns its summary."""
    state = None
    if resume is not None:
        path, state = load_checkpoint(resume, "last.pt")
        if "optimizer" not in state:
            raise HamdataError(f"--resume {path}: holds weights only; resume from a run's last.pt (or its folder)")
        missing = [name for name in TRAINING_FIELDS if name not in state]
        if missing:
            raise HamdataError(f"--resume {path}: damaged hamdata checkpoint (no {', no '.join(missing)})")
        config = resume_config(state, overrides or {}, path)
    elif config is None:
        raise HamdataError("run: expected a TrainConfig or resume")
    dist = init_distributed(config.device)
    try:
        return _fit(config, state, dist, echo if dist.main else (lambda *a, **k: None))
    finally:
        if dist.world > 1 and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


@dataclass
class Progress:
    """Where a run is; saved in last.pt."""

    epoch: int = 0  # epochs completed
    best_f1: float = -1.0
    best_epoch: int = 0
    best_ema_f1: float = -1.0
    stale: int = 0  # epochs since the best validation macro-F1 (model or EMA) improved

    def update(self, line: dict) -> tuple[bool, bool]:
        """Record a finished epoch; returns whether the model / the EMA reached a new best."""
        better = line["val_macro_f1"] > self.best_f1
        better_ema = "val_ema_macro_f1" in line and line["val_ema_macro_f1"] > self.best_ema_f1
        self.epoch = line["epoch"]
        self.stale = 0 if better or better_ema else self.stale + 1
        if better:
            self.best_f1, self.best_epoch = line["val_macro_f1"], line["epoch"]
        if better_ema:
            self.best_ema_f1 = line["val_ema_macro_f1"]
        return better, better_ema


@dataclass
class Plan:
    """What a run reads and where it writes, decided before any tensor exists."""

    config: TrainConfig
    env: Env
    out: Path
    train_set: TrainSet
    note: str
    factors: dict | None  # repeat factors of the resampled stream, None when not resampling
    val: tuple
    test: tuple
    steps: int  # batches per epoch and rank
    meta: dict  # what every checkpoint carries besides weights

    def train_loader(self, epoch: int):
        c, d = self.config, self.env.dist
        factors = tuple(self.factors[dx] for dx in CLASSES) if self.factors else ()
        decode = "gpu" if c.decode == "gpu" and self.env.cuda else "cpu"  # no GPU: _fit said so once
        spec = StreamSpec(self.train_set.shards, "train", c.image_size, c.batch_size, c.seed, epoch, d.rank, d.world, self.steps, factors,
                          decode)
        return make_loader(spec, c.workers, self.env.cuda)


@dataclass
class Trainer:
    """The objects a run trains and checkpoints."""

    model: nn.Module
    net: nn.Module  # the model, wrapped in DDP when there are several processes
    ema: nn.Module | None
    opt: torch.optim.Optimizer
    sched: object
    scaler: torch.amp.GradScaler
    loss_fn: nn.Module
    mix: object
    progress: Progress

    def training_state(self) -> dict:
        return {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None, "rng": rng_state(), "progress": vars(self.progress)}

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.progress = Progress(**state["progress"])
        set_rng_state(state["rng"])


def _plan(config: TrainConfig, state: dict | None, dist: Dist) -> Plan:
    device = resolve_device(config.device, dist)
    build = Path(config.shards)
    card = open_build(build)
    train_set, note = find_train_set(build, config.train_set, card)
    if state and train_set.counts != state["data"]["train_counts"]:
        raise HamdataError(f"--shards {build}: its {train_set.name} set differs from the one the run trained on")
    val, test = split_shards(build, card, "val"), split_shards(build, card, "test")
    steps = batches_per_rank(train_set.samples, dist.world, config.batch_size, config.max_steps)
    config = config.replace(train_set=train_set.name)
    out = _run_dir(config, dist, resuming=state is not None)
    config = config.replace(out=str(out))
    factors = repeat_factors(train_set.counts) if config.resample and not train_set.balanced else None
    data = {"build": str(build.resolve()), "train_set": train_set.name, "train_counts": train_set.counts,
            "train_resampling": factors, "preprocess": card["config"]["preprocess"],
            "format": card["config"].get("format", "jpg"), "quality": card["config"].get("quality", 95),
            "mean": card["train_stats"]["mean"], "std": card["train_stats"]["std"], "image_size": config.image_size}
    meta = {"format": CHECKPOINT_FORMAT, "classes": list(CLASSES), "arch": config.arch, "config": config.to_dict(), "data": data}
    return Plan(config, make_env(dist, device, card["train_stats"]), out, train_set, note, factors, val, test, steps, meta)


def _initial_model(config: TrainConfig, dist: Dist, resuming: bool) -> nn.Module:
    """The model with its starting weights; with several processes rank 0 fetches ImageNet weights first."""
    weights = "none" if resuming else config.weights
    torch.manual_seed(config.seed)
    if weights != "imagenet" or dist.world == 1:
        return build_model(config.arch, weights)
    model, error = None, None
    if dist.main:
        try:
            model = build_model(config.arch, weights)
        except HamdataError as exc:
            error = str(exc)
    error = broadcast(error, dist)
    if error:
        raise HamdataError(error)
    return model if dist.main else build_model(config.arch, weights)  # from the cache rank 0 filled


def _trainer(plan: Plan, resuming: bool) -> Trainer:
    config, env = plan.config, plan.env
    model = _initial_model(config, env.dist, resuming).to(env.device)
    if env.cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(config, model)
    stream = [plan.train_set.counts[dx] * (plan.factors[dx] if plan.factors else 1.0) for dx in CLASSES]
    net = model
    if env.dist.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[env.device.index] if env.cuda else None)
    return Trainer(model, net, make_ema(config, model), opt, make_scheduler(config, opt, plan.steps),
                   torch.amp.GradScaler(env.device.type, enabled=env.cuda), make_loss(config, stream).to(env.device),
                   make_mix(config), Progress())


def _epoch(plan: Plan, t: Trainer, epoch: int) -> dict:
    """Train one epoch and validate the model (and its EMA); returns the metrics.jsonl line."""
    started = time.perf_counter()
    try:
        stats = train_one_epoch(plan.env, t.net, plan.train_loader(epoch), t.opt, t.sched, t.scaler, t.loss_fn,
                                mix=t.mix, ema=t.ema, epoch=epoch)
    except NonFiniteLoss as exc:
        last = plan.out / "last.pt"
        keep = f"the last good checkpoint is {last} (epoch {t.progress.epoch})" if last.exists() else "no checkpoint was written yet"
        raise NonFiniteLoss(f"{exc}: stopped; {keep}") from None
    line = {"epoch": epoch + 1, "train_loss": stats["loss"], "lr": t.opt.param_groups[0]["lr"], "steps": stats["steps"],
            "images_per_s": stats["images"] / stats["seconds"] if stats["seconds"] else 0.0}
    line.update(_validate(plan.env, t.model, plan.val, plan.config, "val"))
    if t.ema is not None:
        line.update({f"val_ema_{k[4:]}": v for k, v in _validate(plan.env, t.ema.module, plan.val, plan.config, "val").items()})
    line["seconds"] = time.perf_counter() - started
    return line


def _fit(config: TrainConfig, state: dict | None, dist: Dist, echo) -> dict:
    started = time.perf_counter()
    plan = _plan(config, state, dist)
    config, out = plan.config, plan.out
    echo(describe_train_set(plan.train_set, plan.factors, plan.note))
    if config.decode == "gpu" and not plan.env.cuda:
        echo("warning: --decode gpu: no CUDA GPU is visible; the loader workers decode and augment on the CPU instead")
    t = _trainer(plan, resuming=state is not None)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)  # only now: a run that cannot start leaves no folder
        remove_stale_temporaries(out)
    if state:
        try:
            t.restore(state)
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise HamdataError(f"--resume {out}: damaged hamdata checkpoint (its training state does not fit "
                               f"this run: {_short(exc)})") from None
        echo(f"resuming {out} after epoch {t.progress.epoch} of {config.epochs}")
    history = read_history(out, upto=t.progress.epoch) if dist.main else []
    if dist.main:
        _write_json(out / "config.json", {**plan.meta, "device": str(plan.env.device), "world_size": dist.world,
                                          "train_set_note": plan.note, "steps_per_epoch": plan.steps, "loss": repr(t.loss_fn),
                                          "versions": {"torch": torch.__version__, "torchvision": __import__("torchvision").__version__}})
    stopped = ""
    for epoch in range(t.progress.epoch, config.epochs):
        line = _epoch(plan, t, epoch)
        better, better_ema = t.progress.update(line)
        if dist.main:
            history.append(line)
            _save_epoch(out, plan.meta, line, t.model, t.ema, better, better_ema, t.training_state())
            plot_curves(history, out / "curves.png", f"{config.recipe} {config.arch} on {plan.train_set.name}")
        echo(_epoch_text(line, config.epochs))
        barrier(dist)
        if config.patience and t.progress.stale >= config.patience:
            echo(f"early stop: no better validation macro-F1 for {t.progress.stale} epochs")
            break
        if config.stop_after and epoch + 1 >= config.stop_after and epoch + 1 < config.epochs:
            stopped = f"stopped after epoch {epoch + 1} of {config.epochs} (--stop-after); continue with --resume {out}"
            break
    summary = {"out": str(out), "recipe": config.recipe, "arch": config.arch, "device": str(plan.env.device),
               "world_size": dist.world, "train_set": plan.train_set.name, "train_set_note": plan.note,
               "epochs": t.progress.epoch, "best_epoch": t.progress.best_epoch, "best_val_macro_f1": t.progress.best_f1,
               "history": history}
    if stopped:
        echo(stopped)
    else:
        summary.update(_final_evaluation(plan, t, echo))
    return {**summary, "stopped": stopped, "seconds": time.perf_counter() - started}


def _validate(env: Env, model, split, config: TrainConfig, name: str) -> dict:
    from .metrics import balanced_accuracy, macro_f1

    _, labels, probs = predict_split(env, model, *split, image_size=config.image_size, batch_size=config.batch_size,
                                     workers=config.workers, what=f"{name} split")
    predicted = probs.argmax(1)
    return {f"{name}_macro_f1": macro_f1(labels, predicted), f"{name}_balanced_accuracy": balanced_accuracy(labels, predicted)}


def _save_epoch(out: Path, meta: dict, line: dict, model, ema, better: bool, better_ema: bool, training: dict) -> None:
    """metrics.jsonl first, then checkpoints: a last.pt always has its metrics line."""
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")
    weights = {**meta, "epoch": line["epoch"], "val": {k: v for k, v in line.items() if k.startswith("val")}}
    if better:
        save_checkpoint(out / "best.pt", {**weights, "model": model.state_dict()})
    if better_ema:
        save_checkpoint(out / "best_ema.pt", {**weights, "model": ema.module.state_dict(), "weights_of": "ema"})
    save_checkpoint(out / "last.pt", {**weights, "model": model.state_dict(), **training})


def _epoch_text(line: dict, epochs: int) -> str:
    text = (f"epoch {line['epoch']}/{epochs}: loss {line['train_loss']:.4f}, lr {line['lr']:.2e}, "
            f"val macro-F1 {line['val_macro_f1']:.3f}, balanced acc {line['val_balanced_accuracy']:.3f}")
    if "val_ema_macro_f1" in line:
        text += f", EMA macro-F1 {line['val_ema_macro_f1']:.3f}"
    return text + f" ({line['seconds']:.1f} s, {line['images_per_s']:.0f} images/s)"


def _final_evaluation(plan: Plan, t: Trainer, echo) -> dict:
    """The best checkpoint (plain or EMA, by validation macro-F1) on the test split, written into the run folder."""
    env, config, out, progress = plan.env, plan.config, plan.out, t.progress
    name = "best_ema.pt" if t.ema is not None and progress.best_ema_f1 > progress.best_f1 else "best.pt"
    barrier(env.dist)
    _, best = load_checkpoint(out / name)
    t.model.load_state_dict(best["model"])
    ids, labels, probs = predict_split(env, t.model, *plan.test, image_size=config.image_size, batch_size=config.batch_size,
                                       workers=config.workers, what="test split")
    result = {"evaluated": name}
    if env.dist.main:
        info = {"split": "test", "checkpoint": str(out / name), "epoch": best["epoch"], "tta": False}
        metrics = write_evaluation(out, ids, labels, probs, info)
        result["test"] = {k: metrics[k] for k in ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")}
        echo(f"test ({name}, epoch {best['epoch']}): macro-F1 {metrics['macro_f1']:.3f}, balanced acc "
             f"{metrics['balanced_accuracy']:.3f}, accuracy {metrics['accuracy']:.3f} -> {out}")
        if config.gradcam:
            from .gradcam import write_gradcams

            result["gradcam"] = [str(p) for p in write_gradcams(env, t.model, config, plan.test[0], ids, labels, probs, out / "gradcam")]
    barrier(env.dist)
    return result


# ------------------------------------------------------------------ any checkpoint: evaluate, predict


def _checkpoint_env(state: dict, device: str, path: Path) -> tuple[Env, nn.Module]:
    dev = resolve_device(device, Dist())
    env = make_env(Dist(), dev, state["data"])
    return env, model_from_checkpoint(state, dev, path)


def evaluate_checkpoint(checkpoint, shards=None, split: str = "test", tta: bool = False, out=None, device: str = "auto",
                        batch_size: int = 64, workers: int = 0, echo=print) -> dict:
    """Metrics, report, confusion matrix and ISIC CSV of a checkpoint on a split of a build."""
    path, state = load_checkpoint(checkpoint)
    if split not in ("test", "val"):
        raise HamdataError(f"--split: expected test or val, got {split!r}")
    build = Path(shards or state["data"]["build"])
    card = open_build(build)
    if card["config"]["preprocess"] != state["data"]["preprocess"]:
        echo(f"warning: {build} was preprocessed differently from the checkpoint's training build")
    env, model = _checkpoint_env(state, device, path)
    ids, labels, probs = predict_split(env, model, *split_shards(build, card, split), image_size=state["data"]["image_size"],
                                       batch_size=batch_size, workers=workers, tta=tta, what=f"{split} split")
    out = Path(out) if out else path.parent / f"eval-{path.stem}-{split}{'-tta' if tta else ''}"
    info = {"split": split, "checkpoint": str(path), "build": str(build), "epoch": state.get("epoch"), "tta": tta}
    metrics = write_evaluation(out, ids, labels, probs, info)
    echo(f"{split} ({path.name}{', TTA' if tta else ''}): macro-F1 {metrics['macro_f1']:.3f}, balanced acc "
         f"{metrics['balanced_accuracy']:.3f}, accuracy {metrics['accuracy']:.3f} on {metrics['samples']} images -> {out}")
    return {"out": str(out), "metrics": metrics}


def prepare_image(path: Path, state: dict) -> torch.Tensor:
    """A raw image through the build's own preprocessing and encoding, then the eval preset: uint8 (3, S, S)."""
    from hamdata.preprocess import ImageError, PreprocessConfig, decode_image, encode_image, preprocess

    from .data import decode, eval_preset

    data = state["data"]
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise HamdataError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        rgb, _ = decode_image(raw)
    except ImageError as exc:
        raise HamdataError(f"{path}: {exc.cause}") from None
    rgb = preprocess(rgb, PreprocessConfig.from_dict(data["preprocess"]))
    encoded = encode_image(rgb, data["format"], data["quality"])  # what a shard would hold
    return eval_preset(data["image_size"])(decode(encoded))


def predict_images(checkpoint, images, tta: bool = False, device: str = "auto") -> list[dict]:
    """Class probabilities of raw images: [{"image", "dx", "probabilities": {dx: p}}]."""
    path, state = load_checkpoint(checkpoint)
    env, model = _checkpoint_env(state, device, path)
    results = []
    for path in images:
        x = env.batch(prepare_image(Path(path), state).unsqueeze(0))
        with torch.no_grad(), env.autocast():
            views = tta_views(x) if tta else [x]
            p = torch.stack([torch.softmax(model(v).float(), 1) for v in views]).mean(0)[0].cpu().tolist()
        results.append({"image": str(path), "dx": CLASSES[int(np.argmax(p))], "probabilities": dict(zip(CLASSES, p))})
    return results
