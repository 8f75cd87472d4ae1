"""A training run every recipe shares: epochs, validation, checkpoints, resume, DDP.

A run folder holds config.json, metrics.jsonl (one line per epoch), curves.png, last.pt (everything needed to
resume), best.pt (best validation macro-F1; best_ema.pt likewise for the EMA weights) and, at the end, the test
split's evaluation of the best checkpoint. Only rank 0 writes; checkpoints are written to a temporary file and
renamed, so a crash never leaves a torn one.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as torch_dist
from torch import nn

from hamdata import runfiles
from hamdata.errors import HamdataError
from hamdata.split.stratified import HELDOUT
from hamdata.locks import hold
from hamdata.store.card import Build
from hamdata.plots import Curves
from hamdata.workspace import atomic_write

from .checkpoints import (CHECKPOINT_FORMAT, TRAINING_FIELDS, check_build_classes, short_reason, load_checkpoint,
                          remove_stale_temporaries, rng_state, save_checkpoint, set_rng_state)
from .config import TrainConfig
from .data import (BuildReplaced, StreamSpec, TrainSet, find_train_set, fit_metadata, make_loader, open_build, repeat_factors,
                   split_shards)
from .convgrad import cpu_conv_grads
from .dist import Dist, barrier, broadcast, init_distributed, resolve_device
from .loop import (Env, NonFiniteLoss, batches_per_rank, compile_error_reason, compiled, is_compile_error, make_env,
                   load_optimizer_state, make_optimizer, predict_split, train_one_epoch)
from .losses import alpha_by_class, make_loss
from .metrics import headline, write_evaluation
from .predict import lesions_of
from .models import build_model
from .regularize import make_ema, make_mix
from .schedules import make_scheduler

# May change on --resume; nothing else may. A new --epochs also moves the end of phase4's cosine schedule.
RESUMABLE = ("epochs", "device", "workers", "decode", "precision", "compile", "stop_after")


def resume_config(state: dict, overrides: dict, path: Path) -> TrainConfig:
    """The checkpoint's config; only RESUMABLE options may change (--stop-after resets)."""
    try:
        saved = TrainConfig.from_dict(state["config"])
    except TypeError as exc:  # a field missing
        raise HamdataError(f"--resume {path}: damaged hamdata checkpoint (config: {short_reason(exc)})") from None
    if overrides.get("recipe", saved.recipe) != saved.recipe:
        raise HamdataError(f"--resume {path}: a {saved.recipe} run; continue it with `train {saved.recipe} --resume`")
    changed = {k: v for k, v in overrides.items() if v is not None and getattr(saved, k, None) != v}
    fixed = sorted(k for k in changed if k not in RESUMABLE + ("shards",))
    if fixed:
        was = ", ".join(f"--{k.replace('_', '-')} {getattr(saved, k, None)}" for k in fixed)
        raise HamdataError(f"--resume {path}: the run used {was}; these cannot change on resume "
                           f"(only {', '.join('--' + k.replace('_', '-') for k in RESUMABLE)} and --shards can)")
    return saved.replace(**{"stop_after": 0, **changed, "out": str(path.parent)})


def _run_dir(config: TrainConfig, dist: Dist, resuming: bool, locks: contextlib.ExitStack) -> Path:
    """The run folder's path (rank 0 decides, everyone learns it); refuses to write over another run, or into a folder
    that another command writes (rank 0 holds the folder's lock in ``locks`` for the run)."""
    answer = None
    if dist.main:
        if config.out:
            out = Path(config.out)
            try:
                locks.enter_context(hold(out))
            except HamdataError as exc:
                answer = ("error", f"--out {exc}")
            if answer is None and not resuming and (out / runfiles.LAST).exists():
                answer = ("error", f"--out {out} holds a run already; continue it with --resume {out} or choose another folder")
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path("runs") / f"{config.recipe}-{stamp}"
            for n in range(2, 100):
                if not out.exists():
                    break
                out = Path("runs") / f"{config.recipe}-{stamp}-{n}"
            locks.enter_context(hold(out))
        if answer is None:
            answer = ("ok", str(out))
    kind, value = broadcast(answer, dist)
    if kind == "error":
        raise HamdataError(value)
    return Path(value)


