"""Find and read a HAM10000 copy on disk, and validate its metadata.

``open_source(DIR)`` recognises these layouts, tried in this order:

- ``isic2018``: ``ISIC2018_Task3_Training_Input/`` with
  ``ISIC2018_Task3_Training_GroundTruth.csv`` (one-hot) and, when present,
  ``ISIC2018_Task3_Training_LesionGroupings.csv``; the CSVs may sit in DIR, in
  the input folder, or in a folder named after the CSV (as the ISIC zips unpack).
- ``kaggle``: ``HAM10000_metadata.csv`` with ``HAM10000_images_part_1/`` and
  ``_part_2/`` (Kaggle also ships lower-case copies of both folders).
- ``dataverse``: the same folders or ``HAM10000_images_part_{1,2}.zip``, metadata
  as ``HAM10000_metadata.csv``, ``.tab`` or without extension, maybe with a
  ``dataset`` column (kept).
- ``flat``: ``<image_id>.jpg|.jpeg|.png`` in DIR (or DIR/images/) beside one
  metadata CSV.

An image_id found in several folders is taken once, from the first folder in
a fixed order (exact upper-case folder names first, then other spellings, then
zips), so Kaggle's duplicate folders never give duplicate samples.

Row numbers in error messages count data records from 1, the header not
counted: "row 12" is the 12th record after the header, i.e. line 13 of a file
without multi-line quoted fields. Blank records count but are skipped.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import os
import posixpath
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hamdata.classes import CLASSES, ISIC2018_COLUMNS
from hamdata.errors import HamdataError

METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
REQUIRED_COLUMNS = ("image_id", "dx")
KEPT_EXTRA_COLUMNS = ("dataset",)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
UNKNOWN = "unknown"  # value of dx_type, sex and localization when empty or absent
MAX_AGE = 120
MAX_LISTED = 5  # offenders named in one error message

_KNOWN_COLUMNS = METADATA_COLUMNS + KEPT_EXTRA_COLUMNS
_FILLED_COLUMNS = ("dx_type", "sex", "localization")
# image_ids become file names and shard keys: no dots, slashes or spaces.
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_HAM_METADATA = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata")
_HAM_PARTS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
_ISIC_INPUT = "ISIC2018_Task3_Training_Input"
_ISIC_TRUTH = "ISIC2018_Task3_Training_GroundTruth.csv"
_ISIC_GROUPS = "ISIC2018_Task3_Training_LesionGroupings.csv"
# LesionGroupings "diagnosis_confirm_type" -> HAM10000 dx_type
_CONFIRM_TYPES = {
    "histopathology": "histo",
    "serial imaging showing no change": "follow_up",
    "single image expert consensus": "consensus",
    "confocal microscopy with consensus dermoscopy": "confocal",
}
_ZIP_LOCATOR = re.compile(r"zip:(?P<zip>.+?\.zip)!(?P<member>.+)", re.IGNORECASE | re.DOTALL)
_LOOKED_FOR = (
    "expected HAM10000_metadata.csv (or .tab) with HAM10000_images_part_1/ and _part_2/ "
    "folders or zips (Kaggle, Harvard Dataverse), ISIC2018_Task3_Training_Input/ with "
    "ISIC2018_Task3_Training_GroundTruth.csv (ISIC 2018 Task 3), or <image_id>.jpg files "
    "beside one metadata CSV with columns image_id and dx (flat)"
)


@dataclass(frozen=True, eq=False)  # eq=False: DataFrames do not compare to a bool
class Source:
    """A HAM10000 copy found on disk: validated metadata and the images found."""

    root: Path
    layout: str  # "kaggle" | "dataverse" | "isic2018" | "flat"
    metadata_path: Path
    metadata: pd.DataFrame  # METADATA_COLUMNS (+ "dataset"), validated, file order
    images: dict[str, str]  # image_id -> file path or "zip:<zip path>!<member>"
    warnings: tuple[str, ...]


# ---------------------------------------------------------------- messages


def _shown(value) -> str:
    """A value as it can appear in a one-line message: quoted when it holds a newline or other control."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def _listing(items, limit: int = MAX_LISTED) -> str:
    """'a, b, c' with at most `limit` items, then 'and N more'."""
    items = [_shown(i) for i in items]
    text = ", ".join(items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _rows(numbers) -> str:
    numbers = list(numbers)
    return f"row {numbers[0]}" if len(numbers) == 1 else f"rows {_listing(numbers)}"


# ---------------------------------------------------------------- tables


def _decode(path: Path) -> tuple[str, list[str]]:
    """The text of a metadata file: UTF-8 (BOM or not), UTF-16 with BOM, else Latin-1."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise HamdataError(f"metadata file {path} not found") from None
    except OSError as e:
        raise HamdataError(f"cannot read metadata file {path}: {e.strerror or e}") from None
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return data.decode("utf-16"), []
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as e:
        # Latin-1 maps every byte, so this cannot fail; HAM10000 itself is ASCII.
        warning = f"{path} is not valid UTF-8 (byte {e.start}): read as Latin-1"
        return data.decode("latin-1"), [warning]


def _sniff(text: str) -> str:
    """Tab when the header line has a tab, else comma."""
    header_line = next((line for line in text.splitlines() if line.strip()), "")
    return "\t" if "\t" in header_line else ","


def _parse_table(text: str, origin) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, non-blank records and their row numbers; comma or tab separated."""
    if not text.strip():
        raise HamdataError(f"{origin} is empty: expected a header line and one row per image")
    stream = io.StringIO(text, newline="")  # newline="": the csv module handles CRLF
    reader = csv.reader(stream, delimiter=_sniff(text), skipinitialspace=True)
    try:
        records = [r for r in reader]
    except csv.Error as e:
        raise HamdataError(f"{origin}: unreadable near line {reader.line_num}: {e}") from None
    while records and not any(f.strip() for f in records[0]):
        records.pop(0)
    if not records:
        raise HamdataError(f"{origin} has no header: expected a header line and one row per image")
    header, body = records[0], records[1:]
    kept = [(n, r) for n, r in enumerate(body, start=1) if any(f.strip() for f in r)]
    if not kept:
        raise HamdataError(f"{origin} has a header but no data rows: expected one row per image")
    ragged = [f"row {n} ({len(r)} fields)" for n, r in kept if len(r) != len(header)]
    if ragged:
        raise HamdataError(
            f"{origin}: {_listing(ragged)}: expected {len(header)} fields like the header "
            f"(quote values that contain the separator)"
        )
    return header, [r for _, r in kept], [n for n, _ in kept]


def _read_table(path: Path) -> tuple[pd.DataFrame, list[int], list[str]]:
    """Raw string table of a CSV/TSV file, its row numbers and decoding warnings."""
    text, warnings = _decode(path)
    header, records, rows = _parse_table(text, path)
    return pd.DataFrame(records, columns=header, dtype=object), rows, warnings


def _column_index(names, wanted, required, origin) -> dict[str, int]:
    """Position of each wanted column (names stripped, case-insensitive)."""
    found: dict[str, int] = {}
    for i, name in enumerate(names):
        key = str(name).strip().lower()
        if key in wanted:
            if key in found:
                raise HamdataError(f"{origin}: column {key!r} appears twice: expected it once")
            found[key] = i
    missing = [c for c in required if c not in found]
    if missing:
        raise HamdataError(
            f"{origin}: missing column {', '.join(missing)}; found columns: "
            f"{', '.join(repr(str(n)) for n in names)}: expected at least {', '.join(required)}, "
            f"separated by commas or tabs"
        )
    return found


def _text(value) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value).strip()


