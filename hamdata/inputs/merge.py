"""Several inputs, one table: labels mapped onto the build's classes, one vocabulary, each image id once.

``open_inputs([DIR, DIR2, ...], label_map, on_error, image_types)`` opens every
input with hamdata.inputs.layouts, maps each row's source label through the label map
(hamdata.inputs.vocabulary), unifies site, sex and age, and merges the rows:

- an image id listed by an earlier input (or earlier in the same table) is one
  sample: the first ``--data`` wins, the later row goes to ``id_duplicates``
  (it still links groups: its lesion and patient ids belong to the same image);
- two inputs that give one image different classes, or different lesion ids
  of one scheme (``HAM_...`` against ``HAM_...``), are an error naming both;
- a label the map drops (empty class) is counted; a label the map does not
  know is an error, or skipped and counted with ``on_error="skip"``.

The table has one row per kept image (input order, then file order) with
``image_id, file_id, lesion_id, patient_id, dx, label, dx_type, age, sex,
localization, site, collection, input, locator``. An image without a row is
ignored (with a warning, as before); a row without an image is in ``missing``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from hamdata import memory
from hamdata.errors import HamdataError
from hamdata.inputs.layouts import Source, open_source
from hamdata.inputs.metadata import UNKNOWN, listing
from hamdata.inputs.vocabulary import LabelMap, unified_sex, unified_site, UNKNOWN_SITE

MALIGNANCY = "malignancy"  # the class set whose label comes from a row's own benign/malignant field first
NO_ENTRY = "no entry in the label map"
DEFAULT_IMAGE_TYPES = ("dermoscopic",)  # --image-types: what a build takes of an input that names image types
IMAGE_TYPES = ("dermoscopic", "clinical: overview", "clinical: close-up", "TBP tile: close-up", "TBP tile: overview",
               "RCM: macroscopic", "RCM: tile", "RCM: mosaic")  # isic-metadata fields.py ImageTypeEnum (562f25c)
NO_DIAGNOSIS = "no diagnosis (empty, nan or unknown)"
TABLE_COLUMNS = ("image_id", "file_id", "lesion_id", "patient_id", "dx", "label", "dx_type", "age", "sex",
                 "localization", "site", "collection", "input", "locator", "image_type", "features")


@dataclass
class Inputs:
    table: pd.DataFrame  # TABLE_COLUMNS, one row per kept image
    sources: list[Source]
    id_duplicates: list[dict] = field(default_factory=list)  # later rows of an image id already taken
    links: pd.DataFrame | None = None  # image_id, lesion_id, patient_id, collection of those later rows
    unmapped: dict = field(default_factory=dict)  # {collection: {label: {"rows": n, "reason": ...}}}
    missing: list[dict] = field(default_factory=list)  # rows with no image file in any input
    warnings: list[str] = field(default_factory=list)
    left_out: dict = field(default_factory=dict)  # {collection: {image type: {"rows": n, "reason": ..., "inputs"}}}
    rows: list[int] = field(default_factory=list)  # table rows of each input (its sources' tables are let go)

    def records(self, built: pd.DataFrame) -> list[dict]:
        """dataset.json ``inputs``: one entry per --data, in order; ``samples``: its rows among ``built`` (the
        table once duplicates found by content are dropped)."""
        out = []
        for i, s in enumerate(self.sources):
            kept = int((built["input"] == i).sum())
            out.append({"index": i, "root": str(s.root), "layout": s.layout, "collection": s.collection,
                        "metadata": str(s.metadata_path), "rows": self.rows[i],
                        "samples": kept, "warnings": list(s.warnings)})
        return out


def _normalised(source: Source) -> pd.DataFrame:
    """The source's rows with the raw columns of hamdata.inputs.metadata_isic (HAM10000 tables: label = dx)."""
    df = source.metadata
    if source.collection == "ham10000":
        df = df.assign(file_id=df["image_id"], label=df["dx"], labels=[(dx,) for dx in df["dx"]], malignancy="",
                       patient_id="", site="", image_type="")
    return df


