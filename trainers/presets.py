"""The image presets of training and evaluation, defined once.

Train: a light online augmentation (the heavy work was done offline by `balance`): random resized crop (scale
CROP_SCALE, ratio CROP_RATIO), horizontal and vertical flips, brightness, contrast and saturation jitter of
JITTER. The loader runs it on whole batches (trainers.decode: OpenCV in the loader workers, or on the GPU with
--decode gpu); ``train_preset`` is the same policy as a per-image torchvision transform. Eval: resize to
size / CROP_PCT, then centre-crop size (evaluate, predict, ensemble, Grad-CAM and the validation of a run).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torchvision.transforms import v2

CROP_SCALE = (0.35, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
JITTER = 0.1  # brightness, contrast, saturation factors in [1 - JITTER, 1 + JITTER]
CROP_PCT = 0.875  # eval: resize to size / CROP_PCT, then centre-crop size


def train_preset(size: int) -> v2.Transform:
    """Light online augmentation (the heavy work was done offline by the build), as a v2 transform of one image.

    The loader runs this policy on whole batches (trainers.decode: OpenCV in the workers, or
    on the GPU), ~10x faster than this per-image form; see bench/NOTES.md.
    """
    from torchvision.transforms import v2  # here: the loader's constants and batch decode need no torchvision

    return v2.Compose([
        v2.RandomResizedCrop(size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER),  # no hue: its HSV round trip costs ~30x the rest
    ])


def eval_preset(size: int) -> v2.Transform:
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize(round(size / CROP_PCT), antialias=True), v2.CenterCrop(size)])