# ---------------------------------------------------------------- validation


def _check_image_ids(ids: list[str], rows: list[int], origin) -> None:
    empty = [r for r, i in zip(rows, ids) if not i]
    if empty:
        raise HamdataError(f"{origin}: empty image_id in {_rows(empty)}: expected an image id")
    odd = [f"row {r} ({i!r})" for r, i in zip(rows, ids) if not _ID_PATTERN.fullmatch(i)]
    if odd:
        raise HamdataError(
            f"{origin}: bad image_id in {_listing(odd)}: expected letters, digits, '_' and '-' only"
        )
    seen: dict[str, list[int]] = {}
    for r, i in zip(rows, ids):
        seen.setdefault(i, []).append(r)
    dups = [f"{i} ({_rows(rs)})" for i, rs in seen.items() if len(rs) > 1]
    if dups:
        raise HamdataError(
            f"{origin}: duplicate image_id {_listing(dups)}: expected each image once"
        )


def _check_dx(raw: list[str], dx: list[str], rows: list[int], origin) -> None:
    bad = [f"row {r} ({v!r})" for r, v, d in zip(rows, raw, dx) if d not in CLASSES]
    if bad:
        raise HamdataError(
            f"{origin}: unknown dx in {_listing(bad)}: expected one of {', '.join(CLASSES)}"
        )


