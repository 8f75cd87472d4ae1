"""Atomic output folders: build in a hidden sibling, move into place only when complete.

An interrupted or failed command leaves at most a hidden ``.NAME.tmp-PID``
folder (removed by the next run), never a folder that holds a dataset.json.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .errors import HamdataError


def process_alive(pid: int) -> bool:
    """True while a process with this pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


REASONS = {errno.ENOSPC: "no space left on device", errno.EACCES: "permission denied",
           errno.EROFS: "read-only file system", errno.EDQUOT: "disk quota exceeded",
           errno.EFBIG: "file too large for this file system or the file size limit (ulimit -f)",
           errno.EPERM: "operation not permitted"}


def os_error_reason(exc: OSError) -> str:
    return REASONS.get(exc.errno, exc.strerror or str(exc))


def os_error_message(exc: OSError, path) -> str:
    """One line for an OSError that is the user's environment, not a bug."""
    return f"cannot write {exc.filename or path}: {os_error_reason(exc)}"


def temporary_name(target: Path) -> Path:
    """The hidden sibling ``.NAME.tmp-PID`` in which ``target`` is written before it is renamed."""
    target = Path(target)
    return target.parent / f".{target.name}.tmp-{os.getpid()}"


def atomic_write(target, data: bytes | str | None = None, *, writer=None) -> Path:
    """Write ``target`` whole or not at all: a temporary file beside it, fsync, rename.

    data: bytes, or text written as UTF-8. writer: instead of data, a function called with the
    temporary path that writes the file itself (``torch.save``, ``Figure.savefig``). A reader never sees
    half a file; a kill or error leaves the previous ``target`` as it was and removes the temporary file.
    """
    if (data is None) == (writer is None):
        raise TypeError("atomic_write takes data or writer, not both or neither")
    target = Path(target)
    tmp = temporary_name(target)
    try:
        if writer is not None:
            writer(tmp)
        else:
            tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


class Workspace:
    """Context manager yielding a temporary folder that becomes ``target`` on success."""

    def __init__(self, target: Path, overwrite: bool = False):
        self.target = Path(target)
        self.overwrite = overwrite
        self.tmp = temporary_name(self.target)

    def check(self) -> None:
        """Refuse early, before any work, to replace an existing output without --overwrite."""
        if self.target.exists() and not self.target.is_dir():
            raise HamdataError(f"{self.target} exists and is not a folder")
        above = next((p for p in self.target.parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise HamdataError(f"cannot write {self.target}: {above} is a file, not a folder")
        if self.target.is_dir() and any(self.target.iterdir()) and not self.overwrite:
            raise HamdataError(f"{self.target} already exists and is not empty; pass --overwrite to replace it")

    def _remove_stale(self) -> None:
        # .old-PID: a previous build that a killed --overwrite had moved aside but not yet deleted
        stale = [*self.target.parent.glob(f".{self.target.name}.tmp-*"), *self.target.parent.glob(f".{self.target.name}.old-*")]
        for old in stale:
            pid = old.name.rsplit("-", 1)[-1]
            if pid.isdigit() and (int(pid) == os.getpid() or not process_alive(int(pid))):
                shutil.rmtree(old, ignore_errors=True)

    def __enter__(self) -> Path:
        self.check()
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self._remove_stale()
            self.tmp.mkdir()
        except OSError as exc:
            raise HamdataError(self._message(exc)) from None
        return self.tmp

    def _message(self, exc: OSError) -> str:
        # name the output the user asked for, not the hidden temp folder inside which it failed
        return f"cannot write {self.target}: {os_error_reason(exc)}; nothing was written"

    def __exit__(self, kind, exc, tb) -> bool:
        if kind is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            if isinstance(exc, OSError) and exc.errno in REASONS:
                raise HamdataError(self._message(exc)) from None
            return False
        try:
            self._commit()
        except OSError as exc:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise HamdataError(self._message(exc)) from None
        return False

    def _commit(self) -> None:
        old = None
        if self.target.exists():
            if any(self.target.iterdir()):
                old = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
                os.replace(self.target, old)
            else:
                self.target.rmdir()
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
