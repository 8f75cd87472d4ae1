"""Synthetic HAM10000 in the Kaggle layout, for the demo and for tests.

The real images cannot ship with the code, yet every later step (reading,
hair removal, splitting, balancing, shard writing, training) needs a dataset
of the real shape to run on. This module writes one::

    OUT/HAM10000_metadata.csv          lesion_id,image_id,dx,dx_type,age,sex,localization
    OUT/HAM10000_images_part_1/        first half of the images (by image_id), <image_id>.jpg
    OUT/HAM10000_images_part_2/        the rest

The table follows the real class proportions and the real number of images
per lesion; each class is drawn with its own learnable look (colour, shape,
border, texture), and dark hairs are drawn over the lesion so that hair
removal has work to do. Ids use the prefixes ``SYN_`` / ``SYNL_`` so that a
synthetic image can never be mistaken for a real ``ISIC_`` one.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from hamdata.inputs.classes import CLASSES
from hamdata.errors import HamdataError
from hamdata.parallel import ordered_map, pool_size
from hamdata.image.preprocess import encode_image
from hamdata.workspace import Workspace
from hamdata.inputs.metadata import METADATA_COLUMNS, validate_metadata
from hamdata.synth.draw import IMAGE_SIZE, draw_lesion

METADATA_NAME = "HAM10000_metadata.csv"
PART_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
JPEG_QUALITY = 92

# Counts in the real HAM10000 metadata (10,015 images, 7,470 lesions): the
# synthetic table samples from them so that it has the real shape.
REAL_CLASS_COUNTS = {"akiec": 327, "bcc": 514, "bkl": 1099, "df": 115, "mel": 1113, "nv": 6705, "vasc": 142}
REAL_IMAGES_PER_LESION = {1: 5514, 2: 1423, 3: 490, 4: 34, 5: 5, 6: 4}
REAL_DX_TYPES = {
    "akiec": {"histo": 327},
    "bcc": {"histo": 514},
    "bkl": {"histo": 766, "consensus": 264, "confocal": 69},
    "df": {"consensus": 60, "histo": 55},
    "mel": {"histo": 1113},
    "nv": {"follow_up": 3704, "histo": 2498, "consensus": 503},
    "vasc": {"consensus": 75, "histo": 67},
}
REAL_AGES = {0: 39, 5: 86, 10: 41, 15: 77, 20: 169, 25: 247, 30: 464, 35: 753, 40: 985,
             45: 1299, 50: 1187, 55: 1009, 60: 803, 65: 731, 70: 756, 75: 618, 80: 404, 85: 290}
REAL_AGE_MISSING = 57 / 10015
REAL_SEXES = {"male": 5406, "female": 4552, "unknown": 57}
REAL_LOCALIZATIONS = {
    "back": 2192, "lower extremity": 2077, "trunk": 1404, "upper extremity": 1118, "abdomen": 1022,
    "face": 745, "chest": 407, "foot": 319, "unknown": 234, "neck": 168, "scalp": 128, "hand": 90,
    "ear": 56, "genital": 48, "acral": 7,
}

# ---------------------------------------------------------------- metadata


def apportion(n: int, weights: dict) -> dict:
    """`n` split in proportion to `weights`: largest-remainder rounding, ties to the earlier key (never dict
    hashing), and at least 1 each: a key rounded to 0 takes its one from the largest."""
    total = sum(weights.values())
    quota = {k: n * v / total for k, v in weights.items()}
    counts = {k: int(q) for k, q in quota.items()}
    for k in sorted(weights, key=lambda k: quota[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    for k in weights:
        if counts[k] == 0:
            counts[max(weights, key=counts.__getitem__)] -= 1
            counts[k] = 1
    return counts


def _choice(rng: np.random.Generator, weights: dict, size: int) -> np.ndarray:
    """`size` draws from the keys of `weights`, with probability proportional to the values."""
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return np.array(keys, dtype=object)[rng.choice(len(keys), size=size, p=p / p.sum())]


def _lesion_sizes(n_images: int, rng: np.random.Generator) -> list[int]:
    """Split `n_images` of one class into lesions, with the real images-per-lesion distribution."""
    sizes = _choice(rng, REAL_IMAGES_PER_LESION, n_images).astype(int)
    cut = int(np.searchsorted(np.cumsum(sizes), n_images))  # first lesion that reaches n_images
    sizes = sizes[: cut + 1]
    sizes[-1] -= sizes.sum() - n_images
    return sizes.tolist()


def with_floor(counts: dict, minimum: int) -> dict:
    """`counts` with every class raised to `minimum`, the images taken from the largest class (the total kept)."""
    counts = dict(counts)
    for dx in counts:
        if counts[dx] < minimum:
            largest = max(counts, key=counts.__getitem__)
            take = min(minimum - counts[dx], counts[largest] - minimum)
            counts[largest] -= take
            counts[dx] += take
    return counts


def synthetic_metadata(n_images: int, rng: np.random.Generator, min_per_class: int = 0) -> pd.DataFrame:
    """A HAM10000-like metadata table of `n_images` rows, in shuffled order.

    n_images: number of images, at least 7 so that every class has one.
    rng: the only source of randomness; the same seed gives the same table.
    min_per_class: images of every class at least (taken from the largest class), so that a small set's val and
    test splits hold enough of each class to measure (the demo); 0: HAM10000's own proportions.
    Columns are METADATA_COLUMNS; age is float (NaN when empty), the rest str.
    """
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images < 7:
        raise HamdataError(f"n_images must be an integer >= 7 (one image per class at least), got {n_images!r}")
    dxs, sizes, dx_types = [], [], []  # one entry per lesion
    counts = apportion(int(n_images), {dx: REAL_CLASS_COUNTS[dx] for dx in CLASSES})
    for dx, count in with_floor(counts, min(int(min_per_class), int(n_images) // len(CLASSES))).items():
        class_sizes = _lesion_sizes(count, rng)
        dxs += [dx] * len(class_sizes)
        sizes += class_sizes
        dx_types += list(_choice(rng, REAL_DX_TYPES[dx], len(class_sizes)))
    k = len(sizes)
    # Patient and lesion attributes belong to the lesion, so all its images share them.
    per_lesion = pd.DataFrame({
        "lesion": np.arange(k),
        "dx": dxs,
        "dx_type": dx_types,
        "age": np.where(rng.random(k) < REAL_AGE_MISSING, np.nan, _choice(rng, REAL_AGES, k).astype(float)),
        "sex": _choice(rng, REAL_SEXES, k),
        "localization": _choice(rng, REAL_LOCALIZATIONS, k),
    })
    rows = per_lesion.loc[np.repeat(np.arange(k), sizes)]
    rows = rows.iloc[rng.permutation(len(rows))].reset_index(drop=True)
    # Ids follow the shuffled order, so the table reads SYN_0000000, SYN_0000001, ... top to bottom.
    lesion_number = {lesion: i for i, lesion in enumerate(pd.unique(rows["lesion"]))}
    rows["lesion_id"] = [f"SYNL_{lesion_number[lesion]:07d}" for lesion in rows["lesion"]]
    rows["image_id"] = [f"SYN_{i:07d}" for i in range(len(rows))]
    table = rows[list(METADATA_COLUMNS)].copy()
    for column in ("lesion_id", "image_id", "dx", "dx_type", "sex", "localization"):
        table[column] = table[column].astype(str)
    table["age"] = table["age"].astype(float)
    return table


def read_metadata_table(path) -> pd.DataFrame:
    """Read a HAM10000-style metadata table (comma or tab separated) to copy its rows.

    The rows must pass hamdata.inputs.metadata.validate_metadata, the checks the reader of the
    result applies, and have all METADATA_COLUMNS. Returns those columns only
    (an extra Dataverse `dataset` column is dropped), every value the text it
    was, stripped, with dx lower-cased. Raises HamdataError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise HamdataError(f"metadata file {path} not found")
    try:
        with path.open(encoding="utf-8-sig") as f:
            header = f.readline()
        sep = "\t" if "\t" in header else ","  # Dataverse ships a .tab file
        raw = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise HamdataError(f"{path}: not a readable CSV table ({type(err).__name__}): "
                           f"expected UTF-8 text with the columns {','.join(METADATA_COLUMNS)}") from err
    validate_metadata(raw, str(path))
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    missing = [c for c in METADATA_COLUMNS if c not in raw.columns]
    if missing:
        raise HamdataError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(METADATA_COLUMNS)}")
    table = raw[list(METADATA_COLUMNS)].apply(lambda column: column.str.strip())
    table["dx"] = table["dx"].str.lower()
    return table.reset_index(drop=True)