def check_paths(inputs, out) -> None:
    """--data folders that exist, and an --out neither inside one nor holding one (checked before any heavy import)."""
    out = Path(out)
    for data in map(Path, inputs):
        if not data.exists():
            raise HamdataError(f"--data: no such folder: {data} (expected a HAM10000 or ISIC copy; `hamdata synth --out {data}` makes a synthetic one)")
        if out.resolve() == data.resolve() or data.resolve() in out.resolve().parents:
            raise HamdataError(f"--out {out} is inside the input folder {data}; choose a folder outside it")
        if out.resolve() in data.resolve().parents:  # --overwrite would delete the input with the old build
            raise HamdataError(f"--data {data} is inside the output folder {out}; choose an --out outside the input")


def check_image_types(image_types) -> tuple[str, ...] | None:
    """--image-types as a tuple of the archive's spellings (None: "all"); a one-line error for a type the archive
    does not have."""
    if isinstance(image_types, str):
        if image_types.strip().lower() == "all":
            return None
        image_types = [t for t in image_types.split(",")]
    spelled = {t.lower(): t for t in IMAGE_TYPES}
    chosen = [" ".join(t.split()) for t in image_types if t.strip()]
    unknown = [t for t in chosen if t.lower() not in spelled]
    if unknown or not chosen:
        raise HamdataError(f"--image-types: unknown image type {listing(unknown) if unknown else '(none given)'}: "
                           f"expected a comma-separated list of {', '.join(IMAGE_TYPES)}, or all")
    return tuple(dict.fromkeys(spelled[t.lower()] for t in chosen))


def _candidates(df: pd.DataFrame, class_set: str) -> list[tuple[str, ...]]:
    """Each row's labels to look up, most specific first; a malignancy build asks the row's own benign/malignant
    field first (ISIC 2020 target, benign_malignant, the archive's diagnosis_1)."""
    if class_set != MALIGNANCY:
        return list(df["labels"])
    return [((own,) if own else ()) + tuple(labels) for own, labels in zip(df["malignancy"], df["labels"])]


def _image_types(df: pd.DataFrame, source: Source, index: int, image_types, left_out: dict) -> pd.Series:
    """Which rows are of a chosen image type (a row without one is kept), counting the others per type."""
    if image_types is None:
        return pd.Series(True, index=df.index)
    chosen = {t.lower() for t in (*image_types, *source.own_image_types)}
    kinds = df["image_type"].fillna("").astype(str)
    keep = kinds.map(lambda t: not t or t.lower() in chosen)
    reason = f"image type not chosen (--image-types {','.join(image_types)})"
    for kind, n in kinds[~keep].value_counts().sort_index().items():
        _tally(left_out, source.collection, kind, reason, int(n), index)
    return keep


def _scheme(lesion: str) -> str:
    """The id scheme of a lesion id: its prefix before the first "_" ("HAM" for HAM_0000118)."""
    return lesion.split("_", 1)[0] if "_" in lesion else ""


def _map_labels(df: pd.DataFrame, source: Source, index: int, label_map: LabelMap, on_error: str,
                unmapped: dict) -> pd.Series:
    decided = [label_map.resolve(source.collection, c) for c in _candidates(df, label_map.class_set)]
    classes = [cls for cls, _ in decided]
    counts: dict = {}
    for cls, label in decided:
        if not cls:
            reason = NO_ENTRY if cls is None else ("dropped by the label map" if label else NO_DIAGNOSIS)
            counts.setdefault((label or "(none)", reason), 0)
            counts[(label or "(none)", reason)] += 1
    unknown = {label: n for (label, reason), n in counts.items() if reason == NO_ENTRY}
    if unknown and on_error == "fail":
        named = listing([f"{label!r} ({n} rows)" for label, n in sorted(unknown.items(), key=lambda kv: -kv[1])])
        raise HamdataError(
            f"{source.metadata_path}: label {named} of collection {source.collection} has no entry in the "
            f"{label_map.class_set} label map: add collection,label,class rows with --label-map FILE "
            f"(empty class drops the label), or pass --on-error skip to skip those rows"
        )
    for (label, reason), n in sorted(counts.items()):
        _tally(unmapped, source.collection, label, reason, n, index)
    return pd.Series(classes, index=df.index, dtype=object)


