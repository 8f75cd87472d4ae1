"""Synthetic ISIC 2019 Task 1 training set and ISIC-archive export, optionally with planted duplicates.

Two more layouts that `synth` can write, file for file as the real datasets ship::

    write_isic2019(OUT)       OUT/ISIC_2019_Training_Input/<image>.jpg
                              OUT/ISIC_2019_Training_GroundTruth.csv  image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK (1.0/0.0)
                              OUT/ISIC_2019_Training_Metadata.csv     image,age_approx,anatom_site_general,lesion_id,sex
    write_isic_archive(OUT)   OUT/<isic_id>.jpg, OUT/metadata.csv (as `isic image download` writes it),
                              OUT/attribution.txt (isic-cli's licenses/ folder is not written)

As in the real files: ISIC 2019 names are ``ISIC_00xxxxx``, about 5% with a ``_downsampled`` suffix (in the
file name and in both CSVs), ``age_approx`` is written ``55.0`` (empty when unknown), ``lesion_id`` is
``BCN_xxxxxxx`` for most lesions and empty for about a third of the images, and the images come in the real
set's shapes (600x450, 1024x1024, 1024x768, ...), each scaled down, keeping its aspect, to fit the `size` box
(either orientation). The archive's ``metadata.csv`` is keyed by ``isic_id`` with CRLF line ends (Python's csv
module, as isic-cli), ``lesion_id`` ``IL_xxxxxxx`` and ``patient_id`` ``IP_xxxxxxx`` (several lesions per patient,
several images per lesion, some rows without either), and the ISIC diagnosis taxonomy in ``diagnosis_1..3``
(``ARCHIVE_TAXONOMY``), with a few rows whose diagnosis no class maps (Scar, Verruca, AIMP).

Planted duplicates, for the dedup tests and the scale benchmark (``duplicates_of=DIR``: a HAM10000 copy in
any layout ``hamdata.inputs.layouts.open_source`` reads: Kaggle, Dataverse, ISIC 2018, flat): ``same_id`` copies of DIR's images under their own ids, re-encoded at
quality 85; ``new_id`` copies under new ids, cropped 3% a side, resized to 0.8x, brightened x1.1, re-encoded at
quality 85; ``within`` copies of this output's own images under new ids (alternately re-encoded only and
transformed). A copy carries its original's label in this layout's vocabulary (``HAM_TO_ISIC2019``,
``HAM_TO_ARCHIVE``) and metadata; a same-id copy in ISIC 2019 keeps its HAM lesion id, a new-id copy gets an
empty or unrelated lesion id, so that only content can find it. ``OUT/planted_duplicates.csv``
(``copy_id,original_id,original_input,kind,transform``; ``original_input`` is DIR's absolute path, or
``self``) lists every copy.

Drawn ids never take one of DIR's ids, nor one of the real HAM10000's (ISIC_0024306 .. ISIC_0034320, which
ISIC 2019 and the archive hold as HAM10000 images). Everything is a function of the arguments: the same ones
give byte-identical files, with any number of workers; a drawn image depends on (seed, layout, image id)
only. The pictures are synth's painters (``hamdata.synth.draw.draw_lesion``); SCC, a class HAM10000 lacks, is drawn
as an actinic keratosis with a central keratin mass and glomerular vessels on top.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from hamdata.inputs.classes import ISIC2019_CLASSES, ISIC2019_COLUMNS
from hamdata.errors import HamdataError
from hamdata.inputs.containers import read_image_bytes
from hamdata.inputs.layouts import open_source
from hamdata.parallel import ordered_map, pool_size
from hamdata.image.preprocess import SIZE_MAX, SIZE_MIN, ImageError, decode_image, encode_image
from hamdata.synth.draw import IMAGE_SIZE, draw_lesion
from hamdata.synth.ham import JPEG_QUALITY, REAL_AGES, REAL_IMAGES_PER_LESION, apportion, image_rng
from hamdata.workspace import Workspace
from hamdata.synth.isic_tables import (
    REAL_ISIC2019_COUNTS, ISIC2019_SHAPES, SITES, SEXES, AGE_MISSING, HAM10000_NUMBERS, NO_LESION_ID, DOWNSAMPLED,
    ARCHIVE_TAXONOMY, UNMAPPED, UNMAPPED_SHARE, ARCHIVE_DIAGNOSES, ARCHIVE_SHAPES, HAM_ATTRIBUTION, ATTRIBUTIONS,
    IMAGE_TYPES, CONFIRM_TYPES, LESIONS_PER_PATIENT, NO_IDS, HAM_TO_ISIC2019, HAM_TO_ARCHIVE, HAM_SITES,
    HAM_CONFIRM, PAINTERS,
)

ISIC2019_INPUT = "ISIC_2019_Training_Input"
ISIC2019_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_METADATA = "ISIC_2019_Training_Metadata.csv"
ISIC2019_METADATA_COLUMNS = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")
ARCHIVE_METADATA = "metadata.csv"
ARCHIVE_ATTRIBUTION = "attribution.txt"
ARCHIVE_COLUMNS = ("isic_id", "attribution", "copyright_license", "age_approx", "anatom_site_general",
                   "benign_malignant", "diagnosis_1", "diagnosis_2", "diagnosis_3", "diagnosis_confirm_type",
                   "image_type", "lesion_id", "patient_id", "sex")
PLANTED_NAME = "planted_duplicates.csv"
PLANTED_COLUMNS = ("copy_id", "original_id", "original_input", "kind", "transform")
KINDS = ("same_id", "new_id", "within")
SELF_INPUT = "self"  # original_input of a `within` copy
COPY_QUALITY = 85
REENCODE = "reencode_q85"
TRANSFORMED = "crop3_resize0.8_bright1.1_q85"

# ---------------------------------------------------------------- drawing and copying (in the workers)


def fitted_shape(shape, box) -> tuple[int, int]:
    """(width, height) of `shape` scaled down, keeping its aspect, to fit `box` in either orientation; never up."""
    w, h = shape
    scale = min(1.0, max(box) / max(w, h), min(box) / min(w, h))
    return max(SIZE_MIN, int(w * scale + 0.5)), max(SIZE_MIN, int(h * scale + 0.5))


def _add_scc(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A keratin mass and glomerular (dotted) vessels over the middle of an AK drawing: SCC's look."""
    h, w = image.shape[:2]
    s = min(w, h)
    canvas = image.astype(np.float32)
    cx, cy = w * rng.uniform(0.47, 0.53), h * rng.uniform(0.47, 0.53)
    keratin = np.zeros((h, w), np.float32)
    axes = (max(int(s * rng.uniform(0.08, 0.13)), 1), max(int(s * rng.uniform(0.06, 0.1)), 1))
    cv2.ellipse(keratin, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    vessels = np.zeros((h, w), np.float32)
    n = int(rng.integers(15, 35))
    t, r = rng.uniform(0, 2 * np.pi, n), s * rng.uniform(0.12, 0.22, n)
    for x, y in zip(cx + r * np.cos(t), cy + r * np.sin(t)):
        cv2.circle(vessels, (int(x), int(y)), max(int(s / 200), 1), 1.0, -1)
    for mask, colour, blur in ((keratin, (238, 226, 180), s / 150), (vessels, (170, 30, 50), 0.7)):
        alpha = cv2.GaussianBlur(mask, (0, 0), max(blur, 0.7))[..., None] * np.float32(0.9)
        canvas += (np.asarray(colour, np.float32) * np.float32(rng.uniform(0.95, 1.02)) - canvas) * alpha
    return cv2.convertScaleAbs(canvas)


def draw_image(seed: int, key: str, painter: str, scc: bool, size) -> np.ndarray:
    """The RGB drawing of one image: synth's `draw_lesion(painter)` seeded by (seed, key), SCC features on top."""
    rng = image_rng(seed, key)
    image = draw_lesion(painter, rng, size)
    return _add_scc(image, rng) if scc else image


def transform_copy(rgb: np.ndarray) -> np.ndarray:
    """A new-id copy's pixels: crop 3% a side, resize to 0.8x (area), brightness x1.1 (saturated)."""
    h, w = rgb.shape[:2]
    dx, dy = int(0.03 * w + 0.5), int(0.03 * h + 0.5)
    crop = rgb[dy:h - dy, dx:w - dx]
    ch, cw = crop.shape[:2]
    small = cv2.resize(crop, (max(int(0.8 * cw + 0.5), 1), max(int(0.8 * ch + 0.5), 1)), interpolation=cv2.INTER_AREA)
    return cv2.convertScaleAbs(small, alpha=1.1)


def _decode(data: bytes, origin: str) -> np.ndarray:
    try:
        return decode_image(data)[0]
    except ImageError as err:
        raise HamdataError(f"{origin}: cannot copy this image: {err.cause}") from None


def _render(task: tuple) -> None:
    """Draw or copy one image and write it; top-level so that any start method can pickle it.

    ("draw", seed, key, painter, scc, size, path) | ("file", locator, transform, path) |
    ("self", seed, key, painter, scc, size, transform, path): a copy of an image this run draws, made from its file.
    """
    kind, path = task[0], task[-1]
    if kind == "draw":
        _, seed, key, painter, scc, size, _ = task
        data = encode_image(draw_image(seed, key, painter, scc, size), "jpg", JPEG_QUALITY)
    else:
        if kind == "file":
            _, locator, transform, _ = task
            rgb = _decode(read_image_bytes(locator), locator)
        else:
            _, seed, key, painter, scc, size, transform, _ = task
            rgb = _decode(encode_image(draw_image(seed, key, painter, scc, size), "jpg", JPEG_QUALITY), key)
        data = encode_image(transform_copy(rgb) if transform == TRANSFORMED else rgb, "jpg", COPY_QUALITY)
    Path(path).write_bytes(data)


# ---------------------------------------------------------------- tables


def _choice(rng: np.random.Generator, weights: dict, size: int) -> list:
    """`size` draws from the keys of `weights`, with probability proportional to the values."""
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return [keys[i] for i in rng.choice(len(keys), size=size, p=p / p.sum())]


def _lesion_sizes(n: int, rng: np.random.Generator) -> list[int]:
    """`n` images split into lesions with HAM10000's images-per-lesion distribution."""
    sizes = np.array(_choice(rng, REAL_IMAGES_PER_LESION, n), dtype=int)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), n)) + 1]
    sizes[-1] -= sizes.sum() - n
    return sizes.tolist()