# ---------------------------------------------------------------- writing


def image_rng(seed: int, image_id: str) -> np.random.Generator:
    """The generator for one image: a function of (seed, image_id) only, so of no worker or order.

    Uses sha256, not hash(), because Python salts str hashes per process.
    """
    digest = hashlib.sha256(image_id.encode("utf-8")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def _render(task: tuple) -> str:
    """Draw, encode and write one image; top-level so that any start method can pickle it."""
    seed, image_id, dx, path, size = task
    Path(path).write_bytes(encode_image(draw_lesion(dx, image_rng(seed, image_id), size), "jpg", JPEG_QUALITY))
    return image_id


def _tasks(table: pd.DataFrame, root: Path, seed: int, size: tuple[int, int]) -> list[tuple]:
    """One task per image; the first half by image_id goes to part 1, as in the Kaggle copy."""
    ordered = table.sort_values("image_id", kind="stable")
    half = len(ordered) // 2
    return [(seed, image_id, dx, str(root / PART_DIRS[int(i >= half)] / f"{image_id}.jpg"), size)
            for i, (image_id, dx) in enumerate(zip(ordered["image_id"], ordered["dx"]))]


def _write_table(table: pd.DataFrame, path: Path) -> None:
    table = table.copy()
    if pd.api.types.is_float_dtype(table["age"]):
        table["age"] = table["age"].astype("Int64")  # "45", not "45.0"; empty when unknown
    table.to_csv(path, index=False, lineterminator="\n")


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise HamdataError(f"{out} exists; pass --overwrite to replace it, or choose another output folder")


def _image_size(size) -> tuple[int, int]:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 32 for v in size)):
        raise HamdataError(f"image_size must be (width, height), each an integer >= 32, got {size!r}")
    return int(size[0]), int(size[1])


