"""Pure image functions: decode, hair removal, CLAHE, resize, encode.

Every op takes and returns an RGB ``uint8`` array of shape (h, w, 3) and never
mutates its input. Nothing here touches global state (no ``cv2.setNumThreads``);
callers that run many workers set that themselves.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hamdata.errors import HamdataError

SIZE_MIN, SIZE_MAX = 16, 4096

# Hair removal and CLAHE run at full resolution, but their cost grows with the
# pixel count (an 8000x6000 photo would take seconds per image) and their
# pixel-sized parameters (kernel 17, 8x8 tiles) were tuned on HAM10000's
# 600x450 images. Larger inputs are first area-downscaled so the long side is
# this many pixels (never below the target size), which bounds the time and
# keeps the kernel's scale within a few times of what it was tuned for.
FULL_RES_MAX_SIDE = 2000


class ImageError(HamdataError):
    """Image bytes that cannot be decoded or converted to RGB safely."""

    def __init__(self, cause: str):
        super().__init__(cause)
        self.cause = cause  # short text, e.g. "empty file (0 bytes)"


@dataclass(frozen=True)
class PreprocessConfig:
    """What the build does to every image, stored in dataset.json and checkpoints."""

    hair_removal: bool = True  # black-hat + Telea inpainting (remove_hair)
    hair_kernel: int = 17  # cross-shaped structuring element side, odd, px
    hair_threshold: int = 10  # black-hat response above which a pixel is hair
    inpaint_radius: int = 1  # Telea inpainting neighbourhood radius, px
    clahe: bool = True  # CLAHE on the L channel of LAB (apply_clahe)
    clahe_clip: float = 2.0  # CLAHE clip limit
    clahe_tiles: int = 8  # CLAHE tile grid is tiles x tiles
    size: tuple[int, int] = (256, 256)  # output (width, height)

    def __post_init__(self):
        for name in ("hair_removal", "clahe"):
            if not isinstance(getattr(self, name), bool):
                _bad_field(name, "true or false", getattr(self, name))
        k = self.hair_kernel
        if not _is_int(k) or k < 3 or k % 2 == 0:
            _bad_field("hair_kernel", "an odd integer >= 3", k)
        if not _is_int(self.hair_threshold) or not 0 <= self.hair_threshold <= 255:
            _bad_field("hair_threshold", "an integer from 0 to 255", self.hair_threshold)
        if not _is_int(self.inpaint_radius) or self.inpaint_radius < 1:
            _bad_field("inpaint_radius", "an integer >= 1", self.inpaint_radius)
        clip = self.clahe_clip
        if not (_is_int(clip) or isinstance(clip, float)) or not (math.isfinite(clip) and clip > 0):
            _bad_field("clahe_clip", "a number > 0", clip)
        object.__setattr__(self, "clahe_clip", float(clip))
        if not _is_int(self.clahe_tiles) or self.clahe_tiles < 1:
            _bad_field("clahe_tiles", "an integer >= 1", self.clahe_tiles)
        size = self.size
        if (
            not isinstance(size, (tuple, list))
            or len(size) != 2
            or not all(_is_int(s) and s > 0 for s in size)
        ):
            _bad_field("size", "[width, height] with positive integers", size)
        object.__setattr__(self, "size", (int(size[0]), int(size[1])))

    def to_dict(self) -> dict:
        """Plain JSON-able dict of every field (size as a [width, height] list)."""
        d = dataclasses.asdict(self)
        d["size"] = list(self.size)
        return d

    @classmethod
    def from_dict(cls, d) -> PreprocessConfig:
        """Inverse of to_dict; missing fields take their defaults, unknown ones are errors."""
        if not isinstance(d, dict):
            raise HamdataError(f"preprocess config: expected a mapping of fields, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise HamdataError(
                f"preprocess config: unknown field(s) {', '.join(map(repr, unknown))}; "
                f"expected some of {', '.join(sorted(known))}"
            )
        return cls(**d)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _bad_field(name: str, expected: str, got) -> None:
    raise HamdataError(f"preprocess config: {name} must be {expected}, got {got!r}")


# --------------------------------------------------------------------- decode


def decode_image(data: bytes) -> tuple[np.ndarray, tuple[str, ...]]:
    """Decode image bytes to RGB uint8 (h, w, 3), with notes on any conversion made.

    Pillow rather than cv2: cv2.imdecode silently returns a partly grey image
    for a truncated JPEG, while Pillow raises.
    """
    if len(data) == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        img = Image.open(BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not an image (unrecognised format)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large: {_short(e)}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"unreadable image header: {_short(e)}") from None
    with img:
        notes = []
        # MPO is the multi-picture JPEG some cameras write: its first frame is a JPEG.
        if img.format not in ("JPEG", "MPO"):
            notes.append(f"{img.format or 'unknown-format'} data")
        if img.format == "PNG" and data[24:25] == b"\x10" and img.mode in ("RGB", "RGBA"):
            # byte 24 is IHDR's bit depth; Pillow keeps the high byte of 16-bit colour without a word
            notes.append("converted from 16-bit colour")
        try:
            img.load()
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(f"truncated or corrupt image data: {_short(e)}") from None
        if getattr(img, "n_frames", 1) > 1 and img.format != "MPO":
            notes.append(f"first of {img.n_frames} frames used")
        try:
            orientation = img.getexif().get(0x0112, 1)
            if orientation in range(2, 9):
                img = ImageOps.exif_transpose(img)
                notes.append("EXIF orientation applied")
        except (OSError, SyntaxError, ValueError, EOFError, KeyError, TypeError) as e:
            raise ImageError(f"corrupt EXIF data: {_short(e)}") from None
        rgb = _to_rgb(img, notes)
    return np.ascontiguousarray(rgb, dtype=np.uint8), tuple(notes)


def _to_rgb(img: Image.Image, notes: list[str]) -> np.ndarray:
    """RGB array of a loaded image, refusing conversions that would invent pixels."""
    mode = img.mode
    # A tRNS chunk (palette alpha or a colour key) makes some pixels transparent.
    if mode == "PA" or (mode in ("P", "L", "RGB") and "transparency" in img.info):
        if mode in ("P", "PA"):
            notes.append("converted from palette")
        img = img.convert("LA" if mode == "L" else "RGBA")
        mode = img.mode
    if mode in ("RGBA", "LA", "RGBa", "La"):
        alpha = np.asarray(img.getchannel("A"))
        if alpha.min() < 255:
            raise ImageError("has transparent pixels; cannot convert safely")
        notes.append("alpha channel dropped (fully opaque)")
        img = img.convert("RGB" if mode in ("RGBA", "RGBa") else "L")
        mode = img.mode
    if mode == "RGB":
        return np.array(img)
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return _from_16bit(np.asarray(img), notes)
    if mode == "F":
        raise ImageError("32-bit floating-point pixels; cannot convert safely")
    notes.append(
        {"L": "converted from grayscale", "1": "converted from 1-bit black and white",
         "P": "converted from palette", "CMYK": "converted from CMYK"}.get(mode, f"converted from {mode}")
    )
    try:
        return np.array(img.convert("RGB"))
    except (OSError, ValueError) as e:
        raise ImageError(f"cannot convert mode {mode} to RGB: {_short(e)}") from None


def _from_16bit(a: np.ndarray, notes: list[str]) -> np.ndarray:
    """16-bit grey to 8-bit RGB by the fixed 0..65535 -> 0..255 map (/257)."""
    if a.min() < 0 or a.max() > 65535:
        raise ImageError("32-bit integer pixels outside 0..65535; cannot convert safely")
    notes.append("converted from 16-bit grayscale")
    grey = np.rint(a.astype(np.float32) / 257.0).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _short(e: BaseException, limit: int = 100) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------ ops


def _check_rgb(rgb) -> np.ndarray:
    """The input as a C-contiguous RGB uint8 array (a view when it already is one)."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"expected an RGB uint8 array of shape (h, w, 3), got {got}")
    return np.ascontiguousarray(rgb)


