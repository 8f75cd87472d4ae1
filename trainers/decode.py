"""The train preset on whole batches: on the GPU (``--decode gpu``) or in a CPU loader worker.

With ``--decode gpu`` the loader workers only read tars: a batch leaves them
as the concatenated image bytes (``data``, ``lengths``), labels, keys and a
batch seed. The training process decodes the JPEGs with nvJPEG
(``torchvision.io.decode_jpeg(list, device="cuda")``) and runs the train
preset on the GPU tensors (``batch_images``).

Both modes draw the augmentation of a batch from one seed with the same
numpy code (``draw_params``), so a seed gives the same crops, flips and
colour factors on CPU and GPU. What is drawn per sample and what per batch:

- per sample: the RandomResizedCrop box (torchvision's algorithm: area scale
  0.35-1, aspect 3/4-4/3, 10 tries, then a centre crop), horizontal and
  vertical flips (p = 0.5 each), the brightness, contrast and saturation
  factors (each uniform in 1 +- 0.1), and the contrast mean (the sample's own);
- per batch: the order of the three colour operations (torchvision's
  ColorJitter draws it per image).

The three colour operations are composed into one affine colour map per
sample (x -> A x + t), applied once and clamped once; torchvision clamps
and truncates to uint8 after each, so pixels can differ by a grey level.
Resizing is bilinear with antialiasing, as the v2 preset's.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as nnf

from .presets import CROP_RATIO, CROP_SCALE, JITTER

GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
JPEG_MAGIC, JPEG_END = b"\xff\xd8", b"\xff\xd9"
AREA_BELOW = 1.5  # CPU mode: area resampling when a crop shrinks by this factor or more
_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


# ------------------------------------------------------------------ parameters (numpy, pure)


@dataclass(frozen=True)
class BatchParams:
    """The random choices of the train preset for one batch."""

    boxes: np.ndarray  # (B, 4) int64: top, left, height, width of each crop
    hflip: np.ndarray  # (B,) bool
    vflip: np.ndarray  # (B,) bool
    factors: np.ndarray  # (B, 3) float64: brightness, contrast, saturation
    order: tuple[int, ...]  # order of the colour operations (0 brightness, 1 contrast, 2 saturation)


def crop_boxes(heights, widths, rng: np.random.Generator, scale=CROP_SCALE, ratio=CROP_RATIO, tries: int = 10) -> np.ndarray:
    """RandomResizedCrop boxes (top, left, height, width), torchvision's algorithm vectorised over a batch."""
    heights, widths = np.asarray(heights, np.int64), np.asarray(widths, np.int64)
    n = len(heights)
    area = (heights * widths)[:, None].astype(np.float64)
    target = area * rng.uniform(scale[0], scale[1], (n, tries))
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), (n, tries)))
    w = np.rint(np.sqrt(target * aspect)).astype(np.int64)
    h = np.rint(np.sqrt(target / aspect)).astype(np.int64)
    ok = (w > 0) & (w <= widths[:, None]) & (h > 0) & (h <= heights[:, None])
    first, found = ok.argmax(1), ok.any(1)
    rows = np.arange(n)
    w, h = w[rows, first], h[rows, first]
    # the centre-crop fallback of torchvision, for rows where no try fitted
    in_ratio = widths / heights
    fw = np.where(in_ratio < min(ratio), widths, np.where(in_ratio > max(ratio), np.rint(heights * max(ratio)), widths))
    fh = np.where(in_ratio < min(ratio), np.rint(widths / min(ratio)), heights)
    w, h = np.where(found, w, fw).astype(np.int64), np.where(found, h, fh).astype(np.int64)
    u = rng.random((n, 2))
    top = np.where(found, (u[:, 0] * (heights - h + 1)).astype(np.int64), (heights - h) // 2)
    left = np.where(found, (u[:, 1] * (widths - w + 1)).astype(np.int64), (widths - w) // 2)
    return np.stack([top, left, h, w], 1)


def draw_params(shapes, rng: np.random.Generator) -> BatchParams:
    """The train preset's random choices for images of ``shapes`` [(height, width), ...]."""
    shapes = np.asarray(shapes, np.int64).reshape(-1, 2)
    boxes = crop_boxes(shapes[:, 0], shapes[:, 1], rng)
    flips = rng.random((len(shapes), 2)) < 0.5
    factors = rng.uniform(1 - JITTER, 1 + JITTER, (len(shapes), 3))
    return BatchParams(boxes, flips[:, 0], flips[:, 1], factors, tuple(int(i) for i in rng.permutation(3)))


def colour_affine(factors: torch.Tensor, order, means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Brightness, contrast and saturation in ``order`` as one map x -> A x + t per sample.

    ``factors`` (B, 3), ``means`` (B, 3): each image's mean RGB before the colour operations.
    Returns A (B, 3, 3) and t (B, 3), on the device of ``means``.
    """
    means = means.float()
    factors = factors.to(means)
    b = len(means)
    w = torch.tensor(GRAY, dtype=means.dtype, device=means.device)
    eye = torch.eye(3, dtype=means.dtype, device=means.device).expand(b, 3, 3)
    a, t = eye.clone(), torch.zeros_like(means)
    for op in order:
        f = factors[:, op]
        if op == 0:  # brightness: f x
            a, t = a * f[:, None, None], t * f[:, None]
        elif op == 1:  # contrast: f x + (1 - f) mean(grey(x)); the mean of the image as it is at this step
            m = ((a @ means[:, :, None])[:, :, 0] + t) @ w
            a, t = a * f[:, None, None], t * f[:, None] + ((1 - f) * m)[:, None]
        else:  # saturation: f x + (1 - f) grey(x)
            s = f[:, None, None] * eye + (1 - f)[:, None, None] * w.expand(b, 3, 3)
            a, t = s @ a, (s @ t[:, :, None])[:, :, 0]
    return a, t


# ------------------------------------------------------------------ raw batches (what GPU-mode workers yield)


def pack(blobs: list[bytes]) -> tuple[torch.Tensor, torch.Tensor]:
    """Image bytes -> one uint8 tensor and their lengths: one shared-memory block per batch, not B."""
    data = torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8)
    return data, torch.tensor([len(b) for b in blobs], dtype=torch.int64)


def unpack(data: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    return list(torch.split(data, lengths.tolist()))


def _decode_other(blob: torch.Tensor) -> torch.Tensor:
    from PIL import Image

    with Image.open(io.BytesIO(blob.numpy().tobytes())) as image:
        rgb = np.asarray(image.convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def decode_batch(blobs: list[torch.Tensor], device) -> list[torch.Tensor]:
    """Encoded images (1-D uint8 CPU tensors) -> uint8 (3, H, W) RGB tensors on ``device``.

    JPEGs go through torchvision.io.decode_jpeg in one call (nvJPEG on CUDA);
    anything else (a PNG build) is decoded by Pillow on the CPU and moved.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    jpeg = [i for i, b in enumerate(blobs) if bytes(b[:2].tolist()) == JPEG_MAGIC]
    out: list = [None] * len(blobs)
    if jpeg:
        with warnings.catch_warnings():
            # Deprecated since torchvision 0.29 in favour of TorchCodec (>= 0.16), which this
            # project does not depend on; it is the one batched nvJPEG decoder of the pinned stack.
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = decode_jpeg([blobs[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)
        for i, image in zip(jpeg, decoded):
            out[i] = image
    for i, image in enumerate(out):
        if image is None:
            out[i] = _decode_other(blobs[i]).to(device)
    return out


# ------------------------------------------------------------------ the preset on tensors (any device)


def augment_batch(images: list[torch.Tensor], size: int, params: BatchParams) -> torch.Tensor:
    """The train preset on decoded images (uint8 (3, H, W), one device) -> uint8 (B, 3, size, size)."""
    device = images[0].device
    out = torch.empty((len(images), 3, size, size), dtype=torch.float32, device=device)
    for i, (image, (top, left, h, w)) in enumerate(zip(images, params.boxes.tolist())):
        crop = image[:, top:top + h, left:left + w].unsqueeze(0).float()
        out[i] = nnf.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    hflip = torch.from_numpy(params.hflip).to(device).view(-1, 1, 1, 1)
    vflip = torch.from_numpy(params.vflip).to(device).view(-1, 1, 1, 1)
    out = torch.where(hflip, out.flip(3), out)
    out = torch.where(vflip, out.flip(2), out)
    a, t = colour_affine(torch.from_numpy(params.factors), params.order, out.mean((2, 3)))
    out = torch.einsum("bij,bjhw->bihw", a, out) + t[:, :, None, None]
    return out.clamp_(0, 255).round_().to(torch.uint8)


def decode_rgb(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes -> RGB uint8 (H, W, 3) with OpenCV: libjpeg-turbo straight into numpy, no colour swap.

    As fast as Pillow's decoder alone and without its copies (bench/NOTES.md). OpenCV decodes
    a truncated JPEG without complaint, so a JPEG must end with its end-of-image marker.
    """
    if data[:2] == JPEG_MAGIC and data[-2:] != JPEG_END:
        raise ValueError("truncated JPEG (no end-of-image marker)")
    array = np.frombuffer(data, np.uint8)
    if _IMREAD_RGB is not None:
        rgb = cv2.imdecode(array, _IMREAD_RGB)
    else:  # OpenCV < 4.10
        rgb = cv2.imdecode(array, cv2.IMREAD_COLOR)
        rgb = None if rgb is None else cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)
    if rgb is None:
        raise ValueError("not a decodable JPEG or PNG")
    return rgb


def augment_cpu(images: list[np.ndarray], size: int, rng: np.random.Generator) -> torch.Tensor:
    """CPU mode, in a loader worker: the train preset on RGB (H, W, 3) arrays -> uint8 (B, 3, size, size).

    The same parameters as ``augment_batch`` for the same ``rng``. OpenCV writes each image
    straight into the batch, which goes to the main process as it is: channels_last (NHWC
    in memory), as the model's weights are (trainers.run). Bilinear resampling, or area resampling
    when the crop is shrunk by AREA_BELOW or more (OpenCV's area filter costs 7x bilinear
    at the small factors of a 256 -> 224 crop, where bilinear does not alias).
    """
    params = draw_params([image.shape[:2] for image in images], rng)
    # Plain memory: the DataLoader moves it to shared memory in one copy. Writing into a
    # buffer allocated in shared memory was 15% slower (page faults on shmem; bench/NOTES.md).
    out = torch.empty((len(images), size, size, 3), dtype=torch.uint8)
    batch = out.numpy()
    means = np.empty((len(images), 3))
    for i, (image, (top, left, h, w)) in enumerate(zip(images, params.boxes.tolist())):
        crop = image[top:top + h, left:left + w]
        area = min(h, w) >= AREA_BELOW * size
        cv2.resize(crop, (size, size), dst=batch[i], interpolation=cv2.INTER_AREA if area else cv2.INTER_LINEAR)
        if params.hflip[i] or params.vflip[i]:
            code = -1 if params.hflip[i] and params.vflip[i] else (1 if params.hflip[i] else 0)
            cv2.flip(batch[i], code, dst=batch[i])
        means[i] = cv2.mean(batch[i])[:3]
    a, t = colour_affine(torch.from_numpy(params.factors), params.order, torch.from_numpy(means))
    maps = torch.cat([a, t[:, :, None]], 2).double().numpy()
    for i in range(len(images)):
        cv2.transform(batch[i], maps[i], dst=batch[i])
    return out.permute(0, 3, 1, 2)


def raw_batch_images(batch: dict, device) -> torch.Tensor:
    """A raw (GPU-mode) batch decoded and augmented on ``device``: uint8 (B, 3, S, S)."""
    images = decode_batch(unpack(batch["data"], batch["lengths"]), device)
    params = draw_params([tuple(image.shape[1:]) for image in images], np.random.default_rng(int(batch["seed"])))
    return augment_batch(images, int(batch["size"]), params)


def batch_images(batch: dict, device) -> torch.Tensor:
    """The training images of a loader batch: decoded by the workers, or (GPU mode) here on ``device``."""
    if "images" in batch:
        return batch["images"]
    return raw_batch_images(batch, device)