def make_synthetic(out, n_images=1000, seed=0, metadata=None, workers=None, overwrite=False, progress=True,
                   min_per_class: int = 0, image_size: tuple[int, int] = IMAGE_SIZE) -> dict:
    """Write a synthetic HAM10000 in the Kaggle layout to `out`; return a summary.

    out: the folder to create; it appears complete or not at all.
    n_images: rows of the synthetic table (>= 7); ignored when `metadata` is given.
    seed: decides the table and, with each image_id, that image's pixels.
    metadata: path of a HAM10000-style CSV whose rows (ids, lesions, labels, ...) are used as they are.
    workers: processes drawing images (default: the CPU count, fewer for a small set: hamdata.parallel.pool_size);
        the output does not depend on it.
    overwrite: replace an existing non-empty `out`.
    progress: show a tqdm progress bar.
    min_per_class: images of every class at least (synthetic_metadata); 0: HAM10000's proportions.
    image_size: (width, height) of the drawn images; HAM10000's 600x450 unless a smaller one is quicker to test with.
    With workers > 1 the processes are started with "spawn", so a script that
    calls this needs the usual `if __name__ == "__main__":` guard.
    Returns {"images": n, "lesions": k, "counts": {dx: n for dx in CLASSES}, "out": str(out)}.
    """
    out = Path(out)
    place = Path(os.path.abspath(out))  # "." or "data/.." have no usable name or parent of their own
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise HamdataError(f"seed must be a non-negative integer, got {seed!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1):
        raise HamdataError(f"workers must be a positive integer, got {workers!r}")
    _check_out(place, overwrite)
    if metadata is None:
        table = synthetic_metadata(n_images, np.random.default_rng(int(seed)), min_per_class)
    else:
        table = read_metadata_table(metadata)

    with Workspace(place, overwrite=overwrite) as tmp:
        for part in PART_DIRS:
            (tmp / part).mkdir()
        tasks = _tasks(table, tmp, int(seed), _image_size(image_size))  # an image depends on (seed, image_id) only, not on its worker
        rendered = ordered_map(_render, tasks, min(pool_size(workers, len(tasks)), len(tasks)))
        for _ in tqdm(rendered, total=len(tasks), desc="synth", unit="img", disable=not progress):
            pass
        _write_table(table, tmp / METADATA_NAME)
        _check_out(place, overwrite)  # another process may have written `out` meanwhile: Workspace would replace it

    counts = table["dx"].value_counts()
    return {"images": len(table), "lesions": int(table["lesion_id"].nunique()),
            "counts": {dx: int(counts.get(dx, 0)) for dx in CLASSES}, "out": str(out)}
