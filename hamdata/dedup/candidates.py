"""Candidate pairs for hamdata.dedup.fingerprint, without an all-pairs loop: sign random projections (LSH) of the
rank descriptors in their whitened principal subspace; two rows are a candidate pair when all bits of one
band agree and their cosine there passes a floor. Exact integer arithmetic throughout, so that the pairs
never depend on the order of the rows. hamdata.dedup.fingerprint scores the candidates.
"""

from __future__ import annotations

import numpy as np


_WHITEN_DIMS = 32                     # candidates are looked for among the top principal components of the
_WHITEN_FLOOR = (0.02, 0.1)           # rank descriptors, each scaled to unit variance; the floor (of the largest
                                      # variance) is 200 / N within these bounds: few rows (many of them copies
                                      # of a few pictures) get the larger floor, which keeps copies together
_SHRINK = 64                          # the centre is the mean shrunk by n / (n + _SHRINK)
_PLAIN_MIN = 0.75                     # cosine there below which a candidate pair is not scored
_LSH_BITS = 18                        # bits per band
_LSH_BANDS = 200                      # bands; a pair is a candidate when all bits of one band agree
_LSH_SEED = 20240611
_CHUNK = 65536                        # rows turned to float64 at once


def whiten(ident: np.ndarray) -> np.ndarray:
    """(N, _WHITEN_DIMS) integer-valued float64 coordinates of the rank descriptors in their whitened principal
    subspace. The mean, the covariance and every projection are exact integer arithmetic (below 2**53), and
    the eigenvectors come from that exact matrix, so a row's coordinates never depend on the row order."""
    n = len(ident)
    # In chunks: every partial sum is an exact integer below 2**53, so chunking changes no bit, and a float64
    # copy of all N descriptors (600 MB at 401,059) is never made.
    total = ident.sum(axis=0, dtype=np.int64).astype(np.float64)
    gram = np.zeros((ident.shape[1], ident.shape[1]))
    for k in range(0, n, _CHUNK):
        x = ident[k:k + _CHUNK].astype(np.float64)
        gram += x.T @ x
    cov = (gram - np.outer(total, total) / n) / n
    values, vectors = np.linalg.eigh(cov)
    top = np.argsort(values)[::-1][:_WHITEN_DIMS]
    floor = min(max(200.0 / n, _WHITEN_FLOOR[0]), _WHITEN_FLOOR[1])
    proj = vectors[:, top] / np.sqrt(np.maximum(values[top], max(values.max(), 1e-9) * floor))
    proj = np.rint(proj * (1024.0 / np.abs(proj).max()))
    # Centred on the mean shrunk towards 0 (weight n / (n + _SHRINK)): with few rows the mean is mostly the
    # rows themselves, and a picture and its copy would land on opposite sides of it.
    z = np.concatenate([(ident[k:k + _CHUNK].astype(np.float64) * (n + _SHRINK) - total) @ proj
                        for k in range(0, n, _CHUNK)])
    return np.rint(z * (2.0 ** 22 / max(np.abs(z).max(), 1.0)))


def _planes(dims: int) -> np.ndarray:
    """The fixed random hyperplanes, integers in -127..127 (projections of the integer coordinates stay exact)."""
    rng = np.random.default_rng(_LSH_SEED)
    return np.clip(np.rint(rng.standard_normal((dims, _LSH_BANDS * _LSH_BITS)) * 40.0), -127, 127)


def _bucket_pair_steps(keys: np.ndarray):
    """The pairs (i, j), i < j, of rows with equal keys, one step of the sorted runs at a time (at most N pairs
    each): a band whose buckets are large holds far more pairs than rows, and never all at once."""
    n = len(keys)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, n])
    run_end = np.repeat(starts + sizes, sizes)
    active = np.flatnonzero(np.repeat(sizes, sizes) >= 2)
    step = 1
    while active.size:
        active = active[active + step < run_end[active]]
        if active.size:
            a, b = order[active], order[active + step]
            yield np.minimum(a, b), np.maximum(a, b)
        step += 1


def candidate_codes(z: np.ndarray, stats: dict) -> np.ndarray:
    """Sorted unique codes i * N + j of the pairs that share an LSH band (sign random projections of the
    whitened coordinates) and whose cosine there is at least _PLAIN_MIN."""
    n = len(z)
    norms = np.sqrt((z * z).sum(axis=1))
    planes = _planes(z.shape[1])
    weights = np.left_shift(np.int64(1), np.arange(_LSH_BITS, dtype=np.int64))
    found, emitted = [], 0
    for band in range(_LSH_BANDS):
        keys = ((z @ planes[:, band * _LSH_BITS:(band + 1) * _LSH_BITS]) > 0).astype(np.int64) @ weights
        for a, b in _bucket_pair_steps(keys):
            emitted += len(a)
            for start in range(0, len(a), 1 << 18):
                pa, pb = a[start:start + (1 << 18)], b[start:start + (1 << 18)]
                cos = (z[pa] * z[pb]).sum(axis=1) / np.maximum(norms[pa] * norms[pb], 1.0)
                keep = cos >= _PLAIN_MIN
                found.append(pa[keep] * n + pb[keep])
            if len(found) > 64:
                found = [np.unique(np.concatenate(found))]
    stats["emitted"] = emitted
    return np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