def remove_hair(rgb: np.ndarray, kernel: int = 17, threshold: int = 10, radius: int = 1) -> np.ndarray:
    """Dull-razor style hair removal: black-hat finds thin dark lines, Telea inpaints them.

    kernel: side of the cross-shaped structuring element (wider than a hair).
    threshold: black-hat response (grey levels) above which a pixel counts as hair.
    radius: inpainting neighbourhood radius in pixels.
    """
    import cv2  # here, not at the top: argument errors answer before OpenCV loads

    rgb = _check_rgb(rgb)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    element = cv2.getStructuringElement(cv2.MORPH_CROSS, (kernel, kernel))
    blackhat = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, element)
    _, mask = cv2.threshold(blackhat, threshold, 255, cv2.THRESH_BINARY)
    return cv2.inpaint(rgb, mask, radius, cv2.INPAINT_TELEA)


def apply_clahe(rgb: np.ndarray, clip: float = 2.0, tiles: int = 8) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of lightness (L of LAB) only.

    clip: clip limit (higher = stronger contrast). tiles: the grid is tiles x tiles.
    """
    import cv2  # here, not at the top: argument errors answer before OpenCV loads

    rgb = _check_rgb(rgb)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)  # a new array: writing into it leaves rgb alone
    clahe = cv2.createCLAHE(clipLimit=float(clip), tileGridSize=(int(tiles), int(tiles)))
    lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))  # cheaper than split + merge of all three
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-interpolated resize to size = (width, height); aspect ratio is not kept."""
    import cv2  # here, not at the top: argument errors answer before OpenCV loads

    rgb = _check_rgb(rgb)
    w, h = size
    if rgb.shape[:2] == (h, w):
        return rgb.copy()
    return cv2.resize(rgb, (int(w), int(h)), interpolation=cv2.INTER_AREA)


