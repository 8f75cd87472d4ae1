"""The build folder's owner: what a build or balanced set holds, read through one typed, frozen card.

    from hamdata.store import Build
    build = Build.open("shards")
    build.classes, build.counts["test"], build.shard_paths("val"), build.balanced_sets

(More of the folder moves here step by step: the sample schema and the one writer that build and balance share.)
"""

from hamdata.store.card import (BALANCED_PATTERN, Build, Shard, TrainStats, balanced_folders, balanced_name, balanced_sets,
                                is_balanced_name)

__all__ = ["BALANCED_PATTERN", "Build", "Shard", "TrainStats", "balanced_folders", "balanced_name", "balanced_sets",
           "is_balanced_name"]
