"""How two fingerprints are compared, and the search for the pairs that show the same picture.

    pairs = find_duplicates(fps)       # (N, 768) fingerprints -> [(i, j, similarity), ...], i < j, sorted
    similarity(fps[i], fps[j])         # the same score for one pair; the same picture from THRESHOLD up

The fingerprints are hamdata.dedup.fingerprint's. numpy and OpenCV only, no global state; the order of the
rows changes nothing but the row numbers (every score is exact integer arithmetic or depends on the pair alone).

Verification: two scores that must agree
----------------------------------------
- rank: the thumbnail (blurred) sampled on a 16x12 grid over the central 80%, replaced by its ranks, so
  that no tone curve (brightness, clipping, gamma) changes it; correlated with 27 views of the other image
  (scale 0.95/1/1.05, shift -1.5/0/+1.5% per axis), the best view both ways, then raised to the
  correlation at the alignment below when that is higher.
- fit: Lucas-Kanade finds the per-axis scale (0.87-1.15) and shift (up to 4%) that map one thumbnail onto
  the other; after a gain, both are flattened again at the common level (a brightened copy saturated its
  reference) and the fit is 1 - RMS residual / spread over the central 84%, the worse of the two
  directions. Unlike ranks, it sees the lesion's contrast and the exact outline.
Each becomes a margin, (score - ref) / (1 - ref), with ref 0.99 for rank and 0.86 for fit; the similarity
is the mean of the two margins when rank >= 0.97 and fit >= 0.80, else the lower margin (-2 or less); the
same picture from THRESHOLD = 0.1 up. Two different photos of one lesion (HAM_0001444: ISIC_0024688 and
ISIC_0026352, seconds apart, same framing) score -0.35: not merged (the build handles pairs of one lesion
on its own anyway).

Candidates, not all pairs
-------------------------
The 16x12 rank vectors are centred (on the mean shrunk by N / (N + 64)) and whitened on their top 32
principal components (the covariance is exact integer arithmetic; variances floored at 2-10% of the
largest, more for small N, where copies of a few pictures would otherwise set the axes), then hashed: sign random projections from a fixed seed, 200
bands of 18 bits. Pairs sharing a band must have a whitened cosine >= 0.75 and a plain rank correlation
>= 0.85 before the 27 views are scored, and rank >= 0.97 before the alignment. Identical fingerprints are
paired directly (similarity 1.0). 100,000 fingerprints: 21.8 s on one core (bench/dedup.py; 16.6 s of it
the candidates); 500 planted copies found, no false merge.

Measured: bench/NOTES.md item 13 (bench/dedup.py --accuracy re-runs it). All 230 copies of the 23 real
HAM10000 images (re-encodes, resizes, crops of 3% a side and 0-5% asymmetric, x1.15 and x0.85 brightness,
and the acceptance test's combination) score 0.45 and up; 252 pairs of different real lesions -16.6 at most.
On synthetic pictures copies score 0.21 and up, and among 20,000 synthetic pictures 4 pairs of distinct
hairless round nevi score 0.105-0.24 (colour, which the fingerprint leaves out, would tell them apart).
"""

from __future__ import annotations

import time

import numpy as np

from hamdata.dedup.candidates import candidate_codes, whiten
from hamdata.dedup.fingerprint import FINGERPRINT_SIZE, GRID_H, GRID_W, METHOD
from hamdata.errors import HamdataError


# ----------------------------------------------------------------- verification

