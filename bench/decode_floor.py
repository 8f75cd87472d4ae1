"""Pure decoding of a build's stored images: the floor of a JPEG-shard loader.

    python bench/decode_floor.py SHARDS_DIR [--images 2000] [--split train] [--device cpu|cuda]

Reads the image bytes of the first N samples into memory first (so disk and
tar parsing are not counted), then times decoding them to uint8 RGB tensors
on one thread with the trainers' own decoder. With ``--device cuda``: the
batched nvJPEG decode of ``--decode gpu`` instead (batches of 48, timed to a
CUDA synchronise), and how far its pixels are from the CPU decoder's.
Last line: ``images/s: X``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from hamdata.store.manifest import read_card, shards_of  # noqa: E402
from hamdata.store.shards import iter_samples  # noqa: E402
from trainers.data import decode  # noqa: E402


def load_bytes(folder: Path, split: str, limit: int) -> list[bytes]:
    images = []
    for shard in shards_of(read_card(folder), split):
        for sample in iter_samples(folder / shard["path"]):
            images.append(sample.get(sample.image_ext))
            if len(images) >= limit:
                return images
    return images


def gpu_floor(images: list[bytes], batch: int = 48) -> int:
    """Batched nvJPEG decoding (trainers.decode.decode_batch), and its pixel differences from the CPU decoder."""
    from trainers.decode import decode_batch

    blobs = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in images]
    groups = [blobs[i:i + batch] for i in range(0, len(blobs), batch)]
    decode_batch(groups[0], "cuda")  # warm-up: nvJPEG handles, CUDA context
    torch.cuda.synchronize()
    started = time.perf_counter()
    for group in groups:
        out = decode_batch(group, "cuda")
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    diffs = torch.cat([(g.cpu().float() - decode(bytes(b.numpy())).float()).abs().flatten()
                       for g, b in zip(decode_batch(groups[0], "cuda"), groups[0])])
    print(f"nvJPEG vs CPU decoder, {len(groups[0])} images: mean |diff| {diffs.mean():.3f}, "
          f"99th percentile {torch.quantile(diffs[:4_000_000], 0.99):.0f}, max {diffs.max():.0f} grey levels")
    print(f"{len(images)} images of {tuple(out[-1].shape)} in {seconds:.2f} s, batches of {batch} on {torch.cuda.get_device_name()}")
    print(f"images/s: {len(images) / seconds:.1f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", help="a build (or balanced set) folder")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--split", default="train")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA GPU is visible to PyTorch on this machine", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    images = load_bytes(Path(args.shards), args.split, args.images)
    if not images:
        print(f"no {args.split} samples in {args.shards}", file=sys.stderr)
        return 2
    if args.device == "cuda":
        return gpu_floor(images)
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
