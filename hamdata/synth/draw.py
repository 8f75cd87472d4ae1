"""The synthetic pictures: a dermoscopic-looking image of each HAM10000 class, drawn from one seeded generator.

Each class has its own learnable look (colour, shape, border, texture) on skin-toned background, with dark hair
drawn over it so that hair removal has work to do. ``draw_lesion(dx, rng, size)`` is pure: the same generator
state gives the same pixels. hamdata.synth.ham writes them as a HAM10000 copy; hamdata.synth.isic reuses them.
"""

from __future__ import annotations

import cv2
import numpy as np

from hamdata.errors import HamdataError
from hamdata.inputs.classes import CLASSES

IMAGE_SIZE = (600, 450)  # (width, height) of every HAM10000 image


# Painters draw into a float32 canvas that draw_lesion owns, so in-place
# updates there keep draw_lesion itself pure. Colours are RGB.


def _outline(cx, cy, radius, rng, wobble=0.04, aspect=1.0, n=96) -> np.ndarray:
    """Closed outline: a rotated ellipse whose radius a few random harmonics modulate (lobes)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    k = np.arange(2, 7)[:, None]
    r = 1 + (rng.normal(0, wobble, (5, 1)) * np.cos(k * t + rng.uniform(0, 2 * np.pi, (5, 1)))).sum(0)
    return _place(r * np.cos(t) * radius, r * np.sin(t) * radius * aspect, cx, cy, rng.uniform(0, np.pi))


def _star(cx, cy, radius, rng, spikes, inner=0.35) -> np.ndarray:
    """Outline of a star: `spikes` points of jittered length around an inner ring."""
    t = np.linspace(0, 2 * np.pi, 2 * spikes, endpoint=False) + rng.uniform(0, np.pi)
    r = np.where(np.arange(2 * spikes) % 2 == 0, rng.uniform(0.7, 1.0, 2 * spikes), inner)
    return _place(r * np.cos(t) * radius, r * np.sin(t) * radius, cx, cy, 0.0)


def _place(x, y, cx, cy, angle) -> np.ndarray:
    """Rotate by `angle`, move to (cx, cy), and round to the int32 points cv2 expects."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1).round().astype(np.int32)


def _mask(shape, polygons=(), circles=()) -> np.ndarray:
    """uint8 mask (255 inside) of filled polygons and (x, y, r) discs."""
    mask = np.zeros(shape, np.uint8)
    if len(polygons):
        cv2.fillPoly(mask, list(polygons), 255)
    for x, y, r in circles:
        cv2.circle(mask, (int(x), int(y)), max(int(r), 1), 255, -1)
    return mask


def _paint(canvas, mask, colour, blur=0.0, opacity=1.0) -> None:
    """Blend `colour` into `canvas` through `mask`; `blur` (px) softens the edge.

    Works only on the mask's bounding box (plus the blur's reach) because most
    shapes are small: blending the whole 600x450 canvas each time is the slow part.
    """
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0:
        return
    pad = int(3 * blur) + 1
    y0, y1 = max(y - pad, 0), min(y + h + pad, mask.shape[0])
    x0, x1 = max(x - pad, 0), min(x + w + pad, mask.shape[1])
    alpha = mask[y0:y1, x0:x1].astype(np.float32) * np.float32(opacity / 255)
    if blur > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), blur)
    roi = canvas[y0:y1, x0:x1]
    change = np.asarray(colour, np.float32) - roi
    change *= alpha[..., None]
    roi += change


def _tint(rgb, rng, spread=0.08) -> np.ndarray:
    """A colour varied in brightness and a little per channel: within-class variation."""
    return np.clip(np.asarray(rgb, float) * rng.uniform(1 - spread, 1 + spread) * rng.uniform(0.96, 1.04, 3), 0, 255)


def _points_inside(cx, cy, radius, rng, n) -> np.ndarray:
    """`n` points spread uniformly over a disc (for dots and speckle)."""
    t, r = rng.uniform(0, 2 * np.pi, n), radius * np.sqrt(rng.random(n))
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _discs(cx, cy, radius, rng, n, sizes) -> np.ndarray:
    """`n` (x, y, r) discs centred over a disc of `radius`, r uniform in `sizes`."""
    return np.column_stack([_points_inside(cx, cy, radius, rng, n), rng.uniform(*sizes, n)])


