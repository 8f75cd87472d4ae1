"""Parse and validate HAM10000 metadata tables.

Reads the tables every input layout ships (hamdata.inputs.layouts finds them):

- HAM10000 metadata (Kaggle, Harvard Dataverse, flat folders): comma or tab
  separated, ``.csv``, ``.tab`` or no extension, UTF-8 (BOM or not), UTF-16
  with BOM, else Latin-1 with a warning; the Dataverse 8th column ``dataset``
  is kept. ``parse_metadata`` / ``read_metadata``.
- ISIC 2018 Task 3: the one-hot ground truth (``0/1`` or ``0.0/1.0``) and,
  when present, the lesion groupings, turned into the same table.
  ``parse_isic2018``.
- A table already in memory: ``validate_metadata``.

Every table goes through the same rules: image_id unique and usable as a
file name and shard key; dx one of the HAM10000 classes; lesion_id present
and one diagnosis per lesion (no lesion_id column: each image is its own
lesion, with a warning); age empty or 0 to MAX_AGE; empty dx_type, sex and
localization read as "unknown". A violation is a one-line HamdataError that
names the file and the rows.

Row numbers in error messages count data records from 1, the header not
counted: "row 12" is the 12th record after the header, i.e. line 13 of a file
without multi-line quoted fields. Blank records count but are skipped.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from pathlib import Path

import pandas as pd

from hamdata.inputs.classes import CLASSES, ISIC2018_COLUMNS
from hamdata.errors import HamdataError

METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
REQUIRED_COLUMNS = ("image_id", "dx")
KEPT_EXTRA_COLUMNS = ("dataset",)
UNKNOWN = "unknown"  # value of dx_type, sex and localization when empty or absent
MAX_AGE = 120
MAX_LISTED = 5  # offenders named in one error message
# File name of the optional ISIC 2018 lesion groupings, named in a warning when absent.
ISIC2018_GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"

_KNOWN_COLUMNS = METADATA_COLUMNS + KEPT_EXTRA_COLUMNS
_FILLED_COLUMNS = ("dx_type", "sex", "localization")
_UNKNOWN_SPELLINGS = ("unknown",)  # HAM10000's own word for a missing sex or localization
# image_ids become file names and shard keys: no dots, slashes or spaces.
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
# LesionGroupings "diagnosis_confirm_type" -> HAM10000 dx_type
_CONFIRM_TYPES = {
    "histopathology": "histo",
    "serial imaging showing no change": "follow_up",
    "single image expert consensus": "consensus",
    "confocal microscopy with consensus dermoscopy": "confocal",
}


# ---------------------------------------------------------------- messages


def _shown(value) -> str:
    """A value as it can appear in a one-line message: quoted when it holds a newline or other control."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def listing(items, limit: int = MAX_LISTED) -> str:
    """'a, b, c' with at most `limit` items, then 'and N more'.

    The one way error messages and warnings name offenders; values holding a
    newline or other control character are quoted, so messages stay one line.
    """
    items = [_shown(i) for i in items]
    text = ", ".join(items[:limit])
    return text + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _rows(numbers) -> str:
    numbers = list(numbers)
    return f"row {numbers[0]}" if len(numbers) == 1 else f"rows {listing(numbers)}"


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
            f"{origin}: {listing(ragged)}: expected {len(header)} fields like the header "
            f"(quote values that contain the separator)"
        )
    return header, [r for _, r in kept], [n for n, _ in kept]


def read_table(path: Path) -> tuple[pd.DataFrame, list[int], list[str]]:
    """Raw string table of a CSV/TSV file, its row numbers and decoding warnings."""
    text, warnings = _decode(path)
    header, records, rows = _parse_table(text, path)
    return pd.DataFrame(records, columns=header, dtype=object), rows, warnings


def column_index(names, wanted, required, origin) -> dict[str, int]:
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


def cell_text(value) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value).strip()


# The one missing-value rule of every field of every layout: these spellings (any case) mean "no value", as do
# a field's own "unknown" spellings (`unknown=`). pandas writes NaN as "nan" (or "NaN", "None", "NA", "null" with
# other tools) when it re-saves a table it read: such a cell is empty, never a lesion id or an age.
MISSING_SPELLINGS = frozenset({"", "nan", "none", "null", "na"})


