"""Content duplicates: the same picture under another image id, across inputs.

A merged build (HAM10000, ISIC 2019, ISIC-archive exports) holds the same photograph under several ids,
resized, re-encoded, cropped by a few percent a side, brightened or darkened, or several at once (Cassidy
et al., Med. Image Anal. 2022). This module finds them; the build records the evidence (METHOD, the
similarity, THRESHOLD) in dataset.json.

    fp = fingerprint(rgb)              # HxWx3 uint8 RGB as decoded (any size) -> (768,) uint8
    pairs = find_duplicates(fps)       # (N, 768) -> [(i, j, similarity), ...], i < j, sorted
    similarity(fps[i], fps[j])         # the same score for one pair; the same picture from THRESHOLD up

numpy and OpenCV only, no global state; the same inputs give the same fingerprints and pairs, and the
order of the rows changes nothing but the row numbers (every score is exact integer arithmetic or
depends on the pair alone).

The fingerprint (768 bytes, 0.47 ms for a 600x450 image, 0.25 ms for the build's half-size decode; one core)
-----------------------------------------------------------------------------------------------------------
The image is shrunk to 64x48 (pyrDown halvings, then area), divided by its median max(R, G, B) and
flattened above 1: the skin goes flat, so a brightness change, and the clipping that a brightened copy
gets on bright skin, leave the lesion, the hairs and the darker skin alike. Its luminance is averaged to a
32x24 thumbnail (4:3, the whole picture; a copy keeps its aspect up to the crop, so any picture is squashed
to 4:3), blurred (sigma 0.7) and stored as round(255 * sqrt(1 - luminance)), giving faint detail most levels.

Comparing fingerprints (the similarity, the search for pairs) is hamdata.dedup.compare.
"""

from __future__ import annotations

import cv2
import numpy as np

from hamdata.errors import HamdataError

METHOD = "rank-lk-v1"

# ----------------------------------------------------------------- fingerprint

GRID_W, GRID_H = 32, 24               # the thumbnail: columns, rows (a 4:3 grid, HAM10000's aspect)
FINGERPRINT_SIZE = GRID_W * GRID_H    # bytes (uint8)
_WORK_W, _WORK_H = 2 * GRID_W, 2 * GRID_H
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_BLUR = 0.7                           # Gaussian sigma on the thumbnail, in thumbnail pixels
_REF_QUANTILE = 0.5                   # the tone reference: this quantile of max(R, G, B) over the image
_CLIP = 1.0                           # pixels brighter than _CLIP * reference are flattened to it


def _shrink(rgb: np.ndarray) -> np.ndarray:
    """Anti-aliased shrink to the 64x48 working size: halve with pyrDown while the image is at least
    4x the target on both sides, then INTER_AREA (a 600x450 image takes two halvings; a 2x larger copy one more)."""
    img = rgb
    while img.shape[1] >= 4 * _WORK_W and img.shape[0] >= 4 * _WORK_H:
        img = cv2.pyrDown(img)
    interpolation = cv2.INTER_AREA if img.shape[1] >= _WORK_W and img.shape[0] >= _WORK_H else cv2.INTER_LINEAR
    return cv2.resize(img, (_WORK_W, _WORK_H), interpolation=interpolation)


def fingerprint(rgb: np.ndarray) -> np.ndarray:
    """Fingerprint of one decoded RGB image: (FINGERPRINT_SIZE,) uint8."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise HamdataError(f"fingerprint: expected an HxWx3 uint8 RGB image, got {got}")
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise HamdataError(f"fingerprint: image of {rgb.shape[1]}x{rgb.shape[0]} pixels is too small")
    small = _shrink(rgb)
    brightest = small.max(axis=2).ravel()
    rank = int(_REF_QUANTILE * (brightest.size - 1))
    ref = max(float(np.partition(brightest, rank)[rank]), 1.0) * _CLIP
    flat = np.minimum(small.astype(np.float32) * np.float32(1.0 / ref), np.float32(1.0))
    luma = flat @ _LUMA
    thumb = cv2.resize(luma, (GRID_W, GRID_H), interpolation=cv2.INTER_AREA)
    thumb = cv2.GaussianBlur(thumb, (0, 0), _BLUR)
    # Stored as sqrt(darkness): most levels go to faint detail near the skin level, where small lesions live.
    return np.rint(np.sqrt(np.maximum(np.float32(1) - thumb, 0)) * np.float32(255)).astype(np.uint8).ravel()
