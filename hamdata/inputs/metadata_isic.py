"""Parse the tables of the ISIC 2019 Task 1 training set and of ISIC-archive exports of every era.

Each gives a raw table in the collection's own words, which hamdata.inputs.merge maps
onto the build's classes and the one site vocabulary (RAW_COLUMNS):

- image_id: the ISIC id (``ISIC_0000123``); ISIC 2019 names some images
  ``ISIC_0000123_downsampled``: the suffix is dropped from image_id (so the
  image meets its other copies by id) and kept in file_id, the file's stem.
- labels: the row's source labels, most specific first (ISIC 2019: the one-hot
  column holding 1.0; archive: the diagnosis path deepest first, then the legacy
  ``diagnosis``); label: the most specific of them, for messages.
- malignancy: the row's own benign/malignant field where the layout has one.
- lesion_id / patient_id: as given, empty when missing (each such image is then
  its own lesion and joins no patient).
- age: float, NaN when missing; sex, localization as given, empty when missing;
  site: the build's site where the layout's own hierarchy decided it, else empty
  (hamdata.inputs.merge then reads localization through the site table).
- image_type: the archive's image type, empty where a layout has none.

Every field follows the one missing-value rule of hamdata.inputs.metadata.is_missing
(empty, nan, NaN, None, null, NA, and the field's own "unknown").

A table that lists one image_id twice keeps its first row; the others come
back in ``repeated`` (image_id, file_id, row) to be listed as same-id duplicates.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hamdata.errors import HamdataError
from hamdata.inputs.hierarchy import (DIAGNOSIS_LEVELS, SITE_LEVELS, SITE_SPECIAL, SPECIAL_SITES, diagnosis_candidates, path_of,
                        site_of, unseen)
from hamdata.inputs.metadata import (
    cell_text,
    check_image_ids,
    column_index,
    field_text,
    listing,
    one_hot_labels,
    parse_ages,
    read_table,
)

ISIC2019_LABELS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
ISIC2019_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_METADATA = "ISIC_2019_Training_Metadata.csv"
ARCHIVE_METADATA = "metadata.csv"
DOWNSAMPLED = "_downsampled"
RAW_COLUMNS = ("image_id", "file_id", "label", "labels", "malignancy", "lesion_id", "patient_id", "dx_type", "age",
               "sex", "localization", "site", "image_type")
UNKNOWN_WORDS = ("unknown",)  # the ISIC tables' own word for a missing value (ISIC 2020 diagnosis, sites)


def isic_id(name: str) -> str:
    """The ISIC id of an image name: ``ISIC_0000123_downsampled`` -> ``ISIC_0000123``."""
    return name[: -len(DOWNSAMPLED)] if name.endswith(DOWNSAMPLED) and len(name) > len(DOWNSAMPLED) else name


def fields(df: pd.DataFrame, index: dict, names, unknown=UNKNOWN_WORDS) -> dict[str, list[str]]:
    """The named columns' cells by the missing-value rule ("" when missing); a column the table lacks is all ""."""
    empty = [""] * len(df)
    return {n: ([field_text(v, unknown) for v in df.iloc[:, index[n]]] if n in index else empty) for n in names}


def raw_table(names: list[str], rows: list[int], **columns) -> pd.DataFrame:
    """A raw table (RAW_COLUMNS + row) of image names and their columns; an absent column is empty."""
    n = len(names)
    labels = [tuple(c for c in cand if c) for cand in columns.get("labels", [()] * n)]
    table = {"image_id": [isic_id(v) for v in names], "file_id": names, "label": [c[0] if c else "" for c in labels],
             "labels": labels}
    for name in RAW_COLUMNS[4:]:
        default = [float("nan")] * n if name == "age" else [""] * n
        table[name] = columns.get(name, default)
    table["row"] = rows
    return pd.DataFrame(table)


