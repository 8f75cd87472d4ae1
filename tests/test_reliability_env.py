"""Reliability 5: the environment says no: unwritable output, output and input nested, disk full.

Each gives one line, `error: cannot write OUT: <reason>...`, exit 2, no traceback,
and leaves nothing behind: no output folder, no hidden temp folder, an old
build untouched, the input untouched. Where the sandbox allows it the real thing
is used (a read-only or tiny tmpfs mount, an immutable folder, a file size limit,
root without CAP_DAC_OVERRIDE); the same paths are also driven in-process, so
they are tested on any machine.
"""

import ctypes
import errno
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hamdata.store.shards import ShardWriter
from helpers import cli, files_of, synthetic_data

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--size", "32", "--no-hair-removal", "--no-clahe", "--shard-size", "8"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """24 synthetic images (seed 2), shared read-only: the input these tests check is left untouched."""
    return synthetic_data(tmp_path_factory, 24, seed=2)


def build(data: Path, out: Path, *extra: str, workers: int = 1):
    return cli("build-shards", "--data", data, "--out", out, *SMALL, "--workers", workers, *extra)


def error_line(result) -> str:
    """Exit 2 and one `error:` line, the last thing on stderr."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:], result.stderr
    return errors[0]


def nothing_left(parent: Path, name: str = "out") -> None:
    assert not (parent / name).exists()
    assert sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")) == []


def cli_subprocess(args, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True,
                          preexec_fn=preexec_fn, timeout=120)


# ------------------------------------------------------------------ mounts (root only)


def mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to mount a tmpfs; the in-process tests cover the same path")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the in-process tests cover the same path")


@pytest.fixture
def mounts():
    mounted = []
    yield lambda where, options: (mount_tmpfs(where, options), mounted.append(where))
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


# ------------------------------------------------------------------ not writable


def test_read_only_file_system(data, tmp_path, mounts):
    ro = tmp_path / "ro"
    mounts(ro, "size=1m,ro")
    line = error_line(build(data, ro / "out"))
    assert line == f"error: cannot write {ro / 'out'}: read-only file system; nothing was written"
    line = error_line(build(data, ro / "deeper" / "out"))
    assert line == f"error: cannot write {ro / 'deeper' / 'out'}: read-only file system; nothing was written"
    assert list(ro.iterdir()) == []


def drop_dac_override() -> None:
    """In the child, before exec: root without CAP_DAC_OVERRIDE/READ_SEARCH obeys file modes like anyone."""
    if os.geteuid() == 0:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, dropped from the bounding set
            if prctl(24, cap, 0, 0, 0) != 0:  # 24 = PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")


def test_permission_denied(data, tmp_path):
    """chmod 0o500 on the parent, as an ordinary user (root is made one for the subprocess)."""
    if not sys.platform.startswith("linux") and os.geteuid() == 0:
        pytest.skip("running as root, and dropping CAP_DAC_OVERRIDE needs Linux")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        try:
            done = cli_subprocess(["build-shards", "--data", str(data), "--out", str(locked / "out"), *SMALL],
                                  preexec_fn=drop_dac_override)
        except subprocess.SubprocessError as exc:
            pytest.skip(f"cannot drop CAP_DAC_OVERRIDE here ({exc})")
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.splitlines()[-1] == f"error: cannot write {locked / 'out'}: permission denied; nothing was written"
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_immutable_folder(data, tmp_path):
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    if os.geteuid() != 0 or shutil.which("chattr") is None or \
            subprocess.run(["chattr", "+i", str(frozen)], capture_output=True).returncode != 0:
        pytest.skip("needs root and a file system where chattr +i works")
    try:
        line = error_line(build(data, frozen / "out"))
        assert line == f"error: cannot write {frozen / 'out'}: operation not permitted; nothing was written"
        assert list(frozen.iterdir()) == []
    finally:
        subprocess.run(["chattr", "-i", str(frozen)], check=True)