def _parse_ages(raw: list[str], rows: list[int], origin) -> list[float]:
    ages, bad = [], []
    for r, v in zip(rows, raw):
        try:
            age = float(v) if v else float("nan")
        except ValueError:
            age = -1.0
        if v and not 0 <= age <= MAX_AGE:
            bad.append(f"row {r} ({v!r})")
        ages.append(age)
    if bad:
        raise HamdataError(
            f"{origin}: bad age in {_listing(bad)}: expected empty or a number from 0 to {MAX_AGE}"
        )
    return ages


def _check_lesions(lesions: list[str], dx: list[str], rows: list[int], origin) -> None:
    empty = [r for r, lesion in zip(rows, lesions) if not lesion]
    if empty:
        raise HamdataError(
            f"{origin}: empty lesion_id in {_rows(empty)}: expected a lesion id "
            f"(or no lesion_id column, to make each image its own lesion)"
        )
    by_lesion: dict[str, dict[str, list[int]]] = {}
    for r, lesion, d in zip(rows, lesions, dx):
        by_lesion.setdefault(lesion, {}).setdefault(d, []).append(r)
    mixed = [(lesion, by_dx) for lesion, by_dx in by_lesion.items() if len(by_dx) > 1]
    if mixed:
        lesion, by_dx = mixed[0]
        detail = ", ".join(f"{d} ({_rows(rs)})" for d, rs in by_dx.items())
        more = f" (and {len(mixed) - 1} more such lesions)" if len(mixed) > 1 else ""
        raise HamdataError(
            f"{origin}: lesion {_shown(lesion)} has images of several diagnoses: {detail}{more}: "
            f"expected one diagnosis per lesion"
        )


def _validate(df: pd.DataFrame, origin, rows=None) -> tuple[pd.DataFrame, list[str]]:
    """The validated metadata table and its warnings; see validate_metadata."""
    if len(df) == 0:
        raise HamdataError(f"{origin} has no data rows: expected one row per image")
    rows = list(rows) if rows is not None else list(range(1, len(df) + 1))
    index = _column_index(df.columns, _KNOWN_COLUMNS, REQUIRED_COLUMNS, origin)
    col = {c: [_text(v) for v in df.iloc[:, i]] for c, i in index.items()}
    warnings = []
    _check_image_ids(col["image_id"], rows, origin)
    dx = [v.lower() for v in col["dx"]]
    _check_dx(col["dx"], dx, rows, origin)
    if "lesion_id" not in col:
        warnings.append(f"{origin}: no lesion_id column: each image is its own lesion")
    lesions = col.get("lesion_id", col["image_id"])
    _check_lesions(lesions, dx, rows, origin)
    absent = [c for c in ("dx_type", "age", "sex", "localization") if c not in col]
    if absent:
        warnings.append(f"{origin}: no {', '.join(absent)} column: filled as unknown (age empty)")
    empty = [""] * len(df)
    ages = _parse_ages(col.get("age", empty), rows, origin)
    filled = {c: [v or UNKNOWN for v in col.get(c, empty)] for c in _FILLED_COLUMNS}
    out = pd.DataFrame({
        "lesion_id": lesions,
        "image_id": col["image_id"],
        "dx": dx,
        "dx_type": filled["dx_type"],
        "age": ages,
        "sex": filled["sex"],
        "localization": filled["localization"],
    })
    for c in KEPT_EXTRA_COLUMNS:
        if c in col:
            out[c] = col[c]
    return out, warnings