def _fresh(rng: np.random.Generator, k: int, pool: int, taken: set, what: str) -> list[int]:
    """`k` distinct numbers below `pool`, none in `taken` (which grows by them), in draw order."""
    if k + sum(1 for t in taken if t < pool) > pool:
        raise HamdataError(f"too many {what}: at most {pool} fit the id format")
    out: list[int] = []
    while len(out) < k:
        for number in rng.integers(0, pool, size=2 * (k - len(out)) + 8).tolist():
            if number not in taken:
                taken.add(number)
                out.append(number)
                if len(out) == k:
                    break
    return out


def _age(rng: np.random.Generator, missing: float) -> float:
    return float("nan") if rng.random() < missing else float(_choice(rng, REAL_AGES, 1)[0])


def _own_rows(layout: str, n: int, box, rng: np.random.Generator) -> list[dict]:
    """The drawn images' rows in drawing order (ids come later): class, look, shape and metadata per lesion."""
    archive = layout == "isic-archive"
    weights = dict(REAL_ISIC2019_COUNTS)
    if archive:
        weights[UNMAPPED] = UNMAPPED_SHARE * sum(weights.values()) / (1 - UNMAPPED_SHARE)
    lesions = [(cls, size) for cls, count in apportion(n, weights).items() for size in _lesion_sizes(count, rng)]
    order = rng.permutation(len(lesions))  # patients group lesions across classes
    per_patient = _choice(rng, LESIONS_PER_PATIENT, len(lesions))
    patient, left, rows = -1, 0, []
    for number, i in enumerate(order.tolist()):
        cls, size = lesions[i]
        if left == 0:
            patient, left = patient + 1, per_patient[number]
            person = {"age": _age(rng, AGE_MISSING), "sex": _choice(rng, SEXES, 1)[0]}
        left -= 1
        lesion = {"cls": None if cls == UNMAPPED else cls, "site": _choice(rng, SITES, 1)[0], "lesion": number,
                  "listed": rng.random() >= (NO_IDS if archive else NO_LESION_ID), **person}
        if archive:
            dx3 = _choice(rng, ARCHIVE_DIAGNOSES[cls], 1)[0]
            attribution = _choice(rng, {a: w for a, (w, _) in ATTRIBUTIONS.items()}, 1)[0]
            malignant = ARCHIVE_TAXONOMY[dx3][0] == "Malignant"
            lesion.update(dx3=dx3, patient=patient, attribution=attribution,
                          confirm="histopathology" if malignant else _choice(rng, CONFIRM_TYPES, 1)[0])
        painter = PAINTERS[lesion["dx3"]] if archive and cls == UNMAPPED else PAINTERS[cls]
        for _ in range(size):
            shape = _choice(rng, ARCHIVE_SHAPES if archive else ISIC2019_SHAPES, 1)[0]
            rows.append({**lesion, "painter": painter, "scc": cls == "scc", "shape": fitted_shape(shape, box),
                         "image_type": _choice(rng, IMAGE_TYPES, 1)[0] if archive else ""})
    return [rows[i] for i in rng.permutation(len(rows)).tolist()]


