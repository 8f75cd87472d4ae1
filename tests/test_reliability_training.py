"""Reliability 1 and 6 for training: kills during checkpoint saves, --resume after a kill,
corrupted checkpoints, and a NaN or infinite loss.

Kills are real SIGKILLs of `python cli.py train ...` subprocesses. Everything else runs the
CLI in this process, so that a user mistake must come out as one `error:` line and exit 2.
"""

import json
import os
import random
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch

from helpers import cli, kill, one_error_line, poison_the_loss, start_cli, wait_killed, wait_until
from trainers.checkpoints import load_checkpoint

TINY = ["--weights", "none", "--image-size", "32", "--batch-size", "16", "--workers", "0", "--max-steps", "2",
        "--device", "cpu", "--seed", "7"]
# Python run before the CLI in the subprocess: epoch 2's last.pt gets half of its bytes onto the
# disk, then the process SIGKILLs itself, as a kill in the middle of torch.save would leave it.
HALF_SAVE_THEN_DIE = """
import io, os, signal, torch
real_save, saves = torch.save, []
def half_save_then_die(obj, f, *args, **kwargs):
    if os.path.basename(os.fspath(f)).startswith(".last.pt.tmp-"):
        saves.append(f)
        if len(saves) == 2:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            with open(f, "wb") as handle:
                handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = half_save_then_die
"""


def train(build: Path, out: Path, epochs: int, *extra):
    result = cli("train", "phase5", "--shards", build, "--out", out, "--epochs", epochs, *TINY, *extra)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def run1(build, tmp_path_factory) -> Path:
    """A finished one-epoch phase5 run (last.pt, best.pt, metrics.jsonl) that tests copy."""
    out = tmp_path_factory.mktemp("run1") / "run"
    train(build, out, 1)
    return out


def copy_run(run: Path, where: Path) -> Path:
    return Path(shutil.copytree(run, where))


def start(build: Path, out: Path, epochs: int, hook: str = "") -> subprocess.Popen:
    """`train phase5 ...` in a `python -c` subprocess; ``hook`` is Python run before the CLI starts."""
    args = ["train", "phase5", "--shards", str(build), "--out", str(out), "--epochs", str(epochs), *TINY]
    return start_cli(args, out.parent, hook, env={**os.environ, "OMP_NUM_THREADS": "1"})  # one thread, as conftest.py sets here