def _write_json(path: Path, record) -> None:
    atomic_write(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_history(out: Path, upto: int | None = None) -> list[dict]:
    """metrics.jsonl lines (of epochs <= upto, rewriting the file when it had more: a resumed run)."""
    path = out / runfiles.HISTORY
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
        atomic_write(path, "".join(json.dumps(h, sort_keys=True) + "\n" for h in lines))
    return lines


def describe_train_set(train_set, factors, note: str) -> str:
    counts = ", ".join(f"{dx} {n}" for dx, n in train_set.counts.items())
    what = "train split" if train_set.name == "train" else f"balanced set {train_set.name}"
    how = ("class-aware resampling, repeats per sample " + ", ".join(f"{dx} {r:.2f}" for dx, r in factors.items())
           if factors else "no resampling")
    return f"training set: {what} of {train_set.folder} ({train_set.samples} samples: {counts}); {how}" + (f" [{note}]" if note else "")


def run(config: TrainConfig | None = None, *, resume=None, overrides: dict | None = None, echo=print,
        allow_other_build: bool = False) -> dict:
    """Train (or, with ``resume``, continue) a run; returns its summary.

    allow_other_build: let ``resume`` continue on a build whose shards differ from those the run started on.
    """
    state = None
    if resume is not None:
        path, state = load_checkpoint(resume, runfiles.LAST)
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
        with contextlib.ExitStack() as locks:
            return _fit(config, state, dist, echo if dist.main else (lambda *a, **k: None), locks, allow_other_build)
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
    guard: tuple  # ((folder, shard sha256s), ...) of the build and training set: reading stops if one is replaced
    heldout: tuple | None = None  # the heldout split's shards (build-shards --hold-out), evaluated after test

    @property
    def classes(self) -> tuple[str, ...]:
        """The build's class list: the model's outputs, in order (checkpoints record it)."""
        return tuple(self.meta["classes"])

    @property
    def metadata(self) -> str:
        """The fitted metadata encoding as JSON (what the loader streams), empty without fusion."""
        encoding = self.meta["data"].get("metadata")
        return json.dumps(encoding, sort_keys=True) if encoding else ""

    def train_loader(self, epoch: int):
        c, d = self.config, self.env.dist
        factors = tuple(self.factors[dx] for dx in self.classes) if self.factors else ()
        decode = "gpu" if c.decode == "gpu" and self.env.cuda else "cpu"  # no GPU: _fit said so once
        spec = StreamSpec.training(self.train_set.shards, image_size=c.image_size, batch_size=c.batch_size, seed=c.seed,
                                   epoch=epoch, batches=self.steps, rank=d.rank, world=d.world, factors=factors,
                                   decode=decode, metadata=self.metadata, metadata_dropout=c.metadata_dropout,
                                   guard=self.guard)
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
        load_optimizer_state(self.opt, state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if state["scaler"]:  # a run saved without a scaler (CPU, bf16, fp32) resumed in fp16 starts a fresh one
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.progress = Progress(**state["progress"])
        set_rng_state(state["rng"])


def fingerprint(build: Build, train_set: TrainSet) -> dict:
    """The shard sha256s of the build (and of the balanced set trained on), recorded in config.json and checkpoints."""
    prints = {"build": list(build.fingerprint)}
    if train_set.folder.resolve() != build.path.resolve():
        prints["train_set"] = list(Build.open(train_set.folder).fingerprint)
    return prints


def _check_same_build(state: dict, prints: dict, build: Path, allow_other_build: bool) -> None:
    """--resume on a build other than the one the run trained on is refused unless asked for."""
    before = state["data"].get("shards_sha256")
    if before is None or before == prints or allow_other_build:  # a checkpoint from before fingerprints: nothing to compare
        return
    what = "build" if before.get("build") != prints["build"] else "training set"
    raise HamdataError(f"--resume: --shards {build}: its {what} is not the one the run trained on (its shards differ: rebuilt "
                       "or replaced); pass --allow-other-build to continue on it anyway")


def _plan(config: TrainConfig, state: dict | None, dist: Dist, locks: contextlib.ExitStack, allow_other_build: bool) -> Plan:
    device = resolve_device(config.device, dist)
    card = open_build(config.shards)
    build = card.path
    if state:  # a run continues on a build of the class list it was trained for
        check_build_classes(f"--resume {config.out}", state, card)
    train_set, note = find_train_set(card, config.train_set)
    if state and train_set.counts != state["data"]["train_counts"]:
        raise HamdataError(f"--shards {build}: its {train_set.name} set differs from the one the run trained on")
    prints = fingerprint(card, train_set)
    if state:
        _check_same_build(state, prints, build, allow_other_build)
    val, test = split_shards(card, "val"), split_shards(card, "test")
    steps = batches_per_rank(train_set.samples, dist.world, config.batch_size, config.max_steps)
    config = config.replace(train_set=train_set.name)
    out = _run_dir(config, dist, resuming=state is not None, locks=locks)
    config = config.replace(out=str(out))
    factors = repeat_factors(train_set.counts) if config.resample and not train_set.balanced else None
    data = {"build": str(build.resolve()), "train_set": train_set.name, "train_counts": train_set.counts,
            "train_resampling": factors, "preprocess": card.preprocess, "format": card.image_format,
            "quality": card.quality, **card.train_stats.as_dict(), "image_size": config.image_size, "shards_sha256": prints}
    if config.metadata:  # fitted on the build's train split; a resumed run keeps the encoding it trained with
        data["metadata"] = state["data"]["metadata"] if state else fit_metadata(card, config.metadata_columns)
    meta = {"format": CHECKPOINT_FORMAT, "classes": list(card.classes), "arch": config.arch, "config": config.to_dict(), "data": data}
    guard = ((str(build), tuple(prints["build"])),)
    if "train_set" in prints:
        guard += ((str(train_set.folder), tuple(prints["train_set"])),)
    heldout = split_shards(card, HELDOUT) if card.samples(HELDOUT) else None
    return Plan(config, make_env(dist, device, card.train_stats.as_dict(), config.precision), out, train_set, note, factors, val, test, steps, meta, guard,
                heldout)


def _initial_model(config: TrainConfig, dist: Dist, resuming: bool, metadata: dict | None, num_classes: int) -> nn.Module:
    """The model with its starting weights; with several processes rank 0 fetches ImageNet weights first."""
    weights = "none" if resuming else config.weights
    torch.manual_seed(config.seed)
    if weights != "imagenet" or dist.world == 1:
        return build_model(config.arch, weights, num_classes, metadata=metadata)
    model, error = None, None
    if dist.main:
        try:
            model = build_model(config.arch, weights, num_classes, metadata=metadata)
        except HamdataError as exc:
            error = str(exc)
    error = broadcast(error, dist)
    if error:
        raise HamdataError(error)
    return model if dist.main else build_model(config.arch, weights, num_classes, metadata=metadata)  # from rank 0's cache


def _trainer(plan: Plan, resuming: bool) -> Trainer:
    config, env = plan.config, plan.env
    model = _initial_model(config, env.dist, resuming, plan.meta["data"].get("metadata"), len(plan.classes)).to(env.device)
    # channels_last (NHWC), as the batches: cuDNN's and oneDNN's fast convolutions (on the CPU an EfficientNet-B0
    # evaluates ~2.5x faster than with NCHW weights); under DDP the parameters take that layout before the wrap,
    # else every step copies each gradient into its bucket ("Grad strides do not match bucket view strides")
    model = model.to(memory_format=torch.channels_last)
    if env.device.type == "cpu":
        cpu_conv_grads(model)  # the gradients where oneDNN is slow on small maps (trainers/convgrad.py)
    opt = make_optimizer(config, model)
    stream = [plan.train_set.counts[dx] * (plan.factors[dx] if plan.factors else 1.0) for dx in plan.classes]
    net = model
    if env.dist.world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[env.device.index] if env.cuda else None,
                                                  gradient_as_bucket_view=True)
    net = compiled(net) if config.compile else net  # --compile: the training steps only (see loop.compiled)
    return Trainer(model, net, make_ema(config, model), opt, make_scheduler(config, opt, plan.steps),
                   torch.amp.GradScaler(env.device.type, enabled=env.scaled), make_loss(config, stream).to(env.device),
                   make_mix(config, len(plan.classes)), Progress())


def _epoch(plan: Plan, t: Trainer, epoch: int) -> dict:
    """Train one epoch and validate the model (and its EMA); returns the metrics.jsonl line."""
    started = time.perf_counter()
    try:  # a NaN loss, or a build replaced under the run (never an epoch on a mix of two builds), stops it here
        stats = train_one_epoch(plan.env, t.net, plan.train_loader(epoch), t.opt, t.sched, t.scaler, t.loss_fn,
                                mix=t.mix, ema=t.ema, epoch=epoch)
        line = {"epoch": epoch + 1, "train_loss": stats["loss"], "lr": t.opt.param_groups[0]["lr"], "steps": stats["steps"],
                "images_per_s": stats["images"] / stats["seconds"] if stats["seconds"] else 0.0,
                "train_seconds": stats["seconds"], "loader_wait_s": stats["loader_wait_s"]}
        line.update(_validate(plan, t.model))
        if t.ema is not None:
            line.update({f"val_ema_{k[4:]}": v for k, v in _validate(plan, t.ema.module).items()})
    except (NonFiniteLoss, BuildReplaced) as exc:
        raise type(exc)(f"{exc}: stopped; {_last_good(plan, t)}") from None
    except Exception as exc:
        if plan.config.compile and is_compile_error(exc):
            raise HamdataError(f"--compile: torch.compile failed ({compile_error_reason(exc)}); train without --compile "
                               f"(--resume {plan.out} --no-compile continues the run)") from None
        raise
    line["seconds"] = time.perf_counter() - started
    return line


def _last_good(plan: Plan, t: Trainer) -> str:
    last = plan.out / runfiles.LAST
    return f"the last good checkpoint is {last} (epoch {t.progress.epoch})" if last.exists() else "no checkpoint was written yet"


def _fit(config: TrainConfig, state: dict | None, dist: Dist, echo, locks: contextlib.ExitStack, allow_other_build: bool) -> dict:
    started = time.perf_counter()
    plan = _plan(config, state, dist, locks, allow_other_build)
    config, out = plan.config, plan.out
    echo(describe_train_set(plan.train_set, plan.factors, plan.note))
    if config.loss == "cb_focal" and (plan.factors or plan.train_set.balanced):
        echo("note: cb_focal's alpha comes from the class counts of the training stream, which resampling or a balanced "
             "set already evened out, so it is near uniform: the imbalance is corrected once, by the data")
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
                               f"this run: {short_reason(exc)})") from None
        echo(f"resuming {out} after epoch {t.progress.epoch} of {config.epochs}")
    history = read_history(out, upto=t.progress.epoch) if dist.main else []
    if dist.main:
        _write_json(out / runfiles.CONFIG, {**plan.meta, "device": str(plan.env.device), "world_size": dist.world,
                                          "precision": plan.env.precision,
                                          "train_set_note": plan.note, "steps_per_epoch": plan.steps, "loss": repr(t.loss_fn),
                                          "loss_alpha": alpha_by_class(t.loss_fn, plan.classes),
                                          "versions": {"torch": torch.__version__, "torchvision": __import__("torchvision").__version__}})
    stopped, curves = "", Curves(out / runfiles.CURVES, f"{config.recipe} {config.arch} on {plan.train_set.name}")
    for epoch in range(t.progress.epoch, config.epochs):
        line = _epoch(plan, t, epoch)
        better, better_ema = t.progress.update(line)
        if dist.main:
            history.append(line)
            _save_epoch(out, plan.meta, line, t.model, t.ema, better, better_ema, t.training_state())
            curves.update(history)
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
    if dist.main:
        curves.update(history, final=True)  # after an early or --stop-after stop too
    if stopped:
        echo(stopped)
    else:
        summary.update(_final_evaluation(plan, t, echo))
    return {**summary, "stopped": stopped, "seconds": time.perf_counter() - started}


