"""One writer per output: an exclusive lock tied to an output path, released by the kernel when its holder dies.

The lock is ``flock`` on a hidden ``.NAME.lock`` file beside the output (the holder's pid written into it, so
that a refusal can name it). A SIGKILLed holder leaves the file behind but not the lock: the next command takes
it. The holder removes the file when it lets go, while it still holds the lock; a command that opened the old
file meanwhile finds, once it holds the lock, that the path no longer names that file, and opens it anew.

Within one process the lock is re-entrant (a command may take it early, before its work, and the ``Workspace``
that writes the output takes it again), so a process never refuses itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from hamdata.errors import HamdataError, os_error_reason

PROBE_RETRIES = 4
_HELD: dict[str, list] = {}  # lock path -> [fd, depth], the locks this process holds


def lock_path(target) -> Path:
    """The hidden ``.NAME.lock`` beside ``target``."""
    target = Path(os.path.abspath(target))
    return target.parent / f".{target.name}.lock"


def _holder(path: Path) -> str:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    return text if text.isdigit() else "unknown"


def refusal(target, pid: str) -> str:
    return (f"{target} is being written by another command (pid {pid}); wait for it to finish or choose another output; "
            "nothing was touched")


def _try_lock(fd: int) -> bool:
    """LOCK_EX without waiting; a few quick tries, as ``holder_of`` (verify) holds a shared lock for an instant."""
    for attempt in range(PROBE_RETRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.01 * (attempt + 1))
    return False


def _acquire(path: Path, target) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if not _try_lock(fd):
            os.close(fd)
            raise HamdataError(refusal(target, _holder(path)))
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # its previous holder removed it after we opened it
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
            return fd
        os.close(fd)


@contextlib.contextmanager
def hold(target):
    """Hold ``target``'s lock for the block; another process aiming at it gets one HamdataError line naming the pid.

    The folder that holds ``target`` is created when missing (the output goes there anyway).
    """
    path = lock_path(target)
    key = str(path)
    if key in _HELD:
        _HELD[key][1] += 1
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = _acquire(path, target)
        except OSError as exc:
            raise HamdataError(f"cannot write {target}: {os_error_reason(exc)}; nothing was written") from None
        _HELD[key] = [fd, 1]
    try:
        yield path
    finally:
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            fd = _HELD.pop(key)[0]
            with contextlib.suppress(OSError):
                path.unlink()  # while still held: see the module docstring
            fcntl.flock(fd, fcntl.LOCK_UN)  # explicitly: forked children (loader workers) share the descriptor
            os.close(fd)


def holder_of(target) -> str | None:
    """The pid (as text, or "unknown") of another process that holds ``target``'s lock, None when it is free.

    Only looks: creates nothing, takes nothing for longer than the look.
    """
    path = lock_path(target)
    if str(path) in _HELD:
        return str(os.getpid())
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(path)
    finally:
        os.close(fd)  # closing drops a lock that was taken
    return None
