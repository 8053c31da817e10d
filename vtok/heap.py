"""Freed memory handed back to the system while a long stream of batches runs (glibc's malloc).

A model frees its activations after every batch, but glibc keeps freed chunks in its
arenas for reuse, and with blocks of many sizes interleaved the arenas keep growing
though what is live stays the same. Measured while encoding 4000 JPEGs at 256 px with
the demo tokenizer: about 150 MB live and 1.8 GB free inside the arenas, all of it
resident, so peak memory grew with the number of images.

:func:`release_free_heap`, called between batches, asks glibc to return its whole free
pages to the system (``malloc_trim``) each time this process's resident memory has grown
by more than ``limit`` since the last trim. Resident memory then stays within the
working set plus ``limit`` for any number of images, and the trim, whose pages fault
back in when they are used again, runs only now and then. Without glibc (macOS, musl)
it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import os

GROWTH_LIMIT = 256 * 2**20  # bytes of resident growth tolerated before the heap is trimmed

_baseline: dict[int, int] = {}  # process id -> resident bytes after its last trim (forked workers have their own)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, whose ``malloc_trim`` returns free heap pages, or None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


def resident_bytes() -> int | None:
    """This process's resident memory, or None where ``/proc`` does not tell it."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_free_heap(limit: int = GROWTH_LIMIT) -> bool:
    """Trim glibc's heap if resident memory grew by more than ``limit`` bytes since the last trim; whether it did.

    The first call in a process only records where resident memory stands.
    """
    libc, rss, pid = _libc(), resident_bytes(), os.getpid()
    if libc is None or rss is None:
        return False
    if pid not in _baseline:
        _baseline[pid] = rss
        return False
    if rss - _baseline[pid] <= limit:
        return False
    libc.malloc_trim(0)
    _baseline[pid] = resident_bytes() or rss
    return True