def _read_metadata(path: Path) -> tuple[pd.DataFrame, list[str]]:
    df, rows, warnings = _read_table(path)
    out, more = _validate(df, path, rows)
    return out, warnings + more


# ---------------------------------------------------------------- ISIC 2018


def _one_hot(value: str):
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number in (0.0, 1.0) else None


def _isic_truth(path: Path) -> tuple[pd.DataFrame, list[int], list[str]]:
    """image_id and dx from the one-hot ground truth."""
    df, rows, warnings = _read_table(path)
    wanted = ("image",) + tuple(c.lower() for c in ISIC2018_COLUMNS)
    index = _column_index(df.columns, wanted, wanted, path)
    images = [_text(v) for v in df.iloc[:, index["image"]]]
    classes = wanted[1:]
    values = zip(*([_one_hot(_text(v)) for v in df.iloc[:, index[c]]] for c in classes))
    dx, bad = [], []
    for r, image, row in zip(rows, images, values):
        hot = [c for c, v in zip(classes, row) if v == 1]
        if None in row or len(hot) != 1:
            bad.append(f"row {r} ({_shown(image)})")
        dx.append(hot[0] if hot else "")
    if bad:
        raise HamdataError(
            f"{path}: {_listing(bad)} not one-hot: expected exactly one 1 among "
            f"{', '.join(ISIC2018_COLUMNS)} and 0 elsewhere (0/1 or 0.0/1.0)"
        )
    return pd.DataFrame({"image_id": images, "dx": dx}), rows, warnings


def _isic_groups(path: Path) -> dict[str, tuple[str, str]]:
    """image -> (lesion_id, dx_type) from the lesion groupings."""
    df, rows, _ = _read_table(path)
    wanted = ("image", "lesion_id", "diagnosis_confirm_type")
    index = _column_index(df.columns, wanted, wanted[:2], path)
    images = [_text(v) for v in df.iloc[:, index["image"]]]
    _check_image_ids(images, rows, path)
    lesions = [_text(v) for v in df.iloc[:, index["lesion_id"]]]
    if "diagnosis_confirm_type" in index:
        confirm = [_text(v) for v in df.iloc[:, index["diagnosis_confirm_type"]]]
    else:
        confirm = [""] * len(images)
    dx_types = [_CONFIRM_TYPES.get(c.lower(), c) for c in confirm]
    return dict(zip(images, zip(lesions, dx_types)))


def _read_isic(truth: Path, groups: Path | None) -> tuple[pd.DataFrame, list[str]]:
    df, rows, warnings = _isic_truth(truth)
    ids = list(df["image_id"])
    if groups is None:
        warnings.append(f"no {_ISIC_GROUPS} found beside {truth}: each image is its own lesion")
        grouping = {}
    else:
        grouping = _isic_groups(groups)
        ungrouped = [i for i in ids if i not in grouping]
        if ungrouped:
            warnings.append(
                f"{groups}: no row for {len(ungrouped)} images ({_listing(ungrouped)}): "
                f"each is its own lesion"
            )
    df["lesion_id"] = [grouping.get(i, (i, ""))[0] for i in ids]
    df["dx_type"] = [grouping.get(i, (i, ""))[1] for i in ids]
    out, more = _validate(df, truth, rows)
    return out, warnings + more


