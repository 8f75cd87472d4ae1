"""Reliability 4: hostile image files through `build-shards`, end to end.

One flat data set holds a file of every awkward kind. Convertible ones must be
in the shards with the right pixels and the conversion recorded in
dataset.json ("converted"); unusable ones are listed in "skipped" with their
cause (--on-error skip) or stop the build with one line naming the file and
the cause (--on-error fail). Pixels are checked exactly: the build runs
without hair removal or CLAHE, at the source size, stored as PNG.
"""

import io
import json
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import cli, pil_bytes, shard_members, verify

W, H = 48, 36
# One picture in many file formats: the same picture, so the duplicate search (tests/test_duplicates.py) is off here.
EXACT = ["--size", f"{W}x{H}", "--format", "png", "--no-hair-removal", "--no-clahe", "--shard-size", "5",
         "--no-duplicate-search"]


def skin() -> np.ndarray:
    """A smooth RGB test picture (h=36, w=48) with distinct rows and columns."""
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([150 + x, 100 + 2 * y, 90 + x // 2 + y], axis=2).astype(np.uint8)


def png16(a: np.ndarray) -> bytes:
    """A 16-bit PNG (grey for 2-D, RGB for 3-D arrays), written by hand: Pillow cannot write 16-bit RGB."""
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, 2 if a.ndim == 3 else 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def exif_rotated() -> bytes:
    stored = np.full((H, W, 3), 200, np.uint8)
    stored[:8, :8] = (255, 0, 0)  # red marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the marker shows top-right
    return pil_bytes(Image.fromarray(stored), "JPEG", exif=exif, quality=95)


def grey16() -> np.ndarray:
    a = np.zeros((H, W), np.uint16)
    a[:, 16:32], a[:, 32:] = 32768, 65535
    return a


def rgb16() -> np.ndarray:
    noise = (np.arange(W) % 100 - 50)[None, :, None]  # so that the low bytes vary
    return (skin().astype(np.int64) * 257 + noise).clip(0, 65535).astype(np.uint16)


def rgba(alpha: int) -> bytes:
    a = np.dstack([skin(), np.full((H, W), 255, np.uint8)])
    a[0, 0, 3] = alpha
    return pil_bytes(Image.fromarray(a, "RGBA"), "PNG")


GOOD = skin()
# kind: (file name suffix, bytes, dataset.json "converted" notes, or the "skipped" cause for unusable files)
CONVERTIBLE = {
    "plain": (".jpg", lambda: pil_bytes(Image.fromarray(GOOD), "JPEG", quality=95), None),
    "grayscale": (".jpg", lambda: pil_bytes(Image.fromarray(GOOD).convert("L"), "JPEG"), ["converted from grayscale"]),
    "png16grey": (".png", lambda: png16(grey16()), ["PNG data", "converted from 16-bit grayscale"]),
    "png16rgb": (".png", lambda: png16(rgb16()), ["PNG data", "converted from 16-bit colour"]),
    "rgbaopaque": (".png", lambda: rgba(255), ["PNG data", "alpha channel dropped (fully opaque)"]),
    "palette": (".png", lambda: pil_bytes(Image.fromarray(GOOD).quantize(16), "PNG"), ["PNG data", "converted from palette"]),
    "cmyk": (".jpg", lambda: pil_bytes(Image.new("CMYK", (W, H), (0, 255, 255, 0)), "JPEG", quality=95), ["converted from CMYK"]),
    "exif": (".jpg", exif_rotated, ["EXIF orientation applied"]),
    "pnginjpg": (".jpg", lambda: pil_bytes(Image.fromarray(GOOD), "PNG"), ["PNG data"]),
}
UNUSABLE = {
    "truncated": (".jpg", lambda: pil_bytes(Image.fromarray(GOOD), "JPEG", quality=95)[:-50], "truncated or corrupt image data: "),
    "zerobyte": (".jpg", lambda: b"", "empty file (0 bytes)"),
    "notanimage": (".jpg", lambda: b"<html>404 Not Found</html>\n" * 10, "not an image (unrecognised format)"),
    "transparent": (".png", lambda: rgba(0), "has transparent pixels; cannot convert safely"),
}


def image_id(kind: str) -> str:
    return f"ZOO_{kind}"


def make_data(root: Path, kinds: list[str]) -> dict[str, Path]:
    """A flat data set: one metadata CSV and one file per kind (each its own lesion)."""
    root.mkdir(parents=True)
    rows = ["lesion_id,image_id,dx"]
    files = {}
    for kind in kinds:
        suffix, make, _ = {**CONVERTIBLE, **UNUSABLE}[kind]
        files[kind] = root / f"{image_id(kind)}{suffix}"
        files[kind].write_bytes(make())
        rows.append(f"L_{kind},{image_id(kind)},nv")
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return files


def stored_images(out: Path) -> dict[str, np.ndarray]:
    images = {}
    for name, data in shard_members(out):
        key, ext = name.split(".")
        if ext in ("png", "jpg"):
            images[key] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return images


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    base = tmp_path_factory.mktemp("zoo")
    files = make_data(base / "data", list(CONVERTIBLE) + list(UNUSABLE))
    out = base / "out"
    result = cli("build-shards", "--data", base / "data", "--out", out, *EXACT, "--on-error", "skip", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert f"skipped {len(UNUSABLE)} (listed in dataset.json)" in result.stdout
    assert verify(out) == (0, [])
    return files, json.loads((out / "dataset.json").read_text()), stored_images(out)


def test_unusable_files_are_skipped_with_their_cause(zoo):
    files, card, images = zoo
    skipped = {s["image_id"]: s for s in card["skipped"]}
    assert sorted(skipped) == sorted(image_id(k) for k in UNUSABLE)
    for kind, (_, _, cause) in UNUSABLE.items():
        entry = skipped[image_id(kind)]
        assert entry["file"] == str(files[kind]) and entry["reason"].startswith(cause), entry
        assert image_id(kind) not in images


def test_convertible_files_are_built_and_the_conversion_recorded(zoo):
    files, card, images = zoo
    assert sorted(images) == sorted(image_id(k) for k in CONVERTIBLE)
    converted = {c["image_id"]: c for c in card["converted"]}
    for kind, (_, _, notes) in CONVERTIBLE.items():
        if notes is None:
            assert image_id(kind) not in converted
        else:
            assert converted[image_id(kind)] == {"image_id": image_id(kind), "file": str(files[kind]), "notes": notes}
        assert images[image_id(kind)].shape == (H, W, 3)


def test_converted_pixels_are_right(zoo):
    _, _, images = zoo
    got = {kind: images[image_id(kind)].astype(int) for kind in CONVERTIBLE}
    for kind in ("pnginjpg", "rgbaopaque"):  # lossless sources: exact
        assert np.array_equal(got[kind], GOOD), kind
    assert np.abs(got["png16rgb"] - np.rint(rgb16() / 257)).max() <= 1  # 0..65535 -> 0..255 (Pillow: high byte)
    assert np.abs(got["plain"] - GOOD).max() <= 8  # JPEG at quality 95
    grey = got["grayscale"]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert np.abs(grey[..., 0] - cv2.cvtColor(GOOD, cv2.COLOR_RGB2GRAY)).max() <= 8
    g16 = got["png16grey"][..., 0]
    assert (g16[:, :16] == 0).all() and (g16[:, 16:32] == 128).all() and (g16[:, 32:] == 255).all()
    assert np.abs(got["palette"] - GOOD).mean() < 12  # 16 colours
    assert np.abs(got["cmyk"].reshape(-1, 3).mean(0) - (255, 0, 0)).max() < 8


def test_exif_rotated_image_is_stored_upright(zoo):
    _, _, images = zoo
    a = images[image_id("exif")].astype(int)
    redness = {name: (c[..., 0] - c[..., 1]).mean() for name, c in
               {"top-left": a[:4, :4], "top-right": a[:4, -4:], "bottom-left": a[-4:, :4], "bottom-right": a[-4:, -4:]}.items()}
    assert max(redness, key=redness.get) == "top-right", redness
    assert redness["top-right"] > 150 and all(v < 20 for k, v in redness.items() if k != "top-right")


@pytest.mark.parametrize("kind", list(UNUSABLE))
def test_on_error_fail_stops_with_one_line_naming_file_and_cause(tmp_path, kind):
    files = make_data(tmp_path / "data", ["plain", "grayscale", kind])
    out = tmp_path / "out"
    result = cli("build-shards", "--data", tmp_path / "data", "--out", out, *EXACT, "--workers", "1")
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [result.stderr.splitlines()[-1]], result.stderr
    cause = UNUSABLE[kind][2]
    assert errors[0].startswith(f"error: {files[kind]}: {cause}")
    assert errors[0].endswith(" (pass --on-error skip to build without it)")
    assert not out.exists() and list(tmp_path.glob(".out.tmp-*")) == []


def test_8000x6000_photo_is_built_quickly(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    big = np.empty((6000, 8000, 3), np.uint8)
    big[:, :4000] = (200, 60, 60)  # left half red, right half blue: the whole frame is kept
    big[:, 4000:] = (60, 60, 200)
    (root / "BIG_1.jpg").write_bytes(cv2.imencode(".jpg", cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    del big
    (root / "metadata.csv").write_text("image_id,dx\nBIG_1,mel\n")
    out = tmp_path / "out"
    started = time.perf_counter()
    result = cli("build-shards", "--data", root, "--out", out, "--size", "64", "--workers", "1")
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert seconds < 15, f"an 8000x6000 image took {seconds:.1f} s"
    card = json.loads((out / "dataset.json").read_text())
    assert card["skipped"] == [] and card["converted"] == []
    a = stored_images(out)["BIG_1"].astype(int)
    assert a.shape == (64, 64, 3)
    assert (a[:, :24, 0] > a[:, :24, 2] + 60).all() and (a[:, 40:, 2] > a[:, 40:, 0] + 60).all()
