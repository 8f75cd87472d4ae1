"""Atomic output folders: build in a hidden sibling, move into place only when complete.

An interrupted or failed command leaves at most a hidden ``.NAME.tmp-PID``
folder (removed by the next run), never a folder that holds a dataset.json.
One command at a time writes an output (``hamdata.locks``); an output that
appeared meanwhile all the same (another tool, a copy) is never replaced
without ``overwrite``: the finished work is left beside it as ``NAME.conflict-PID``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from hamdata.errors import REASONS, HamdataError, os_error_reason
from hamdata.locks import hold, holder_of


def process_alive(pid: int) -> bool:
    """True while a process with this pid exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary_pid(path) -> int | None:
    """The process id that ends a ``.NAME.tmp-PID`` or ``.NAME.old-PID`` name (None for another name)."""
    tail = Path(path).name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def left_behind(path) -> bool:
    """Whether the temporary ``path`` was left by a process that is gone (or by this one): safe to remove."""
    pid = temporary_pid(path)
    return pid is not None and (pid == os.getpid() or not process_alive(pid))


def writer_of(target) -> str | None:
    """The pid of a command writing ``target`` now (it holds the lock, or a live ``.NAME.tmp-PID`` is beside it),
    None when none is. Only looks."""
    target = Path(target)
    pid = holder_of(target)
    if pid is not None:
        return pid
    for tmp in target.parent.glob(f".{target.name}.tmp-*"):
        if tmp.is_dir() and temporary_pid(tmp) is not None and not left_behind(tmp):
            return str(temporary_pid(tmp))
    return None


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


def conflict_name(target: Path) -> Path:
    """``NAME.conflict-PID``: where finished work goes when ``target`` appeared while it was written (not hidden:
    it is complete, and the user is told to look at it)."""
    return target.parent / f"{target.name}.conflict-{os.getpid()}"


class Workspace:
    """Context manager yielding a temporary folder that becomes ``target`` on success.

    It holds ``target``'s lock (``hamdata.locks.hold``) from before its checks until the commit.
    """

    def __init__(self, target: Path, overwrite: bool = False):
        self.target = Path(target)
        self.overwrite = overwrite
        self.tmp = temporary_name(self.target)
        self._lock = contextlib.ExitStack()

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
            if left_behind(old):
                shutil.rmtree(old, ignore_errors=True)

    def claim(self) -> contextlib.ExitStack:
        """Check, lock, check again: from here until the output is in place, this command is its one writer.
        A command holds its claim around all of its work (two commands never both do it); the first check
        refuses a path that cannot be an output before the lock creates anything, the second an output another
        command finished meanwhile. Returns the held lock, to use as a context manager."""
        claim = contextlib.ExitStack()
        self.check()
        claim.enter_context(hold(self.target))
        try:
            self.check()
        except BaseException:
            claim.close()
            raise
        return claim

    def __enter__(self) -> Path:
        self._lock.enter_context(self.claim())  # within the command's own claim, the lock is taken again
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            self._remove_stale()
            self.tmp.mkdir()
        except OSError as exc:
            self._lock.close()
            raise HamdataError(self._message(exc)) from None
        return self.tmp

    def _message(self, exc: OSError) -> str:
        # name the output the user asked for, not the hidden temp folder inside which it failed
        return f"cannot write {self.target}: {os_error_reason(exc)}; nothing was written"

    def __exit__(self, kind, exc, tb) -> bool:
        with self._lock:
            return self._finish(kind, exc)

    def _finish(self, kind, exc) -> bool:
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
        if not self.overwrite and self._occupied():  # it appeared while we worked: check() had found it free
            where = conflict_name(self.target)
            os.replace(self.tmp, where)
            raise HamdataError(f"{self.target} appeared while this command ran and was not replaced (pass --overwrite "
                               f"to replace it); the finished work is in {where}")
        old = None
        if self.target.exists():
            if self.target.is_dir() and not any(self.target.iterdir()):
                self.target.rmdir()
            else:
                old = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
                os.replace(self.target, old)
        try:
            os.replace(self.tmp, self.target)
        except OSError:
            if old is not None:  # put the previous output back: a failed move must not lose it
                os.replace(old, self.target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _occupied(self) -> bool:
        target = self.target
        return target.is_symlink() or (target.exists() and (not target.is_dir() or any(target.iterdir())))