def is_missing(value, unknown=()) -> bool:
    """Whether a cell holds no value: empty, nan, NaN, None, null, NA, or one of the field's `unknown` spellings."""
    text = cell_text(value).lower()
    return text in MISSING_SPELLINGS or text in unknown


def field_text(value, unknown=()) -> str:
    """A cell's text, stripped; "" when it is missing (see is_missing)."""
    return "" if is_missing(value, unknown) else cell_text(value)


# ---------------------------------------------------------------- validation


def check_image_ids(ids: list[str], rows: list[int], origin) -> None:
    empty = [r for r, i in zip(rows, ids) if not i]
    if empty:
        raise HamdataError(f"{origin}: empty image_id in {_rows(empty)}: expected an image id")
    odd = [f"row {r} ({i!r})" for r, i in zip(rows, ids) if not _ID_PATTERN.fullmatch(i)]
    if odd:
        raise HamdataError(
            f"{origin}: bad image_id in {listing(odd)}: expected letters, digits, '_' and '-' only"
        )
    seen: dict[str, list[int]] = {}
    for r, i in zip(rows, ids):
        seen.setdefault(i, []).append(r)
    dups = [f"{i} ({_rows(rs)})" for i, rs in seen.items() if len(rs) > 1]
    if dups:
        raise HamdataError(
            f"{origin}: duplicate image_id {listing(dups)}: expected each image once"
        )


def _check_dx(raw: list[str], dx: list[str], rows: list[int], origin) -> None:
    bad = [f"row {r} ({v!r})" for r, v, d in zip(rows, raw, dx) if d not in CLASSES]
    if bad:
        raise HamdataError(
            f"{origin}: unknown dx in {listing(bad)}: expected one of {', '.join(CLASSES)}"
        )


