"""Duplicates by content in a build: fingerprint every input image, find the pairs, decide what to drop.

The build calls ``fingerprints`` (one pass over the input files, in worker
processes: each image is decoded at half size, which JPEG does almost for
free, and fingerprinted with hamdata.dedup.fingerprint) and then ``settle``:

- a pair of images of one lesion of one collection (the same lesion id, given
  by the metadata) is what a dataset with several images per lesion is made
  of: counted (``same_lesion_pairs``), never dropped;
- any other pair is a duplicate: the pairs are merged into sets, the earliest
  image of a set (input order, then file order) is kept and the others are
  dropped, or all are kept with ``--keep-duplicates``; either way every pair
  links its images into one group, so copies never span two splits.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from hamdata.dedup import compare

from hamdata.dedup import fingerprint as dedup
from hamdata.errors import HamdataError
from hamdata.inputs.containers import read_image_bytes
from hamdata.parallel import ordered_map, pool_size


def fingerprint_file(locator: str) -> np.ndarray | None:
    """The fingerprint of one input image, or None when it cannot be read or decoded (the build says why)."""
    try:
        raw = read_image_bytes(locator)
    except HamdataError:
        return None
    try:
        bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_REDUCED_COLOR_2) if raw else None
    except cv2.error:
        bgr = None
    if bgr is None or bgr.size == 0:
        return None
    return dedup.fingerprint(np.ascontiguousarray(bgr[..., ::-1]))


def fingerprints(locators: list[str], workers: int | None, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(rows that have a fingerprint, their fingerprints), in the order of `locators`."""
    # One preallocated array: a list of 401,059 small arrays, stacked at the end, would hold both at once.
    vectors = np.zeros((len(locators), dedup.FINGERPRINT_SIZE), dtype=np.uint8)
    found = np.zeros(len(locators), dtype=bool)
    bar = tqdm(total=len(locators), unit="img", desc="duplicates", disable=not progress, dynamic_ncols=True)
    results = ordered_map(_indexed, enumerate(locators), pool_size(workers, len(locators)))
    try:
        for index, vector in results:
            bar.update(1)
            if vector is not None:
                vectors[index] = vector
                found[index] = True
    finally:
        results.close()
        bar.close()
    if not found.any():
        return np.zeros(0, dtype=np.int64), np.zeros((0, 1), dtype=np.float32)
    rows = np.flatnonzero(found).astype(np.int64)
    return rows, (vectors if found.all() else vectors[rows])


def _indexed(item: tuple[int, str]):
    return item[0], fingerprint_file(item[1])


def settle(table: pd.DataFrame, rows: np.ndarray, vectors: np.ndarray, keep: bool) -> dict:
    """What to do with the content pairs of `table` (TABLE_COLUMNS of hamdata.inputs.merge, build order).

    Returns {"drop": set of image ids, "records": dataset.json duplicates entries, "pairs": image id pairs
    that link groups, "same_lesion_pairs": count}.
    """
    found = compare.find_duplicates(vectors) if len(vectors) > 1 else []
    ids = table["image_id"].to_numpy()
    lesions = table["lesion_id"].to_numpy()
    collections = table["collection"].to_numpy()
    inputs = table["input"].to_numpy()
    same_lesion = 0
    partners: dict[int, list[tuple[float, int]]] = {}
    for i, j, score in found:
        a, b = int(rows[i]), int(rows[j])
        if collections[a] == collections[b] and lesions[a] == lesions[b] and lesions[a] not in (ids[a], ids[b]):
            same_lesion += 1
            continue
        partners.setdefault(a, []).append((float(score), b))
        partners.setdefault(b, []).append((float(score), a))
    # In table order, an image that shows the same picture as an image already kept is a copy of it; two
    # photos of one lesion never count as copies of each other, even when a third image matches both.
    kept_rows: set[int] = set()
    drop, records, pairs = set(), [], []
    for row in sorted(partners):
        matches = [(score, other) for score, other in partners[row] if other in kept_rows]
        if not matches:
            kept_rows.add(row)
            continue
        score, kept = max(matches, key=lambda m: (m[0], -m[1]))
        pairs.append((ids[kept], ids[row]))
        records.append({
            "kept": ids[kept], "kept_input": int(inputs[kept]), "dropped": ids[row], "input": int(inputs[row]),
            "action": "kept (--keep-duplicates)" if keep else "dropped",
            "evidence": {"method": dedup.METHOD, "similarity": round(score, 4), "threshold": compare.THRESHOLD},
        })
        if not keep:
            drop.add(ids[row])
    records.sort(key=lambda r: (r["kept"], r["dropped"]))
    return {"drop": drop, "records": records, "pairs": sorted(pairs), "same_lesion_pairs": same_lesion}
