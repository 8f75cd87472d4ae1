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
    machine two threads contend with the loader and the other process, and train several times slower."""
    import torch

    torch.set_num_threads(1)
