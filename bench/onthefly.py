"""The original notebook's per-epoch path, for comparison with the shard loader.

    python bench/onthefly.py RAW_DATA_DIR [--images 500] [--image-size 224]

One worker, per image: read the 600x450 JPEG, remove hair, CLAHE, resize to
the training size, random flips / rotation / colour jitter, to a tensor. This
is what a training loop pays per image per epoch when it does not read
prebuilt shards. Last line: ``images/s: X``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import torch  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from hamdata.image.preprocess import apply_clahe, decode_image, remove_hair, resize  # noqa: E402
from hamdata.inputs.containers import read_image_bytes  # noqa: E402
from hamdata.inputs.layouts import open_source  # noqa: E402


def notebook_transform() -> v2.Transform:
    """The notebook's online augmentation after its own preprocessing."""
    return v2.Compose([
        v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomRotation(20),
        v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        v2.ToDtype(torch.float32, scale=True),
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", help="raw HAM10000 copy (any layout hamdata reads)")
    parser.add_argument("--images", type=int, default=500, help="images to process")
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one worker, as the loader benchmark's per-worker figure
    torch.set_num_threads(1)
    torch.manual_seed(0)
    source = open_source(Path(args.data))
    locators = [source.images[i] for i in sorted(source.images)][: args.images]
    transform = notebook_transform()
    started = time.perf_counter()
    for locator in locators:
        rgb, _ = decode_image(read_image_bytes(locator))
        rgb = resize(apply_clahe(remove_hair(rgb)), (args.image_size, args.image_size))
        tensor = transform(torch.from_numpy(rgb).permute(2, 0, 1))
    seconds = time.perf_counter() - started
    assert tensor.shape == (3, args.image_size, args.image_size)
    print(f"{len(locators)} images in {seconds:.2f} s, 1 worker")
    print(f"images/s: {len(locators) / seconds:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