def first_rows(table: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """The table without repeated image_ids (first kept), and the repeats."""
    repeated_mask = table["image_id"].duplicated(keep="first")
    repeats = [{"image_id": r.image_id, "file_id": r.file_id, "row": int(r.row)}
               for r in table[repeated_mask].itertuples(index=False)]
    return table[~repeated_mask].drop(columns="row").reset_index(drop=True), repeats


def unseen_warnings(path: Path, columns: str, paths, kind: str) -> list[str]:
    """One warning per hierarchy value that the published tree does not hold (read through its parent)."""
    counts: dict[tuple, int] = {}
    for levels in paths:
        found = unseen(levels, kind)
        if found is not None:
            counts[found] = counts.get(found, 0) + 1
    return [f"{path}: {columns} value {value!r} ({n} rows) is not in the ISIC {kind} hierarchy hamdata ships: "
            + ("read through its parent level" if depth else f"read as unknown{' site' if kind == 'site' else ''}")
            for (value, depth), n in sorted(counts.items())]


def parse_isic2019(truth: Path, metadata: Path | None) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """The raw table of an ISIC 2019 Task 1 training copy, its repeated ids, and warnings."""
    df, rows, warnings = read_table(truth)
    wanted = ("image",) + tuple(c.lower() for c in ISIC2019_LABELS)
    required = wanted[:-1]  # UNK may be absent
    index = column_index(df.columns, wanted, required, truth)
    names = [cell_text(v) for v in df.iloc[:, index["image"]]]
    check_image_ids(names, rows, truth)
    present = [c for c in ISIC2019_LABELS if c.lower() in index]
    labels = one_hot_labels(df, rows, index, present, names, truth)
    extra = {n: {} for n in ("age_approx", "anatom_site_general", "lesion_id", "sex")}
    if metadata is None:
        warnings.append(f"no {ISIC2019_METADATA} beside {truth}: no age, sex, site or lesion ids; "
                        f"each image is its own lesion")
    else:
        mdf, mrows, more = read_table(metadata)
        warnings += more
        mindex = column_index(mdf.columns, ("image",) + tuple(extra), ("image",), metadata)
        mnames = [cell_text(v) for v in mdf.iloc[:, mindex["image"]]]
        check_image_ids(mnames, mrows, metadata)
        columns = fields(mdf, mindex, extra)
        for n in extra:
            extra[n] = dict(zip(mnames, columns[n]))
        unlisted = [n for n in names if n not in extra["age_approx"]]
        if unlisted:
            warnings.append(f"{metadata}: no row for {len(unlisted)} images ({listing(unlisted)}): "
                            f"no age, sex, site or lesion id for them")
    ages = parse_ages([extra["age_approx"].get(n, "") for n in names], rows, metadata or truth)
    table = raw_table(
        names, rows, labels=[(label,) for label in labels],
        lesion_id=[extra["lesion_id"].get(n, "") for n in names], age=ages,
        sex=[extra["sex"].get(n, "") for n in names],
        localization=[extra["anatom_site_general"].get(n, "") for n in names],
    )
    table, repeats = first_rows(table)
    return table, repeats, warnings


def parse_archive(path: Path) -> tuple[pd.DataFrame, list[dict], list[str]]:
    """The raw table of an ISIC-archive export of any era, its repeated ids, and warnings.

    The archive writes ``isic_id,attribution,copyright_license`` and then, sorted, every field that some exported
    row fills (ImageMarkup/isic-cli ``isic_cli/cli/utils.py::_extract_metadata``; ImageMarkup/isic
    ``isic/core/services/__init__.py::image_metadata_csv``), so columns are looked up by name and may be absent:

    - today (2026-): ``anatom_site_1..5``, ``anatom_site_special``, ``diagnosis_1..5``, ``image_type``, ...;
    - 2024-2026: ``anatom_site_general`` with ``diagnosis_1..5`` (until 2025 also the flat ``diagnosis``);
    - legacy (-2024): ``diagnosis``, ``benign_malignant``, ``anatom_site_general``.

    Labels: the diagnosis path deepest first, then the legacy ``diagnosis`` (hamdata.inputs.hierarchy); the malignancy
    field is ``diagnosis_1``, else ``benign_malignant``. Sites: the ``anatom_site_1..5`` path through the site
    table (``anatom_site_special`` palms/soles and oral/genital first), else ``anatom_site_general``. A hierarchy
    value that the published tree does not hold is read through its parent, with one warning per value.
    """
    df, rows, warnings = read_table(path)
    wanted = ("isic_id", "lesion_id", "patient_id", "age_approx", "sex", "anatom_site_general", SITE_SPECIAL,
              "diagnosis_confirm_type", "benign_malignant", "diagnosis", "image_type") + DIAGNOSIS_LEVELS + SITE_LEVELS
    index = column_index(df.columns, wanted, ("isic_id",), path)
    if not any(f in index for f in DIAGNOSIS_LEVELS + ("diagnosis",)):
        raise HamdataError(f"{path}: no diagnosis column: expected diagnosis_1 .. diagnosis_5 (ISIC archive, "
                           f"2024 and later) or diagnosis (older exports); download the metadata with "
                           f"`isic metadata download`")
    names = [cell_text(v) for v in df.iloc[:, index["isic_id"]]]
    check_image_ids(names, rows, path)
    col = fields(df, index, wanted[1:])
    diagnoses = list(zip(*(col[f] for f in DIAGNOSIS_LEVELS)))
    sites = list(zip(*(col[f] for f in SITE_LEVELS)))
    warnings += unseen_warnings(path, "diagnosis_1..5", diagnoses, "diagnosis")
    warnings += unseen_warnings(path, "anatom_site_1..5", sites, "site")
    site = [site_of(p, special) if path_of(p) or special.lower() in SPECIAL_SITES else ""
            for p, special in zip(sites, col[SITE_SPECIAL])]
    # the path as the original value where it decided the site; anatom_site_general where it did not
    localization = [" > ".join(path_of(p)) if s or not general else general
                    for p, s, general in zip(sites, site, col["anatom_site_general"])]
    table = raw_table(
        names, rows,
        labels=[diagnosis_candidates(d) + (legacy,) for d, legacy in zip(diagnoses, col["diagnosis"])],
        malignancy=[d[0] or bm for d, bm in zip(diagnoses, col["benign_malignant"])],
        lesion_id=col["lesion_id"], patient_id=col["patient_id"], dx_type=col["diagnosis_confirm_type"],
        age=parse_ages(col["age_approx"], rows, path), sex=col["sex"],
        localization=localization, site=site,
        image_type=col["image_type"],
    )
    table, repeats = first_rows(table)
    return table, repeats, warnings