def _tally(counts: dict, collection: str, value: str, reason: str, rows: int, index: int) -> None:
    """Count `rows` rows of input `index` not taken, under counts[collection][value] (dataset.json ``unmapped``
    and ``left_out``: {"rows", "reason", "inputs"})."""
    entry = counts.setdefault(collection, {}).setdefault(value, {"rows": 0, "reason": reason, "inputs": []})
    entry["rows"] += rows
    if index not in entry["inputs"]:
        entry["inputs"].append(index)


def _unify(df: pd.DataFrame, source: Source, index: int, warnings: list[str]) -> pd.DataFrame:
    # A layout with a site hierarchy has decided the site already; the others go through the site table.
    sites = [given or unified_site(v) for given, v in zip(df["site"], df["localization"])]
    odd = sorted({str(v) for v, s in zip(df["localization"], sites) if s is None})
    if odd:
        warnings.append(f"{source.metadata_path}: site {listing(odd)} not in the site table: read as {UNKNOWN_SITE}")
    lesions = [lesion or image for lesion, image in zip(df["lesion_id"], df["image_id"])]
    return pd.DataFrame({
        "image_id": df["image_id"].to_numpy(), "file_id": df["file_id"].to_numpy(), "lesion_id": lesions,
        "patient_id": df["patient_id"].to_numpy(), "dx": df["dx"].to_numpy(), "label": df["label"].to_numpy(),
        "dx_type": [v or UNKNOWN for v in df["dx_type"]], "age": df["age"].to_numpy(),
        "sex": [unified_sex(v) for v in df["sex"]],
        "localization": [v or UNKNOWN for v in df["localization"]],
        "site": [s or UNKNOWN_SITE for s in sites], "collection": source.collection, "input": index,
        "locator": [source.images.get(i, "") for i in df["image_id"]],
        "image_type": df["image_type"].fillna("").to_numpy(),
        # (names, float row) per image of an input with measurements (SLICE-3D), else None
        "features": ([(source.feature_names, row) for row in df["features"]] if "features" in df.columns
                     else [None] * len(df)),
    })


def _conflict(first: dict, later: dict, sources: list[Source]) -> str | None:
    where = [f"{sources[r['input']].metadata_path}" for r in (first, later)]
    if first["dx"] != later["dx"]:
        return (f"image {later['image_id']} is {first['dx']} in {where[0]} but {later['dx']} in {where[1]}: "
                f"the inputs disagree on its label; fix one of them or drop it with --label-map")
    a, b = first["raw_lesion"], later["raw_lesion"]
    if a and b and a != b and _scheme(a) == _scheme(b):
        return (f"image {later['image_id']} belongs to lesion {a} in {where[0]} but to lesion {b} in {where[1]}: "
                f"the inputs disagree on its lesion; fix one of them")
    return None


