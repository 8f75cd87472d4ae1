"""The training configuration: the choice lists the CLI offers and TrainConfig.

Nothing here imports torch, so the CLI reads it (for --help and the recipes'
defaults) without paying torch's import time. A new recipe, architecture,
loss or schedule starts with its name in the list below; ``commands.py``
builds the click options from these lists.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from hamdata.errors import HamdataError

# The recipe registry: each name is a module trainers/recipes/<name>.py holding a documented CONFIG (see recipes/__init__.py).
RECIPES = ("phase4", "phase5", "phase6")
ARCHS = ("mobilenet_v3_large", "efficientnet_b0", "resnet18", "convnext_tiny", "efficientnet_b3", "efficientnet_v2_s",
         "resnet50")  # each has its row in models.ARCH_LAYERS
LOSSES = ("focal", "cb_focal", "cross_entropy")  # losses.make_loss
SCHEDULES = ("warm_restarts", "cosine")  # schedules.make_scheduler
DEVICES = ("auto", "cpu", "cuda")
DECODES = ("cpu", "gpu")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")  # auto: bf16 on a GPU that has it, else fp16 on CUDA; fp32 on the CPU
TRAIN_SETS = ("auto", "train")  # --train-set: one of these, or a balanced-N folder of the build
EVAL_SPLITS = ("test", "val", "heldout")  # the splits `evaluate` takes (heldout: builds made with --hold-out)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; stored in config.json and every checkpoint."""

    recipe: str  # one of RECIPES
    arch: str  # one of ARCHS
    shards: str = "shards"  # the build folder (holds dataset.json, train/ val/ test/, balanced-N/)
    out: str = ""  # run folder; empty: runs/<recipe>-<timestamp>
    train_set: str = "auto"  # auto | train | balanced-N (auto: the one balanced set, else train)
    epochs: int = 40
    batch_size: int = 48  # per process
    lr: float = 3e-4  # peak AdamW learning rate
    weight_decay: float = 1e-4
    image_size: int = 224  # side of the square crop the network sees
    device: str = "auto"  # auto | cpu | cuda
    workers: int = 4  # DataLoader processes per training process
    decode: str = "cpu"  # cpu: workers decode and augment | gpu: workers read tars, JPEGs decoded and augmented on the GPU
    precision: str = "auto"  # autocast dtype: auto | bf16 | fp16 (with a GradScaler) | fp32 (no autocast)
    compile: bool = False  # torch.compile the training step's model (checkpoints keep plain keys; evaluation runs eager)
    seed: int = 42
    weights: str = "imagenet"  # imagenet | none | path to a state dict or checkpoint
    max_steps: int = 0  # >0: at most this many steps per epoch (smoke runs)
    stop_after: int = 0  # >0: stop after this epoch as if interrupted (resumable)
    resample: bool = True  # class-aware repeat-factor resampling on an unbalanced train set
    loss: str = "focal"  # focal (alpha ~ 1/n_c) | cb_focal (alpha ~ 1/effective number, Cui et al.) | cross_entropy
    focal_gamma: float = 2.0
    cb_beta: float = 0.9999  # cb_focal: effective number (1 - beta^n) / (1 - beta)
    label_smoothing: float = 0.0  # cross_entropy only
    schedule: str = "warm_restarts"  # warm_restarts (CosineAnnealingWarmRestarts) | cosine (warmup + cosine)
    restart_epochs: int = 10  # warm_restarts: epochs per cycle (T_0)
    warmup_epochs: float = 0.0  # cosine: linear warmup length
    min_lr: float = 1e-6
    mixup_alpha: float = 0.0  # >0 with cutmix_alpha: one of MixUp / CutMix per batch
    cutmix_alpha: float = 0.0
    ema_decay: float = 0.0  # >0: keep an EMA of the weights (torch.optim.swa_utils)
    patience: int = 0  # >0: early stopping after this many epochs without a better val macro-F1
    gradcam: bool = False  # write Grad-CAM overlays of the test split at the end
    metadata: bool = False  # fuse age, sex and site (trainers.fusion) with the image features
    metadata_dropout: float = 0.1  # training: probability that a sample's metadata is set to missing
    metadata_columns: tuple[str, ...] = ()  # numeric columns of a format 3 build fused too (ISIC 2024 tbp_lv_*)

    def __post_init__(self):
        _choice("recipe", self.recipe, RECIPES)
        _choice("--arch", self.arch, ARCHS)
        _choice("--device", self.device, DEVICES)
        _choice("--decode", self.decode, DECODES)
        _choice("--precision", self.precision, PRECISIONS)
        if self.precision == "fp16" and self.device == "cpu":
            raise HamdataError("--precision fp16: half precision with a loss scaler is for CUDA, but --device cpu was "
                               "asked; use --precision bf16 or fp32 on the CPU")
        if self.decode == "gpu" and self.device == "cpu":
            raise HamdataError("--decode gpu: decodes on the GPU, but --device cpu was asked; use --device auto or cuda, "
                               "or --decode cpu")
        _choice("loss", self.loss, LOSSES)
        _choice("schedule", self.schedule, SCHEDULES)
        for name in ("epochs", "batch_size", "image_size", "restart_epochs"):
            _positive_int(name, getattr(self, name))
        for name in ("workers", "max_steps", "stop_after", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise HamdataError(f"{_option(name)}: expected an integer >= 0, got {value!r}")
        for name in ("lr", "weight_decay", "focal_gamma", "label_smoothing", "warmup_epochs", "min_lr",
                     "mixup_alpha", "cutmix_alpha", "ema_decay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise HamdataError(f"{_option(name)}: expected a number >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.lr <= 0:
            raise HamdataError(f"--lr: expected a number > 0, got {self.lr}")
        if not isinstance(self.metadata, bool):
            raise HamdataError(f"--metadata: expected true or false, got {self.metadata!r}")
        columns = self.metadata_columns
        if isinstance(columns, str):
            columns = [c.strip() for c in columns.split(",") if c.strip()]
        if not isinstance(columns, (list, tuple)) or not all(isinstance(c, str) and c for c in columns):
            raise HamdataError(f"--metadata-columns: expected comma-separated column names, got {columns!r}")
        object.__setattr__(self, "metadata_columns", tuple(dict.fromkeys(columns)))
        if self.metadata_columns and not self.metadata:
            raise HamdataError("--metadata-columns: the columns are fused by the metadata MLP, which --no-metadata "
                               "switches off; drop one of the two")
        for name in ("cb_beta", "metadata_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise HamdataError(f"{_option(name)}: expected a number in [0, 1), got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.ema_decay >= 1 or self.label_smoothing >= 1:
            raise HamdataError("ema_decay and label_smoothing must be below 1")
        if not self.weights:
            raise HamdataError("--weights: expected imagenet, none or a file")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise HamdataError(f"training config: unknown field(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
        return cls(**record)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise HamdataError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise HamdataError(f"{_option(name)}: expected a positive integer, got {value!r}")
