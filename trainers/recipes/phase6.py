"""Phase 6: metadata fusion, class-balanced focal loss and a larger backbone (the notebook's planned next phase).

\b
    python cli.py build-shards --size 384 --out shards-384
    python cli.py train phase6 --shards shards-384

\b
After Gessert et al. (2019), the ISIC 2019 winner; each default and why:
- Backbone EfficientNet-B3 at 300 px crops (its native resolution): the
  largest step in accuracy per GPU hour over B0 at 224 in their study. The
  build should store at least 300 / 0.875 = 343 px (the eval preset resizes
  to that and centre-crops): ``build-shards --size 384``. ``--arch`` also
  takes convnext_tiny, efficientnet_v2_s and resnet50 for an ensemble.
- Metadata fusion on (``--no-metadata`` turns it off): age, sex and site
  through a two-layer MLP, concatenated with the pooled image features; the
  encoding is fitted on the train split and each sample's metadata is
  dropped with probability 0.1 in training, so missing fields are expected.
- Loss: class-balanced focal loss (Cui et al., 2019), beta 0.9999, gamma 2,
  over the train split's natural class counts. No resampling: the loss
  corrects the imbalance, once. On a balanced set (or with resampling) the
  stream's counts are even and alpha is uniform, so it is not corrected twice.
- AdamW, lr 3e-4, weight decay 0.01; one epoch of warmup, then cosine to 1e-6.
- EMA of the weights (decay 0.999); the better of best.pt / best_ema.pt by
  validation macro-F1 is evaluated on the test split, with Grad-CAM overlays.
- Batch 32, at most 40 epochs, early stopping after 8 without a better
  validation macro-F1; AMP on CUDA; channels_last everywhere.
"""

from __future__ import annotations

from ..config import TrainConfig

CONFIG = TrainConfig(
    recipe="phase6",
    arch="efficientnet_b3",
    train_set="train",
    epochs=40,
    batch_size=32,
    lr=3e-4,
    weight_decay=0.01,
    image_size=300,
    resample=False,
    loss="cb_focal",
    cb_beta=0.9999,
    focal_gamma=2.0,
    schedule="cosine",
    warmup_epochs=1.0,
    min_lr=1e-6,
    ema_decay=0.999,
    patience=8,
    gradcam=True,
    metadata=True,
    metadata_dropout=0.1,
)