def _skin(rng, w, h) -> np.ndarray:
    """Skin background (float32): a random tone, a lighting gradient, a dermoscope vignette, mottling."""
    light, medium = np.array([238, 206, 190]), np.array([210, 164, 138])
    tone = _tint(light + rng.random() * (medium - light), rng, 0.04)
    # Built on a coarse grid and resized: smooth fields cost almost nothing that way.
    yy, xx = np.mgrid[-1:1:18j, -1:1:24j]
    angle = rng.uniform(0, 2 * np.pi)
    shade = 1 + rng.uniform(0, 0.12) * (np.cos(angle) * xx + np.sin(angle) * yy)
    shade *= 1 - rng.uniform(0.05, 0.25) * (xx ** 2 + yy ** 2) / 2
    shade *= 1 + cv2.resize(rng.normal(0, 0.025, (4, 5)), (24, 18), interpolation=cv2.INTER_CUBIC)
    return cv2.resize((shade[..., None] * tone).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def _add_noise(canvas, rng, strength) -> np.ndarray:
    """Add grey sensor noise of standard deviation `strength` to `canvas` (in place); return it as uint8.

    Uniform noise from raw bytes, because a normal draw per pixel alone costs
    about a quarter of an image's drawing time. Kept weak (std <= 2.2) so that
    noise alone never trips the blackhat hair detector (threshold 10): what it
    flags should be hair and lesion texture.
    """
    h, w = canvas.shape[:2]
    noise = np.frombuffer(rng.bytes(h * w), np.uint8).reshape(h, w).astype(np.float32)
    noise -= np.float32(127.5)
    noise *= np.float32(strength / 73.6)  # 73.6 = std of uniform bytes
    canvas += noise[..., None]  # in place: a new 600x450x3 float array per step costs more than the sum
    # convertScaleAbs rounds and saturates at 255; its abs() only touches noise below black, still near black.
    return cv2.convertScaleAbs(canvas)


def _paint_nv(canvas, rng, cx, cy, s):
    """Nevus: round to slightly oval, uniform medium brown, defined border, darker centre."""
    radius = rng.uniform(80, 130) * s
    body = _outline(cx, cy, radius, rng, wobble=0.03, aspect=rng.uniform(0.8, 1.0))
    brown = _tint((140, 88, 56), rng)
    _paint(canvas, _mask(canvas.shape[:2], [body]), brown, blur=rng.uniform(2, 4) * s)
    centre = _outline(cx, cy, 0.55 * radius, rng, wobble=0.03)
    _paint(canvas, _mask(canvas.shape[:2], [centre]), brown * 0.8, blur=0.25 * radius, opacity=0.7)


def _paint_mel(canvas, rng, cx, cy, s):
    """Melanoma: large, lobed, dark brown with blue-grey veil and black blotches, radial streaks."""
    shape = canvas.shape[:2]
    radius = rng.uniform(110, 160) * s
    body = _outline(cx, cy, radius, rng, wobble=rng.uniform(0.12, 0.2), aspect=rng.uniform(0.7, 1.0))
    lesion = _mask(shape, [body])
    _paint(canvas, lesion, _tint((88, 52, 40), rng), blur=3 * s)
    for colour, size, blur in (((98, 108, 136), 0.4, 8), ((28, 20, 24), 0.2, 4)):
        for _ in range(rng.integers(1, 3)):
            x, y = _points_inside(cx, cy, 0.45 * radius, rng, 1)[0]
            patch = _mask(shape, [_outline(x, y, size * radius, rng, wobble=0.15)]) & lesion
            _paint(canvas, patch, _tint(colour, rng), blur=blur * s, opacity=0.85)
    streaks = np.zeros(shape, np.uint8)
    for t in rng.uniform(0, 2 * np.pi, rng.integers(12, 26)):
        r0, r1 = radius * rng.uniform(0.6, 0.8), radius * rng.uniform(1.0, 1.2)
        p0 = (int(cx + r0 * np.cos(t)), int(cy + r0 * np.sin(t)))
        p1 = (int(cx + r1 * np.cos(t)), int(cy + r1 * np.sin(t)))
        cv2.line(streaks, p0, p1, 255, int(rng.integers(2, 4)))
    _paint(canvas, streaks, _tint((50, 30, 28), rng), blur=1)


def _paint_bkl(canvas, rng, cx, cy, s):
    """Benign keratosis: waxy yellow-brown oval, sharp 'stuck-on' border, milia (white) and comedo (dark) dots."""
    shape = canvas.shape[:2]
    radius = rng.uniform(85, 135) * s
    lesion = _mask(shape, [_outline(cx, cy, radius, rng, wobble=0.06, aspect=rng.uniform(0.6, 0.85))])
    _paint(canvas, lesion, _tint((160, 132, 56), rng), blur=1)
    for colour, count, size in (((236, 226, 170), (20, 45), (2, 5)), ((72, 50, 34), (15, 30), (2, 4))):
        dots = _discs(cx, cy, radius, rng, rng.integers(*count), np.multiply(size, s))
        _paint(canvas, _mask(shape, circles=dots) & lesion, colour, blur=0.8)


def _paint_bcc(canvas, rng, cx, cy, s):
    """Basal cell carcinoma: translucent pink, blurred border, red branching vessels, blue-grey nests."""
    shape = canvas.shape[:2]
    radius = rng.uniform(85, 135) * s
    lesion = _mask(shape, [_outline(cx, cy, radius, rng, wobble=0.05, aspect=rng.uniform(0.7, 1.0))])
    _paint(canvas, lesion, _tint((224, 148, 160), rng, 0.05), blur=rng.uniform(8, 12) * s, opacity=0.9)
    vessels = np.zeros(shape, np.uint8)
    for _ in range(rng.integers(3, 7)):
        _branch(vessels, _points_inside(cx, cy, 0.5 * radius, rng, 1)[0], rng.uniform(0, 2 * np.pi),
                0.5 * radius, rng, depth=2)
    _paint(canvas, vessels & lesion, _tint((186, 24, 40), rng), blur=0.7)
    nests = _discs(cx, cy, 0.6 * radius, rng, rng.integers(2, 6), (6 * s, 14 * s))
    _paint(canvas, _mask(shape, circles=nests), _tint((82, 96, 132), rng), blur=2 * s, opacity=0.9)


def _branch(mask, start, angle, length, rng, depth):
    """A wavy vessel from `start`, splitting into two thinner ones `depth` times (arborizing)."""
    t = np.linspace(0, 1, 8)[:, None]
    bend = rng.normal(0, 0.25) * np.sin(np.pi * t)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    points = start + length * (t * direction + bend * normal)
    cv2.polylines(mask, [points.round().astype(np.int32)], False, 255, 1 + int(depth > 1))
    if depth > 0:
        for turn in (-1, 1):
            _branch(mask, points[-1], angle + turn * rng.uniform(0.3, 0.8), 0.6 * length, rng, depth - 1)


def _paint_akiec(canvas, rng, cx, cy, s):
    """Actinic keratosis: irregular orange-red patch, blurred border, white scale speckle."""
    shape = canvas.shape[:2]
    radius = rng.uniform(85, 135) * s
    lesion = _mask(shape, [_outline(cx, cy, radius, rng, wobble=0.1, aspect=rng.uniform(0.7, 1.0))])
    _paint(canvas, lesion, _tint((204, 92, 70), rng), blur=rng.uniform(6, 9) * s)
    speckle = _discs(cx, cy, radius, rng, rng.integers(150, 300), (1 * s, 2.5 * s))
    flakes = [_outline(x, y, rng.uniform(5, 12) * s, rng, wobble=0.2)
              for x, y in _points_inside(cx, cy, 0.8 * radius, rng, rng.integers(3, 7))]
    _paint(canvas, _mask(shape, flakes, speckle) & lesion, _tint((246, 238, 228), rng, 0.03), blur=0.8, opacity=0.9)


def _paint_df(canvas, rng, cx, cy, s):
    """Dermatofibroma: smaller, round, light-brown ring with a central white star-like scar."""
    shape = canvas.shape[:2]
    radius = rng.uniform(60, 95) * s
    _paint(canvas, _mask(shape, [_outline(cx, cy, radius, rng, aspect=rng.uniform(0.85, 1.0))]),
           _tint((172, 118, 86), rng), blur=5 * s)
    ring = np.zeros(shape, np.uint8)
    cv2.circle(ring, (int(cx), int(cy)), int(0.75 * radius), 255, max(int(0.25 * radius), 1))
    _paint(canvas, ring, _tint((140, 90, 62), rng), blur=4 * s, opacity=0.7)
    scar = _star(cx, cy, 0.75 * radius, rng, spikes=int(rng.integers(5, 9)), inner=0.45)
    _paint(canvas, _mask(shape, [scar]), _tint((242, 232, 226), rng, 0.03), blur=1.5 * s)


def _paint_vasc(canvas, rng, cx, cy, s):
    """Vascular lesion: a cluster of sharp, round, red-purple lacunae on a reddish halo."""
    shape = canvas.shape[:2]
    cluster = rng.uniform(55, 85) * s
    _paint(canvas, _mask(shape, [_outline(cx, cy, 1.3 * cluster, rng, wobble=0.08)]),
           _tint((196, 96, 104), rng), blur=10 * s, opacity=0.5)
    hue = rng.random()  # from red to purple
    colour = _tint(np.array([140, 18, 52]) * (1 - hue) + np.array([96, 24, 92]) * hue, rng)
    lacunae = _discs(cx, cy, cluster, rng, rng.integers(6, 13), (18 * s, 34 * s))
    _paint(canvas, _mask(shape, circles=lacunae), colour, blur=1.5 * s)
    cores = lacunae * (1, 1, 0.5)  # a darker core in every lacuna
    _paint(canvas, _mask(shape, circles=cores), colour * 0.65, blur=3 * s, opacity=0.6)


_PAINTERS = {"akiec": _paint_akiec, "bcc": _paint_bcc, "bkl": _paint_bkl, "df": _paint_df,
             "mel": _paint_mel, "nv": _paint_nv, "vasc": _paint_vasc}


def _add_hair(image, rng, s) -> None:
    """Draw dark, thin, curved hairs over `image` (uint8, in place); a fifth of images get none."""
    h, w = image.shape[:2]
    count = 0 if rng.random() < 0.2 else int(rng.integers(2, 16))
    t = np.linspace(0, 1, 24)[:, None]
    for _ in range(count):
        start = rng.uniform((-0.1 * w, -0.1 * h), (1.1 * w, 1.1 * h))
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(100, 450) * s
        end = start + length * np.array([np.cos(angle), np.sin(angle)])
        # A quadratic Bezier curve: the control point pushed sideways gives the hair its bend.
        control = (start + end) / 2 + rng.uniform(-0.3, 0.3) * length * np.array([-np.sin(angle), np.cos(angle)])
        points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t ** 2 * end
        colour = tuple(float(c) for c in rng.uniform(15, 55) * np.array([1.0, 0.8, 0.65]))
        thickness = int(rng.choice([1, 1, 2, 2, 3]))
        cv2.polylines(image, [points.round().astype(np.int32)], False, colour, thickness, cv2.LINE_AA)


def draw_lesion(dx: str, rng: np.random.Generator, size=IMAGE_SIZE) -> np.ndarray:
    """A synthetic dermoscopic image of class `dx`: RGB uint8, shape (height, width, 3).

    dx: one of CLASSES; each class has its own colour, shape, border and texture.
    rng: the only source of randomness (position, size, rotation, colours, hair).
    size: (width, height); lesion geometry scales with the smaller side.
    """
    if dx not in _PAINTERS:
        raise HamdataError(f"unknown dx {dx!r}; expected one of {', '.join(CLASSES)}")
    w, h = int(size[0]), int(size[1])
    s = min(w, h) / 450
    canvas = _skin(rng, w, h)
    # Dermoscopy images are roughly centred on the lesion; keep it near the middle.
    cx, cy = w * rng.uniform(0.42, 0.58), h * rng.uniform(0.42, 0.58)
    _PAINTERS[dx](canvas, rng, cx, cy, s)
    image = _add_noise(canvas, rng, rng.uniform(1.0, 2.2))
    _add_hair(image, rng, s)
    return image