def open_inputs(paths, label_map: LabelMap, on_error: str = "fail", image_types=DEFAULT_IMAGE_TYPES) -> Inputs:
    """Open and merge the inputs (see the module docstring); `image_types`: the image types kept (None: all)."""
    sources = [open_source(p) for p in paths]
    roots = [s.root for s in sources]
    again = [str(r) for r in roots if roots.count(r) > 1]
    if again:
        raise HamdataError(f"--data {again[0]} is given twice: give each input once")
    warnings: list[str] = []
    unmapped: dict = {}
    left_out: dict = {}
    kept_rows: list[pd.DataFrame] = []
    links: list[pd.DataFrame] = []
    first_of: dict[str, dict] = {}
    duplicates: list[dict] = []
    missing: list[dict] = []
    rows: list[int] = []
    for index, source in enumerate(sources):
        warnings += list(source.warnings)
        raw = _normalised(source)
        raw = raw[_image_types(raw, source, index, image_types, left_out).to_numpy()]
        mapped = raw.assign(dx=_map_labels(raw, source, index, label_map, on_error, unmapped).to_numpy())
        raw_lesions = mapped["lesion_id"].to_numpy()
        table = _unify(mapped[mapped["dx"].fillna("") != ""], source, index, warnings)
        table["raw_lesion"] = raw_lesions[(mapped["dx"].fillna("") != "").to_numpy()]
        take = []
        # One row at a time, and of each image only what a later copy is checked against: 401,059 row dicts
        # (ISIC 2024) would take a GiB.
        columns = ("image_id", "dx", "raw_lesion", "input", "locator")
        for image_id, dx, raw_lesion, input_index, locator in zip(*(table[c].to_numpy() for c in columns)):
            input_index = int(input_index)
            row = {"image_id": image_id, "dx": dx, "raw_lesion": raw_lesion, "input": input_index, "locator": locator}
            if not locator:
                missing.append({"image_id": image_id, "input": input_index})
                take.append(False)
                continue
            first = first_of.get(image_id)
            if first is None:
                first_of[image_id] = (dx, raw_lesion, input_index)
                take.append(True)
                continue
            first = {"image_id": image_id, "dx": first[0], "raw_lesion": first[1], "input": first[2]}
            problem = _conflict(first, row, sources)
            if problem:
                raise HamdataError(problem)
            duplicates.append({"image_id": row["image_id"], "kept_input": first["input"], "dropped_input": index,
                               "dropped_file": row["locator"], "evidence": "same image id"})
            take.append(False)
        take = pd.Series(take, index=table.index, dtype=bool)
        kept_rows.append(table[take])
        links.append(table[~take & (table["locator"] != "")])
        for r in source.repeated:
            duplicates.append({"image_id": r["image_id"], "kept_input": index, "dropped_input": index,
                               "dropped_file": source.images.get(r["image_id"], r["file_id"]),
                               "evidence": f"same image id ({r['file_id']}, row {r['row']} of the table)"})
        # What the table took from this input is in its rows now: let go of the raw table and the image list
        # (at ISIC 2024's 401,059 rows, 200 MiB that a build would otherwise carry to the end).
        rows.append(len(source.metadata) + len(source.repeated))
        sources[index] = replace(source, metadata=source.metadata.iloc[:0], images={})
        del raw, mapped, table
        memory.release(rows[-1])
    missing = [m for m in missing if m["image_id"] not in first_of]
    table = pd.concat(kept_rows, ignore_index=True) if kept_rows else pd.DataFrame(columns=TABLE_COLUMNS)
    if table.empty:
        types = sorted({t for per in left_out.values() for t in per})
        if types and not any(per for per in unmapped.values()):
            raise HamdataError(f"every image of {', '.join(str(Path(p)) for p in paths)} is of an image type not "
                               f"chosen ({listing(types)}): pass --image-types with those types, or all")
        raise HamdataError(f"no image of {', '.join(str(Path(p)) for p in paths)} maps to a class of the "
                           f"{label_map.class_set} class set: check --classes and --label-map")
    link_table = pd.concat(links, ignore_index=True)[["image_id", "lesion_id", "patient_id", "collection"]]
    return Inputs(table[list(TABLE_COLUMNS)].reset_index(drop=True), sources, duplicates, link_table, unmapped,
                  [{"image_id": m["image_id"], "input": m["input"]} for m in missing], warnings, left_out, rows)
