"""Benchmark `hamdata.dedup.fingerprint.find_duplicates` on one core: N fingerprints with planted copies.

    python bench/dedup.py                          # 100,000 fingerprints, 500 planted copies
    python bench/dedup.py --n 20000 --base 1000 --copies 200 --seed 1
    python bench/dedup.py --accuracy               # the accuracy measurement of hamdata/dedup.py's docstring

`--accuracy` measures instead: on the 23 real images in ../shared/data/ham10000, every copy of the
list below against its original (decoded at full size, and at half size as the build decodes), the
different lesions against each other, the cost of `fingerprint`; then `--synthetic` synthetic pictures
(equal numbers per class) with 10 copies of every 14th, all pairs of different pictures scored.

Fingerprinting 100,000 full-size pictures would take longer than the search itself, so the set is made
in three parts (all from `hamdata.synth.draw.draw_lesion`, classes in the HAM10000 proportions):

1. base: `--base` full-size synthetic pictures (600x450, JPEG q92 and decoded, as `synth` writes them),
   each fingerprinted.
2. derived: every other picture is a base picture's 64x48 working-size copy bent by a random smooth
   displacement field (a 3x3 grid of offsets, the largest 8-12% of the side, interpolated), re-framed (zoom
   0.75-1, shift of the window up to the zoom's slack), flipped left-right, up-down or both, given 1-4 new
   hairs and its own tone curve (gamma 0.8-1.25), then fingerprinted with `fingerprint` like any image.
   The bend, flip and hairs make each one its own picture (no crop or tone change maps one onto another);
   the re-framing spreads lesion positions and sizes beyond what the generator draws (centre within 8% of
   the middle, radius +-25%), towards the spread of real pictures.
   The generator's own pictures are denser than that: see bench/NOTES.md for the search time on them.
3. planted: `--copies` copies of distinct base pictures, made from the full-size picture with one of
   the transformations of the accuracy measurement in turn (re-encode q85/q70, resize 0.5x/0.75x/1024 px,
   crop 3% a side and resize back, asymmetric crop 0-5% a side, brightness x1.15/x0.85, and crop 3% +
   0.8x + x1.1 + q85).

The rows are shuffled with `--seed`, `find_duplicates` is timed on one core (thread counts of BLAS and
OpenCV set to 1 before numpy loads), and the script prints the seconds, the candidate pairs of each
stage, the planted copies found, and the false merges: reported pairs that are not a planted copy and its
base. Goal: 100,000 fingerprints in under 30 s, every planted copy found, no false merge.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hamdata.dedup import compare # noqa: E402

from hamdata.dedup import fingerprint as dedup # noqa: E402
from hamdata.inputs.classes import CLASSES  # noqa: E402
from hamdata.synth.draw import draw_lesion  # noqa: E402
from hamdata.synth.ham import JPEG_QUALITY, REAL_CLASS_COUNTS  # noqa: E402

cv2.setNumThreads(1)

COPIES = ("q85", "q70", "r0.5", "r0.75", "r1024", "crop3", "cropasym", "b+15", "b-15", "combo")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="fingerprints in all")
    parser.add_argument("--copies", type=int, default=500, help="planted copies (each of a distinct base picture)")
    parser.add_argument("--base", type=int, default=2100, help="full-size synthetic pictures drawn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accuracy", action="store_true", help="run the accuracy measurement instead")
    parser.add_argument("--synthetic", type=int, default=4200, help="synthetic pictures for --accuracy")
    args = parser.parse_args(argv)
    if args.accuracy:
        return args
    if args.copies > args.base:
        parser.error("--copies must not exceed --base (each copy is of a distinct base picture)")
    if args.n < args.base + args.copies:
        parser.error("--n must be at least --base + --copies")
    return args


def encode(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes()


def decode(data: bytes, half: bool = False) -> np.ndarray:
    """RGB of JPEG bytes; half=True decodes at half size as the build does (IMREAD_REDUCED_COLOR_2)."""
    flag = cv2.IMREAD_REDUCED_COLOR_2 if half else cv2.IMREAD_COLOR
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), flag), cv2.COLOR_BGR2RGB)


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    return decode(encode(rgb, quality))


def resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    shrink = size[0] < rgb.shape[1]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def crop(rgb: np.ndarray, left: float, top: float, right: float, bottom: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return rgb[round(top * h):h - round(bottom * h), round(left * w):w - round(right * w)]


def bright(rgb: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * factor + 0.5, 0, 255).astype(np.uint8)


def make_copy(rgb: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One of the copy transformations of the accuracy measurement (hamdata/dedup.py's docstring), decoded."""
    return decode(copy_bytes(rgb, kind, rng))


