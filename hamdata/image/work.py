"""One input image through the build's pixel pipeline: read, decode, preprocess, channel moments, encode.

What a build's worker processes run, in a module of its own that imports numpy, Pillow and (when an image is
processed) OpenCV only: a spawned worker imports the module of the function it is given, and hamdata.build's
pandas and the rest cost each worker ~0.4 s before its first image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from hamdata.errors import HamdataError
from hamdata.image.preprocess import ImageError, PreprocessConfig, decode_image, encode_image, preprocess
from hamdata.inputs.containers import read_image_bytes

LEVELS = np.arange(256, dtype=np.int64)


def channel_moments(rgb: np.ndarray) -> np.ndarray:
    """Exact integer sums per channel (sum, sum of squares, pixel count) from histograms.

    Integers make the train statistics independent of summation order, and the
    histograms cost a tenth of a float64 copy of the image.
    """
    hists = [np.bincount(rgb[..., c].ravel(), minlength=256) for c in range(3)]
    sums = [int(h @ LEVELS) for h in hists]
    squares = [int(h @ (LEVELS * LEVELS)) for h in hists]
    return np.array(sums + squares + [rgb.shape[0] * rgb.shape[1]], dtype=np.int64)


@dataclass(frozen=True)
class Task:
    index: int
    image_id: str
    locator: str


@dataclass
class Result:
    index: int
    image_id: str
    data: bytes = b""
    error: str = ""
    notes: tuple[str, ...] = ()
    moments: np.ndarray | None = None  # int64 per channel: sum, sum of squares (0..255 values), pixel count
    seconds: dict = field(default_factory=dict)


def process_image(task: Task, cfg: PreprocessConfig, fmt: str, quality: int) -> Result:
    """One input file -> encoded, preprocessed image (or the cause it could not be)."""
    result = Result(task.index, task.image_id)
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.seconds[stage] = now - clock
        clock = now

    try:
        raw = read_image_bytes(task.locator)
        lap("read")
        rgb, notes = decode_image(raw)
        lap("decode")
    except ImageError as exc:
        result.error = exc.cause
        return result
    except HamdataError as exc:
        result.error = str(exc)
        return result
    result.notes = notes
    rgb = preprocess(rgb, cfg, timer=lap)
    result.moments = channel_moments(rgb)
    result.data = encode_image(rgb, fmt, quality)
    lap("encode")
    return result