def preprocess(rgb: np.ndarray, cfg: PreprocessConfig, timer=None) -> np.ndarray:
    """Hair removal, then CLAHE, both at full resolution, then resize to cfg.size.

    ``timer``, when given, is called with each stage's name as it finishes
    (``"hair_removal"``, ``"clahe"``, ``"resize"``): the build's per-stage timings.
    """
    lap = timer or (lambda stage: None)
    rgb = _check_rgb(rgb)
    out = rgb
    if cfg.hair_removal or cfg.clahe:
        out = _cap_resolution(out, max(FULL_RES_MAX_SIDE, *cfg.size))
    if cfg.hair_removal:
        out = remove_hair(out, cfg.hair_kernel, cfg.hair_threshold, cfg.inpaint_radius)
        lap("hair_removal")
    if cfg.clahe:
        out = apply_clahe(out, cfg.clahe_clip, cfg.clahe_tiles)
        lap("clahe")
    out = resize(out, cfg.size)  # always a new array, so the input is never returned
    lap("resize")
    return np.ascontiguousarray(out, dtype=np.uint8)


def _cap_resolution(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Area-downscale so the long side is at most max_side (see FULL_RES_MAX_SIDE)."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return resize(rgb, size)


# --------------------------------------------------------------------- encode


def encode_image(rgb: np.ndarray, fmt: str = "jpg", quality: int = 95) -> bytes:
    """Encode RGB to JPEG ("jpg", at quality 1..100) or PNG ("png", compression 6).

    The same array and options always give the same bytes (same library versions).
    """
    import cv2  # here, not at the top: argument errors answer before OpenCV loads

    rgb = _check_rgb(rgb)
    if fmt == "jpg":
        if not _is_int(quality) or not 1 <= quality <= 100:
            raise HamdataError(f"JPEG quality: expected an integer from 1 to 100, got {quality!r}")
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif fmt == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 6]
    else:
        raise HamdataError(f"image format: expected 'jpg' or 'png', got {fmt!r}")
    ok, buf = cv2.imencode("." + fmt, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"cv2.imencode failed for a {rgb.shape} image as {fmt}")
    return buf.tobytes()


def parse_size(text: str) -> tuple[int, int]:
    """"256" -> (256, 256); "300x225" -> (300, 225), i.e. (width, height)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", str(text))
    if not m:
        raise HamdataError(f"--size: expected N or WxH with positive integers, got {text!r}")
    w = int(m.group(1))
    h = int(m.group(2)) if m.group(2) is not None else w
    if not (SIZE_MIN <= w <= SIZE_MAX and SIZE_MIN <= h <= SIZE_MAX):
        raise HamdataError(
            f"--size: each side must be from {SIZE_MIN} to {SIZE_MAX} pixels, got {text!r}"
        )
    return w, h
