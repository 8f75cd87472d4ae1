"""Find an input (a HAM10000 copy, ISIC 2019, ISIC 2020, BCN20000, an ISIC-archive export) on disk; read its images.

``open_source(DIR)`` tries the layout detectors in ``DETECTORS``, in order;
the first that recognises DIR gives the ``Source``:

- ``isic2018``: ``ISIC2018_Task3_Training_Input/`` with
  ``ISIC2018_Task3_Training_GroundTruth.csv`` (one-hot) and, when present,
  ``ISIC2018_Task3_Training_LesionGroupings.csv``; the CSVs may sit in DIR, in
  the input folder, or in a folder named after the CSV (as the ISIC zips unpack).
- ``kaggle``: ``HAM10000_metadata.csv`` with ``HAM10000_images_part_1/`` and
  ``_part_2/`` (Kaggle also ships lower-case copies of both folders).
- ``dataverse``: the same folders or ``HAM10000_images_part_{1,2}.zip``, metadata
  as ``HAM10000_metadata.csv``, ``.tab`` or without extension, maybe with a
  ``dataset`` column (kept).
- ``isic2019``: ``ISIC_2019_Training_Input/`` (or that folder inside itself, as
  the zip unpacks) with ``ISIC_2019_Training_GroundTruth.csv`` and, when
  present, ``ISIC_2019_Training_Metadata.csv``; collection ``isic2019``.
- ``isic2020`` / ``isic2020-kaggle``: ``ISIC_2020_Training_GroundTruth_v2.csv`` (or
  the v1 file) with ``train/``, and ``ISIC_2020_Training_Duplicates.csv`` when
  present; or Kaggle's ``train.csv`` with ``jpeg/train/``; collection ``isic2020``.
- ``bcn20000``: ``bcn_20k_train.csv`` beside its image folder; collection ``bcn20000``.
- ``isic-archive``: an isic-cli export or the archive's snapshot (``metadata.csv``
  with an ``isic_id`` column), or a collection CSV from the archive website
  (``<collection>_metadata_<date>.csv``), beside ``<isic_id>.jpg`` (or in
  DIR/images/); collection ``isic-archive``.
- ``flat``: ``<image_id>.jpg|.jpeg|.png`` in DIR (or DIR/images/) beside one
  metadata CSV.

An image_id found in several folders is taken once, from the first folder in
a fixed order (exact upper-case folder names first, then other spellings, then
zips), so Kaggle's duplicate folders never give duplicate samples.

To add a layout: write ``_detect_<name>(root) -> Source | None`` that returns
None when ``root`` is not that layout and raises HamdataError when it is but
something is wrong; read its metadata with hamdata.inputs.metadata and end with
``_make_source``; insert it in ``DETECTORS`` where it cannot take over an
input an earlier entry recognises today; add what it looks for to
``_LOOKED_FOR``. Metadata parsing and validation live in hamdata.inputs.metadata.

Images are listed and read by hamdata.inputs.containers (folders, zips, HDF5 files; ``read_image_bytes``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hamdata.inputs.containers import IMAGE_EXTENSIONS, find_images
from hamdata.errors import HamdataError
from hamdata.inputs.metadata import (
    ISIC2018_GROUPINGS,
    has_required_columns,
    header_names,
    listing,
    parse_isic2018,
    parse_metadata,
)
from hamdata.inputs.metadata_bcn import TRAIN as BCN_TRAIN, parse_bcn
from hamdata.inputs.metadata_isic import (
    ARCHIVE_METADATA,
    ISIC2019_METADATA,
    ISIC2019_TRUTH,
    parse_archive,
    parse_isic2019,
)
from hamdata.inputs.metadata_slice3d import (IMAGES_FOLDER as SLICE3D_FOLDER, IMAGES_HDF5 as SLICE3D_HDF5,
                                      OWN_IMAGE_TYPES as SLICE3D_TYPES, TRAIN as SLICE3D_TRAIN, is_slice3d_table,
                                      parse_slice3d)
from hamdata.inputs.metadata_isic2020 import (
    DUPLICATES as ISIC2020_DUPLICATES,
    KAGGLE_TRAIN,
    TRUTH as ISIC2020_TRUTH,
    TRUTH_V2 as ISIC2020_TRUTH_V2,
    is_isic2020_table,
    parse_duplicate_list,
    parse_isic2020,
)

ARCHIVE_EXTENSIONS = IMAGE_EXTENSIONS + (".tif", ".tiff")  # isic-cli writes the archive's own extension (RCM: tif)

_HAM_METADATA = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata")
_HAM_PARTS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
_ISIC_INPUT = "ISIC2018_Task3_Training_Input"
_ISIC_TRUTH = "ISIC2018_Task3_Training_GroundTruth.csv"
_ISIC2019_INPUT = "ISIC_2019_Training_Input"
# A browser saving the same download twice adds " (1)".
_COLLECTION_CSV = re.compile(r".+_metadata_\d{4}-\d{2}-\d{2}[0-9T:_.-]*( \(\d+\))?\.csv", re.IGNORECASE)
_ISIC2020_IMAGES = ("train", "ISIC_2020_Training_JPEG")  # the training zip unpacks to train/
_LOOKED_FOR = (
    "expected HAM10000_metadata.csv (or .tab) with HAM10000_images_part_1/ and _part_2/ "
    "folders or zips (Kaggle, Harvard Dataverse), ISIC2018_Task3_Training_Input/ with "
    "ISIC2018_Task3_Training_GroundTruth.csv (ISIC 2018 Task 3), ISIC_2019_Training_Input/ with "
    "ISIC_2019_Training_GroundTruth.csv (ISIC 2019 Task 1), ISIC_2020_Training_GroundTruth(_v2).csv with "
    "train/ or Kaggle's train.csv with jpeg/train/ (ISIC 2020), bcn_20k_train.csv beside its images (BCN20000), "
    "<isic_id>.jpg files (or images/) beside an isic-cli metadata.csv or a website "
    "<collection>_metadata_<date>.csv with an isic_id column (ISIC archive export), or <image_id>.jpg files "
    "beside one metadata CSV with columns image_id and dx (flat)"
)


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames do not compare to a bool
class Source:
    """An input found on disk: its metadata and the images found.

    HAM10000 layouts (kaggle, dataverse, isic2018, flat; collection "ham10000") give the validated
    METADATA_COLUMNS table (+ "dataset"); isic2019 and isic-archive give the raw table of
    hamdata.inputs.metadata_isic (RAW_COLUMNS: labels in the collection's words), mapped by hamdata.inputs.merge.
    """

    root: Path
    layout: str  # "kaggle" | "dataverse" | "isic2018" | "flat" | "isic2019" | "isic-archive"
    metadata_path: Path
    metadata: pd.DataFrame  # file order
    images: dict[str, str]  # image_id -> file path or "zip:<zip path>!<member>"
    warnings: tuple[str, ...]
    collection: str = "ham10000"  # whose words the labels are in: one of hamdata.inputs.vocabulary.COLLECTIONS
    repeated: tuple = ()  # rows whose image_id an earlier row of the same table has ({image_id, file_id, row})
    listed_duplicates: tuple = ()  # (kept id, dropped id) pairs of a published duplicate list (ISIC 2020)
    duplicate_list: Path | None = None  # the file they come from
    feature_names: tuple = ()  # the numeric columns of the table's ``features`` rows (ISIC 2024 SLICE-3D)
    own_image_types: tuple = ()  # image types this collection is made of: kept whatever --image-types says


# ---------------------------------------------------------------- layouts


def _child(root: Path, name: str, want_dir: bool) -> Path | None:
    """root/name, matched case-insensitively (exact spelling preferred)."""
    matches = sorted(
        (p.name != name, p.name, p) for p in root.iterdir()
        if p.name.lower() == name.lower() and (p.is_dir() if want_dir else p.is_file())
    )
    return matches[0][2] if matches else None


def _first_file(folders: list[Path], name: str) -> Path | None:
    for folder in folders:
        if folder.is_dir() and (path := _child(folder, name, want_dir=False)):
            return path
    return None


def _part_containers(root: Path) -> list[Path]:
    """The part folders, then the part zips; exact spellings before other cases."""
    folders = {p.lower() for p in _HAM_PARTS}
    zips = {p.lower() + ".zip" for p in _HAM_PARTS}
    exact = set(_HAM_PARTS) | {p + ".zip" for p in _HAM_PARTS}
    ranked = []
    for p in root.iterdir():
        if p.is_dir() and p.name.lower() in folders:
            ranked.append((0 if p.name in exact else 1, p.name, p))
        elif p.is_file() and p.name.lower() in zips:
            ranked.append((2 if p.name in exact else 3, p.name, p))
    return [p for _, _, p in sorted(ranked)]


def _make_source(root, layout, metadata_path, metadata, warnings, containers, collection="ham10000",
                 repeated=(), extensions=IMAGE_EXTENSIONS, **more) -> Source:
    """The Source of validated metadata with the images of `containers` (folders or zips).

    Files are matched by the table's file_id (its file stem) when it has one, else by image_id.
    An error when no metadata row has an image; images without a row are ignored with a warning.
    """
    found = find_images(containers, extensions)
    stems = list(metadata["file_id"] if "file_id" in metadata.columns else metadata["image_id"])
    listed = set(stems) | {r["file_id"] for r in repeated}
    images = {i: found[f] for i, f in zip(metadata["image_id"], stems) if f in found}
    if not images:
        raise HamdataError(
            f"no images found for the {len(stems)} rows of {metadata_path}: expected "
            f"<image_id>.jpg, .jpeg or .png in {', '.join(str(c) for c in containers)}"
        )
    extra = sorted(set(found) - listed)
    if extra:
        warnings = warnings + [
            f"{len(extra)} images have no row in {metadata_path} and are ignored: {listing(extra)}"
        ]
    return Source(root, layout, metadata_path, metadata, images, tuple(warnings), collection, tuple(repeated), **more)


def _challenge_tables(root: Path, folder: Path, truth_name: str, other_name: str) -> tuple[Path, Path | None]:
    """An ISIC challenge's ground truth (an error when absent) and its other table (None when absent), in DIR, in
    the input folder, or in a folder named after the CSV (as the ISIC zips unpack each CSV)."""
    places = [root, folder, root / Path(truth_name).stem, root / Path(other_name).stem]
    truth = _first_file(places, truth_name)
    if truth is None:
        raise HamdataError(
            f"{root} has {folder.name}/ but no {truth_name}: looked in "
            f"{', '.join(str(d) for d in places[:3])}"
        )
    return truth, _first_file(places, other_name)


def _detect_isic2018(root: Path) -> Source | None:
    folder = _child(root, _ISIC_INPUT, want_dir=True)
    if folder is None:
        return None
    truth, groups = _challenge_tables(root, folder, _ISIC_TRUTH, ISIC2018_GROUPINGS)
    metadata, warnings = parse_isic2018(truth, groups)
    return _make_source(root, "isic2018", truth, metadata, warnings, [folder])


def _detect_isic2019(root: Path) -> Source | None:
    folder = _child(root, _ISIC2019_INPUT, want_dir=True)
    if folder is None:
        return None
    nested = _child(folder, _ISIC2019_INPUT, want_dir=True)  # the zip holds a folder of the same name
    truth, table = _challenge_tables(root, folder, ISIC2019_TRUTH, ISIC2019_METADATA)
    metadata, repeated, warnings = parse_isic2019(truth, table)
    return _make_source(root, "isic2019", truth, metadata, warnings, [nested or folder], "isic2019", repeated)


def _archive_table(root: Path) -> Path | None:
    """isic-cli's or the snapshot's metadata.csv, else one collection CSV from the archive website
    (``<collection>_metadata_<YYYY-MM-DD>.csv``, ImageMarkup/isic ``collection_download_metadata``)."""
    path = _child(root, ARCHIVE_METADATA, want_dir=False)
    if path is not None:
        return path if "isic_id" in header_names(path) else None
    found = sorted(p for p in root.iterdir() if p.is_file() and _COLLECTION_CSV.fullmatch(p.name)
                   and "isic_id" in header_names(p))
    if len(found) > 1:
        raise HamdataError(f"{root}: several ISIC-archive collection CSVs ({', '.join(p.name for p in found)}): "
                           f"expected one metadata table beside the images; give each collection its own folder")
    return found[0] if found else None


def _detect_archive(root: Path) -> Source | None:
    path = _archive_table(root)
    if path is None:
        return None
    images_dir = root / "images"
    folders = [root] + ([images_dir] if images_dir.is_dir() else [])
    metadata, repeated, warnings = parse_archive(path)
    return _make_source(root, "isic-archive", path, metadata, warnings, folders, "isic-archive", repeated,
                        ARCHIVE_EXTENSIONS)


def _detect_isic2020(root: Path) -> Source | None:
    """ISIC 2020: the challenge's ground truth (v2 preferred) with train/, or Kaggle's train.csv with jpeg/train/."""
    truth = _child(root, ISIC2020_TRUTH_V2, want_dir=False) or _child(root, ISIC2020_TRUTH, want_dir=False)
    layout = "isic2020"
    if truth is None:
        kaggle = _child(root, KAGGLE_TRAIN, want_dir=False)
        if kaggle is None or not is_isic2020_table(header_names(kaggle)):
            return None
        truth, layout = kaggle, "isic2020-kaggle"
    folders = [f for f in (root / "jpeg" / "train", *(root / n for n in _ISIC2020_IMAGES),
                           root / "ISIC_2020_Training_JPEG" / "train", root) if f.is_dir()]
    metadata, repeated, warnings = parse_isic2020(truth)
    listed, pairs = _child(root, ISIC2020_DUPLICATES, want_dir=False), ()
    if listed is not None:
        pairs = tuple(parse_duplicate_list(listed, set(metadata["image_id"]) | {r["image_id"] for r in repeated}))
    elif layout == "isic2020":
        warnings.append(f"no {ISIC2020_DUPLICATES} beside {truth.name}: the 425 published duplicate pairs are left to "
                        f"the search by content")
    return _make_source(root, layout, truth, metadata, warnings, folders, "isic2020", repeated,
                        listed_duplicates=pairs, duplicate_list=listed)


def _detect_slice3d(root: Path) -> Source | None:
    """ISIC 2024 (SLICE-3D): train-metadata.csv with train-image.hdf5 (read in place) or train-image/image/."""
    table = _child(root, SLICE3D_TRAIN, want_dir=False)
    if table is None or not is_slice3d_table(header_names(table)):
        return None
    hdf5 = _child(root, SLICE3D_HDF5, want_dir=False)
    folder = root.joinpath(*SLICE3D_FOLDER)
    containers = [hdf5] if hdf5 is not None else [f for f in (folder, root / SLICE3D_FOLDER[0], root) if f.is_dir()]
    metadata, repeated, warnings, names = parse_slice3d(table)
    return _make_source(root, "isic2024", table, metadata, warnings, containers, "isic2024", repeated,
                        feature_names=names, own_image_types=SLICE3D_TYPES)


def _detect_bcn(root: Path) -> Source | None:
    """BCN20000 as its authors publish it: bcn_20k_train.csv beside its image folder (any of DIR, DIR/images,
    or a folder named like the CSV, as the release and its mirrors unpack)."""
    table = _child(root, BCN_TRAIN, want_dir=False)
    if table is None:
        return None
    stem = Path(BCN_TRAIN).stem
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in ("images", stem))
    for p in sorted(root.iterdir()):
        if p.is_dir() and p.name.lower().startswith("bcn_20k_train"):
            folders += [p] + sorted(q for q in p.iterdir() if q.is_dir() and q.name.lower() == stem)
    metadata, repeated, warnings = parse_bcn(table)
    return _make_source(root, "bcn20000", table, metadata, warnings, list(dict.fromkeys(folders)), "bcn20000",
                        repeated)


def _ham_metadata(root: Path) -> tuple[Path | None, list[str]]:
    """HAM10000_metadata.csv, else .tab, else without extension."""
    paths = [p for n in _HAM_METADATA if (p := _child(root, n, want_dir=False))]
    if len(paths) > 1:
        ignored = ", ".join(p.name for p in paths[1:])
        return paths[0], [f"{root}: using {paths[0].name}, ignoring {ignored}"]
    return (paths[0] if paths else None), []


def _detect_ham10000(root: Path) -> Source | None:
    containers = _part_containers(root)
    if not containers:
        return None
    path, warnings = _ham_metadata(root)
    if path is None:
        raise HamdataError(
            f"{root} has {containers[0].name} but no {', '.join(_HAM_METADATA)} file: "
            f"expected the metadata table beside the image folders"
        )
    metadata, more = parse_metadata(path)
    dataverse = (
        path.suffix.lower() != ".csv"
        or "dataset" in metadata.columns
        or any(c.suffix.lower() == ".zip" for c in containers)
    )
    layout = "dataverse" if dataverse else "kaggle"
    return _make_source(root, layout, path, metadata, warnings + more, containers)


def _flat_metadata(root: Path) -> tuple[Path | None, list[str]]:
    path, warnings = _ham_metadata(root)
    if path is not None:
        return path, warnings
    csvs = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    candidates = [p for p in csvs if has_required_columns(p)]
    if len(candidates) > 1:
        raise HamdataError(
            f"{root}: several metadata CSVs ({', '.join(p.name for p in candidates)}): "
            f"expected exactly one CSV with columns image_id and dx"
        )
    return (candidates[0] if candidates else None), []


def _detect_flat(root: Path) -> Source | None:
    images_dir = root / "images"
    folders = [root] + ([images_dir] if images_dir.is_dir() else [])
    path, warnings = _flat_metadata(root)
    if path is None:
        if find_images(folders):
            raise HamdataError(
                f"{root} has images but no metadata CSV: expected one *.csv with columns "
                f"image_id and dx beside them, or an ISIC-archive metadata.csv or <collection>_metadata_<date>.csv "
                f"with an isic_id column"
            )
        return None
    metadata, more = parse_metadata(path)
    return _make_source(root, "flat", path, metadata, warnings + more, folders)


# The layout detectors open_source tries, in order: the first Source returned
# wins and a HamdataError stops the search, so the order decides how a folder
# that fits several layouts is read. Flat stays last: it takes any folder with
# images and a metadata CSV.
DETECTORS: tuple[Callable[[Path], Source | None], ...] = (
    _detect_isic2018,  # isic2018
    _detect_isic2019,  # isic2019
    _detect_ham10000,  # kaggle, dataverse
    _detect_isic2020,  # isic2020, isic2020-kaggle (before flat: a Kaggle train.csv beside images)
    _detect_slice3d,  # isic2024 (SLICE-3D)
    _detect_bcn,  # bcn20000
    _detect_archive,  # isic-archive (metadata.csv with isic_id; before flat, which would take its images)
    _detect_flat,  # flat
)


# ---------------------------------------------------------------- public API


def open_source(data_dir) -> Source:
    """Detect the layout of `data_dir`, read and validate its metadata, find its images."""
    root = Path(data_dir)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise HamdataError(f"data directory {root} {what}: {_LOOKED_FOR}")
    root = root.resolve()
    for detect in DETECTORS:
        try:
            source = detect(root)
        except OSError as e:  # e.g. an unreadable folder
            raise HamdataError(f"cannot read {e.filename or root}: {e.strerror or e}") from None
        if source is not None:
            return source
    raise HamdataError(f"no HAM10000 or ISIC copy found in {root}: {_LOOKED_FOR}")


def missing_images(source: Source) -> list[str]:
    """Sorted image_ids of the metadata for which no image was found."""
    return sorted(set(source.metadata["image_id"]) - set(source.images))