def test_output_under_a_file(data, tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    line = error_line(build(data, tmp_path / "notes.txt" / "sub" / "out"))
    assert line == f"error: cannot write {tmp_path / 'notes.txt' / 'sub' / 'out'}: {tmp_path / 'notes.txt'} is a file, not a folder"
    assert error_line(build(data, tmp_path / "notes.txt")) == f"error: {tmp_path / 'notes.txt'} exists and is not a folder"


def test_mkdir_refused_in_process(data, tmp_path, monkeypatch):
    """The permission-denied path on any machine, root or not."""
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.name.startswith(".out.tmp-"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    line = error_line(build(data, tmp_path / "out"))
    assert line == f"error: cannot write {tmp_path / 'out'}: permission denied; nothing was written"
    nothing_left(tmp_path)


# ------------------------------------------------------------------ output and input nested


def test_output_and_input_nested(data, tmp_path):
    cases = {
        str(data): f"--out {data} is inside the input folder {data}",
        str(data / "HAM10000_images_part_1" / "shards"): "is inside the input folder",
    }
    link = tmp_path / "link"
    link.symlink_to(data)
    cases[str(link / "shards")] = "is inside the input folder"  # the same folder under another name
    for out, needle in cases.items():
        assert needle in error_line(build(data, Path(out))), out
    assert not (data / "shards").exists() and not (data / "HAM10000_images_part_1" / "shards").exists()


def test_input_inside_the_output_is_never_deleted(data, tmp_path):
    """--overwrite replaces the whole output folder: it must refuse when the input lies inside it."""
    out = tmp_path / "work"
    shutil.copytree(data, out / "data")
    before = files_of(out)
    line = error_line(build(out / "data", out, "--overwrite"))
    assert line == f"error: --data {out / 'data'} is inside the output folder {out}; choose an --out outside the input"
    assert files_of(out) == before


# ------------------------------------------------------------------ disk full


def test_disk_full_on_a_tiny_tmpfs(data, tmp_path, mounts):
    small = tmp_path / "small"
    mounts(small, "size=256k")
    line = error_line(build(data, small / "out", "--size", "128", "--format", "png", workers=2))
    assert line == f"error: cannot write {small / 'out'}: no space left on device; nothing was written"
    assert list(small.iterdir()) == []
    # an old build that fits stays untouched when its replacement does not
    assert build(data, small / "out").exit_code == 0
    old = files_of(small / "out")
    line = error_line(build(data, small / "out", "--overwrite", "--size", "128", "--format", "png"))
    assert line == f"error: cannot write {small / 'out'}: no space left on device; nothing was written"
    assert files_of(small / "out") == old and [p.name for p in small.iterdir()] == ["out"]


def limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))


def test_file_size_limit(data, tmp_path):
    """`ulimit -f`: Python ignores SIGXFSZ, so the write fails with EFBIG."""
    out = tmp_path / "out"
    done = cli_subprocess(["build-shards", "--data", str(data), "--out", str(out), *SMALL, "--size", "128",
                           "--format", "png", "--workers", "1"], preexec_fn=limit_file_size)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1] == (f"error: cannot write {out}: file too large for this file system or the "
                                            "file size limit (ulimit -f); nothing was written")
    nothing_left(tmp_path)


@pytest.mark.parametrize("workers", [1, 2])
def test_disk_full_in_process(data, tmp_path, monkeypatch, workers):
    """ENOSPC from the shard writer after a few samples: the same handling on any machine."""
    real_write = ShardWriter.write
    written = []

    def write_until_full(self, *args, **kwargs):
        if len(written) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(1)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(ShardWriter, "write", write_until_full)
    line = error_line(build(data, tmp_path / "out", workers=workers))
    assert line == f"error: cannot write {tmp_path / 'out'}: no space left on device; nothing was written"
    nothing_left(tmp_path)
