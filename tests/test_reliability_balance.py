"""Reliability 1 for `balance`: SIGKILL at several points in real subprocesses, and damaged train tars.

After every kill: no balanced-N/ (so no dataset.json there), `verify` fails with
clear lines, no worker process survives, and the rerun removes the stale hidden
folders and writes the same bytes as a balance that was never interrupted.
"""

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from hamdata.balance import BalanceConfig, balance_build
from hamdata.errors import HamdataError
from helpers import (KILL_BETWEEN_RENAMES, assert_workers_gone, cli, files_of, kill, kill_after, start_cli, synthetic_build,
                     verify, wait_killed, wait_until)

TARGET, SEED = 100, 5
SET = f"balanced-{TARGET}"
LEFT_OVER = "left over from an interrupted run; delete it"
# Python run before the CLI: 1 ms more per written sample (0.7 s in all), so that the
# poller sees every point well before the end. Workers and everything else run unchanged.
SLOW = """
import time
from hamdata.store.shards import ShardWriter
write = ShardWriter.write
def slow_write(self, *args, **kwargs):
    time.sleep(0.001)
    return write(self, *args, **kwargs)
ShardWriter.write = slow_write
"""
KILL_AFTER_CARD = kill_after("hamdata.store.writer", "write_card")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A small build (100 synthetic images at 32 px, 20 samples per tar) that every test copies."""
    return synthetic_build(tmp_path_factory.mktemp("balance-kill"), 100, 32, shard_size=20, seed=3)


@pytest.fixture(scope="module")
def reference(base, tmp_path_factory) -> dict[str, bytes]:
    """Every file of a balanced set that was never interrupted."""
    build = copy_build(base, tmp_path_factory.mktemp("reference"))
    balance_build(build, BalanceConfig(target=TARGET, seed=SEED), workers=1, progress=False)
    files = files_of(build / SET)
    assert len([name for name in files if name.endswith(".tar")]) >= 30
    return files


def copy_build(base: Path, work: Path) -> Path:
    return Path(shutil.copytree(base, work / "shards"))


def hidden(build: Path) -> list[str]:
    # .SET.lock (hamdata.locks) may stay after a kill: it is harmless and the next run takes it over
    return sorted(p.name for p in build.iterdir() if p.name.startswith(f".{SET}.") and p.name != f".{SET}.lock")


def start(build: Path, workers: int, *extra: str, hook: str = SLOW) -> subprocess.Popen:
    """`python cli.py balance ...` in a subprocess; ``hook`` is Python run before the CLI starts."""
    args = ["balance", "--target", str(TARGET), "--seed", str(SEED), "--shards", str(build), "--workers", str(workers), *extra]
    return start_cli(args, build.parent, hook)


def assert_no_balanced_set(build: Path, temp: Path) -> None:
    """Nothing that looks complete: balanced-N is absent, and verify says why, in one line per problem."""
    assert not (build / SET).exists(), f"{build / SET} must not exist after an interrupted balance"
    assert temp.is_dir()
    code, lines = verify(build / SET)
    assert (code, lines) == (1, [f"{build / SET}: no dataset.json: the build there did not finish; run it again"])
    # the build itself: each leftover is named (one line per file in it, or one line for the folder)
    code, lines = verify(build)
    per_file = [f"{p}: {LEFT_OVER}" for p in sorted(temp.rglob("*")) if p.is_file()]
    assert code == 1 and lines in (per_file, [f"{temp}: {LEFT_OVER}"]), lines


def rerun(build: Path, workers: int, *extra: str) -> dict[str, bytes]:
    result = cli("balance", "--target", TARGET, "--seed", SEED, "--shards", build, "--workers", workers, *extra)
    assert result.exit_code == 0, result.output
    assert hidden(build) == [], "the rerun must remove the stale hidden folders"
    assert verify(build) == (0, [])
    return files_of(build / SET)


def tars_in(folder: Path, at_least: int = 1):
    return lambda: folder.is_dir() and len(list(folder.glob("*.tar"))) >= at_least


POINTS = {  # what the poller waits for inside the hidden temp folder
    "temp folder created": lambda temp: (lambda: (temp / "manifest.csv").is_file()),
    "first tar being written": lambda temp: tars_in(temp),
    "halfway (15th tar being written)": lambda temp: tars_in(temp, 15),
}


@pytest.mark.parametrize("point,workers", [("temp folder created", 1), ("first tar being written", 2),
                                           ("halfway (15th tar being written)", 1)])
def test_kill_while_writing_then_rerun(base, reference, tmp_path, point, workers):
    build = copy_build(base, tmp_path)
    proc = start(build, workers)
    temp = build / f".{SET}.tmp-{proc.pid}"
    wait_until(proc, POINTS[point](temp), point, "balance", timeout=90.0, poll=0.002)
    pool = kill(proc)
    if workers > 1 and point != "temp folder created" and sys.platform.startswith("linux"):
        assert len(pool) >= workers, f"expected {workers} worker processes, saw {pool}"
    assert_workers_gone(pool)
    assert hidden(build) == [temp.name]
    assert_no_balanced_set(build, temp)
    assert rerun(build, workers=1) == reference  # test_balance shows 1 and 2 workers write the same bytes


def test_kill_after_the_card_is_written_but_before_the_move(base, reference, tmp_path):
    build = copy_build(base, tmp_path)
    proc = start(build, 1, hook=KILL_AFTER_CARD)
    wait_killed(proc)
    temp = build / f".{SET}.tmp-{proc.pid}"
    assert (temp / "dataset.json").is_file()  # complete, but hidden
    assert_no_balanced_set(build, temp)
    assert rerun(build, workers=1) == reference


def test_overwrite_killed_keeps_the_old_set_or_is_recovered(base, reference, tmp_path):
    build = copy_build(base, tmp_path)
    balance_build(build, BalanceConfig(target=TARGET, seed=SEED + 1), workers=1, progress=False)
    old = files_of(build / SET)
    assert old != reference
    # killed while writing: the old set is untouched and still verifies
    proc = start(build, 1, "--overwrite")
    wait_until(proc, tars_in(build / f".{SET}.tmp-{proc.pid}", 5), "5th tar being written", "balance",
               timeout=90.0, poll=0.002)
    assert_workers_gone(kill(proc))
    assert files_of(build / SET) == old
    assert verify(build)[0] == 1  # the temp folder of the kill is named
    assert verify(build / SET) == (0, [])
    # killed between moving the old set aside and moving the new one in
    proc = start(build, 1, "--overwrite", hook=KILL_BETWEEN_RENAMES)
    wait_killed(proc)
    assert hidden(build) == [f".{SET}.old-{proc.pid}", f".{SET}.tmp-{proc.pid}"]  # the first kill's folder is gone
    assert not (build / SET).exists()
    assert verify(build / SET) == (1, [f"{build / SET}: no dataset.json: the build there did not finish; run it again"])
    code, lines = verify(build)
    assert code == 1 and lines and all(line.startswith(f"{build}/.{SET}.") for line in lines), lines
    assert rerun(build, 1, "--overwrite") == reference  # removes both hidden folders


# ------------------------------------------------------------------ damaged train tars


def damage(tar: Path, how: str) -> str:
    """Damage the 31st member's header (sample 11's image) of ``tar``; returns what balance must say."""
    with tarfile.open(tar) as t:
        members = t.getmembers()
    at, before = members[30], members[29]
    data = bytearray(tar.read_bytes())
    if how == "flipped byte in a header":
        data[at.offset + 3] ^= 0x20
        tar.write_bytes(bytes(data))
        return f"damaged member header at byte {at.offset}, after {before.name}"
    if how == "cut inside a header":
        tar.write_bytes(bytes(data[:at.offset + 100]))
        return f"truncated at byte {at.offset + 100}, inside the member header after {before.name}"
    tar.write_bytes(bytes(data[:at.offset_data + 100]))  # cut inside the image's data
    return "unexpected end of data"


@pytest.mark.parametrize("how", ["flipped byte in a header", "cut inside a header", "cut inside member data"])
def test_a_damaged_train_tar_is_refused_in_one_line(base, tmp_path, how):
    """tarfile alone reads a damaged header as the end of the tar: the samples behind it vanish, and balance
    said only that some manifest rows are in no shard, or nothing at all when none of them was needed."""
    build = copy_build(base, tmp_path)
    tar = build / "train" / "train-000001.tar"
    cause = damage(tar, how)
    with pytest.raises(HamdataError) as error:
        balance_build(build, BalanceConfig(target=5), workers=1, progress=False)
    assert str(error.value) == f"{tar}: cannot read train shard (ReadError: {cause}); run `verify {build}`"
    assert [p.name for p in build.iterdir() if p.name.startswith(".") or p.name.startswith("balanced")] == []
    result = cli("balance", "--target", "5", "--shards", build, "--workers", "2")
    assert result.exit_code == 2 and result.stderr.splitlines() == [f"error: {error.value}"]
