"""Commands at once: one writer per output, no silent replace at the end, a reader never mixes two builds.

Every case runs real processes side by side. They are put in order with files and pipes, not sleeps: a hook
(``pause``) makes a command create a marker file at a chosen point and then block reading a FIFO until the test
opens it for writing (``release``).
"""

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import (REPO, cli, files_of, kill, one_error_line, start_cli, synthetic_data, verify, wait_until)
from trainers.checkpoints import load_checkpoint

OUT = "shards"  # relative to each test's work folder, so that dataset.json's config is the same in every build
OPTIONS = ["--size", "32", "--shard-size", "10", "--seed", "7"]
TINY = ["--weights", "none", "--image-size", "32", "--batch-size", "16", "--workers", "0", "--max-steps", "2",
        "--device", "cpu", "--seed", "7"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
NO_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            raise ImportError("torch imported before the command said no")
sys.meta_path.insert(0, NoTorch())
"""  # Python for start_cli: the command may not import torch


# ------------------------------------------------------------------ synchronisation by files and pipes


class Gate:
    """A marker file the paused command creates, and a FIFO it blocks on until ``release``."""

    def __init__(self, folder: Path, name: str):
        self.marker, self.fifo = folder / f"{name}.reached", folder / f"{name}.fifo"
        os.mkfifo(self.fifo)

    def hook(self, module: str, function: str, after: bool = False, when: str = "True") -> str:
        """Python source for start_cli: ``module.function`` stops (before or after its work) when ``when`` holds."""
        call = "real(*args, **kwargs)"
        return f"""
import {module} as target
real = target.{function}
def paused(*args, **kwargs):
    result = {call if after else 'None'}
    if {when}:
        open({str(self.marker)!r}, "w").close()
        with open({str(self.fifo)!r}) as fifo:
            fifo.read()
    return result if {after} else {call}
target.{function} = paused
"""

    def wait(self, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
        wait_until(proc, self.marker.exists, what, "the paused command", timeout=timeout)

    def release(self, proc: subprocess.Popen) -> None:
        """Open the FIFO for writing once the command has it open for reading (it created the marker just before)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:
                if exc.errno != errno.ENXIO or proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)  # the reader is between creating the marker and opening the FIFO
        os.close(fd)


def finish(proc: subprocess.Popen, timeout: float = 300.0) -> tuple[int, list[str]]:
    """Exit code and stderr lines (progress bars dropped) of a command started with start_cli."""
    _, err = proc.communicate(timeout=timeout)
    lines = [line for line in err.decode().replace("\r", "\n").splitlines() if line.strip() and "it/s]" not in line
             and "s/it]" not in line and not line.startswith(("build-shards", "duplicates", "balance", "epoch", "synth"))]
    return proc.returncode, lines


def assert_refused(proc: subprocess.Popen, target, holder: int) -> None:
    code, lines = finish(proc)
    assert code == 2, lines
    assert lines == [f"error: {target} is being written by another command (pid {holder}); wait for it to finish "
                     "or choose another output; nothing was touched"], lines


def build_args(data: Path, workers: int, *extra: str) -> list[str]:
    return ["build-shards", "--data", str(data), "--out", OUT, *OPTIONS, "--workers", str(workers), *extra]


def build_in(work: Path, data: Path, workers: int = 1, *extra: str):
    cwd = os.getcwd()
    os.chdir(work)
    try:
        return cli(*build_args(data, workers, *extra))
    finally:
        os.chdir(cwd)


