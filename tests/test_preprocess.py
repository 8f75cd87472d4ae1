"""Tests for hamdata.image.preprocess: pure image ops, decoding odd inputs, encoding, config."""

import json
import time

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import hamdata.image.preprocess as pp
from hamdata.errors import HamdataError
from hamdata.image.preprocess import (
    ImageError,
    PreprocessConfig,
    apply_clahe,
    decode_image,
    encode_image,
    parse_size,
    preprocess,
    remove_hair,
    resize,
)
from helpers import pil_bytes

SKIN = (222, 172, 150)
LESION = (120, 72, 52)
HAIR = (40, 30, 25)


# ------------------------------------------------------------------ helpers


def skin_image(h=225, w=300, lesion=True):
    """A smooth skin-coloured gradient with a soft brown lesion in the middle."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = SKIN
    img += (8 * (xx / w) - 6 * (yy / h))[:, :, None]  # gentle lighting gradient
    if lesion:
        blob = np.zeros((h, w), np.float32)
        cv2.ellipse(blob, (w // 2, h // 2), (w // 5, h // 5), 20, 0, 360, 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), 6)[:, :, None]
        img = img * (1 - blob) + np.array(LESION, np.float32) * blob
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def add_hair(rgb, n=12, seed=0):
    """Dark 2-px straight hairs; returns (hairy image, boolean hair mask)."""
    rng = np.random.default_rng(seed)
    h, w = rgb.shape[:2]
    out, mask = rgb.copy(), np.zeros((h, w), np.uint8)
    for _ in range(n):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(out, p1, p2, HAIR, 2)
        cv2.line(mask, p1, p2, 255, 2)
    return out, mask > 0


def low_contrast_image(h=128, w=160, seed=0):
    """Skin with faint texture: every channel within a few grey levels."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 4)
    noise *= 6 / noise.std()
    img = np.array(SKIN, np.float32) + noise[:, :, None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def frozen(a):
    """A read-only copy, so any in-place write by the op under test raises."""
    a = a.copy()
    a.flags.writeable = False
    return a


def mean_abs(a, b, where=None):
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(d[where].mean() if where is not None else d.mean())


def hue_deg(rgb):
    """Hue angle of the mean colour in LAB's a/b plane."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64).mean(0)
    return np.degrees(np.arctan2(lab[2] - 128, lab[1] - 128))


def record_calls(monkeypatch, *names):
    """Wrap ops in hamdata.image.preprocess so each call appends (name, input h x w) to the returned list."""
    seen = []

    def wrap(name, real):
        def op(a, *args):
            seen.append((name, a.shape[:2]))
            return real(a, *args)

        return op

    for name in names:
        monkeypatch.setattr(pp, name, wrap(name, getattr(pp, name)))
    return seen


def real_jpegs(real_images_dir, n=3):
    paths = sorted(real_images_dir.glob("*.jpg"))[:n]
    assert len(paths) == n, f"expected at least {n} JPEGs in {real_images_dir}"
    return paths


# ----------------------------------------------------- property tests of ops

images = st.tuples(st.integers(16, 72), st.integers(16, 72), st.integers(0, 2**32 - 1))
OPS = {
    "remove_hair": remove_hair,
    "apply_clahe": apply_clahe,
    "resize": lambda a: resize(a, (40, 24)),
    "preprocess": lambda a: preprocess(a, PreprocessConfig(size=(40, 24))),
}


@pytest.mark.parametrize("name", OPS)
@settings(max_examples=15, deadline=None)
@given(spec=images, layout=st.sampled_from(["c", "flipped", "strided"]))
def test_op_keeps_dtype_and_never_mutates_input(name, spec, layout):
    h, w, seed = spec
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if layout == "flipped":
        base = base[:, ::-1]
    elif layout == "strided":
        base = np.ascontiguousarray(np.repeat(base, 2, axis=1))[:, ::2]
    src = base.copy()
    base.flags.writeable = False
    out = OPS[name](base)
    assert np.array_equal(base, src)
    assert out.dtype == np.uint8 and out.flags.c_contiguous and out is not base
    expected = (24, 40, 3) if name in ("resize", "preprocess") else (h, w, 3)
    assert out.shape == expected


def test_ops_change_the_image_where_they_should():
    clean = skin_image()
    hairy, _ = add_hair(clean)
    assert mean_abs(remove_hair(frozen(hairy)), hairy) > 1.0
    flat = low_contrast_image()
    assert mean_abs(apply_clahe(frozen(flat)), flat) > 1.0
    assert resize(frozen(clean), (150, 100)).shape == (100, 150, 3)


def test_ops_reject_non_rgb_uint8():
    for bad in (np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.float32)):
        with pytest.raises(ValueError, match="RGB uint8"):
            remove_hair(bad)


# -------------------------------------------------------- what each op does


def test_remove_hair_removes_dark_lines():
    clean = skin_image()
    hairy, mask = add_hair(clean, n=15)
    before = mean_abs(hairy, clean, mask)
    after = mean_abs(remove_hair(hairy), clean, mask)
    assert before > 60
    assert after < before / 8, (before, after)
    # and pixels away from the hairs are left alone
    far = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)) == 0
    assert mean_abs(remove_hair(hairy), clean, far) < 0.5


def test_remove_hair_leaves_hair_free_image_almost_unchanged():
    clean = skin_image()
    out = remove_hair(clean)
    assert mean_abs(out, clean) < 0.2
    assert np.abs(out.astype(int) - clean).max() <= 10


def test_remove_hair_threshold_controls_detection():
    hairy, _ = add_hair(skin_image())
    # a threshold above the hair's black-hat response detects nothing
    assert np.array_equal(remove_hair(hairy, threshold=255), hairy)


def test_clahe_raises_lightness_contrast_and_keeps_hue():
    flat = low_contrast_image()
    out = apply_clahe(flat)
    std_l = lambda a: cv2.cvtColor(a, cv2.COLOR_RGB2LAB)[:, :, 0].std()
    assert std_l(out) > 1.5 * std_l(flat)
    assert abs(hue_deg(out) - hue_deg(flat)) < 5
    stronger = apply_clahe(flat, clip=4.0)
    assert std_l(stronger) > std_l(out)


def test_resize_is_area_and_copy_when_same_size():
    img = skin_image()
    same = resize(img, (300, 225))
    assert np.array_equal(same, img) and same is not img and not np.shares_memory(same, img)
    noise = np.random.default_rng(0).integers(0, 256, (60, 90, 3), dtype=np.uint8)
    third = resize(noise, (30, 20))
    block_means = noise.reshape(20, 3, 30, 3, 3).mean(axis=(1, 3))
    assert np.abs(third - block_means).max() <= 0.5 + 1e-9  # area averaging, not sampling


# ----------------------------------------------------------------- preprocess


def test_preprocess_runs_hair_and_clahe_at_full_resolution_before_resize(monkeypatch):
    seen = record_calls(monkeypatch, "remove_hair", "apply_clahe", "resize")
    img, _ = add_hair(skin_image(450, 600))
    out = pp.preprocess(img, PreprocessConfig(size=(256, 256)))
    assert seen == [("remove_hair", (450, 600)), ("apply_clahe", (450, 600)), ("resize", (450, 600))]
    assert out.shape == (256, 256, 3)


def test_preprocess_order_matters():
    img, _ = add_hair(skin_image(450, 600))
    cfg = PreprocessConfig(size=(128, 96))
    out = preprocess(img, cfg)
    assert np.array_equal(out, resize(apply_clahe(remove_hair(img)), (128, 96)))
    reverse = apply_clahe(remove_hair(resize(img, (128, 96))))
    assert mean_abs(out, reverse) > 1.0


@pytest.mark.parametrize(
    "hair, clahe, expected",
    [
        (False, True, lambda a: resize(apply_clahe(a), (64, 48))),
        (True, False, lambda a: resize(remove_hair(a), (64, 48))),
        (False, False, lambda a: resize(a, (64, 48))),
    ],
)
def test_preprocess_switches(hair, clahe, expected):
    img, _ = add_hair(skin_image())
    out = preprocess(img, PreprocessConfig(hair_removal=hair, clahe=clahe, size=(64, 48)))
    assert np.array_equal(out, expected(img))


def test_preprocess_passes_config_parameters():
    img, _ = add_hair(skin_image())
    cfg = PreprocessConfig(
        hair_kernel=9, hair_threshold=30, inpaint_radius=3, clahe_clip=3.0, clahe_tiles=4, size=(64, 48)
    )
    expected = resize(apply_clahe(remove_hair(img, 9, 30, 3), 3.0, 4), (64, 48))
    assert np.array_equal(preprocess(img, cfg), expected)


def test_huge_image_decodes_and_preprocesses_quickly(monkeypatch):
    small, _ = add_hair(skin_image(150, 200))
    data = encode_image(cv2.resize(small, (8000, 6000), interpolation=cv2.INTER_LINEAR), "jpg", 90)
    rgb, notes = decode_image(data)
    assert rgb.shape == (6000, 8000, 3) and notes == ()
    seen = record_calls(monkeypatch, "remove_hair")
    t0 = time.perf_counter()
    out = pp.preprocess(rgb, PreprocessConfig())
    elapsed = time.perf_counter() - t0
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert seen == [("remove_hair", (1500, 2000))]  # long side capped before the full-resolution ops
    assert elapsed < 5.0, f"preprocess of 8000x6000 took {elapsed:.1f} s"


def test_resolution_cap_never_goes_below_target(monkeypatch):
    seen = record_calls(monkeypatch, "apply_clahe")
    img = np.full((1200, 2400, 3), 128, np.uint8)
    pp.preprocess(img, PreprocessConfig(hair_removal=False, size=(2200, 1100)))
    assert seen == [("apply_clahe", (1100, 2200))]


# ------------------------------------------------------------------ real data


def test_real_jpegs_decode_and_preprocess(real_images_dir):
    for path in real_jpegs(real_images_dir):
        data = path.read_bytes()
        rgb, notes = decode_image(data)
        assert rgb.shape == (450, 600, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
        assert notes == ()
        # channel order is RGB: matches OpenCV's own decode after BGR->RGB
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        ref = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        assert mean_abs(rgb, ref) < 2.0
        out = preprocess(rgb, PreprocessConfig())
        assert out.shape == (256, 256, 3) and out.dtype == np.uint8


def test_real_jpeg_cut_in_half_is_truncated(real_images_dir):
    data = real_jpegs(real_images_dir, 1)[0].read_bytes()
    with pytest.raises(ImageError, match="truncated") as e:
        decode_image(data[: len(data) // 2])
    assert e.value.cause.startswith("truncated or corrupt image data: ")


# ------------------------------------------------------------ decoding odd input


def test_truncated_jpeg():
    data = encode_image(low_contrast_image(), "jpg")
    with pytest.raises(ImageError, match="^truncated or corrupt image data: "):
        decode_image(data[: len(data) // 2])


@pytest.mark.parametrize(
    "data, cause",
    [
        (b"", "empty file (0 bytes)"),
        (np.random.default_rng(0).bytes(4096), "not an image (unrecognised format)"),
        (b"image_id,dx\nISIC_0000000,nv\n", "not an image (unrecognised format)"),
    ],
    ids=["empty", "random", "text"],
)
def test_not_images(data, cause):
    with pytest.raises(ImageError) as e:
        decode_image(data)
    assert e.value.cause == cause and str(e.value) == cause
    assert isinstance(e.value, HamdataError)


def test_grayscale_jpeg():
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (32, 1))
    rgb, notes = decode_image(pil_bytes(Image.fromarray(grey, "L"), "JPEG"))
    assert rgb.shape == (32, 64, 3)
    assert np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 1], rgb[:, :, 2])
    assert mean_abs(rgb[:, :, 0], grey) < 2
    assert notes == ("converted from grayscale",)


def test_png_data_is_decoded_exactly_with_a_note():
    img = skin_image(40, 50)
    rgb, notes = decode_image(pil_bytes(Image.fromarray(img), "PNG"))
    assert np.array_equal(rgb, img)
    assert notes == ("PNG data",)


def test_rgba_png_fully_opaque_is_accepted():
    img = skin_image(40, 50)
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    rgb, notes = decode_image(pil_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert np.array_equal(rgb, img)
    assert notes == ("PNG data", "alpha channel dropped (fully opaque)")


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "RGB colour key", "L colour key"])
def test_transparent_png_is_rejected(mode):
    rgba = np.dstack([skin_image(40, 50), np.full((40, 50), 255, np.uint8)])
    rgba[5, 5, 3] = 0
    img, extra = Image.fromarray(rgba, "RGBA"), {}
    if mode == "LA":
        img = img.convert("LA")
    elif mode == "P":
        img = img.convert("P")
        extra = {"transparency": int(np.asarray(img)[5, 5])}  # that palette entry gets a tRNS alpha of 0
    elif mode == "RGB colour key":
        img = img.convert("RGB")
        extra = {"transparency": tuple(int(v) for v in rgba[5, 5, :3])}
    elif mode == "L colour key":
        img = img.convert("L")
        extra = {"transparency": int(np.asarray(img)[5, 5])}
    with pytest.raises(ImageError, match="has transparent pixels; cannot convert safely"):
        decode_image(pil_bytes(img, "PNG", **extra))


def test_png_colour_key_matching_no_pixel_is_accepted():
    img = skin_image(40, 50)
    rgb, notes = decode_image(pil_bytes(Image.fromarray(img), "PNG", transparency=(0, 0, 255)))
    assert np.array_equal(rgb, img)
    assert notes == ("PNG data", "alpha channel dropped (fully opaque)")


def test_palette_png_without_transparency():
    img = Image.fromarray(skin_image(40, 50)).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    rgb, notes = decode_image(pil_bytes(img, "PNG"))
    assert np.array_equal(rgb, np.asarray(img.convert("RGB")))
    assert notes == ("PNG data", "converted from palette")


def test_cmyk_jpeg_colours_are_right():
    red = Image.new("CMYK", (32, 24), (0, 255, 255, 0))
    rgb, notes = decode_image(pil_bytes(red, "JPEG", quality=95))
    assert rgb.shape == (24, 32, 3)
    assert np.abs(rgb.reshape(-1, 3).mean(0) - (255, 0, 0)).max() < 8
    assert notes == ("converted from CMYK",)


def test_16bit_grayscale_png_is_scaled():
    a = np.zeros((8, 12), np.uint16)
    a[:, 4:8] = 32768
    a[:, 8:] = 65535
    img = Image.fromarray(a)
    assert img.mode.startswith("I;16")
    rgb, notes = decode_image(pil_bytes(img, "PNG"))
    assert rgb.shape == (8, 12, 3)
    assert (rgb[:, :4] == 0).all() and (rgb[:, 8:] == 255).all()
    assert (np.abs(rgb[:, 4:8].astype(int) - 128) <= 1).all()
    assert notes == ("PNG data", "converted from 16-bit grayscale")


def test_float_tiff_is_rejected():
    img = Image.fromarray(np.full((8, 8), 0.5, np.float32))
    with pytest.raises(ImageError, match="floating-point"):
        decode_image(pil_bytes(img, "TIFF"))


def test_exif_orientation_is_applied():
    stored = np.full((20, 40, 3), 200, np.uint8)  # h=20, w=40 as stored
    stored[:6, :6] = (255, 0, 0)  # red marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    rgb, notes = decode_image(pil_bytes(Image.fromarray(stored), "JPEG", exif=exif, quality=95))
    assert rgb.shape == (40, 20, 3)  # sides swapped
    assert notes == ("EXIF orientation applied",)
    corners = {"tl": rgb[:4, :4], "tr": rgb[:4, -4:], "bl": rgb[-4:, :4], "br": rgb[-4:, -4:]}
    reddest = max(corners, key=lambda k: int(corners[k][..., 0].mean()) - int(corners[k][..., 1].mean()))
    assert reddest == "tr"
    assert corners["tr"][..., 0].mean() > 200 and corners["tr"][..., 1].mean() < 60


def test_exif_orientation_1_is_not_a_note():
    exif = Image.Exif()
    exif[0x0112] = 1
    rgb, notes = decode_image(pil_bytes(Image.fromarray(skin_image(20, 40)), "JPEG", exif=exif))
    assert rgb.shape == (20, 40, 3) and notes == ()


def test_decompression_bomb_is_an_image_error(monkeypatch):
    data = encode_image(np.zeros((100, 100, 3), np.uint8), "png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageError, match="^image too large: "):
        decode_image(data)


# ----------------------------------------------------------------- encode


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_encode_is_deterministic_and_round_trips(fmt):
    img = skin_image()
    a, b = encode_image(frozen(img), fmt), encode_image(img.copy(), fmt)
    assert isinstance(a, bytes) and a == b
    back, notes = decode_image(a)
    assert back.shape == img.shape
    if fmt == "png":
        assert np.array_equal(back, img) and notes == ("PNG data",)
    else:
        assert mean_abs(back, img) < 1.5 and notes == ()


def test_encode_jpeg_quality_and_bad_options():
    img = low_contrast_image()
    assert len(encode_image(img, "jpg", 50)) < len(encode_image(img, "jpg", 95))
    with pytest.raises(HamdataError, match="'jpg' or 'png'"):
        encode_image(img, "webp")
    with pytest.raises(HamdataError, match="quality"):
        encode_image(img, "jpg", 0)


# ------------------------------------------------------------------ config


def test_config_round_trips_through_json():
    for cfg in (PreprocessConfig(), PreprocessConfig(hair_removal=False, clahe_clip=3, size=(300, 225))):
        d = cfg.to_dict()
        assert type(d) is dict and d["size"] == list(cfg.size)
        back = PreprocessConfig.from_dict(json.loads(json.dumps(d)))
        assert back == cfg and back.size == cfg.size and isinstance(back.size, tuple)
        assert hash(back) == hash(cfg)
    assert PreprocessConfig.from_dict({"size": [64, 32]}) == PreprocessConfig(size=(64, 32))


@pytest.mark.parametrize(
    "field, value",
    [
        ("hair_kernel", 4), ("hair_kernel", 1), ("hair_kernel", 17.0), ("hair_threshold", -1),
        ("hair_threshold", 256), ("inpaint_radius", 0), ("clahe_clip", 0), ("clahe_clip", -1.0),
        ("clahe_clip", float("nan")), ("clahe_clip", "2"), ("clahe_tiles", 0), ("size", (0, 256)),
        ("size", (256,)), ("size", ("a", 2)), ("size", 256), ("hair_removal", "yes"), ("clahe", 1),
    ],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(HamdataError, match=f"preprocess config: {field} must be"):
        PreprocessConfig(**{field: value})


def test_config_from_dict_rejects_unknown_fields_and_non_mappings():
    with pytest.raises(HamdataError, match="unknown field.*'hair_size'"):
        PreprocessConfig.from_dict({"hair_size": 3})
    with pytest.raises(HamdataError, match="expected a mapping"):
        PreprocessConfig.from_dict([("clahe", True)])


# -------------------------------------------------------------- parse_size


@pytest.mark.parametrize(
    "text, size", [("256", (256, 256)), ("300x225", (300, 225)), ("300X225", (300, 225)), (" 16x4096 ", (16, 4096))]
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "abc", "256x", "x256", "-256", "256x225x3", "2.5", "0", "15", "4097", "300x0"])
def test_parse_size_rejects(text):
    with pytest.raises(HamdataError, match=f"^--size: .*got '{text}'$"):
        parse_size(text)