def copy_bytes(rgb: np.ndarray, kind: str, rng: np.random.Generator) -> bytes:
    """make_copy, as the JPEG file it would be (the last step of every copy is a JPEG encode)."""
    h, w = rgb.shape[:2]
    if kind in ("q85", "q70"):
        return encode(rgb, int(kind[1:]))
    if kind in ("r0.5", "r0.75"):
        f = float(kind[1:])
        return encode(resize(rgb, (round(w * f), round(h * f))), 95)
    if kind == "r1024":
        return encode(resize(rgb, (1024, round(1024 * h / w))), 95)
    if kind == "crop3":
        return encode(resize(crop(rgb, 0.03, 0.03, 0.03, 0.03), (w, h)), 95)
    if kind == "cropasym":
        return encode(crop(rgb, *rng.uniform(0, 0.05, 4)), 95)
    if kind in ("b+15", "b-15"):
        return encode(bright(rgb, 1.15 if kind == "b+15" else 0.85), 95)
    small = resize(crop(rgb, 0.03, 0.03, 0.03, 0.03), (round(0.94 * w * 0.8), round(0.94 * h * 0.8)))
    return encode(bright(small, 1.1), 85)


def base_picture(k: int, seed: int) -> np.ndarray:
    """Base picture k: a full-size synthetic image as synth writes it (JPEG q92, decoded)."""
    total = sum(REAL_CLASS_COUNTS.values())
    bounds = np.cumsum([REAL_CLASS_COUNTS[c] / total for c in CLASSES])
    dx = CLASSES[int(np.searchsorted(bounds, ((k * 0.618034) % 1.0), side="right"))]
    return jpeg(draw_lesion(dx, np.random.default_rng([seed, k])), JPEG_QUALITY)