def hidden(work: Path) -> list[str]:
    return sorted(p.name for p in work.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synthetic_data(tmp_path_factory, 40, seed=3)


@pytest.fixture(scope="module")
def alone(data, tmp_path_factory):
    """Every file of a build made with nothing else running."""
    work = tmp_path_factory.mktemp("alone")
    assert build_in(work, data).exit_code == 0
    return files_of(work / OUT)


# ------------------------------------------------------------------ 1. one writer per output


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("holder", ["first", "second"])
def test_two_builds_into_one_out(data, alone, tmp_path, workers, holder):
    """Exactly one succeeds; the other is refused in one line naming the output and the holder's pid, and touches
    nothing. holder: whether the one that takes the lock is the first or the second to start."""
    taken, waiting = Gate(tmp_path, "taken"), Gate(tmp_path, "waiting")
    work = tmp_path / "work"
    work.mkdir()
    if holder == "first":
        a = start_cli(build_args(data, workers), work, taken.hook("hamdata.build", "open_inputs"))
        taken.wait(a, "the first build held the lock")
        b = start_cli(build_args(data, workers, "--size", "64"), work)
        assert_refused(b, OUT, a.pid)
    else:  # b starts first but reaches the lock only after a, which started later, holds it
        b = start_cli(build_args(data, workers, "--size", "64"), work, waiting.hook("hamdata.build", "check_paths"))
        waiting.wait(b, "the first build started")
        a = start_cli(build_args(data, workers), work, taken.hook("hamdata.build", "open_inputs"))
        taken.wait(a, "the second build held the lock")
        waiting.release(b)
        assert_refused(b, OUT, a.pid)
    assert not (work / OUT).exists() and hidden(work) == [".shards.lock"], "the refused build touched nothing"
    taken.release(a)
    code, lines = finish(a)
    assert code == 0, lines
    assert files_of(work / OUT) == alone, "the survivor equals a build made alone"
    assert verify(work / OUT) == (0, [])
    assert hidden(work) == [], "the lock file goes with its holder"


def test_two_balances_into_one_set(build, tmp_path):
    gate = Gate(tmp_path, "taken")
    copy = Path(shutil.copytree(build, tmp_path / "build"))
    args = ["balance", "--target", "8", "--shards", str(copy), "--workers", "1"]
    a = start_cli(args, tmp_path, gate.hook("hamdata.balance", "plan_balance"))
    gate.wait(a, "the first balance held the lock")
    assert_refused(start_cli([*args, "--seed", "3"], tmp_path), copy / "balanced-8", a.pid)
    gate.release(a)
    code, lines = finish(a)
    assert code == 0, lines
    assert verify(copy) == (0, [])
    assert json.loads((copy / "balanced-8" / "dataset.json").read_text())["config"]["seed"] == 42


def test_two_trains_into_one_out(build, tmp_path):
    gate = Gate(tmp_path, "taken")
    out = tmp_path / "run"
    args = ["train", "phase5", "--shards", str(build), "--out", str(out), "--epochs", "1", *TINY]
    a = start_cli(args, tmp_path, gate.hook("trainers.run", "_trainer"), env=ENV)
    gate.wait(a, "the first run held its folder")
    b = start_cli(args, tmp_path, NO_TORCH, env=ENV)  # refused before torch is imported (~5 s)
    code, lines = finish(b)
    assert code == 2 and lines == [f"error: --out {out} is being written by another command (pid {a.pid}); wait for it "
                                   "to finish or choose another output; nothing was touched"], lines
    gate.release(a)
    code, lines = finish(a)
    assert code == 0, lines
    assert load_checkpoint(out / "last.pt")[1]["epoch"] == 1


def hold_in_another_process(target: Path, gate: Gate) -> subprocess.Popen:
    """A process that holds ``target``'s lock until the gate is released."""
    program = (f"import sys; sys.path.insert(0, {str(REPO)!r})\nfrom hamdata.locks import hold\n"
               f"with hold({str(target)!r}):\n    open({str(gate.marker)!r}, 'w').close()\n"
               f"    open({str(gate.fifo)!r}).read()\n")
    proc = subprocess.Popen([sys.executable, "-c", program], stderr=subprocess.PIPE)
    gate.wait(proc, "the other process held the lock")
    return proc


def test_resume_of_a_running_run_and_report_into_a_page_being_written_are_refused(build, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "phase5", "--shards", build, "--out", run, "--epochs", "1", *TINY).exit_code == 0
    gate = Gate(tmp_path, "run")
    holder = hold_in_another_process(run, gate)
    one_error_line(cli("train", "phase5", "--resume", run),
                   f"--out {run} is being written by another command (pid {holder.pid})")
    gate.release(holder)
    assert holder.wait(timeout=30) == 0
    page = tmp_path / "page.html"
    gate = Gate(tmp_path, "page")
    holder = hold_in_another_process(page, gate)
    one_error_line(cli("report", build, "--out", page), f"{page} is being written by another command (pid {holder.pid})")
    assert not page.exists()
    gate.release(holder)
    assert holder.wait(timeout=30) == 0
    assert cli("report", build, "--out", page).exit_code == 0


def test_a_killed_writer_does_not_block_the_next_run(data, alone, tmp_path):
    gate = Gate(tmp_path, "taken")
    a = start_cli(build_args(data, 1), tmp_path, gate.hook("hamdata.build", "open_inputs"))
    gate.wait(a, "the build held the lock")
    kill(a)
    assert (tmp_path / ".shards.lock").read_text().strip() == str(a.pid), "the killed holder left its lock file"
    result = build_in(tmp_path, data)
    assert result.exit_code == 0, result.output
    assert files_of(tmp_path / OUT) == alone
    assert hidden(tmp_path) == []


# ------------------------------------------------------------------ 2. no silent replace at the end


def test_an_output_that_appears_meanwhile_is_not_replaced(data, alone, tmp_path):
    gate = Gate(tmp_path, "done")
    a = start_cli(build_args(data, 1), tmp_path, gate.hook("hamdata.store.writer", "write_card", after=True))
    gate.wait(a, "the build finished its work")
    (tmp_path / OUT).mkdir()  # another tool (a copy, a sync) writes the output meanwhile
    (tmp_path / OUT / "theirs.txt").write_text("not ours")
    gate.release(a)
    code, lines = finish(a)
    conflict = f"{OUT}.conflict-{a.pid}"
    assert code == 2 and lines == [f"error: {OUT} appeared while this command ran and was not replaced (pass --overwrite "
                                   f"to replace it); the finished work is in {conflict}"], lines
    assert files_of(tmp_path / OUT) == {"theirs.txt": b"not ours"}
    assert files_of(tmp_path / conflict) == alone
    assert verify(tmp_path / conflict) == (0, [])


# ------------------------------------------------------------------ 4. verify while a command writes


def test_verify_on_a_folder_being_written_is_not_intact(data, tmp_path):
    assert build_in(tmp_path, data).exit_code == 0
    out = tmp_path / OUT
    for name, hook in [("overwrite", ("hamdata.build", "open_inputs", False)), ("done", ("hamdata.store.writer", "write_card", True))]:
        gate = Gate(tmp_path, name)
        a = start_cli(build_args(data, 1, "--overwrite", "--seed", "8"), tmp_path, gate.hook(*hook[:2], after=hook[2]))
        gate.wait(a, "the build was writing")
        assert verify(out) == (1, [f"{out}: being written by pid {a.pid}; verify it once that command has finished"])
        gate.release(a)
        assert finish(a)[0] == 0
    assert verify(out) == (0, [])


# ------------------------------------------------------------------ 3. a reader never mixes two builds


def test_a_build_replaced_under_a_run_stops_it_and_resume_says_so(tmp_path_factory, tmp_path):
    """build-shards --overwrite while train reads the build: the run stops at the next shard it opens (in a loader
    worker, so the worker's error must come back as one line), never trains an epoch on a mix, and keeps last.pt.
    Then --resume on the new build is refused unless --allow-other-build, and evaluate warns."""
    images = synthetic_data(tmp_path_factory, 160)
    shards, run = tmp_path / "shards", tmp_path / "run"
    build = ["build-shards", "--data", images, "--out", shards, "--size", "32", "--shard-size", "25", "--workers", "1",
             "--no-hair-removal", "--no-clahe"]  # built twice: what is tested is the replacement, not the pictures
    assert cli(*build).exit_code == 0
    gate = Gate(tmp_path, "epoch1")
    args = ["train", "phase5", "--shards", str(shards), "--out", str(run), "--epochs", "2", *TINY, "--workers", "1"]
    a = start_cli(args, tmp_path, gate.hook("trainers.run", "_save_epoch", after=True, when="args[2]['epoch'] == 1"), env=ENV)
    gate.wait(a, "epoch 1 was saved", timeout=240)
    assert cli(*build, "--overwrite", "--quality", "90").exit_code == 0  # same split and counts, other bytes
    gate.release(a)
    code, lines = finish(a)
    assert code == 2 and lines == [f"error: {shards} was replaced during the run (its dataset.json no longer lists the "
                                   f"shards the run started on): stopped; the last good checkpoint is {run / 'last.pt'} "
                                   "(epoch 1)"], lines
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    assert load_checkpoint(run / "last.pt")[1]["epoch"] == 1

    one_error_line(cli("train", "phase5", "--resume", run),
                   f"--resume: --shards {shards}: its build is not the one the run trained on", "--allow-other-build")
    result = cli("evaluate", run / "last.pt", "--device", "cpu", "--workers", "0", "--out", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    assert f"warning: {shards} is not the build the checkpoint was trained on" in result.output
    result = cli("train", "phase5", "--resume", run, "--allow-other-build")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run / "last.pt")[1]["epoch"] == 2


def test_a_failed_final_rename_puts_the_old_output_back(tmp_path, monkeypatch):
    from hamdata.errors import HamdataError
    from hamdata.workspace import Workspace

    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real = os.replace

    def failing(src, dst):
        if ".tmp-" in os.fspath(src):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(HamdataError, match="no space left on device"):
        with Workspace(target, overwrite=True) as tmp:
            (tmp / "new.txt").write_text("new")
    assert files_of(target) == {"old.txt": b"old"} and hidden(tmp_path) == []