def _validate(plan: Plan, model) -> dict:
    from .metrics import balanced_accuracy, macro_f1

    config = plan.config
    _, labels, probs = predict_split(plan.env, model, *plan.val, image_size=config.image_size, batch_size=config.batch_size,
                                     workers=config.workers, num_classes=len(plan.classes), what="val split",
                                     metadata=plan.metadata, guard=plan.guard)
    predicted = probs.argmax(1)
    return {"val_macro_f1": macro_f1(labels, predicted), "val_balanced_accuracy": balanced_accuracy(labels, predicted)}


def _save_epoch(out: Path, meta: dict, line: dict, model, ema, better: bool, better_ema: bool, training: dict) -> None:
    """metrics.jsonl first, then checkpoints: a last.pt always has its metrics line."""
    with open(out / runfiles.HISTORY, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")
    weights = {**meta, "epoch": line["epoch"], "val": {k: v for k, v in line.items() if k.startswith("val")}}
    if better:
        save_checkpoint(out / runfiles.BEST, {**weights, "model": model.state_dict()})
    if better_ema:
        save_checkpoint(out / runfiles.BEST_EMA, {**weights, "model": ema.module.state_dict(), "weights_of": "ema"})
    save_checkpoint(out / runfiles.LAST, {**weights, "model": model.state_dict(), **training})


def _epoch_text(line: dict, epochs: int) -> str:
    text = (f"epoch {line['epoch']}/{epochs}: loss {line['train_loss']:.4f}, lr {line['lr']:.2e}, "
            f"val macro-F1 {line['val_macro_f1']:.3f}, balanced acc {line['val_balanced_accuracy']:.3f}")
    if "val_ema_macro_f1" in line:
        text += f", EMA macro-F1 {line['val_ema_macro_f1']:.3f}"
    wait = line.get("loader_wait_s")
    share = f", {100 * wait / line['train_seconds']:.0f}% waiting for data" if wait is not None and line.get("train_seconds") else ""
    return text + f" ({line['seconds']:.1f} s, {line['images_per_s']:.0f} images/s{share})"


def _lesions_or_none(build: Path, ids, echo):
    """The lesion of each evaluated image, for the intervals; a manifest that lacks them costs the intervals only,
    never the finished run."""
    try:
        return lesions_of(build, ids)
    except HamdataError as exc:
        echo(f"warning: no bootstrap intervals: {exc}")
        return None


def _final_evaluation(plan: Plan, t: Trainer, echo) -> dict:
    """The best checkpoint (plain or EMA, by validation macro-F1) on the test split, written into the run folder."""
    env, config, out, progress = plan.env, plan.config, plan.out, t.progress
    name = runfiles.BEST_EMA if t.ema is not None and progress.best_ema_f1 > progress.best_f1 else runfiles.BEST
    barrier(env.dist)
    _, best = load_checkpoint(out / name)
    t.model.load_state_dict(best["model"])
    result, predicted = {"evaluated": name}, {}
    # test into the run folder; a build's heldout split (a collection never trained on) into eval-heldout/ beside it
    for split, shards, folder in (("test", plan.test, out), (HELDOUT, plan.heldout, out / f"eval-{HELDOUT}")):
        if shards is None:
            continue
        try:
            ids, labels, probs = predict_split(env, t.model, *shards, image_size=config.image_size,
                                               batch_size=config.batch_size, workers=config.workers,
                                               num_classes=len(plan.classes), what=f"{split} split",
                                               metadata=plan.metadata, guard=plan.guard)
        except BuildReplaced as exc:
            raise BuildReplaced(f"{exc}: the {split} evaluation stopped; the checkpoints in {out} are intact") from None
        predicted[split] = (ids, labels, probs)
        if env.dist.main:
            info = {"split": split, "checkpoint": str(out / name), "epoch": best["epoch"], "tta": False}
            metrics = write_evaluation(folder, ids, labels, probs, info, plan.classes,
                                       lesions=_lesions_or_none(Path(config.shards), ids, echo))
            result[split] = {k: metrics[k] for k in ("auc", "pauc_80", "accuracy", "balanced_accuracy", "macro_f1",
                                                     "macro_auc") if k in metrics}
            echo(f"{split} ({name}, epoch {best['epoch']}): {headline(metrics)} -> {folder}")
    if env.dist.main:
        ids, labels, probs = predicted["test"]
        if config.gradcam:
            from .gradcam import write_gradcams

            result["gradcam"] = [str(p) for p in write_gradcams(env, t.model, config, plan.test[0], ids, labels, probs,
                                                                out / runfiles.GRADCAM, plan.classes)]
    barrier(env.dist)
    return result