_WIN = (0.08, 0.92)                   # the compared window: the central 84% of each side of the image
_WIN_COLS = _WIN[0] * GRID_W + (np.arange(24) + 0.5) * ((_WIN[1] - _WIN[0]) * GRID_W / 24) - 0.5   # 24 x 18 samples,
_WIN_ROWS = _WIN[0] * GRID_H + (np.arange(18) + 0.5) * ((_WIN[1] - _WIN[0]) * GRID_H / 18) - 0.5   # in pixel units
_LK_COLS = _WIN[0] * GRID_W + (np.arange(12) + 0.5) * ((_WIN[1] - _WIN[0]) * GRID_W / 12) - 0.5    # 12 x 9 for the
_LK_ROWS = _WIN[0] * GRID_H + (np.arange(9) + 0.5) * ((_WIN[1] - _WIN[0]) * GRID_H / 9) - 0.5      # alignment
_FIT_BLUR = 0.8                       # blur before the final fit: bilinear sampling then blurs both sides alike
_LK_BLUR = 1.0                        # extra blur for the alignment (wider basin), thumbnail pixels
_LK_ITERATIONS = 4
_SCALE_RANGE = (0.87, 1.15)           # per-axis scale between two copies: a crop of up to ~6% a side
_SHIFT_MAX = 0.04                     # per-axis shift of the window centre, in image widths/heights
_FLAT = 0.01                          # a window flatter than this (std, 0..1 units) counts as this flat