# ---------------------------------------------------------------- images


def _image_id(name: str) -> str | None:
    """The image_id a file name stands for, or None for other files (and "._x.jpg" forks)."""
    stem, ext = os.path.splitext(name)
    if name.startswith(".") or not stem or ext.lower() not in IMAGE_EXTENSIONS:
        return None
    return stem


def _add(found: dict[str, str], image_id: str, locator: str, container: Path) -> None:
    if image_id in found:
        raise HamdataError(
            f"{container}: two files for image {image_id}: {found[image_id]} and {locator}: "
            f"expected one image per image_id"
        )
    found[image_id] = locator


def _scan_folder(folder: Path) -> dict[str, str]:
    try:
        names = sorted(e.name for e in os.scandir(folder) if e.is_file())
    except OSError as e:
        raise HamdataError(f"cannot list {folder}: {e.strerror or e}") from None
    found: dict[str, str] = {}
    for name in names:
        if (image_id := _image_id(name)) is not None:
            _add(found, image_id, str(folder / name), folder)
    return found


def _scan_zip(path: Path) -> dict[str, str]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = sorted(i.filename for i in zf.infolist() if not i.is_dir())
    except (OSError, zipfile.BadZipFile) as e:
        raise HamdataError(f"{path} is not a readable zip file: {e}") from None
    found: dict[str, str] = {}
    for name in names:
        if (image_id := _image_id(posixpath.basename(name))) is not None:
            _add(found, image_id, f"zip:{path}!{name}", path)
    return found


def _find_images(containers: list[Path]) -> dict[str, str]:
    """Images of all containers; an id in several containers is taken from the first."""
    found: dict[str, str] = {}
    for container in containers:
        scan = _scan_zip if container.suffix.lower() == ".zip" else _scan_folder
        for image_id, locator in scan(container).items():
            found.setdefault(image_id, locator)
    return found


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


def _make_source(root, layout, metadata_path, metadata, warnings, containers) -> Source:
    found = _find_images(containers)
    ids = list(metadata["image_id"])
    images = {i: found[i] for i in ids if i in found}
    if not images:
        raise HamdataError(
            f"no images found for the {len(ids)} rows of {metadata_path}: expected "
            f"<image_id>.jpg, .jpeg or .png in {', '.join(str(c) for c in containers)}"
        )
    extra = sorted(set(found) - set(ids))
    if extra:
        warnings = warnings + [
            f"{len(extra)} images have no row in {metadata_path} and are ignored: {_listing(extra)}"
        ]
    return Source(root, layout, metadata_path, metadata, images, tuple(warnings))


def _detect_isic2018(root: Path) -> Source | None:
    folder = _child(root, _ISIC_INPUT, want_dir=True)
    if folder is None:
        return None
    # the ISIC zips unpack each CSV into a folder named after it
    places = [root, folder, root / Path(_ISIC_TRUTH).stem, root / Path(_ISIC_GROUPS).stem]
    truth = _first_file(places, _ISIC_TRUTH)
    if truth is None:
        raise HamdataError(
            f"{root} has {folder.name}/ but no {_ISIC_TRUTH}: looked in "
            f"{', '.join(str(d) for d in places[:3])}"
        )
    groups = _first_file(places, _ISIC_GROUPS)
    metadata, warnings = _read_isic(truth, groups)
    return _make_source(root, "isic2018", truth, metadata, warnings, [folder])


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
    metadata, more = _read_metadata(path)
    dataverse = (
        path.suffix.lower() != ".csv"
        or "dataset" in metadata.columns
        or any(c.suffix.lower() == ".zip" for c in containers)
    )
    layout = "dataverse" if dataverse else "kaggle"
    return _make_source(root, layout, path, metadata, warnings + more, containers)


