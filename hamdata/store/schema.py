"""The sample, declared once: its ``.json`` member in each format, its manifest.csv row, and how a kept input row
becomes a sample record.

A sample of a build is three tar members under one key (``hamdata.store.shards``): the image, ``cls`` (the class
index in the build's class list) and ``json``, whose fields are those of the build's format:

- format 1: JSON_FIELDS (HAM10000 only);
- format 2: and INPUT_FIELDS, where the sample comes from (site, collection, input, file, patient, group);
- format 3: and TABULAR_FIELDS, in a build of an input with measurements (ISIC 2024 SLICE-3D).

manifest.csv holds one row of MANIFEST_COLUMNS per sample (a format 1 manifest lacks the last two).
"""

from __future__ import annotations

import json
import math

import numpy as np

JSON_FIELDS = (
    "image_id", "lesion_id", "dx", "dx_type", "age", "sex", "localization",
    "split", "source", "parent", "recipe",
)
# Format 2 adds where a sample comes from: the unified site, its collection, the index of its --data, its
# file's stem, its patient id (or null) and its group (lesions, patients and duplicates that share a split).
INPUT_FIELDS = ("site", "collection", "input", "file_id", "patient_id", "group")
# Format 3 adds, in a build of an input with tabular measurements (ISIC 2024 SLICE-3D), the image type and the
# numeric columns: ``features`` {column: number or null}; every sample of such a build has both (others: {}).
TABULAR_FIELDS = ("image_type", "features")
JSON_SCHEMAS = (JSON_FIELDS, JSON_FIELDS + INPUT_FIELDS, JSON_FIELDS + INPUT_FIELDS + TABULAR_FIELDS)  # formats 1-3

MANIFEST_COLUMNS_V1 = (
    "key", "split", "label", "dx", "image_id", "lesion_id",
    "source", "parent", "recipe", "shard", "sha256",
)
MANIFEST_COLUMNS = MANIFEST_COLUMNS_V1 + ("collection", "group")  # format 2: a version 1 manifest lacks the last two

# The columns of an input's table (hamdata.inputs) that a sample record copies, in JSON_FIELDS order.
ROW_FIELDS = ("image_id", "lesion_id", "dx", "dx_type", "age", "sex", "localization")


def json_value(value):
    """Metadata cell -> JSON value: NaN -> null, integral floats -> int."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else float(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return str(value)


def sample_record(row, split: str, tabular: bool = False) -> dict:
    """The json record of a kept input row (a row of hamdata.inputs' table) in ``split``, an original.

    tabular: a format 3 build (its image type and numeric columns too).
    """
    record = {name: json_value(getattr(row, name)) for name in ROW_FIELDS}
    record.update(split=split, source="original", parent=None, recipe=None)
    for name in INPUT_FIELDS:
        if hasattr(row, name):
            record[name] = json_value(getattr(row, name)) if getattr(row, name) != "" else None
    if tabular:
        record["image_type"] = row.image_type or None
        names, values = row.features if row.features is not None else ((), ())
        record["features"] = {name: json_value(float(value)) for name, value in zip(names, values)}
    return record


def sample_json(record: dict) -> bytes:
    """The ``.json`` member: the schema's fields in schema order, compact, ASCII.

    A record with any of INPUT_FIELDS is written in the format 2 schema and needs all of them; one with
    TABULAR_FIELDS in the format 3 schema.
    """
    if any(name in record for name in TABULAR_FIELDS):
        fields = JSON_SCHEMAS[2]
    else:
        fields = JSON_SCHEMAS[1] if any(name in record for name in INPUT_FIELDS) else JSON_FIELDS
    missing = [name for name in fields if name not in record]
    if missing:
        raise ValueError(f"sample json lacks {missing}")
    return json.dumps({name: record[name] for name in fields}, separators=(",", ":")).encode("ascii")


def compact_json(value) -> str:
    """A value as one compact JSON text (a copy's recipe in its manifest row)."""
    return json.dumps(value, separators=(",", ":"))


def manifest_row(key: str, record: dict, label: int, shard: str, sha256: str, collection, group) -> dict:
    """The manifest.csv row of a sample written into ``shard``: ``record`` is its json record, ``sha256`` its image's
    digest; collection and group are given apart (a format 1 record has neither)."""
    recipe = record.get("recipe")
    return {"key": key, "split": record["split"], "label": label, "dx": record["dx"], "image_id": record["image_id"],
            "lesion_id": record["lesion_id"], "source": record["source"], "parent": record.get("parent"),
            "recipe": compact_json(recipe) if recipe else None, "shard": shard, "sha256": sha256,
            "collection": collection, "group": group}
