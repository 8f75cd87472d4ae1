"""Pure decoding of a build's stored images: the floor of a JPEG-shard loader.

    python bench/decode_floor.py SHARDS_DIR [--images 2000] [--split train]

Reads the image bytes of the first N samples into memory first (so disk and
tar parsing are not counted), then times decoding them to uint8 RGB tensors
on one thread with the trainers' own decoder. Last line: ``images/s: X``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from hamdata.manifest import read_card, shards_of  # noqa: E402
from hamdata.shards import iter_samples  # noqa: E402
from trainers.data import decode  # noqa: E402


def load_bytes(folder: Path, split: str, limit: int) -> list[bytes]:
    images = []
    for shard in shards_of(read_card(folder), split):
        for sample in iter_samples(folder / shard["path"]):
            images.append(sample.get(sample.image_ext))
            if len(images) >= limit:
                return images
    return images


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", help="a build (or balanced set) folder")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = load_bytes(Path(args.shards), args.split, args.images)
    if not images:
        print(f"no {args.split} samples in {args.shards}", file=sys.stderr)
        return 2
    decode(images[0])  # warm-up
    started = time.perf_counter()
    for data in images:
        tensor = decode(data)
    seconds = time.perf_counter() - started
    print(f"{len(images)} images of {tuple(tensor.shape)} in {seconds:.2f} s, 1 thread")
    print(f"images/s: {len(images) / seconds:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
