"""`stats`: EDA tables and PNG plots of a build or of a raw copy (HAM10000, ISIC 2019, an ISIC-archive export).

Everything is computed from one table of per-sample metadata ("records"):
for a build it comes from the ``.json`` member of every sample (read by
streaming the tars, so no image is held in memory); for a raw copy it is the
validated metadata, with every row in the split ``all`` (an ISIC copy's labels
mapped onto the isic2019 classes through hamdata.inputs.merge). ``tables_from_records``
is pure; plotting and file writing happen at the edge, in ``run_stats``. The
per-collection tables and plot, and the duplicate and label summaries, come
from hamdata.pages.collections.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm import tqdm

from hamdata.inputs.classes import CLASS_SETS, CLASSES, class_set_name
from hamdata.pages.collections import (DEFAULT_COLLECTION, collection_counts, collection_split_counts, duplicates_summary,
                                 plot_collections, unmapped_rows, unmapped_table, duplicate_list_lines)
from hamdata.errors import HamdataError
from hamdata.store.card import Build
from hamdata.store.manifest import CARD_NAME
from hamdata.plots import new_figure, save_png
from hamdata.store.shards import TAR_ERRORS, iter_samples, tar_error_detail
from hamdata.split.stratified import SPLITS

RECORD_FIELDS = ("image_id", "lesion_id", "dx", "dx_type", "age", "sex", "localization", "split", "source", "collection")
TOP_LOCALIZATIONS = 15
DPI = 110
PLOT_NAMES = ("class_distribution", "images_per_lesion", "age_by_class", "sex_by_class", "localization", "collections")
RAW_CLASS_SET = "isic2019"  # the class set a raw ISIC copy's labels are mapped onto


def run_stats(path: Path, out: Path | None = None, progress: bool = True) -> dict:
    """Tables and plots of the build or raw copy at ``path``.

    path: a build (folder with dataset.json) or anything ``open_source`` accepts (HAM10000, ISIC 2019, an
    ISIC-archive export: the labels of an ISIC copy are mapped onto the isic2019 classes).
    out: folder for the PNGs (default: PATH/stats for a build, ./stats/<name> for a raw copy).
    progress: show a tqdm bar while reading shards.
    Returns {"text": str, "plots": [PNG paths as str], "tables": {name: DataFrame}}; the tables include
    ``collections`` and ``collection_splits`` (samples per collection and class, and split) and, when some
    labels had no class, ``unmapped``.
    """
    path = Path(path)
    if not path.exists():
        raise HamdataError(f"{path}: no such file or folder; expected a hamdata build, a HAM10000 copy or an ISIC copy")
    if (path / CARD_NAME).is_file():
        records, header, classes, extra = _build_records(path, progress)
        default_out = path / "stats"
    else:
        records, header, classes, extra = _raw_records(path)
        default_out = _raw_default_out(path)
    if records.empty:
        raise HamdataError(f"{path}: no samples to analyse")
    tables = {**tables_from_records(records, classes), **extra}
    out = Path(out) if out is not None else default_out
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(records, tables, out, classes)
    return {"text": "\n".join([*header, "", render_tables(tables)]), "plots": [str(p) for p in plots], "tables": tables}


# ---------------------------------------------------------------- reading


def _build_records(folder: Path, progress: bool) -> tuple[pd.DataFrame, list[str], tuple[str, ...], dict]:
    """Per-sample metadata of a build, from the json member of every sample; the header lines; its class list;
    the tables of its card (labels no class took)."""
    build = Build.open(folder)
    shards = build.shards
    rows: list[dict] = []
    bar = tqdm(total=sum(s.samples for s in shards), unit="sample", desc=f"stats {folder.name}",
               disable=not progress, dynamic_ncols=True)
    try:
        for entry in shards:
            rows += _read_shard(folder / entry.path, entry.split, bar)
    finally:
        bar.close()
    records = pd.DataFrame(rows, columns=list(RECORD_FIELDS))
    per_split = records["split"].value_counts()
    splits = ", ".join(f"{int(per_split[s])} {s}" for s in _split_order(per_split.index))
    header = [f"build {folder}: {len(records)} samples ({splits}) in {len(shards)} shards"]
    balanced = build.balanced_sets
    if balanced:
        header.append(f"balanced sets not included (run stats on each): {', '.join(balanced)}")
    summary = duplicates_summary(build)
    if summary:
        header.append(summary)
    return (records, header + _untaken_header(build), build.classes,
            _untaken_tables(build.unmapped, build.left_out))


def _untaken_header(build: Build) -> list[str]:
    """Lines on the rows a build did not take: labels, image types, listed pairs."""
    lines = []
    if build.unmapped:
        lines.append(f"labels no class took: {unmapped_rows(build.unmapped)} rows (table below)")
    if build.left_out:
        lines.append(f"image types left out: {unmapped_rows(build.left_out)} rows (table below)")
    return lines + duplicate_list_lines(build.duplicate_lists)


def _untaken_tables(unmapped, left_out) -> dict:
    """The tables of the labels no class took and of the image types left out, where there are any."""
    tables = {"unmapped": unmapped_table(unmapped), "left_out": unmapped_table(left_out, "image type")}
    return {name: table for name, table in tables.items() if table is not None}


def _read_shard(tar: Path, split: str | None, bar) -> list[dict]:
    """Metadata of every sample in one tar; images are read past and dropped at once."""
    if not tar.is_file():
        raise HamdataError(f"{tar}: shard listed in {CARD_NAME} is missing")
    rows, count = [], 0
    try:
        for sample in iter_samples(tar):
            count += 1
            rows.append(_record_of(tar, sample.key, sample.get("json"), split))
            bar.update(1)
    except TAR_ERRORS as exc:
        detail = tar_error_detail(exc).splitlines()[0]
        raise HamdataError(f"{tar}: unreadable tar after {count} samples ({detail})") from None
    return rows


def _record_of(tar: Path, key: str, meta: bytes | None, split: str | None) -> dict:
    if meta is None:
        raise HamdataError(f"{tar}: sample {key} has no .json member")
    try:
        record = json.loads(meta.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise HamdataError(f"{tar}: sample {key}: unreadable .json member ({exc})") from None
    if not isinstance(record, dict) or "dx" not in record:
        raise HamdataError(f"{tar}: sample {key}: .json member is not an object with a 'dx' field")
    row = {name: record.get(name) for name in RECORD_FIELDS}
    row["image_id"] = row["image_id"] or key
    row["split"] = row["split"] or split or "all"
    row["source"] = row["source"] or "original"
    row["collection"] = row["collection"] or DEFAULT_COLLECTION  # a format 1 build is HAM10000 alone
    return row


def _raw_records(path: Path) -> tuple[pd.DataFrame, list[str], tuple[str, ...], dict]:
    """Metadata of a raw copy, every row in split "all"; the header lines; its class list; more tables.

    A HAM10000 copy: its validated table as it is (every row, its dx codes; the ham10000 label map would map
    each code onto itself). An ISIC copy: see ``_raw_isic_records``.
    """
    from hamdata.inputs.layouts import open_source

    try:
        source = open_source(path)
    except HamdataError as exc:
        raise HamdataError(f"{path}: neither a hamdata build (no {CARD_NAME}) nor a readable HAM10000 or ISIC copy: "
                           f"{exc}") from None
    collection = getattr(source, "collection", DEFAULT_COLLECTION)
    if collection != DEFAULT_COLLECTION:
        return _raw_isic_records(path, source)
    records = source.metadata.assign(split="all", source="original", collection=collection)
    classes = classes_of(records["dx"])
    header = [f"raw dataset {path} ({source.layout} layout): {len(records)} metadata rows, "
              f"{len(source.images)} images found",
              f"class set: {class_set_name(classes) or ', '.join(classes)} (the table's dx codes)"]
    header += [f"warning: {w}" for w in source.warnings]
    return records, header, classes, {}


def _raw_isic_records(path: Path, source) -> tuple[pd.DataFrame, list[str], tuple[str, ...], dict]:
    """An ISIC 2019 or ISIC-archive copy read as a build reads it (hamdata.inputs.merge), its labels mapped onto the
    RAW_CLASS_SET classes by the shipped label map; rows that no class takes are counted, not analysed."""
    from hamdata.inputs.merge import open_inputs
    from hamdata.inputs.vocabulary import load_label_map

    label_map = load_label_map(RAW_CLASS_SET)
    inputs = open_inputs([path], label_map, on_error="skip")
    records = inputs.table.assign(split="all", source="original")
    untaken = unmapped_rows(inputs.unmapped)
    header = [f"raw dataset {path} ({source.layout} layout, collection {source.collection}): "
              f"{len(source.metadata) + len(source.repeated)} table rows, {len(source.images)} images found",
              f"class set: {RAW_CLASS_SET} (labels mapped by {', '.join(label_map.files)}): {len(records)} rows "
              f"counted, {untaken} rows no class took" + (" (table below)" if untaken else "")]
    if inputs.left_out:
        header.append(f"image types left out as a build leaves them out (--image-types dermoscopic): "
                      f"{unmapped_rows(inputs.left_out)} rows (table below)")
    if inputs.missing:
        header.append(f"{len(inputs.missing)} rows have no image file and are not counted")
    if source.repeated:
        header.append(f"{len(source.repeated)} rows repeat the image id of an earlier row and are not counted")
    header += [f"warning: {w}" for w in inputs.warnings]
    return records, header, CLASS_SETS[RAW_CLASS_SET], _untaken_tables(inputs.unmapped, inputs.left_out)


def _raw_default_out(path: Path) -> Path:
    """./stats/<name>; refuses a default that would land inside the raw input."""
    name = path.resolve().name or "dataset"
    out = Path("stats") / name
    root = path.resolve() if path.is_dir() else path.resolve().parent
    if out.resolve().is_relative_to(root):
        raise HamdataError(f"{path}: the default plot folder {out.resolve()} is inside the raw input; choose --out")
    return out


# ---------------------------------------------------------------- tables


def _split_order(splits) -> list[str]:
    present = set(splits)
    return [s for s in (*SPLITS, "all") if s in present] + sorted(present - {*SPLITS, "all"})


def classes_of(dx) -> tuple[str, ...]:
    """The first known class list (HAM10000's first) that holds every one of the codes ``dx``; HAM10000's if none does."""
    present = {str(d) for d in dx}
    return next((members for members in CLASS_SETS.values() if present <= set(members)), CLASSES)


def _clean(records: pd.DataFrame, classes: tuple[str, ...]) -> pd.DataFrame:
    """The columns the tables use, with defaults for missing cells (no mutation of the input)."""
    missing = [name for name in ("image_id", "dx") if name not in records]
    if missing:
        raise HamdataError(f"records: expected columns image_id and dx, missing {', '.join(missing)}")

    def column(name: str) -> pd.Series:
        return records[name] if name in records else pd.Series(np.nan, index=records.index, dtype=object)

    def filled(name: str, default) -> pd.Series:
        values = column(name)
        return values.where(values.notna() & (values.astype(str) != ""), default).astype(str)

    df = pd.DataFrame(index=records.index)
    df["image_id"] = records["image_id"].astype(str)
    df["lesion_id"] = filled("lesion_id", df["image_id"])  # no lesion_id: each image is its own lesion
    df["dx"] = records["dx"].astype(str)
    df["age"] = pd.to_numeric(column("age"), errors="coerce").astype(float)
    for name, default in (("sex", "unknown"), ("localization", "unknown"), ("split", "all"), ("source", "original"),
                          ("collection", DEFAULT_COLLECTION)):
        df[name] = filled(name, default)
    unknown = sorted(set(df["dx"]) - set(classes))
    if unknown:
        raise HamdataError(f"records: dx must be one of {', '.join(classes)}, got {', '.join(unknown)}")
    return df


def tables_from_records(records: pd.DataFrame, classes=None) -> dict[str, pd.DataFrame]:
    """EDA tables of per-sample metadata (columns as HAM10000's, optionally split and source).

    classes: the class list the rows of the per-class tables follow (a build's dataset.json ``classes``);
    default: the known class list that holds every dx of the records (``classes_of``).
    Returns class_counts, collections (samples per collection and class), collection_splits (per collection
    and split), lesions_per_class, images_per_lesion, age_by_class, sex_by_class, localization, and source
    (only when some samples are augmented); a record without a collection is ``ham10000``. Lesion tables count
    original samples only: augmented copies are not new images of a lesion.
    """
    classes = tuple(classes) if classes is not None else classes_of(records["dx"].astype(str) if "dx" in records else [])
    df = _clean(records, classes)
    originals = df[df["source"] != "augmented"]
    tables = {
        "class_counts": class_counts(df, classes),
        "collections": collection_counts(df, classes),
        "collection_splits": collection_split_counts(df),
        "lesions_per_class": lesions_per_class(originals, classes),
        "images_per_lesion": images_per_lesion(originals, classes),
        "age_by_class": age_by_class(df, classes),
        "sex_by_class": sex_by_class(df, classes),
        "localization": localization_counts(df),
    }
    if (df["source"] == "augmented").any():
        tables["source"] = source_counts(df, classes)
    return tables


def _with_total_row(table: pd.DataFrame, name: str = "total") -> pd.DataFrame:
    return pd.concat([table, table.sum().to_frame(name).T])


def class_counts(df: pd.DataFrame, classes=CLASSES) -> pd.DataFrame:
    """Samples per class (rows, in the order of ``classes``) and split (columns), with total and percent."""
    splits = _split_order(df["split"].unique())
    table = pd.crosstab(df["dx"], df["split"]).reindex(index=list(classes), columns=splits, fill_value=0)
    table["total"] = table.sum(axis=1)
    table = _with_total_row(table).astype("int64")
    table["percent"] = 100.0 * table["total"] / max(len(df), 1)
    table.index.name = "dx"
    table.columns.name = None
    return table


def lesions_per_class(df: pd.DataFrame, classes=CLASSES) -> pd.DataFrame:
    """Images, distinct lesions, and images per lesion (mean, max) of each class."""
    sizes = df.groupby(["dx", "lesion_id"]).size()
    per_class = sizes.groupby(level="dx")
    table = pd.DataFrame({"images": per_class.sum(), "lesions": per_class.size()})
    table = table.reindex(list(classes), fill_value=0).astype("int64")
    table = pd.concat([table, pd.DataFrame({"images": [len(df)], "lesions": [df["lesion_id"].nunique()]}, index=["total"])])
    table["images_per_lesion"] = table["images"] / table["lesions"].where(table["lesions"] > 0)
    maxima = per_class.max().reindex(list(classes), fill_value=0)
    table["max_images"] = [*maxima.astype("int64"), int(sizes.max()) if len(sizes) else 0]
    table.index.name = "dx"
    return table


def images_per_lesion(df: pd.DataFrame, classes=CLASSES) -> pd.DataFrame:
    """Number of lesions with 1, 2, 3, ... images (rows), per class and in total (columns)."""
    sizes = df.groupby(["dx", "lesion_id"]).size().rename("images").reset_index()
    table = pd.crosstab(sizes["images"], sizes["dx"]).reindex(columns=list(classes), fill_value=0)
    top = int(sizes["images"].max()) if len(sizes) else 1
    table = table.reindex(range(1, top + 1), fill_value=0).astype("int64")
    table["total"] = table.sum(axis=1)
    table.index.name = "images"
    table.columns.name = None
    return table


def age_by_class(df: pd.DataFrame, classes=CLASSES) -> pd.DataFrame:
    """Age summary per class and overall: count (ages given), missing, mean, median, min, max."""
    def summary(ages: pd.Series) -> dict:
        return {"count": int(ages.notna().sum()), "missing": int(ages.isna().sum()), "mean": ages.mean(),
                "median": ages.median(), "min": ages.min(), "max": ages.max()}

    rows = {dx: summary(df.loc[df["dx"] == dx, "age"]) for dx in classes}
    rows["all"] = summary(df["age"])
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "dx"
    return table


def sex_by_class(df: pd.DataFrame, classes=CLASSES) -> pd.DataFrame:
    """Samples per class (rows) and sex (columns: male, female, unknown, any other), with totals."""
    present = set(df["sex"])
    columns = [s for s in ("male", "female", "unknown") if s in present] + sorted(present - {"male", "female", "unknown"})
    table = pd.crosstab(df["dx"], df["sex"]).reindex(index=list(classes), columns=columns, fill_value=0)
    table["total"] = table.sum(axis=1)
    table = _with_total_row(table).astype("int64")
    table.index.name = "dx"
    table.columns.name = None
    return table


def localization_counts(df: pd.DataFrame, top: int = TOP_LOCALIZATIONS) -> pd.DataFrame:
    """Samples per body site (the ``top`` most common, the rest as one row) and split, with total."""
    splits = _split_order(df["split"].unique())
    table = pd.crosstab(df["localization"], df["split"]).reindex(columns=splits, fill_value=0)
    table["total"] = table.sum(axis=1)
    table = table.sort_values("total", ascending=False, kind="stable")
    if len(table) > top:
        rest = table.iloc[top:]
        table = pd.concat([table.iloc[:top], rest.sum().to_frame(f"other ({len(rest)} sites)").T])
    table = table.astype("int64")
    table.index.name = "localization"
    table.columns.name = None
    return table


def source_counts(df: pd.DataFrame, classes=CLASSES) -> pd.DataFrame:
    """Original and augmented samples per class and split (columns like ``train original``)."""
    splits = _split_order(df["split"].unique())
    columns = [f"{s} {src}" for s in splits for src in ("original", "augmented")]
    table = pd.crosstab(df["dx"], df["split"] + " " + df["source"]).reindex(index=list(classes), columns=columns, fill_value=0)
    table = _with_total_row(table).astype("int64")
    table.index.name = "dx"
    table.columns.name = None
    return table


TITLES = {
    "class_counts": "Samples per class and split",
    "collections": "Samples per collection and class",
    "collection_splits": "Samples per collection and split",
    "lesions_per_class": "Lesions per class (original samples)",
    "images_per_lesion": "Lesions by number of images (original samples)",
    "age_by_class": "Age per class (count = ages given)",
    "sex_by_class": "Sex per class",
    "localization": f"Localization (top {TOP_LOCALIZATIONS})",
    "source": "Original and augmented samples",
    "unmapped": "Labels no class took (rows not counted above)",
    "left_out": "Image types left out (rows not counted above)",
}


def render_tables(tables: dict[str, pd.DataFrame]) -> str:
    """All tables as text, each under its title."""
    parts = []
    for name, table in tables.items():
        title = TITLES.get(name, name)
        parts.append(f"{title}\n{'-' * len(title)}\n{table.to_string(float_format=lambda v: f'{v:.1f}')}")
    return "\n\n".join(parts)


# ---------------------------------------------------------------- plots


def _classes_of_table(table: pd.DataFrame) -> list[str]:
    """The class rows of a per-class table (its index without the total row)."""
    return [dx for dx in table.index if dx != "total"]


def write_plots(records: pd.DataFrame, tables: dict[str, pd.DataFrame], out: Path, classes=None) -> list[Path]:
    """The PNGs of PLOT_NAMES in ``out``; returns their paths in PLOT_NAMES order (classes: as for tables_from_records)."""
    classes = tuple(classes) if classes is not None else tuple(_classes_of_table(tables["class_counts"]))
    df = _clean(records, classes)
    drawers = {
        "class_distribution": lambda: plot_class_distribution(tables["class_counts"]),
        "images_per_lesion": lambda: plot_images_per_lesion(tables["images_per_lesion"]),
        "age_by_class": lambda: plot_age_by_class(df, classes),
        "sex_by_class": lambda: plot_sex_by_class(tables["sex_by_class"]),
        "localization": lambda: plot_localization(tables["localization"]),
        "collections": lambda: plot_collections(tables["collections"]),
    }
    return [save_png(drawers[name](), Path(out) / f"{name}.png", DPI) for name in PLOT_NAMES]


def plot_class_distribution(counts: pd.DataFrame) -> Figure:
    splits = [c for c in counts.columns if c not in ("total", "percent")]
    classes = _classes_of_table(counts)
    body = counts.loc[classes, splits]
    figure = new_figure()
    ax = figure.add_subplot()
    x = np.arange(len(classes))
    width = 0.8 / len(splits)
    for i, split in enumerate(splits):
        bars = ax.bar(x + (i - (len(splits) - 1) / 2) * width, body[split], width, label=split)
        ax.bar_label(bars, fontsize=7, padding=1)
    ax.set_xticks(x, classes)
    ax.set(title="Samples per class and split", xlabel="class (dx)", ylabel="samples")
    ax.legend(title="split")
    return figure


def plot_images_per_lesion(table: pd.DataFrame) -> Figure:
    figure = new_figure()
    ax = figure.add_subplot()
    x = np.arange(len(table))
    bottom = np.zeros(len(table))
    for dx in [c for c in table.columns if c != "total"]:
        ax.bar(x, table[dx], bottom=bottom, label=dx)
        bottom += table[dx].to_numpy()
    for xi, total in zip(x, table["total"]):
        ax.annotate(str(int(total)), (xi, total), ha="center", va="bottom", fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x, [str(i) for i in table.index])
    ax.set(title="Lesions by number of images", xlabel="images per lesion", ylabel="lesions")
    ax.legend(title="class", ncols=2)
    return figure


def plot_age_by_class(df: pd.DataFrame, classes=CLASSES) -> Figure:
    figure = new_figure()
    ax = figure.add_subplot()
    ages = [df.loc[(df["dx"] == dx) & df["age"].notna(), "age"].to_numpy() for dx in classes]
    ax.boxplot(ages, tick_labels=[f"{dx}\n(n={len(a)})" for dx, a in zip(classes, ages)])
    ax.set(title="Age per class", xlabel="class (dx)", ylabel="age (years)")
    ax.grid(axis="y", alpha=0.3)
    return figure


def plot_sex_by_class(table: pd.DataFrame) -> Figure:
    classes = _classes_of_table(table)
    body = table.loc[classes, [c for c in table.columns if c != "total"]]
    figure = new_figure()
    ax = figure.add_subplot()
    bottom = np.zeros(len(body))
    for sex in body.columns:
        ax.bar(classes, body[sex], bottom=bottom, label=sex)
        bottom += body[sex].to_numpy()
    ax.set(title="Sex per class", xlabel="class (dx)", ylabel="samples")
    ax.legend(title="sex")
    return figure


def plot_localization(table: pd.DataFrame) -> Figure:
    body = table.drop(columns="total").iloc[::-1]  # largest at the top
    figure = new_figure(8.0, max(4.0, 0.35 * len(body) + 1.5))
    ax = figure.add_subplot()
    left = np.zeros(len(body))
    for split in body.columns:
        ax.barh(list(body.index), body[split], left=left, label=split)
        left += body[split].to_numpy()
    ax.set(title="Samples per localization", xlabel="samples", ylabel="localization")
    ax.legend(title="split")
    return figure