def parse_ages(raw: list[str], rows: list[int], origin) -> list[float]:
    ages, bad = [], []
    for r, v in zip(rows, raw):
        v = field_text(v, _UNKNOWN_SPELLINGS)
        try:
            age = float(v) if v else float("nan")
        except ValueError:
            age = -1.0
        if v and not 0 <= age <= MAX_AGE:
            bad.append(f"row {r} ({v!r})")
        ages.append(age)
    if bad:
        raise HamdataError(
            f"{origin}: bad age in {listing(bad)}: expected empty or a number from 0 to {MAX_AGE}"
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
    index = column_index(df.columns, _KNOWN_COLUMNS, REQUIRED_COLUMNS, origin)
    # Ids and diagnoses as written (an empty one is named in an error); every other field by the missing-value rule.
    col = {c: [(cell_text(v) if c in ("image_id", "dx") else field_text(v, _UNKNOWN_SPELLINGS))
               for v in df.iloc[:, i]] for c, i in index.items()}
    warnings = []
    check_image_ids(col["image_id"], rows, origin)
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
    ages = parse_ages(col.get("age", empty), rows, origin)
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


# ---------------------------------------------------------------- ISIC 2018


def one_hot(value: str):
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number in (0.0, 1.0) else None


def one_hot_labels(df: pd.DataFrame, rows: list[int], index: dict, columns, names: list[str], origin) -> list[str]:
    """Per row, the one column of `columns` (looked up lower-cased in `index`) that holds 1; a one-line error
    naming the rows that hold no 1, several, or a value other than 0/1 (or 0.0/1.0)."""
    values = zip(*([one_hot(cell_text(v)) for v in df.iloc[:, index[c.lower()]]] for c in columns))
    labels, bad = [], []
    for r, name, row in zip(rows, names, values):
        hot = [c for c, v in zip(columns, row) if v == 1]
        if None in row or len(hot) != 1:
            bad.append(f"row {r} ({_shown(name)})")
        labels.append(hot[0] if hot else "")
    if bad:
        raise HamdataError(
            f"{origin}: {listing(bad)} not one-hot: expected exactly one 1 among "
            f"{', '.join(columns)} and 0 elsewhere (0/1 or 0.0/1.0)"
        )
    return labels


def _isic_truth(path: Path) -> tuple[pd.DataFrame, list[int], list[str]]:
    """image_id and dx from the one-hot ground truth."""
    df, rows, warnings = read_table(path)
    wanted = ("image",) + tuple(c.lower() for c in ISIC2018_COLUMNS)
    index = column_index(df.columns, wanted, wanted, path)
    images = [cell_text(v) for v in df.iloc[:, index["image"]]]
    dx = [label.lower() for label in one_hot_labels(df, rows, index, ISIC2018_COLUMNS, images, path)]
    return pd.DataFrame({"image_id": images, "dx": dx}), rows, warnings


def _isic_groups(path: Path) -> dict[str, tuple[str, str]]:
    """image -> (lesion_id, dx_type) from the lesion groupings."""
    df, rows, _ = read_table(path)
    wanted = ("image", "lesion_id", "diagnosis_confirm_type")
    index = column_index(df.columns, wanted, wanted[:2], path)
    images = [cell_text(v) for v in df.iloc[:, index["image"]]]
    check_image_ids(images, rows, path)
    lesions = [field_text(v) or image for v, image in zip(df.iloc[:, index["lesion_id"]], images)]
    if "diagnosis_confirm_type" in index:
        confirm = [field_text(v) for v in df.iloc[:, index["diagnosis_confirm_type"]]]
    else:
        confirm = [""] * len(images)
    dx_types = [_CONFIRM_TYPES.get(c.lower(), c) for c in confirm]
    return dict(zip(images, zip(lesions, dx_types)))


def parse_isic2018(truth: Path, groups: Path | None) -> tuple[pd.DataFrame, list[str]]:
    """The validated metadata table of an ISIC 2018 Task 3 copy, and its warnings.

    truth: the one-hot ground truth CSV (image, MEL, NV, ...); names the table in errors.
    groups: the lesion groupings CSV (image, lesion_id, diagnosis_confirm_type), or
    None: then, and for images it has no row for, each image is its own lesion.
    """
    df, rows, warnings = _isic_truth(truth)
    ids = list(df["image_id"])
    if groups is None:
        warnings.append(f"no {ISIC2018_GROUPINGS} found beside {truth}: each image is its own lesion")
        grouping = {}
    else:
        grouping = _isic_groups(groups)
        ungrouped = [i for i in ids if i not in grouping]
        if ungrouped:
            warnings.append(
                f"{groups}: no row for {len(ungrouped)} images ({listing(ungrouped)}): "
                f"each is its own lesion"
            )
    df["lesion_id"] = [grouping.get(i, (i, ""))[0] for i in ids]
    df["dx_type"] = [grouping.get(i, (i, ""))[1] for i in ids]
    out, more = _validate(df, truth, rows)
    return out, warnings + more


# ---------------------------------------------------------------- public API


def parse_metadata(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """The validated metadata table of a file, and its warnings (as ``read_metadata``)."""
    df, rows, warnings = read_table(path)
    out, more = _validate(df, path, rows)
    return out, warnings + more


def header_names(path: Path) -> set[str]:
    """The column names of the header line of `path` (stripped, lower case); empty when unreadable.

    A cheap look (first 64 KiB) to pick a metadata CSV among other CSVs.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return set()
    utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))  # as _decode reads it
    text = head.decode("utf-16" if utf16 else "utf-8-sig", errors="replace")
    line = next((line for line in text.splitlines() if line.strip()), "")
    names = next(csv.reader([line], delimiter=_sniff(line)), [])
    return {n.strip().lower() for n in names}


def has_required_columns(path: Path) -> bool:
    """Whether the header line of `path` names image_id and dx; False when unreadable."""
    return set(REQUIRED_COLUMNS) <= header_names(path)


def read_metadata(path) -> pd.DataFrame:
    """Read and validate a metadata table (.csv, .tab or no extension; comma or tab).

    Warnings (e.g. Latin-1 fallback, no lesion_id column) are in ``df.attrs["warnings"]``.
    """
    df, warnings = parse_metadata(Path(path))
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
