"""Phase 4: EfficientNet-B0 with CutMix/MixUp, EMA and early stopping.

\b
    python cli.py train phase4 --shards shards

\b
- Data: the train split with class-aware repeat-factor resampling (a
  balanced set with ``--train-set balanced-N``).
- Per batch, one of CutMix (alpha 1.0) or MixUp (alpha 0.2) from
  torchvision.transforms.v2; cross-entropy on the mixed soft targets.
- AdamW (weight decay 0.05, none on norms and biases); one epoch of linear
  warmup, then cosine to 1e-6, stepped per batch.
- EMA of the weights (torch.optim.swa_utils.AveragedModel, decay 0.999,
  warmed up over the first steps); both the model and the EMA are validated
  every epoch; checkpoints best.pt, best_ema.pt and last.pt.
- Early stopping after 8 epochs without a better validation macro-F1.
- At the end the better of best / best_ema (by validation macro-F1) is
  evaluated on the test split, with Grad-CAM overlays of one correct and one
  wrong test image per class where they exist.
"""

from __future__ import annotations

from ..config import TrainConfig

CONFIG = TrainConfig(
    recipe="phase4",
    arch="efficientnet_b0",
    train_set="train",
    epochs=30,
    batch_size=64,
    lr=1e-3,
    weight_decay=0.05,
    loss="cross_entropy",
    schedule="cosine",
    warmup_epochs=1.0,
    min_lr=1e-6,
    mixup_alpha=0.2,
    cutmix_alpha=1.0,
    ema_decay=0.999,
    patience=8,
    gradcam=True,
)
