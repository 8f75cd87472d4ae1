"""hamdata: HAM10000 as preprocessed, lesion-aware, balanced WebDataset shards.

The public Python API, the functions the command line calls (docs/api.md)::

    import hamdata

    hamdata.build_shards(hamdata.BuildConfig(data="data/HAM10000", out="shards"))
    hamdata.balance_build("shards", hamdata.BalanceConfig(target=2000))
    problems = hamdata.verify_tree("shards")          # [] when the build and its balanced sets are intact
    build = hamdata.open_build("shards")              # its card: classes, counts, splits, shards, train_stats
    build.counts["test"], build.shard_paths("val"), build.balanced_sets

Importing hamdata loads none of them (the command line answers in a fraction of a second); each is imported on
first use. A user mistake raises ``hamdata.HamdataError`` with a one-line message.
"""

from __future__ import annotations

import importlib

from hamdata.errors import HamdataError

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "Build": "hamdata.store", "BuildConfig": "hamdata.build", "build_shards": "hamdata.build",
    "PreprocessConfig": "hamdata.image.preprocess", "SplitConfig": "hamdata.split.stratified", "BalanceConfig": "hamdata.balance",
    "balance_build": "hamdata.balance", "verify_tree": "hamdata.verify", "make_synthetic": "hamdata.synth.ham",
}
__all__ = ["HamdataError", "__version__", "open_build", *_API]


def open_build(path):
    """The card of the build or balanced set in folder ``path`` (``hamdata.store.Build``)."""
    from hamdata.store import Build

    return Build.open(path)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hamdata' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_API})
