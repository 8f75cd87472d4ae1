"""Reliability 1: `build-shards` killed with SIGKILL at several points, in real subprocesses.

After every kill: no folder that looks complete (no dataset.json at the target),
`verify` fails with one clear line, no worker process survives its build, and the
rerun with the same options succeeds, removes the stale temp folder and gives
the same bytes as a build that was never interrupted.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import (KILL_BETWEEN_RENAMES, assert_workers_gone, cli, files_of, kill, kill_after, start_cli, synthetic_data,
                     verify, wait_killed, wait_until)

OPTIONS = ["--size", "32", "--shard-size", "10", "--seed", "7"]
OUT = "shards"  # always relative to the test's own working folder, so dataset.json's config is identical


def leftovers(work: Path) -> list[str]:
    # .OUT.lock (hamdata.locks) may stay after a kill: it is harmless and the next run takes it over
    return sorted(p.name for p in work.iterdir() if p.name.startswith(f".{OUT}.") and p.name != f".{OUT}.lock")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """96 synthetic images at HAM10000's full size (seed 11; enough for a build to outlast 1.2 s by a margin that
    smaller pictures do not leave), shared read-only."""
    return synthetic_data(tmp_path_factory, 96, seed=11, image_size=(600, 450))


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """Every file of an uninterrupted build."""
    work = tmp_path_factory.mktemp("reference")
    files = rebuild(data, work, workers=1)
    assert any(name.startswith("val/") for name in files) and len([n for n in files if n.endswith(".tar")]) >= 8
    return files


def rebuild(data: Path, work: Path, workers: int, *extra: str) -> dict[str, bytes]:
    cwd = os.getcwd()
    os.chdir(work)
    try:
        result = cli("build-shards", "--data", data, "--out", OUT, *OPTIONS, "--workers", workers, *extra)
    finally:
        os.chdir(cwd)
    assert result.exit_code == 0, result.output
    assert leftovers(work) == [], "the rerun must remove the stale temp folder"
    return files_of(work / OUT)


def start(data: Path, work: Path, workers: int, *extra: str, hook: str = "") -> subprocess.Popen:
    """`python cli.py build-shards ...` in ``work``; ``hook`` is Python run before the CLI starts."""
    args = ["build-shards", "--data", str(data), "--out", OUT, *OPTIONS, "--workers", str(workers), *extra]
    return start_cli(args, work, hook or None)


def assert_nothing_looks_complete(work: Path) -> None:
    out = work / OUT
    assert not (out / "dataset.json").exists()
    assert not out.exists(), f"{out} must not exist after an interrupted first build"
    for temp in work.glob(f".{OUT}.tmp-*"):
        assert temp.is_dir()  # hidden, and never read by verify, stats or balance
    if leftovers(work):
        assert verify(out) == (1, [f"{out}: no dataset.json: the build there did not finish; run it again"])
    else:  # killed before it created anything: nothing there, which verify says in one line (exit 2)
        result = cli("verify", out)
        assert result.exit_code == 2 and result.stderr.splitlines() == [
            f"error: {out}: no such folder (expected a build made by `hamdata build-shards`, or a balanced set in it)"]


def temp_of(work: Path, proc: subprocess.Popen) -> Path:
    return work / f".{OUT}.tmp-{proc.pid}"


def tars_in(folder: Path, split: str = "*"):
    return lambda: folder.is_dir() and any(folder.glob(f"{split}/*.tar"))


POINTS = {
    "temp folder created": lambda temp: temp.is_dir,
    "first tar being written": lambda temp: tars_in(temp),
    "train done, val being written": lambda temp: tars_in(temp, "val"),
}


@pytest.mark.parametrize("point,workers", [("temp folder created", 1), ("first tar being written", 2),
                                           ("train done, val being written", 1)])
def test_kill_while_writing_then_rerun(data, reference, tmp_path, point, workers):
    proc = start(data, tmp_path, workers)
    wait_until(proc, POINTS[point](temp_of(tmp_path, proc)), point, "build-shards")
    pool = kill(proc)
    if workers > 1 and sys.platform.startswith("linux"):  # the workers (and multiprocessing's resource tracker)
        assert len(pool) >= workers, f"expected {workers} worker processes, saw {pool}"
    assert_workers_gone(pool)
    assert_nothing_looks_complete(tmp_path)
    assert leftovers(tmp_path) == [f".{OUT}.tmp-{proc.pid}"]
    assert rebuild(data, tmp_path, workers=2) == reference


@pytest.mark.parametrize("seconds,workers", [(0.3, 2), (1.2, 1)])
def test_kill_at_a_time_offset_then_rerun(data, reference, tmp_path, seconds, workers):
    proc = start(data, tmp_path, workers)
    time.sleep(seconds)
    if proc.poll() is not None:
        pytest.fail(f"build-shards ended before {seconds} s; make the data set larger")
    assert_workers_gone(kill(proc))
    assert_nothing_looks_complete(tmp_path)
    assert rebuild(data, tmp_path, workers=1) == reference


# Deterministic kill points: the subprocess SIGKILLs itself right after a chosen step.
KILL_AFTER_CARD = kill_after("hamdata.store.writer", "write_card")


def test_kill_after_the_card_is_written_but_before_the_move(data, reference, tmp_path):
    proc = start(data, tmp_path, 1, hook=KILL_AFTER_CARD)
    wait_killed(proc)
    assert (temp_of(tmp_path, proc) / "dataset.json").is_file()  # complete, but hidden
    assert_nothing_looks_complete(tmp_path)
    assert rebuild(data, tmp_path, workers=2) == reference


def test_overwrite_killed_keeps_the_old_build_or_is_recovered(data, reference, tmp_path):
    old = rebuild(data, tmp_path, 2, "--no-clahe")  # a different, complete build to be replaced
    assert old != reference
    # killed while writing: the old build is untouched and still verifies
    proc = start(data, tmp_path, 2, "--overwrite")
    wait_until(proc, tars_in(temp_of(tmp_path, proc)), "first tar being written", "build-shards")
    assert_workers_gone(kill(proc))
    assert files_of(tmp_path / OUT) == old
    assert verify(tmp_path / OUT) == (0, [])
    # killed between moving the old build aside and moving the new one in
    proc = start(data, tmp_path, 1, "--overwrite", hook=KILL_BETWEEN_RENAMES)
    wait_killed(proc)
    # the temp folder of the first kill was removed by this run; its own two are left
    assert leftovers(tmp_path) == [f".{OUT}.old-{proc.pid}", f".{OUT}.tmp-{proc.pid}"]
    assert_nothing_looks_complete(tmp_path)
    assert rebuild(data, tmp_path, 1, "--overwrite") == reference  # removes both hidden folders