def _number_of(image_id: str) -> int | None:
    match = re.fullmatch(r"ISIC_(\d{7})(?:_downsampled)?", image_id)
    return int(match[1]) if match else None


def _site(localization: str) -> str:
    return HAM_SITES.get(localization, localization if localization in SITES else "")


def _source_rows(source) -> dict[str, dict]:
    """DIR's metadata by image_id, in ISIC's words (site, sex, confirm type), for the copies' rows."""
    if "dx" not in source.metadata.columns:
        raise HamdataError(f"duplicates_of: {source.root} is a {source.layout} copy: expected a HAM10000 copy "
                           f"(Kaggle, Dataverse, ISIC 2018 or flat layout) to copy images of")
    rows = {}
    for r in source.metadata.to_dict("records"):
        dx = str(r["dx"])
        if dx not in HAM_TO_ISIC2019:
            raise HamdataError(f"{source.metadata_path}: image {r['image_id']} has dx {dx!r}, which no ISIC class maps")
        sex = str(r.get("sex", ""))
        rows[r["image_id"]] = {
            "cls": HAM_TO_ISIC2019[dx], "dx3": HAM_TO_ARCHIVE[dx], "age": float(r.get("age", float("nan"))),
            "sex": sex if sex in ("male", "female") else "", "site": _site(str(r.get("localization", ""))),
            "confirm": HAM_CONFIRM.get(str(r.get("dx_type")), ""), "ham_lesion": str(r.get("lesion_id", r["image_id"])),
            "attribution": HAM_ATTRIBUTION, "image_type": "dermoscopic",
        }
    return rows


