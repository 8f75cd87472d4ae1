"""Give freed memory back to the operating system between the stages of a large build.

Parsing a 401,059-row table, merging inputs and searching duplicates make and free millions of small objects;
glibc keeps the freed pages in its heap (and pyarrow's pool its own), so a process that has passed its peak
still holds it: 935 MiB after reading ISIC 2024's table against 536 MiB once released. ``release()`` collects
garbage and asks each allocator to return what it no longer uses. The objects alive are untouched; only the
resident size changes. Measured in bench/NOTES.md item 17.

A small build has little to give back, and the garbage collection costs ~0.2 s in a process that has torch
loaded (a notebook, a test run), four times a build: below RELEASE_FROM images a stage leaves memory as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import sys

RELEASE_FROM = 20_000  # images a stage handled; below this release() does nothing


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's malloc_trim, or None (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release(images: int | None = None) -> None:
    """Collect garbage, then return free heap pages (glibc) and pyarrow's unused pool memory to the system.

    images: how many images the stage just finished handled; fewer than RELEASE_FROM: nothing worth the time.
    """
    if images is not None and images < RELEASE_FROM:
        return
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
    arrow = sys.modules.get("pyarrow")  # pandas' string columns live in pyarrow's pool; never import it for this
    if arrow is not None:
        try:
            arrow.default_memory_pool().release_unused()
        except AttributeError:
            pass
