"""hamdata.dedup.fingerprint: every transformed copy of a real image is found, different lesions and look-alike synthetic
pictures are not merged, results do not depend on row order, and bad input gets a one-line error."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from hamdata.dedup import compare

from hamdata.dedup import fingerprint as dedup
from hamdata.errors import HamdataError
from hamdata.synth.draw import draw_lesion
from hamdata.synth.ham import JPEG_QUALITY
from helpers import REAL_SAMPLE_MISSING, SHARED, real_sample_present

COPIES = ("q85", "q70", "r0.5", "r0.75", "r1024", "crop3", "cropasym", "b+15", "b-15", "combo")


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if size[0] < rgb.shape[1] else cv2.INTER_CUBIC)


def _crop(rgb: np.ndarray, left: float, top: float, right: float, bottom: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return rgb[round(top * h):h - round(bottom * h), round(left * w):w - round(right * w)]


def _bright(rgb: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(rgb.astype(np.float32) * factor + 0.5, 0, 255).astype(np.uint8)


def make_copy(rgb: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """The copies of the accuracy measurement in hamdata/dedup.py's docstring."""
    h, w = rgb.shape[:2]
    if kind in ("q85", "q70"):
        return _jpeg(rgb, int(kind[1:]))
    if kind in ("r0.5", "r0.75"):
        f = float(kind[1:])
        return _jpeg(_resize(rgb, (round(w * f), round(h * f))), 95)
    if kind == "r1024":
        return _jpeg(_resize(rgb, (1024, round(1024 * h / w))), 95)
    if kind == "crop3":
        return _jpeg(_resize(_crop(rgb, 0.03, 0.03, 0.03, 0.03), (w, h)), 95)
    if kind == "cropasym":
        return _jpeg(_crop(rgb, *rng.uniform(0, 0.05, 4)), 95)
    if kind in ("b+15", "b-15"):
        return _jpeg(_bright(rgb, 1.15 if kind == "b+15" else 0.85), 95)
    assert kind == "combo"  # the acceptance test's: crop 3% a side, 0.8x, brightness x1.1, q85
    cropped = _crop(rgb, 0.03, 0.03, 0.03, 0.03)
    small = _resize(cropped, (round(cropped.shape[1] * 0.8), round(cropped.shape[0] * 0.8)))
    return _jpeg(_bright(small, 1.1), 85)


@pytest.fixture(scope="module")
def real_set():
    """Fingerprints of the 23 real images and of 10 copies of each, shuffled; with each row's image id,
    lesion id and original row."""
    images = SHARED / "images"
    table = SHARED / "HAM10000_metadata.csv"
    if not real_sample_present():
        pytest.skip(REAL_SAMPLE_MISSING)
    with table.open(newline="") as f:
        lesion_of = {row["image_id"]: row["lesion_id"] for row in csv.DictReader(f)}
    rng = np.random.default_rng(7)
    rows = []  # (fingerprint, image id, kind)
    for path in sorted(images.glob("*.jpg")):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        rows.append((dedup.fingerprint(rgb), path.stem, "original"))
        rows.extend((dedup.fingerprint(make_copy(rgb, kind, rng)), path.stem, kind) for kind in COPIES)
    order = rng.permutation(len(rows))
    rows = [rows[k] for k in order]
    fps = np.stack([r[0] for r in rows])
    ids = [r[1] for r in rows]
    kinds = [r[2] for r in rows]
    original = {i: k for k, (i, kind) in enumerate(zip(ids, kinds)) if kind == "original"}
    assert len(original) == 23
    return fps, ids, kinds, [lesion_of[i] for i in ids], original


def test_every_copy_of_a_real_image_is_found(real_set):
    fps, ids, kinds, _, original = real_set
    found = {(i, j): s for i, j, s in compare.find_duplicates(fps)}
    missing = []
    for row, (image_id, kind) in enumerate(zip(ids, kinds)):
        if kind != "original":
            pair = tuple(sorted((row, original[image_id])))
            if pair not in found:
                missing.append(f"{image_id} {kind} (similarity {compare.similarity(fps[pair[0]], fps[pair[1]]):.3f})")
            else:
                assert found[pair] >= compare.THRESHOLD
    assert not missing, f"copies not paired with their original: {missing}"


def test_different_real_lesions_are_never_paired(real_set):
    fps, ids, _, lesions, _ = real_set
    pairs = compare.find_duplicates(fps)
    assert pairs == sorted(pairs) and all(i < j for i, j, _ in pairs)
    wrong = [(ids[i], ids[j], round(s, 3)) for i, j, s in pairs if lesions[i] != lesions[j]]
    assert not wrong, f"pairs of different lesions: {wrong}"


def test_lookalike_synthetic_pictures_are_not_merged():
    """Hairless round nevi of one class look alike at thumbnail size: the hardest negatives we have."""
    fps = []
    for seed in range(300):
        rgb = _jpeg(draw_lesion("nv", np.random.default_rng([11, seed])), JPEG_QUALITY)
        fps.append(dedup.fingerprint(rgb))
    for seed in range(60):
        fps.append(dedup.fingerprint(_jpeg(draw_lesion("mel", np.random.default_rng([12, seed])), JPEG_QUALITY)))
    pairs = compare.find_duplicates(np.stack(fps))
    assert pairs == [], f"distinct synthetic pictures merged: {pairs[:5]}"
    # ... while a copy of one of them is still found among them.
    copy = dedup.fingerprint(make_copy(_jpeg(draw_lesion("nv", np.random.default_rng([11, 5])), JPEG_QUALITY),
                                       "combo", np.random.default_rng(0)))
    pairs = compare.find_duplicates(np.vstack([np.stack(fps), copy]))
    assert [(i, j) for i, j, _ in pairs] == [(5, len(fps))]


