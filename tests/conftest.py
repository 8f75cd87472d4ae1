"""Shared fixtures: the real HAM10000 sample in ../shared, when it is there, and the small synthetic build."""

from pathlib import Path

import pytest

from helpers import REAL_SAMPLE_MISSING, SHARED

REAL_METADATA = SHARED / "HAM10000_metadata.csv"
REAL_IMAGES = SHARED / "images"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(REAL_SAMPLE_MISSING)
    return path


@pytest.fixture(scope="session")
def real_metadata_csv() -> Path:
    """The complete real HAM10000 metadata table (10,015 rows)."""
    return _need(REAL_METADATA)


@pytest.fixture(scope="session")
def real_images_dir() -> Path:
    """The folder holding 23 real 600x450 HAM10000 JPEGs."""
    return _need(REAL_IMAGES)


@pytest.fixture(scope="session")
def build(tmp_path_factory) -> Path:
    """The small synthetic build that most test files read: 160 images at 32 px, 25 samples a tar (several tars
    per split), made once per session by helpers.build_once; the images it was built from are in
    build.parent / "data". Read it, never write into it (copy it first). A test file that needs another
    build defines its own `build` fixture, which overrides this one in that file (test_balance, ...)."""
    from helpers import build_once

    return build_once(tmp_path_factory, 160, 32, shard_size=25)


@pytest.fixture(scope="session")
def balanced(build, tmp_path_factory) -> Path:
    """A balanced set of `build`, 6 samples per class (seed 1), written outside it (so its path back to the build
    is a long one), once per session; read it only. test_balance and test_report define balanced sets of their own."""
    from hamdata.balance import BalanceConfig, balance_build

    out = tmp_path_factory.mktemp("balanced")
    return Path(balance_build(build, BalanceConfig(target=6, seed=1), out=out, workers=1, progress=False)["out"])


def pytest_configure(config):
    """One torch thread, as the trainers' figures in the tests were measured: on the 2-vCPU CI
    machine two threads contend with the loader and the other process, and train several times slower.
    Not in pytest-xdist's controller, which runs no test: its ~2 s of importing torch would take a core from the
    workers while they collect."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):  # xdist's controller
        return
    import torch

    torch.set_num_threads(1)


# Seconds each test file took on the 2-core machine (pytest -n auto --durations=0, summed per file), heaviest
# first. The suite runs with --dist loadfile (setup.cfg): each file goes whole to one worker, so a module's
# fixtures are made once, and the workers take files in collection order. Collecting the heavy files first
# lets the light ones fill in behind them, instead of the heaviest arriving last on one worker while the
# other waits. Files not listed follow in their usual order; a stale figure only costs time, never a result.
HEAVY_FILES = {
    "test_phase4_acceptance.py": 49, "test_concurrency.py": 41, "test_phase5_acceptance.py": 33,
    "test_reliability_interrupt.py": 30, "test_demo.py": 30, "test_reliability_training.py": 30,
    "test_reliability_balance.py": 23, "test_phase6_acceptance.py": 23, "test_build.py": 22, "test_report.py": 22,
    "test_trainers_run.py": 21, "test_trainers_ddp.py": 20, "test_compile.py": 18, "test_slice3d_fusion.py": 16,
    "test_stats_report_collections.py": 15, "test_readers_timm_ray.py": 14, "test_published_formats.py": 12,
    "test_phase6_commands.py": 11, "test_dedup.py": 10, "test_holdout.py": 9,
}


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: -HEAVY_FILES.get(item.path.name, 0))  # stable: each file keeps its own order
