"""Ordered parallel map with a bounded window, for CPU-bound image work.

Results come back in input order whatever the number of workers, so what is
written from them is the same bytes with 1 or N processes. At most
``window * workers`` chunks are in flight, so memory does not grow with the
input. OpenCV runs single-threaded inside (one image per process; its own
threads would fight the pool).

Workers are spawned, not forked: a child forked from a process whose OpenCV
thread pool has run inherits that pool's locks mid-use, and its first
``cv2.setNumThreads`` (or any parallel cv2 call) waits forever. Spawning costs
each worker its imports (a few seconds) once per map, so a command whose
--workers is left out sizes its pool by the work (pool_size): a small input
runs in the command's own process.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from itertools import islice

CHUNK = 8  # items per task sent to a worker: amortises inter-process overhead
WINDOW = 4  # chunks in flight per worker
# Items of work per worker process when the number of workers is left to us (pool_size): a spawned worker first
# spends 1-3 s of CPU importing (numpy, OpenCV, pandas, albumentations), while one image costs 2-20 ms, so a
# map of a few hundred images is done before a pool would have started.
ITEMS_PER_WORKER = 256


def pool_size(workers: int | None, items: int) -> int:
    """The worker processes for a map of ``items`` items: ``workers`` as asked (``--workers N``); when it is not
    given (None or 0), the CPU count, but no more than one process per ITEMS_PER_WORKER items, and none (this
    process) for fewer than 2 x ITEMS_PER_WORKER. The output never depends on it (ordered_map)."""
    if workers:
        return max(1, int(workers))
    return max(1, min(os.cpu_count() or 1, int(items) // ITEMS_PER_WORKER))


def _init_worker(parent: int) -> None:
    import cv2

    cv2.setNumThreads(1)
    _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """End this worker when the main process dies, even by SIGKILL.

    A pool worker holds its own end of the task pipe, so it never sees EOF: without
    this, a killed build leaves its workers asleep forever.
    """
    armed = False
    if sys.platform.startswith("linux"):
        try:
            armed = ctypes.CDLL(None).prctl(1, signal.SIGKILL) == 0  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if armed:
        if os.getppid() != parent:  # it died before prctl took effect
            os._exit(1)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


@contextmanager
def single_threaded_cv2():
    """OpenCV on one thread for the duration (the serial path's equivalent of _init_worker)."""
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def _run_chunk(fn: Callable, items: list) -> list:
    return [fn(item) for item in items]


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def ordered_map(fn: Callable, items: Iterable, workers: int, chunk: int = CHUNK, window: int = WINDOW) -> Iterator:
    """``fn(item)`` for every item, yielded in input order, computed by ``workers`` processes.

    ``fn`` and the items must be picklable and importable by a fresh interpreter
    (a module-level function of a package, or functools.partial of one).
    ``workers <= 1`` runs in this process, without a pool.
    """
    if workers <= 1:
        with single_threaded_cv2():
            for item in items:
                yield fn(item)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(os.getpid(),),
                             mp_context=context) as pool:
        pending = deque()
        try:
            for part in _chunks(items, chunk):
                pending.append(pool.submit(_run_chunk, fn, part))
                if len(pending) >= window * workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