def epochs_in(out: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def temporaries(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob(".*"))


def assert_resumes_to_the_end(out: Path, after: int, epochs: int) -> list[dict]:
    """`train phase5 --resume OUT` continues after epoch ``after``, ends at ``epochs`` and tidies up."""
    result = cli("train", "phase5", "--resume", out)
    assert result.exit_code == 0, result.output
    assert f"resuming {out} after epoch {after} of {epochs}" in result.output
    assert epochs_in(out) == list(range(1, epochs + 1))
    assert load_checkpoint(out / "last.pt")[1]["epoch"] == epochs
    assert (out / "metrics.json").is_file() and (out / "predictions_isic2018.csv").is_file()
    assert temporaries(out) == [], "the stale temporary checkpoint is removed"
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------ 1. kills during checkpoint saves


def test_kill_in_the_middle_of_saving_last_pt_then_resume(build, tmp_path):
    out = tmp_path / "run"
    proc = start(build, out, 2, hook=HALF_SAVE_THEN_DIE)
    wait_killed(proc, timeout=300)
    torn = out / f".last.pt.tmp-{proc.pid}"
    assert torn.is_file() and temporaries(out) == [torn.name]  # killed inside the save of epoch 2
    assert load_checkpoint(out / "last.pt")[1]["epoch"] == 1  # the previous last.pt is whole
    assert "not a readable checkpoint" in one_error_line(cli("evaluate", torn, "--device", "cpu", "--workers", 0))
    assert epochs_in(out) == [1, 2]  # epoch 2's line was written before its checkpoint; resume drops it
    resumed = assert_resumes_to_the_end(out, after=1, epochs=2)
    # and it is the run that was never interrupted: same losses and scores, epoch by epoch
    train(build, tmp_path / "straight", 2)
    straight = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    for key in ("train_loss", "lr", "val_macro_f1"):
        assert [h[key] for h in resumed] == [h[key] for h in straight], key


def test_kill_while_last_pt_is_being_written_then_resume(build, tmp_path):
    """A real kill at whatever moment the poller sees a temporary last.pt after epoch 1's (or just after)."""
    out = tmp_path / "run"
    proc = start(build, out, 3)  # three epochs: two saves of last.pt for the poller to catch
    wait_until(proc, lambda: (out / "last.pt").is_file() and any(out.glob(".last.pt.tmp-*")), "a save of last.pt",
               "train", timeout=300, poll=0.001)
    kill(proc)
    _, last = load_checkpoint(out / "last.pt")  # whole, whatever the moment
    assert last["epoch"] in (1, 2, 3)
    assert_resumes_to_the_end(out, after=last["epoch"], epochs=3)


def test_ctrl_c_says_the_last_checkpoint_is_intact_and_resume_continues(build, tmp_path):
    """SIGINT (Ctrl-C) in the middle of a run: exit 130 and the train command's own line (not the data commands'),
    a whole last.pt, and --resume takes it from there."""
    import signal

    out = tmp_path / "run"
    # the hook restores Python's Ctrl-C handler, whatever the test runner's process left to its children
    proc = start(build, out, 40, hook="import signal; signal.signal(signal.SIGINT, signal.default_int_handler)")
    wait_until(proc, lambda: (out / "last.pt").is_file(), "the first last.pt", "train", timeout=300)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=15)  # an interrupted run ends within a second or two
    except subprocess.TimeoutExpired:  # seen once in ~10 suites, under load: the first SIGINT had no effect (as if
        proc.send_signal(signal.SIGINT)  # pressed during a native call that dropped it); a user presses again
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.decode().strip().splitlines()[-1] == "interrupted: the run's last checkpoint is intact; --resume continues from it"
    _, last = load_checkpoint(out / "last.pt")
    assert 1 <= last["epoch"] < 40
    result = cli("train", "phase5", "--resume", out, "--epochs", last["epoch"] + 1)
    assert result.exit_code == 0, result.output
    assert f"resuming {out} after epoch {last['epoch']} of {last['epoch'] + 1}" in result.output


def test_a_torn_metrics_line_is_dropped_on_resume(run1, tmp_path):
    """A kill while epoch 2's line was being appended: that epoch runs again, the history stays readable."""
    out = copy_run(run1, tmp_path / "run")
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 2, "train_lo')
    result = cli("train", "phase5", "--resume", out, "--epochs", 2)
    assert result.exit_code == 0, result.output
    assert epochs_in(out) == [1, 2]


# ------------------------------------------------------------------ 6. corrupted checkpoints: one line, exit 2