def _small_set(seed: int = 3) -> np.ndarray:
    """40 synthetic pictures and a copy of each of the first 10 (50 rows)."""
    rng = np.random.default_rng(seed)
    pictures = [_jpeg(draw_lesion(dx, np.random.default_rng([seed, k])), JPEG_QUALITY)
                for k, dx in enumerate(["nv", "mel", "bkl", "bcc", "akiec", "df", "vasc", "nv"] * 5)]
    fps = [dedup.fingerprint(p) for p in pictures]
    fps += [dedup.fingerprint(make_copy(pictures[k], COPIES[k], rng)) for k in range(10)]
    return np.stack(fps)


def test_same_input_same_fingerprints_and_pairs():
    rgb = draw_lesion("bkl", np.random.default_rng(1))
    first, second = dedup.fingerprint(rgb), dedup.fingerprint(rgb.copy())
    assert first.dtype == np.uint8 and first.shape == (dedup.FINGERPRINT_SIZE,)
    assert np.array_equal(first, second)
    fps = _small_set()
    assert compare.find_duplicates(fps) == compare.find_duplicates(fps.copy())


def test_row_order_does_not_change_the_pairs():
    fps = _small_set()
    pairs = compare.find_duplicates(fps)
    assert {(i, j) for i, j, _ in pairs} >= {(k, 40 + k) for k in range(10)}
    order = np.random.default_rng(5).permutation(len(fps))
    shuffled = compare.find_duplicates(fps[order])
    back = sorted((min(order[i], order[j]), max(order[i], order[j]), s) for i, j, s in shuffled)
    assert back == pairs  # the same pictures, with bit-identical scores


def test_similarity_is_symmetric_and_matches_the_search():
    fps = _small_set()
    pairs = compare.find_duplicates(fps)
    assert pairs
    for i, j, s in pairs:
        assert compare.similarity(fps[i], fps[j]) == s == compare.similarity(fps[j], fps[i])
    assert compare.similarity(fps[0], fps[0]) == 1.0
    assert compare.similarity(fps[0], fps[1]) < compare.THRESHOLD


def test_identical_rows_all_pair_up():
    fp = dedup.fingerprint(draw_lesion("df", np.random.default_rng(2)))
    other = dedup.fingerprint(draw_lesion("vasc", np.random.default_rng(3)))
    pairs = compare.find_duplicates(np.stack([fp, other, fp, fp]))
    assert pairs == [(0, 2, 1.0), (0, 3, 1.0), (2, 3, 1.0)]
    assert compare.find_duplicates(np.stack([fp] * 3)) == [(0, 1, 1.0), (0, 2, 1.0), (1, 2, 1.0)]


def test_two_rows_a_picture_and_its_copy():
    rgb = _jpeg(draw_lesion("mel", np.random.default_rng(4)), JPEG_QUALITY)
    copy = make_copy(rgb, "combo", np.random.default_rng(0))
    pairs = compare.find_duplicates(np.stack([dedup.fingerprint(copy), dedup.fingerprint(rgb)]))
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]


def test_empty_and_single_row():
    assert compare.find_duplicates(np.zeros((0, dedup.FINGERPRINT_SIZE), np.uint8)) == []
    assert compare.find_duplicates(np.zeros((1, dedup.FINGERPRINT_SIZE), np.uint8)) == []


@pytest.mark.parametrize("bad", [np.zeros((3, 10), np.uint8), np.zeros((2, 3, dedup.FINGERPRINT_SIZE), np.uint8),
                                 np.full((2, dedup.FINGERPRINT_SIZE), 0.5), np.zeros(dedup.FINGERPRINT_SIZE, np.uint8)])
def test_wrong_fingerprint_arrays_get_a_one_line_error(bad):
    with pytest.raises(HamdataError) as err:
        compare.find_duplicates(bad)
    assert "\n" not in str(err.value) and str(dedup.FINGERPRINT_SIZE) in str(err.value)


@pytest.mark.parametrize("bad", [np.zeros((450, 600), np.uint8), np.zeros((450, 600, 4), np.uint8),
                                 np.zeros((450, 600, 3), np.float32), np.zeros((1, 5, 3), np.uint8)])
def test_wrong_images_get_a_one_line_error(bad):
    with pytest.raises(HamdataError) as err:
        dedup.fingerprint(bad)
    assert "\n" not in str(err.value)


def test_method_is_named():
    assert isinstance(dedup.METHOD, str) and dedup.METHOD
    assert -1 < compare.THRESHOLD < 1


def test_chunks_of_images_and_of_pairs_change_no_score(monkeypatch):
    """The search makes thumbnails, whitens and scores in chunks (bounded memory at ISIC 2024's 401,059 images):
    chunks of 7 images and of 5 pairs give the same pairs with bit-identical scores, and the same work, as one pass."""
    from hamdata.dedup import candidates as dedup_candidates

    fps = _small_set()
    whole, whole_stats = compare.find_duplicates(fps), {}
    compare.find_duplicates(fps, whole_stats)
    assert whole and whole_stats["ranked"] > 5
    monkeypatch.setattr(compare, "_CHUNK", 7)
    monkeypatch.setattr(compare, "_PAIR_CHUNK", 5)
    monkeypatch.setattr(dedup_candidates, "_CHUNK", 7)
    chunked_stats = {}
    assert compare.find_duplicates(fps, chunked_stats) == whole
    drop = ("candidates_s", "verify_s")
    assert {k: v for k, v in chunked_stats.items() if k not in drop} == {k: v for k, v in whole_stats.items()
                                                                          if k not in drop}