def _check(fingerprints) -> np.ndarray:
    """The fingerprints as an (N, FINGERPRINT_SIZE) array, or a one-line HamdataError."""
    arr = np.asarray(fingerprints)
    if arr.ndim != 2 or arr.shape[1] != FINGERPRINT_SIZE:
        raise HamdataError(f"fingerprints: expected an (N, {FINGERPRINT_SIZE}) array from dedup.fingerprint "
                           f"(method {METHOD}), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.integer):
        whole = True
    elif np.issubdtype(arr.dtype, np.floating):
        whole = bool(np.all(np.mod(arr, 1) == 0))
    else:
        whole = False
    if arr.size and not (whole and arr.min() >= 0 and arr.max() <= 255):
        raise HamdataError(f"fingerprints: expected an (N, {FINGERPRINT_SIZE}) array of whole numbers 0..255 (uint8) "
                           f"from dedup.fingerprint (method {METHOD}), got {arr.dtype} values outside that")
    return arr


def _as_stack(fingerprints) -> np.ndarray:
    """Checked fingerprints as thumbnails: (N, GRID_H, GRID_W) float32 luminance in 0..1."""
    arr = _check(fingerprints)
    root = arr.reshape(len(arr), GRID_H, GRID_W).astype(np.float32) / np.float32(255)
    return np.float32(1) - root * root


def _smooth(stack: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of a (P, H, W) stack, edges replicated; elementwise, so each image's
    result does not depend on the others in the stack."""
    radius = int(np.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    out = stack
    for axis in (1, 2):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        size = out.shape[axis]
        acc = np.zeros_like(out)
        for k, w in enumerate(taps):
            acc += w * np.take(padded, np.arange(k, k + size), axis=axis)
        out = acc
    return out


def _gradients(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d/dx and d/dy of a (P, H, W) stack, per thumbnail pixel (central differences, one-sided at the edges)."""
    gx = np.empty_like(stack)
    gx[:, :, 1:-1] = (stack[:, :, 2:] - stack[:, :, :-2]) * np.float32(0.5)
    gx[:, :, 0] = stack[:, :, 1] - stack[:, :, 0]
    gx[:, :, -1] = stack[:, :, -1] - stack[:, :, -2]
    gy = np.empty_like(stack)
    gy[:, 1:-1] = (stack[:, 2:] - stack[:, :-2]) * np.float32(0.5)
    gy[:, 0] = stack[:, 1] - stack[:, 0]
    gy[:, -1] = stack[:, -1] - stack[:, -2]
    return gx, gy


def _weights(xs: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer cell and fractional weight of each sample position (pixel units), clamped to the image."""
    xs = np.clip(xs, 0, size - 1.0001)
    cell = xs.astype(np.int32)
    return cell, (xs - cell).astype(np.float32)


def _sample(images: np.ndarray, index: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> list[np.ndarray]:
    """Bilinear samples of images[c][index[p]] on the separable grid ys[p] x xs[p] (pixel units).

    images: C planes, each (N, H, W); index (P,); xs (P, nx); ys (P, ny) -> C arrays (P, ny * nx).
    Elementwise: a pair's samples do not depend on the other pairs in the batch.
    """
    n, h, w = images[0].shape
    ix, wx = _weights(xs, w)
    iy, wy = _weights(ys, h)
    at = index.astype(np.int64)[:, None, None] * (h * w) + iy[:, :, None] * w + ix[:, None, :]
    wx = wx[:, None, :]
    wy = wy[:, :, None]
    out = []
    for plane in images:
        flat = plane.reshape(-1)
        top = flat.take(at)
        top += (flat.take(at + 1) - top) * wx
        bottom = flat.take(at + w)
        bottom += (flat.take(at + w + 1) - bottom) * wx
        bottom -= top
        bottom *= wy
        top += bottom
        out.append(top.reshape(len(index), -1))
    return out


def _positions(params: np.ndarray, cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the sample points (cols, rows; pixel units) of one thumbnail fall in the other, in pixel units.

    params (P, 4) = (ax, dx, ay, dy): x' = ax * (x - 0.5) + 0.5 + dx in image widths (y alike)."""
    u = ((np.asarray(cols) + 0.5) / GRID_W - 0.5).astype(np.float32)
    v = ((np.asarray(rows) + 0.5) / GRID_H - 0.5).astype(np.float32)
    xs = (params[:, 0:1] * u + np.float32(0.5) + params[:, 1:2]) * np.float32(GRID_W) - np.float32(0.5)
    ys = (params[:, 2:3] * v + np.float32(0.5) + params[:, 3:4]) * np.float32(GRID_H) - np.float32(0.5)
    return xs, ys


def _identity(count: int) -> np.ndarray:
    return np.tile(np.array([1, 0, 1, 0], np.float32), (count, 1))


def _align(lk: np.ndarray, window: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Per-axis scale and shift that map thumbnail ib's window onto thumbnail ia (P, 4), by Gauss-Newton
    (Lucas-Kanade) on the blurred thumbnails with a gain: b(x) ~ g * a(W(x)).

    lk: the blurred thumbnails and their x and y gradients, each (N, H, W); window (N, K): each blurred
    thumbnail sampled on the alignment grid."""
    p = len(ia)
    cols, rows = _LK_COLS, _LK_ROWS
    b = window[ib]
    u = np.broadcast_to(((cols + 0.5) / GRID_W - 0.5).astype(np.float32), (len(rows), len(cols))).ravel()
    v = np.broadcast_to(((rows + 0.5) / GRID_H - 0.5).astype(np.float32)[:, None], (len(rows), len(cols))).ravel()
    params = _identity(p)
    gain = None
    damping = np.eye(5, dtype=np.float32) * np.float32(1e-4)
    jac = np.empty((p, len(u), 5), np.float32)
    for _ in range(_LK_ITERATIONS):
        a, dx, dy = _sample(lk, ia, *_positions(params, cols, rows))
        if gain is None:
            gain = (a * b).sum(1) / np.maximum((a * a).sum(1), np.float32(1e-6))
        g = gain[:, None]
        level = np.minimum(g, np.float32(1))      # the common flattening level (see _fit)
        scaled = g * a
        active = (scaled < level).astype(np.float32)
        residual = np.minimum(b, level) - np.minimum(scaled, level)
        ax = dx * (g * np.float32(GRID_W)) * active
        ay = dy * (g * np.float32(GRID_H)) * active
        a = a * active
        np.multiply(ax, u, out=jac[:, :, 0])
        jac[:, :, 1] = ax
        np.multiply(ay, v, out=jac[:, :, 2])
        jac[:, :, 3] = ay
        jac[:, :, 4] = a
        jt = jac.transpose(0, 2, 1)
        hess = np.matmul(jt, jac) + damping
        rhs = np.matmul(jt, residual[:, :, None])
        step = np.linalg.solve(hess, rhs)[:, :, 0]
        params += np.clip(step[:, :4], -0.05, 0.05)
        gain = gain + step[:, 4]
        params[:, 0::2] = np.clip(params[:, 0::2], *_SCALE_RANGE)
        params[:, 1::2] = np.clip(params[:, 1::2], -_SHIFT_MAX, _SHIFT_MAX)
    return params


def _fit(smooth: np.ndarray, window: np.ndarray, ia: np.ndarray, ib: np.ndarray, params: np.ndarray) -> np.ndarray:
    """1 - (RMS residual of b ~ g * a(W(x)) over ib's window) / (std of that window).

    smooth (N, H, W): the thumbnails as compared; window (N, K): each sampled on the window grid.
    The two thumbnails were flattened at their own reference level (1.0); when a brightened copy saturated
    its reference pixels, the two levels differ by the gain g, so both are flattened again at the lower
    level, min(1, g), before the residual is taken.
    """
    b = window[ib]
    a = _sample([smooth], ia, *_positions(params, _WIN_COLS, _WIN_ROWS))[0]
    gain = (a * b).sum(1) / np.maximum((a * a).sum(1), np.float32(1e-6))
    level = np.minimum(gain, np.float32(1))[:, None]
    a = np.minimum(a * gain[:, None], level)
    b = np.minimum(b, level)
    gain = (a * b).sum(1) / np.maximum((a * a).sum(1), np.float32(1e-6))
    a *= gain[:, None]
    a -= b
    rms = np.sqrt((a * a).mean(1))
    spread = np.maximum(b.std(1), np.float32(_FLAT))
    return 1.0 - rms / spread


def _inverse(params: np.ndarray) -> np.ndarray:
    """The map back: x = (x' - 0.5 - d) / a + 0.5."""
    inv = np.empty_like(params)
    inv[:, 0::2] = 1.0 / params[:, 0::2]
    inv[:, 1::2] = -params[:, 1::2] / params[:, 0::2]
    return inv


def _orient(raw: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Put each pair in an order fixed by content (the fingerprint with the smaller first differing byte
    first), so that a pair's alignment never depends on which row came first."""
    differ = raw[ia] != raw[ib]
    first = differ.argmax(axis=1)
    swap = raw[ia, first].astype(np.int16) > raw[ib, first].astype(np.int16)
    return np.where(swap, ib, ia), np.where(swap, ia, ib)


def _fit_scores(raw: np.ndarray, thumbs: np.ndarray, ia: np.ndarray, ib: np.ndarray,
                chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """(fit, aligned rank) of each pair. Lucas-Kanade aligns the pair; fit is 1 - relative residual, the
    lower of the two directions; aligned rank is the rank correlation at that alignment, the higher of the
    two directions (the views of _rank_scores are only a grid). Symmetric: the pair is first put in an order
    fixed by content, and a pair's scores depend on that pair only."""
    fit = np.empty(len(ia), np.float64)
    rank = np.empty(len(ia), np.float64)
    ia, ib = _orient(raw, np.asarray(ia, np.int64), np.asarray(ib, np.int64))
    for start in range(0, len(ia), chunk):
        a, b = ia[start:start + chunk], ib[start:start + chunk]
        used, local = np.unique(np.concatenate([a, b]), return_inverse=True)
        la, lb = local[:len(a)], local[len(a):]
        sub = thumbs[used]
        ids = np.arange(len(used))
        blurred = _smooth(sub, _LK_BLUR)
        lk = [blurred, *_gradients(blurred)]
        lk_window = _sample(lk[:1], ids, *_positions(_identity(len(ids)), _LK_COLS, _LK_ROWS))[0]
        params = _align(lk, lk_window, la, lb)             # b's window onto a
        back = _inverse(params)                            # a's window onto b
        smooth = _smooth(sub, _FIT_BLUR)
        window = _sample([smooth], ids, *_positions(_identity(len(ids)), _WIN_COLS, _WIN_ROWS))[0]
        fit[start:start + chunk] = np.minimum(_fit(smooth, window, la, lb, params),
                                              _fit(smooth, window, lb, la, back))
        desc = _smooth(sub, _DESC_BLUR)
        ident = _ranks(desc, ids, _identity(len(ids))).astype(np.float32)
        forward = np.einsum("pd,pd->p", ident[lb], _ranks(desc, la, params).astype(np.float32))
        backward = np.einsum("pd,pd->p", ident[la], _ranks(desc, lb, back).astype(np.float32))
        rank[start:start + chunk] = np.maximum(forward, backward) / _RANK_NORM
    return fit, rank


# ----------------------------------------------------------------- rank descriptors

_DESC_W, _DESC_H = 16, 12             # rank descriptor: 16 x 12 samples over the central 80% of each side
_DESC_COLS = 0.1 * GRID_W + (np.arange(_DESC_W) + 0.5) * (0.8 * GRID_W / _DESC_W) - 0.5
_DESC_ROWS = 0.1 * GRID_H + (np.arange(_DESC_H) + 0.5) * (0.8 * GRID_H / _DESC_H) - 0.5
_DESC_BLUR = 0.7
_DESC_SIZE = _DESC_W * _DESC_H
_RANK_NORM = float(((2 * np.arange(_DESC_SIZE) - (_DESC_SIZE - 1)) ** 2).sum())   # every rank vector's squared length
# Views of the index side: scale 0.95 / 1 / 1.05 and shifts of -1.5 / 0 / +1.5% of the side, per axis together.
_VIEWS = np.array([(a, dx, a, dy) for a in (0.95, 1.0, 1.05)
                   for dx in (-0.015, 0.0, 0.015) for dy in (-0.015, 0.0, 0.015)], np.float32)


def _ranks(blurred: np.ndarray, index: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Rank descriptors (P, 192) int16: the blurred thumbnail sampled on the descriptor grid (mapped by
    params), replaced by its ordinal ranks r (ties by position), stored as 2r - 191 (zero mean, fixed length).
    Ranks do not change under any increasing tone curve: brightness, clipping, gamma."""
    values = _sample([blurred], index, *_positions(params, _DESC_COLS, _DESC_ROWS))[0]
    order = np.argsort(values, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(_DESC_SIZE)[None, :], axis=1)
    return (2 * ranks - (_DESC_SIZE - 1)).astype(np.int16)


def _descriptors(fingerprints: np.ndarray) -> np.ndarray:
    """The rank descriptors (P, 192) of fingerprints, unmapped (the identity view)."""
    count = len(fingerprints)
    return _ranks(_smooth(_as_stack(fingerprints), _DESC_BLUR), np.arange(count), _identity(count))


def _rank_scores(blurred: np.ndarray, ident: np.ndarray, ia: np.ndarray, ib: np.ndarray,
                 chunk: int = 2048) -> np.ndarray:
    """Multi-view rank correlation of each pair: the best over _VIEWS of the correlation of one image's
    descriptor with a view of the other, both ways. Exact (integer dot products), symmetric."""
    out = np.empty(len(ia), np.float64)
    for start in range(0, len(ia), chunk):
        a, b = ia[start:start + chunk], ib[start:start + chunk]
        used, local = np.unique(np.concatenate([a, b]), return_inverse=True)
        la, lb = local[:len(a)], local[len(a):]
        views = np.stack([_ranks(blurred, used, np.repeat(v[None], len(used), 0)) for v in _VIEWS], axis=1)
        views = views.astype(np.float32)                                        # (U, V, 192), exact
        qa, qb = ident[a].astype(np.float32), ident[b].astype(np.float32)
        best_ab = np.einsum("pd,pvd->pv", qa, views[lb]).max(axis=1)
        best_ba = np.einsum("pd,pvd->pv", qb, views[la]).max(axis=1)
        out[start:start + chunk] = np.maximum(best_ab, best_ba) / _RANK_NORM
    return out


# ----------------------------------------------------------------- decision

# Two scores must agree: the rank correlation (tone-proof) and the aligned fit (contrast-aware). Each becomes
# a margin, (score - ref) / (1 - ref): 1 for identical thumbnails, 0 at its reference level. A pair with both
# scores at or above their floors scores the mean of its two margins; any other pair the lower margin
# (-2 or less). The same picture: THRESHOLD and up.
# Measured (bench/NOTES.md item 13): copies of real images score 0.45 and up, different real lesions -16
# at most; 6,240 copies (real and synthetic) 0.21 and up. Distinct synthetic pictures: -0.18 at most
# among 2,100 + 2 x 4,200 drawn at full size, but 9 pairs of 20,000 drawn at 300x225 score 0.02-0.24
# (hairless round nevi of one shape after a <= 15% stretch). 0.1 keeps a 0.11 margin to every copy
# measured and leaves 4 of those 9.
_RANK_REF, _RANK_FLOOR = 0.99, 0.97
_FIT_REF, _FIT_FLOOR = 0.86, 0.80
THRESHOLD = 0.1


def _combine(rank: np.ndarray, fit: np.ndarray) -> np.ndarray:
    r = (rank - _RANK_REF) / (1 - _RANK_REF)
    f = (fit - _FIT_REF) / (1 - _FIT_REF)
    return np.where((rank >= _RANK_FLOOR) & (fit >= _FIT_FLOOR), (r + f) / 2, np.minimum(r, f))


def _scores(raw: np.ndarray, thumbs: np.ndarray, blurred: np.ndarray, ident: np.ndarray,
            ia: np.ndarray, ib: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(similarity, rank score, fit score) of the pairs. The rank score is the views' one, raised to the
    aligned one where that is higher; the alignment and fit are computed only where the views' rank score
    reaches its floor (elsewhere the similarity is the rank margin alone, far below THRESHOLD)."""
    rank = _rank_scores(blurred, ident, ia, ib)
    fit = np.full(len(ia), np.nan)
    passed = np.flatnonzero(rank >= _RANK_FLOOR)
    fit[passed], aligned = _fit_scores(raw, thumbs, ia[passed], ib[passed])
    rank[passed] = np.maximum(rank[passed], aligned)
    sim = _combine(rank, np.where(np.isnan(fit), 1.0, fit))   # no fit: below the rank floor anyway
    return sim, rank, fit


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """The verification score of one pair of fingerprints, as find_duplicates computes it: 1.0 for the same
    pixels, THRESHOLD (0.1) and up for the same picture, -2 or less where a score is under its floor."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != (FINGERPRINT_SIZE,) or b.shape != (FINGERPRINT_SIZE,):
        raise HamdataError(f"similarity: expected two fingerprints of shape ({FINGERPRINT_SIZE},) from "
                           f"dedup.fingerprint (method {METHOD}), got {a.shape} and {b.shape}")
    raw = np.stack([a, b])
    thumbs = _as_stack(raw)
    blurred = _smooth(thumbs, _DESC_BLUR)
    ident = _ranks(blurred, np.arange(2), _identity(2))
    return float(_scores(raw.astype(np.uint8), thumbs, blurred, ident, np.array([0]), np.array([1]))[0][0])


# ----------------------------------------------------------------- candidates (hamdata.dedup.candidates)

_IDENT_MIN = 0.85                     # rank correlation without views below which a candidate is dropped
_CHUNK = 16384                        # images whose thumbnails are made at once
_PAIR_CHUNK = 8192                    # candidate pairs scored at once (their thumbnails: ~300 MB of work arrays)


def find_duplicates(fingerprints: np.ndarray, stats: dict | None = None) -> list[tuple[int, int, float]]:
    """Rows i < j of an (N, FINGERPRINT_SIZE) array of fingerprints that show the same picture, with their
    similarity, sorted by (i, j).

    stats: a dict to receive the work done: candidates (pairs sharing an LSH band, counted once per band),
    whitened (distinct pairs whose whitened cosine passed), ranked (of those, pairs whose plain rank
    correlation passed, scored with views), aligned (pairs whose view score passed, aligned and fitted),
    found, and the seconds of the two stages.
    """
    started = time.perf_counter()
    arr = np.asarray(fingerprints)
    if arr.ndim in (1, 2) and arr.shape[0] == 0:
        return []
    raw = np.ascontiguousarray(_check(arr).astype(np.uint8, copy=False))  # no copy of a uint8 array
    if len(raw) < 2:
        return []
    # Identical fingerprints are one picture: search among the distinct ones, in byte order (so that not
    # even the floating-point steps see the input order), and pair up the members of each group. The order is
    # an index (first: the earliest row of each distinct fingerprint): np.unique would sort a copy of all of
    # them, and a distinct copy would be another (308 MB each at 401,059 images).
    order = np.argsort(raw.view(np.dtype((np.void, FINGERPRINT_SIZE))).ravel(), kind="stable")
    starts = np.ones(len(order), dtype=bool)
    for k in range(1, len(order), _CHUNK):
        here = order[k:k + _CHUNK]
        starts[k:k + len(here)] = (raw[here] != raw[order[k - 1:k - 1 + len(here)]]).any(axis=1)
    members = np.split(order, np.flatnonzero(starts)[1:])
    first = order[starts]
    found = [(int(a), int(b), 1.0) for rows in members if len(rows) > 1
             for k, a in enumerate(rows) for b in rows[k + 1:]]
    n = len(first)
    work: dict = {"emitted": 0, "whitened": 0}
    ia = ib = np.empty(0, np.int64)
    sim = rank = fit = np.empty(0)
    if n >= 2:
        # Per image, in chunks: N float32 thumbnails and their blur would take 2.5 GB at ISIC 2024's 401,059.
        ident = np.concatenate([_descriptors(raw[first[k:k + _CHUNK]]) for k in range(0, n, _CHUNK)])
        codes = candidate_codes(whiten(ident), work)
        ia, ib = codes // n, codes % n
        del codes
        work["whitened"] = len(ia)
        dots = np.concatenate([np.einsum("pd,pd->p", ident[ia[k:k + _PAIR_CHUNK]].astype(np.float32),   # exact,
                                         ident[ib[k:k + _PAIR_CHUNK]].astype(np.float32))      # in chunks
                               for k in range(0, len(ia), _PAIR_CHUNK)] or [np.empty(0, np.float32)])
        keep = dots >= _IDENT_MIN * _RANK_NORM
        ia, ib = ia[keep], ib[keep]
    plain = time.perf_counter()
    if len(ia):
        # Pairs in chunks, each with the thumbnails of its own images only: every score is a function of its pair
        # alone (elementwise ops), so the chunks give the same values as one pass, in bounded memory.
        parts = []
        for k in range(0, len(ia), _PAIR_CHUNK):
            ca, cb = ia[k:k + _PAIR_CHUNK], ib[k:k + _PAIR_CHUNK]
            used, local = np.unique(np.concatenate([ca, cb]), return_inverse=True)
            chosen = raw[first[used]]
            thumbs = _as_stack(chosen)
            parts.append(_scores(chosen, thumbs, _smooth(thumbs, _DESC_BLUR), ident[used], local[:len(ca)],
                                 local[len(ca):]))
            del thumbs
        sim, rank, fit = (np.concatenate(column) for column in zip(*parts))
        hit = sim >= THRESHOLD
        for u, v, score in zip(ia[hit], ib[hit], sim[hit]):
            found.extend((int(min(a, b)), int(max(a, b)), float(score)) for a in members[u] for b in members[v])
    if stats is not None:
        stats.update(candidates=work["emitted"], whitened=work["whitened"], ranked=len(ia),
                     aligned=int(np.isfinite(fit).sum()), found=len(found),
                     candidates_s=plain - started, verify_s=time.perf_counter() - plain)
    return sorted(found)
