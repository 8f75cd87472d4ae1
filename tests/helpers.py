"""Helpers shared by test files (imported as `from helpers import ...`; not a test file, not a conftest).

Small synthetic builds, and running the CLI as a real subprocess that a test SIGKILLs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ small synthetic builds


def synthetic_build(root: Path, n_images: int, size: int, shard_size: int, seed: int = 0,
                    metadata: str | Path | None = None) -> Path:
    """Synthetic images in ``root/data``, built at ``size`` px into ``root/shards`` (one worker); returns the latter.

    With ``metadata`` (a HAM10000-style CSV) its rows are drawn and ``n_images`` is ignored.
    """
    from hamdata.build import BuildConfig, build_shards
    from hamdata.preprocess import PreprocessConfig
    from hamdata.synth import make_synthetic

    make_synthetic(root / "data", n_images=n_images, seed=seed, metadata=metadata, workers=1, progress=False)
    cfg = BuildConfig(data=str(root / "data"), out=str(root / "shards"), shard_size=shard_size,
                      preprocess=PreprocessConfig(size=(size, size)))
    build_shards(cfg, workers=1, progress=False)
    return root / "shards"


def build_once(factory: pytest.TempPathFactory, n_images: int, size: int, shard_size: int = 500,
               metadata: str | Path | None = None) -> Path:
    """A synthetic build, made once per test session and shared by the trainers' test files.

    ``metadata``: a HAM10000-style metadata CSV whose rows are drawn instead of ``n_images`` random ones;
    the cache folder is named after the file and a digest of its bytes, so different tables never share one.
    """
    if metadata is None:
        table = str(n_images)
    else:
        table = f"{Path(metadata).stem}-{hashlib.sha256(Path(metadata).read_bytes()).hexdigest()[:12]}"
    root = factory.getbasetemp() / f"trainers-build-{table}-{size}-{shard_size}"
    if not (root / "shards" / "dataset.json").is_file():
        shutil.rmtree(root, ignore_errors=True)
        synthetic_build(root, n_images, size, shard_size, seed=0, metadata=metadata)
    return root / "shards"


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, by its relative POSIX path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ CLI subprocesses and SIGKILL


def start_cli(args: list[str], cwd: Path, hook: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python cli.py ARGS` in ``cwd``; with ``hook`` (Python source, may be empty), `python -c` runs the hook
    and then `cli.main()` with ARGS as its argv. Output is discarded, stderr is piped."""
    if hook is None:
        command = [sys.executable, str(REPO / "cli.py"), *args]
    else:
        program = f"import sys; sys.path.insert(0, {str(REPO)!r})\n{hook}\nimport cli\nsys.argv = ['cli.py'] + {args!r}\ncli.main()\n"
        command = [sys.executable, "-c", program]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def wait_until(proc: subprocess.Popen, ready, what: str, command: str, timeout: float = 60.0,
               poll: float = 0.005) -> None:
    """Poll ``ready()`` every ``poll`` s; fail if the ``command`` subprocess ends first or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"{command} ended (exit {proc.returncode}) before {what}: {proc.stderr.read().decode()[-500:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(poll)


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pids: list[int]) -> list[int]:
    """Those of ``pids`` that still exist and are not zombies waiting to be reaped."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            alive.append(pid)
    return alive


def kill(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the process alone (not its group), as `kill -9 PID` does; returns its children (the workers)."""
    workers = children(proc.pid) if sys.platform.startswith("linux") else []
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return workers


def assert_workers_gone(workers: list[int]) -> None:
    """Pool workers end with the killed process (they hold their own end of the task pipe, so must be told)."""
    deadline = time.monotonic() + 10
    while running(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = running(workers)
    for pid in left:  # do not leave them behind for the rest of the session
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"worker processes {left} outlived the killed build"


# Deterministic kill points: hooks (Python source for start_cli) after which the subprocess SIGKILLs itself.


def kill_after(module: str, function: str) -> str:
    """A hook: the command SIGKILLs itself right after ``module.function`` (e.g. write_card) returns."""
    return f"""
import os, signal
import {module} as target
real = target.{function}
def then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
target.{function} = then_die
"""


# The old output moved aside (renamed to *.old-*), the new one not yet in its place.
KILL_BETWEEN_RENAMES = """
import os, signal
real_replace = os.replace
def replace_then_die(src, dst):
    real_replace(src, dst)
    if ".old-" in os.fspath(dst):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace_then_die
"""