def derived(small: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A new picture from a 64x48 working-size picture: bent, re-framed, flipped, given new hairs and its own
    tone curve (see the docstring)."""
    h, w = small.shape[:2]
    offsets = rng.uniform(-1, 1, (2, 3, 3))
    offsets = (offsets * (rng.uniform(0.08, 0.12) / np.abs(offsets).max())).astype(np.float32)
    field = [cv2.resize(o, (w, h), interpolation=cv2.INTER_CUBIC) for o in offsets]
    zoom = rng.uniform(0.75, 1.0, 2)
    start = rng.uniform(0, 1, 2) * (1 - zoom)
    xs = (start[0] + zoom[0] * (np.arange(w) + 0.5) / w)[None, :] + field[0]
    ys = (start[1] + zoom[1] * (np.arange(h) + 0.5) / h)[:, None] + field[1]
    flip = int(rng.integers(1, 4))          # 1: left-right, 2: up-down, 3: both
    if flip & 1:
        xs = 1 - xs
    if flip & 2:
        ys = 1 - ys
    bent = cv2.remap(small, (xs * w - 0.5).astype(np.float32), (ys * h - 0.5).astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    for _ in range(int(rng.integers(1, 5))):  # new hairs: thin dark curves, anti-aliased
        ends = rng.uniform((0, 0), (w, h), (3, 2))
        t = np.linspace(0, 1, 12)[:, None]
        curve = (1 - t) ** 2 * ends[0] + 2 * (1 - t) * t * ends[1] + t ** 2 * ends[2]
        shade = float(rng.uniform(20, 60))
        cv2.polylines(bent, [np.rint(curve * 16).astype(np.int32)], False, (shade, shade * 0.8, shade * 0.65), 1,
                      cv2.LINE_AA, shift=4)
    gamma = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
    return np.clip((bent.astype(np.float32) / 255) ** gamma * 255 + 0.5, 0, 255).astype(np.uint8)


def make_set(args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fingerprints, source picture of each row, base of each planted copy or -1), in shuffled order."""
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    fps, picture, planted_of = [], [], []
    smalls = []
    for k in range(args.base):
        rgb = base_picture(k, args.seed)
        fps.append(dedup.fingerprint(rgb))
        picture.append(k)
        planted_of.append(-1)
        smalls.append(cv2.resize(rgb, (64, 48), interpolation=cv2.INTER_AREA))
    print(f"base: {args.base} full-size pictures drawn and fingerprinted in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    kinds = {}
    for c, k in enumerate(rng.choice(args.base, args.copies, replace=False)):
        kind = COPIES[c % len(COPIES)]
        kinds[kind] = kinds.get(kind, 0) + 1
        fps.append(dedup.fingerprint(make_copy(base_picture(int(k), args.seed), kind, rng)))
        picture.append(int(k))
        planted_of.append(int(k))
    made = ", ".join(f"{k} {v}" for k, v in kinds.items())
    print(f"planted: {args.copies} copies ({made}) in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    next_picture = args.base
    for c in range(args.n - len(fps)):
        fps.append(dedup.fingerprint(derived(smalls[c % args.base], rng)))
        picture.append(next_picture)
        planted_of.append(-1)
        next_picture += 1
    print(f"derived: {len(fps) - args.base - args.copies} pictures fingerprinted in {time.perf_counter() - t0:.1f} s")
    order = rng.permutation(len(fps))
    return np.stack(fps)[order], np.asarray(picture)[order], np.asarray(planted_of)[order]


def _components(fps: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(similarity, rank score, fit score) of pairs of rows, through the module's own scoring (the fit is NaN
    where the rank score is below its floor)."""
    thumbs = compare._as_stack(fps)
    blurred = compare._smooth(thumbs, compare._DESC_BLUR)
    ident = compare._ranks(blurred, np.arange(len(fps)), compare._identity(len(fps)))
    return compare._scores(fps.astype(np.uint8), thumbs, blurred, ident, np.asarray(ia), np.asarray(ib))


def _copy_report(name: str, fps: np.ndarray, source: np.ndarray, kinds: np.ndarray) -> None:
    rows = np.flatnonzero(kinds != "original")
    sim, rank, fit = _components(fps, source[rows], rows)
    worst = {k: sim[kinds[rows] == k].min() for k in COPIES}
    print(f"{name}: {len(rows)} copies, similarity min {sim.min():.3f} (rank {rank.min():.4f}, "
          f"fit {np.nanmin(fit):.4f}); "
          "by kind: " + ", ".join(f"{k} {v:.3f}" for k, v in worst.items()))
    found = {(i, j) for i, j, _ in compare.find_duplicates(fps)}
    missed = [r for r in rows if (min(r, source[r]), max(r, source[r])) not in found]
    print(f"  find_duplicates on originals + copies: {len(rows) - len(missed)}/{len(rows)} copies paired "
          "with their original")


def accuracy(args) -> None:
    import csv
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "ham10000"
    rng = np.random.default_rng(args.seed)
    if (shared / "images").is_dir():
        with (shared / "HAM10000_metadata.csv").open(newline="") as f:
            lesion_of = {row["image_id"]: row["lesion_id"] for row in csv.DictReader(f)}
        paths = sorted((shared / "images").glob("*.jpg"))
        for half in (False, True):
            fps, source, kinds, names = [], [], [], []
            for path in paths:
                data = path.read_bytes()
                rgb = decode(data)
                origin = len(fps)
                for kind in ("original", *COPIES):
                    data_k = data if kind == "original" else copy_bytes(rgb, kind, rng)
                    fps.append(dedup.fingerprint(decode(data_k, half)))
                    source.append(origin)
                    kinds.append(kind)
                    names.append(path.stem)
            fps, source, kinds = np.stack(fps), np.asarray(source), np.asarray(kinds)
            _copy_report(f"real, decoded at {'half' if half else 'full'} size", fps, source, kinds)
            originals = np.flatnonzero(kinds == "original")
            ia, ib = np.triu_indices(len(originals), 1)
            sim, rank, fit = _components(fps, originals[ia], originals[ib])
            same = np.array([lesion_of[names[originals[i]]] == lesion_of[names[originals[j]]] for i, j in zip(ia, ib)])
            print(f"  {(~same).sum()} pairs of different lesions: similarity max {sim[~same].max():.3f} (rank max "
                  f"{rank[~same].max():.4f}, below its floor {dedup._RANK_FLOOR}); threshold {compare.THRESHOLD}")
            for k in np.flatnonzero(same):
                print(f"  same lesion, two photos ({names[originals[ia[k]]]}, {names[originals[ib[k]]]}): similarity "
                      f"{sim[k]:.3f} (rank {rank[k]:.4f}, fit {fit[k]:.4f})")
        images = [decode(p.read_bytes()) for p in paths]
        for size, label in ((None, "600x450"), ((300, 225), "300x225 (the build's half-size decode)")):
            batch = [im if size is None else cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in images] * 20
            dedup.fingerprint(batch[0])
            t0 = time.perf_counter()
            for im in batch:
                dedup.fingerprint(im)
            print(f"fingerprint(): {(time.perf_counter() - t0) / len(batch) * 1e3:.3f} ms per {label} image, one core")
    else:
        print(f"{shared} not found: the real-image part is skipped")
    # Synthetic pictures: equal numbers per class, 10 copies of every 14th.
    per_class = args.synthetic // len(CLASSES)
    fps, source, kinds = [], [], []
    for c, dx in enumerate(CLASSES):
        for k in range(per_class):
            rgb = jpeg(draw_lesion(dx, np.random.default_rng([args.seed, 100 + c, k])), JPEG_QUALITY)
            origin = len(fps)
            for kind in ("original", *COPIES) if k % 14 == 0 else ("original",):
                fps.append(dedup.fingerprint(rgb if kind == "original" else make_copy(rgb, kind, rng)))
                source.append(origin)
                kinds.append(kind)
    fps, source, kinds = np.stack(fps), np.asarray(source), np.asarray(kinds)
    _copy_report(f"synthetic ({per_class} a class)", fps, source, kinds)
    originals = np.flatnonzero(kinds == "original")
    # Every pair of different pictures: the rank score of all of them, the fit where the rank passes its gate.
    thumbs = compare._as_stack(fps[originals])
    blurred = compare._smooth(thumbs, compare._DESC_BLUR)
    ident = compare._ranks(blurred, np.arange(len(originals)), compare._identity(len(originals))).astype(np.float32)
    views = np.stack([compare._ranks(blurred, np.arange(len(originals)), np.repeat(v[None], len(originals), 0))
                      for v in compare._VIEWS], axis=1).astype(np.float32)
    best = np.empty((len(originals), len(originals)), np.float32)
    for start in range(0, len(originals), 256):
        best[start:start + 256] = np.einsum("id,jvd->ijv", ident[start:start + 256], views).max(axis=2)
    best = np.maximum(best, best.T) / compare._RANK_NORM
    ia, ib = np.triu_indices(len(originals), 1)
    rank_all = best[ia, ib]
    top = np.flatnonzero(rank_all >= dedup._RANK_FLOOR)
    sim, rank, fit = _components(fps[originals], ia[top], ib[top])
    fit_max = np.nanmax(fit) if len(top) else float("nan")
    sim_max = sim.max() if len(top) else float("nan")
    print(f"  {len(ia):,} pairs of different synthetic pictures: rank max {rank_all.max():.4f}, {len(top)} at or "
          f"above its floor {dedup._RANK_FLOOR}; fit max among those {fit_max:.4f}; similarity max {sim_max:.3f} "
          f"(threshold {compare.THRESHOLD})")
    if len(top):
        k = int(np.argmax(sim))
        print(f"  closest pair: rank {rank[k]:.4f}, fit {fit[k]:.4f}")
    found = compare.find_duplicates(fps)
    false = [(i, j, s) for i, j, s in found if source[i] != source[j]]
    print(f"  find_duplicates on all {len(fps)} rows: {len(found)} pairs, {len(false)} between different pictures")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.accuracy:
        accuracy(args)
        return
    fps, picture, planted_of = make_set(args)
    print(f"{len(fps)} fingerprints of {fps.shape[1]} bytes ({fps.nbytes / 1e6:.1f} MB), method {dedup.METHOD}")
    stats: dict = {}
    t0 = time.perf_counter()
    pairs = compare.find_duplicates(fps, stats=stats)
    seconds = time.perf_counter() - t0
    copy_rows = np.flatnonzero(planted_of >= 0)
    base_row = {int(p): int(r) for r, p in enumerate(picture) if planted_of[r] < 0 and p < args.base}
    wanted = {tuple(sorted((int(r), base_row[int(planted_of[r])]))) for r in copy_rows}
    found = {(i, j) for i, j, _ in pairs}
    false = [(i, j, s) for i, j, s in pairs if picture[i] != picture[j]]
    scores = [s for i, j, s in pairs if (i, j) in wanted]
    print(f"find_duplicates: {seconds:.2f} s on one core for {len(fps)} fingerprints")
    print("  " + ", ".join(f"{k} {v:.2f} s" if k.endswith("_s") else f"{k} {v:,}" for k, v in stats.items()))
    print(f"  planted copies found: {len(wanted & found)}/{len(wanted)}"
          + (f" (lowest similarity {min(scores):.4f}, threshold {compare.THRESHOLD})" if scores else ""))
    highest = f" (highest similarity {max(s for _, _, s in false):.4f})" if false else ""
    print(f"  false merges: {len(false)}{highest}")
    for i, j, s in false[:10]:
        print(f"    rows {i} and {j}: pictures {picture[i]} and {picture[j]}, similarity {s:.4f}")


if __name__ == "__main__":
    main()
