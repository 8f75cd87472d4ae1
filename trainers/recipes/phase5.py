"""Phase 5: MobileNetV3-Large with focal loss, the notebook's final recipe.

\b
    python cli.py train phase5 --shards shards [--train-set auto|train|balanced-N]

\b
- Data: the build's one balanced set when there is exactly one (offline
  augmentation already balanced it), else the train split with class-aware
  repeat-factor resampling; ``--train-set`` chooses, and the run says which.
- Loss: focal loss, gamma 2, per-class alpha from the inverse class frequency
  of the training stream (uniform on a balanced or resampled stream).
- Optimiser: AdamW (no decay on norms and biases); CosineAnnealingWarmRestarts
  with 10-epoch cycles stepped per batch, so 40 epochs end at a minimum.
- Batch 48, 40 epochs, best checkpoint by validation macro-F1; AMP on
  CUDA; channels_last everywhere.
"""

from __future__ import annotations

from ..config import TrainConfig

CONFIG = TrainConfig(
    recipe="phase5",
    arch="mobilenet_v3_large",
    train_set="auto",
    epochs=40,
    batch_size=48,
    lr=3e-4,
    weight_decay=1e-4,
    loss="focal",
    focal_gamma=2.0,
    schedule="warm_restarts",
    restart_epochs=10,
    min_lr=1e-6,
)
