"""The build folder's owner: what a build or balanced set holds, declared, written and read in one place.

- ``schema``: the sample, declared once (its json fields in formats 1-3, its manifest.csv row, how an input row
  becomes a sample record);
- ``writer``: ``BuildWriter``, the one writer of shards, manifest.csv, train statistics, _info.json and dataset.json,
  which build-shards and balance both use;
- ``card``: ``Build.open(path)``, the one reader: a frozen, typed card;
- ``shards`` and ``manifest``: the tar and CSV formats underneath.

    from hamdata.store import Build
    build = Build.open("shards")
    build.classes, build.counts["test"], build.shard_paths("val"), build.balanced_sets
"""

from hamdata.store.card import (BALANCED_PATTERN, Build, Shard, TrainStats, balanced_folders, balanced_name, balanced_sets,
                                is_balanced_name)
from hamdata.store.schema import JSON_SCHEMAS, MANIFEST_COLUMNS, sample_json, sample_record
from hamdata.store.writer import BuildWriter

__all__ = ["BALANCED_PATTERN", "Build", "BuildWriter", "JSON_SCHEMAS", "MANIFEST_COLUMNS", "Shard", "TrainStats",
           "balanced_folders", "balanced_name", "balanced_sets", "is_balanced_name", "sample_json", "sample_record"]