# ---------------------------------------------------------------- CSV text


def _csv(rows, lineterminator: str) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=lineterminator).writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _age_text(age: float, decimals: bool) -> str:
    if age != age:  # NaN
        return ""
    return f"{age:.1f}" if decimals else str(int(age))


def _isic2019_files(rows: list[dict]) -> dict[str, bytes]:
    truth = [("image", *ISIC2019_COLUMNS)]
    truth += [(r["id"], *("1.0" if c.lower() == r["cls"] else "0.0" for c in ISIC2019_COLUMNS)) for r in rows]
    meta = [ISIC2019_METADATA_COLUMNS]
    meta += [(r["id"], _age_text(r["age"], True), r["site"], r["lesion_id"], r["sex"]) for r in rows]
    return {ISIC2019_TRUTH: _csv(truth, "\n"), ISIC2019_METADATA: _csv(meta, "\n")}


def _archive_files(rows: list[dict]) -> dict[str, bytes]:
    table = [ARCHIVE_COLUMNS]
    for r in rows:
        dx1, dx2, _ = ARCHIVE_TAXONOMY[r["dx3"]]
        table.append((r["id"], r["attribution"], ATTRIBUTIONS[r["attribution"]][1], _age_text(r["age"], False),
                      r["site"], dx1.lower(), dx1, dx2, r["dx3"], r["confirm"], r["image_type"], r["lesion_id"],
                      r["patient_id"], r["sex"]))
    counts = Counter(r["attribution"] for r in rows)
    names = sorted(counts, key=lambda a: (a == "Anonymous", -counts[a], a))
    return {ARCHIVE_METADATA: _csv(table, "\r\n"), ARCHIVE_ATTRIBUTION: "\n\n".join(names).encode("utf-8")}


# ---------------------------------------------------------------- the writer