def _has_required_columns(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return False
    utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))  # as _decode reads it
    text = head.decode("utf-16" if utf16 else "utf-8-sig", errors="replace")
    line = next((line for line in text.splitlines() if line.strip()), "")
    names = next(csv.reader([line], delimiter=_sniff(line)), [])
    return set(REQUIRED_COLUMNS) <= {n.strip().lower() for n in names}


def _flat_metadata(root: Path) -> tuple[Path | None, list[str]]:
    path, warnings = _ham_metadata(root)
    if path is not None:
        return path, warnings
    csvs = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    candidates = [p for p in csvs if _has_required_columns(p)]
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
        if _find_images(folders):
            raise HamdataError(
                f"{root} has images but no metadata CSV: expected one *.csv with columns "
                f"image_id and dx beside them"
            )
        return None
    metadata, more = _read_metadata(path)
    return _make_source(root, "flat", path, metadata, warnings + more, folders)


# ---------------------------------------------------------------- public API


def open_source(data_dir) -> Source:
    """Detect the layout of `data_dir`, read and validate its metadata, find its images."""
    root = Path(data_dir)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise HamdataError(f"data directory {root} {what}: {_LOOKED_FOR}")
    root = root.resolve()
    for detect in (_detect_isic2018, _detect_ham10000, _detect_flat):
        try:
            source = detect(root)
        except OSError as e:  # e.g. an unreadable folder
            raise HamdataError(f"cannot read {e.filename or root}: {e.strerror or e}") from None
        if source is not None:
            return source
    raise HamdataError(f"no HAM10000 copy found in {root}: {_LOOKED_FOR}")


def read_metadata(path) -> pd.DataFrame:
    """Read and validate a metadata table (.csv, .tab or no extension; comma or tab).

    Warnings (e.g. Latin-1 fallback, no lesion_id column) are in ``df.attrs["warnings"]``.
    """
    df, warnings = _read_metadata(Path(path))
    df.attrs["warnings"] = tuple(warnings)
    return df


def validate_metadata(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Validate a raw metadata table; `origin` names it in error messages.

    Returns METADATA_COLUMNS (+ "dataset" when present): strings stripped, dx
    lower-cased, age float (NaN when empty), empty dx_type/sex/localization ->
    "unknown", lesion_id = image_id when the column is absent, RangeIndex, input
    row order. Rows are numbered by position from 1. Warnings in ``attrs["warnings"]``.
    """
    out, warnings = _validate(df, origin)
    out.attrs["warnings"] = tuple(warnings)
    return out


@functools.lru_cache(maxsize=8)
def _open_zip(path: str, pid: int) -> zipfile.ZipFile:
    # pid is part of the key: a ZipFile inherited through fork shares its file
    # offset with the parent, so each worker process opens its own.
    return zipfile.ZipFile(path)


def read_image_bytes(locator: str) -> bytes:
    """Bytes of an image: a file path, or "zip:<zip path>!<member>"."""
    match = _ZIP_LOCATOR.fullmatch(locator)
    if match is None:
        try:
            return Path(locator).read_bytes()
        except FileNotFoundError:
            raise HamdataError(f"image file {locator} not found") from None
        except OSError as e:
            raise HamdataError(f"cannot read image file {locator}: {e.strerror or e}") from None
    zip_path, member = match["zip"], match["member"]
    try:
        return _open_zip(zip_path, os.getpid()).read(member)
    except FileNotFoundError:
        raise HamdataError(f"zip file {zip_path} not found") from None
    except KeyError:
        raise HamdataError(f"{zip_path} has no member {member!r}") from None
    except (OSError, zipfile.BadZipFile, zlib.error) as e:
        raise HamdataError(f"cannot read {member!r} from {zip_path}: {e}") from None


def missing_images(source: Source) -> list[str]:
    """Sorted image_ids of the metadata for which no image was found."""
    return sorted(set(source.metadata["image_id"]) - set(source.images))