def corrupt(source: Path, target: Path, how: str) -> str:
    """Write a damaged copy of the checkpoint ``source`` to ``target``; returns a part of the expected line."""
    data = source.read_bytes()
    if how in ("cut short", "empty file", "random bytes", "a zip that is not a checkpoint", "a text file"):
        if how == "cut short":
            target.write_bytes(data[: len(data) // 2])
        elif how == "empty file":
            target.write_bytes(b"")
        elif how == "random bytes":
            target.write_bytes(random.Random(0).randbytes(4096))
        elif how == "a zip that is not a checkpoint":
            with zipfile.ZipFile(target, "w") as archive:
                archive.writestr("notes.txt", "hello")
        else:
            target.write_text("model weights\n")
        cause = {"empty file": "empty file)", "random bytes": "UnpicklingError: not a file of tensors and plain values)",
                 "a text file": "UnpicklingError: not a file of tensors and plain values)"}.get(how, "")
        return f"error: {target}: not a readable checkpoint; the file is damaged, cut short or not a checkpoint ({cause}"
    state = torch.load(source, weights_only=True)
    if how == "another torch file":
        state, expected = {"weights": torch.zeros(3)}, "not a hamdata checkpoint (expected format"
    elif how == "no model":
        del state["model"]
        expected = "damaged hamdata checkpoint (no model)"
    elif how == "no data.mean":
        del state["data"]["mean"]
        expected = "damaged hamdata checkpoint (no data.mean)"
    elif how == "another class list":
        state["classes"] = ["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"]
        expected = "trained for classes ['mel', 'nv', 'bcc', 'akiec', 'bkl', 'df', 'vasc'], but hamdata uses"
    elif how == "weights of another shape":
        name = next(reversed(state["model"]))
        state["model"][name] = torch.zeros(3, 3)
        expected = "damaged hamdata checkpoint (its weights do not fit a mobilenet_v3_large"
    elif how == "classes not a list":
        state["classes"] = 7
        expected = "trained for classes 7, but hamdata uses"
    torch.save(state, target)
    return f"error: {target}: {expected}"


CORRUPTIONS = ["cut short", "empty file", "random bytes", "a zip that is not a checkpoint", "a text file",
               "another torch file", "no model", "no data.mean", "another class list", "weights of another shape",
               "classes not a list"]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_corrupted_checkpoint_is_refused_in_one_line(build, run1, tmp_path, how):
    bad = tmp_path / "run" / "last.pt"
    bad.parent.mkdir()
    expected = corrupt(run1 / "last.pt", bad, how)
    image = next((build.parent / "data").rglob("*.jpg"))
    commands = {"resume": ("train", "phase5", "--resume", bad.parent),
                "evaluate": ("evaluate", bad, "--device", "cpu", "--workers", 0),
                "predict": ("predict", bad, image, "--device", "cpu")}
    for command, args in commands.items():
        if how == "weights of another shape" and command == "resume":
            expected_here = f"error: --resume {bad.parent}: damaged hamdata checkpoint (its training state does not fit this run"
        else:
            expected_here = expected
        line = one_error_line(cli(*args))
        assert line.startswith(expected_here), (command, line)
    assert sorted(p.name for p in bad.parent.iterdir()) == ["last.pt"], "a refused resume writes nothing"


@pytest.mark.parametrize("field,expected", [("optimizer", "holds weights only; resume from a run's last.pt"),
                                            ("progress", "damaged hamdata checkpoint (no progress)"),
                                            ("scrambled optimizer", "damaged hamdata checkpoint (its training state does not fit this run")])
def test_resume_refuses_a_checkpoint_without_its_training_state(run1, tmp_path, field, expected):
    state = torch.load(run1 / "last.pt", weights_only=True)
    if field == "scrambled optimizer":
        state["optimizer"] = {"state": {}, "param_groups": []}
    else:
        del state[field]
    out = tmp_path / "run"
    out.mkdir()
    torch.save(state, out / "last.pt")
    line = one_error_line(cli("train", "phase5", "--resume", out))
    assert line.startswith(f"error: --resume {out}") and expected in line, line


# ------------------------------------------------------------------ 6. NaN or infinite loss


def checkpoints_and_history(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in (".pt", ".jsonl")}


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoints(run1, tmp_path, monkeypatch, value):
    out = copy_run(run1, tmp_path / "run")
    before = checkpoints_and_history(out)
    assert {"last.pt", "best.pt", "metrics.jsonl"} <= set(before)
    poison_the_loss(monkeypatch, float(value), at_call=2)  # epoch 2, step 2
    line = one_error_line(cli("train", "phase5", "--resume", out, "--epochs", 2))
    assert line == f"error: loss is {value} at epoch 2, step 2: stopped; the last good checkpoint is {out / 'last.pt'} (epoch 1)"
    assert checkpoints_and_history(out) == before, "last.pt, best.pt and metrics.jsonl are left as they were"
    assert temporaries(out) == []


def test_a_non_finite_loss_before_any_checkpoint(build, tmp_path, monkeypatch):
    poison_the_loss(monkeypatch, float("nan"), at_call=1)
    result = cli("train", "phase5", "--shards", build, "--out", tmp_path / "run", "--epochs", 2, *TINY)
    assert one_error_line(result) == "error: loss is nan at epoch 1, step 1: stopped; no checkpoint was written yet"
    assert not (tmp_path / "run" / "last.pt").exists()  # so the same command may run again in that folder