def _whole(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise HamdataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_size(size) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
        ok = all(not isinstance(v, bool) and int(v) == v for v in size)
    except (TypeError, ValueError):
        ok = False
    if not ok or not (SIZE_MIN <= w <= SIZE_MAX and SIZE_MIN <= h <= SIZE_MAX):
        raise HamdataError(f"size must be (width, height), each from {SIZE_MIN} to {SIZE_MAX} pixels, got {size!r}")
    return w, h


class _Ids:
    """The fresh ids of one run: images (ISIC_...), lesions (BCN_/IL_...), patients (IP_...), each drawn once."""

    def __init__(self, layout: str, rng: np.random.Generator, images: int, copies: int, taken: set):
        archive = layout == "isic-archive"
        # ISIC 2019 names are ISIC_00xxxxx, archive ids ISIC_xxxxxxx; never one of DIR's.
        self._images = iter(_fresh(rng, images + copies, 10 ** 7 if archive else 10 ** 5, taken, "images"))
        self._lesions = iter(_fresh(rng, images + copies, 10 ** 7, set(), "lesions"))
        self._patients = iter(_fresh(rng, images + copies, 10 ** 7, set(), "patients"))
        self.prefix = "IL" if archive else "BCN"

    def image(self) -> str:
        return f"ISIC_{next(self._images):07d}"

    def lesion(self) -> str:
        return f"{self.prefix}_{next(self._lesions):07d}"

    def patient(self) -> str:
        return f"IP_{next(self._patients):07d}"


def _name_own(rows: list[dict], layout: str, seed: int, ids: _Ids, rng: np.random.Generator) -> None:
    """Give the drawn images their ids, lesion and patient ids (one per listed lesion or patient) and draw tasks."""
    archive = layout == "isic-archive"
    lesions, patients = {}, {}
    for row in rows:
        row["id"] = ids.image()
        if not archive and rng.random() < DOWNSAMPLED:
            row["id"] += "_downsampled"
        listed = row["listed"]
        if listed and row["lesion"] not in lesions:
            lesions[row["lesion"]] = ids.lesion()
        if archive and listed and row["patient"] not in patients:
            patients[row["patient"]] = ids.patient()
        row["lesion_id"] = lesions[row["lesion"]] if listed else ""
        row["patient_id"] = patients[row["patient"]] if archive and listed else ""
        row["task"] = ("draw", seed, f"{layout}/{row['id']}", row["painter"], row["scc"], row["shape"])


def _plant(layout: str, rows: list[dict], source, origin: str, counts: dict, ids: _Ids,
           rng: np.random.Generator) -> tuple[list[dict], list[tuple]]:
    """The copies' rows (with their render tasks) and their planted_duplicates.csv records."""
    archive = layout == "isic-archive"
    known = _source_rows(source) if source is not None else {}
    names = sorted(source.images) if source is not None else []
    picked = [names[i] for i in rng.choice(len(names), counts["same_id"] + counts["new_id"], replace=False).tolist()]
    copies, planted, ham_lesions = [], [], {}
    for n, original in enumerate(picked):
        kind = "same_id" if n < counts["same_id"] else "new_id"
        transform = REENCODE if kind == "same_id" else TRANSFORMED
        row = dict(known[original], task=("file", source.images[original], transform))
        if kind == "same_id":
            row["id"] = original
            if archive:  # the archive lists HAM10000 under IL_/IP_ ids: one pair per HAM lesion
                if row["ham_lesion"] not in ham_lesions:
                    ham_lesions[row["ham_lesion"]] = (ids.lesion(), ids.patient())
                row["lesion_id"], row["patient_id"] = ham_lesions[row["ham_lesion"]]
            else:  # ISIC 2019 lists HAM10000 images with their HAM lesion ids
                row["lesion_id"], row["patient_id"] = row["ham_lesion"], ""
        else:
            row["id"] = ids.image()
            if archive:
                row["attribution"] = _choice(rng, {a: w for a, (w, _) in ATTRIBUTIONS.items()}, 1)[0]
        copies.append(row)
        planted.append((row["id"], original, origin, kind, transform))
    for n, i in enumerate(sorted(rng.choice(len(rows), counts["within"], replace=False).tolist())):
        original = rows[i]
        transform = REENCODE if n % 2 == 0 else TRANSFORMED
        copies.append(dict(original, id=ids.image(), task=("self", *original["task"][1:], transform)))
        planted.append((copies[-1]["id"], original["id"], SELF_INPUT, "within", transform))
    for row, record in zip(copies, planted):  # a new id's lesion is empty or unrelated: only content can find it
        if record[3] != "same_id":
            unrelated = rng.random() < 0.5
            row["lesion_id"] = ids.lesion() if unrelated else ""
            row["patient_id"] = ids.patient() if archive and unrelated else ""
    return copies, planted


def _write(layout: str, out, images, seed, size, duplicates_of, same_id, new_id, within, workers, overwrite,
           progress) -> dict:
    archive = layout == "isic-archive"
    seed = _whole("seed", seed, 0)
    images = _whole("images", images, len(ARCHIVE_DIAGNOSES) if archive else len(REAL_ISIC2019_COUNTS))
    counts = {kind: _whole(kind, n, 0) for kind, n in zip(KINDS, (same_id, new_id, within))}
    workers = None if workers is None else _whole("workers", workers, 1)
    box = _check_size(size)
    if counts["within"] > images:
        raise HamdataError(f"within={counts['within']}: more copies than the {images} images this input draws")
    place = Path(os.path.abspath(out))
    Workspace(place, overwrite=overwrite).check()  # refuse before any work
    source, asked = None, counts["same_id"] + counts["new_id"]
    if duplicates_of is None and asked:
        raise HamdataError("same_id and new_id copy another input's images: pass duplicates_of=DIR")
    if duplicates_of is not None:
        source = open_source(duplicates_of)
        if asked > len(source.images):
            raise HamdataError(f"{duplicates_of}: {asked} same-id and new-id copies asked, but it has only "
                               f"{len(source.images)} images (each copy needs an image of its own)")

    table_rng, id_rng, copy_rng = (np.random.default_rng(s) for s in
                                   np.random.SeedSequence([seed, 1 if archive else 2019]).spawn(3))
    rows = _own_rows(layout, images, box, table_rng)
    # Drawn ids never take one of DIR's ids or the real HAM10000's (ISIC 2019 and the archive hold those as HAM's).
    names = [*source.images, *source.metadata["image_id"]] if source is not None else []
    taken = set(HAM10000_NUMBERS) | {n for i in names if (n := _number_of(i)) is not None}
    ids = _Ids(layout, id_rng, images, sum(counts.values()), taken)
    _name_own(rows, layout, seed, ids, id_rng)
    origin = os.path.abspath(duplicates_of) if duplicates_of is not None else ""
    copies, planted = _plant(layout, rows, source, origin, counts, ids, copy_rng)

    every = sorted(rows + copies, key=lambda r: r["id"])
    with Workspace(place, overwrite=overwrite) as tmp:
        where = tmp if archive else tmp / ISIC2019_INPUT
        where.mkdir(exist_ok=True)
        tasks = [(*r["task"], str(where / f"{r['id']}.jpg")) for r in every]
        done = ordered_map(_render, tasks, min(pool_size(workers, len(tasks)), len(tasks)))
        for _ in tqdm(done, total=len(tasks), desc=f"synth {layout}", unit="img", disable=not progress):
            pass
        files = _archive_files(every) if archive else _isic2019_files(every)
        files[PLANTED_NAME] = _csv([PLANTED_COLUMNS, *sorted(planted)], "\n")
        for name, data in files.items():
            (tmp / name).write_bytes(data)

    classes = Counter(r["cls"] for r in every)
    summary = {"layout": layout, "images": len(every), "drawn": images, "planted": counts,
               "counts": {c: classes.get(c, 0) for c in ISIC2019_CLASSES}, "out": str(out)}
    if archive:
        summary["unmapped"] = classes.get(None, 0)
    return summary


def write_isic2019(out, images=1000, seed=0, size=IMAGE_SIZE, duplicates_of=None, same_id=0, new_id=0, within=0,
                   workers=None, overwrite=False, progress=True) -> dict:
    """Write a synthetic ISIC 2019 Task 1 training set to `out` (it appears complete or not at all); return a summary.

    images: images drawn (>= 8), in ISIC 2019's class proportions. seed: decides everything.
    size: (width, height) box every image's real shape is scaled down to fit (default synth's 600x450).
    duplicates_of: a folder `hamdata.inputs.layouts.open_source` reads, whose images the same-id and new-id copies copy.
    same_id, new_id, within: planted copies of each kind (see the module docstring), listed in planted_duplicates.csv.
    workers: processes (default: the CPU count, fewer for a small input: hamdata.parallel.pool_size); the output does not depend on it. overwrite: replace `out`.
    Returns {"layout", "images" (all, copies included), "drawn", "planted": {kind: n}, "counts": {class: n}, "out",
    "images_dir"}.
    """
    return _write("isic2019", out, images, seed, size, duplicates_of, same_id, new_id, within, workers, overwrite,
                  progress)


def write_isic_archive(out, images=1000, seed=0, size=IMAGE_SIZE, duplicates_of=None, same_id=0, new_id=0, within=0,
                       workers=None, overwrite=False, progress=True) -> dict:
    """Write a synthetic ISIC-archive export (`isic image download`) to `out`; return a summary.

    As write_isic2019 (images >= 9: the eight classes and one row no class maps); the summary adds "unmapped".
    """
    return _write("isic-archive", out, images, seed, size, duplicates_of, same_id, new_id, within, workers, overwrite,
                  progress)


LAYOUT_WRITERS = {"isic2019": write_isic2019, "isic-archive": write_isic_archive}
