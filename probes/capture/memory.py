"""Keeps a long capture's resident memory flat (glibc's heap, trimmed only after growth)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

def _load_libc() -> tuple[Callable[[int], int] | None, Callable[[], int] | None]:
    """glibc's ``malloc_trim`` and a reader of the bytes its allocations hold in use
    (``mallinfo2``'s ``uordblks + hblkhd``: heap chunks and memory-mapped ones; glibc 2.33+),
    each None where it is missing."""
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        if name is None:
            return None, None
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None, None
    try:
        class _Mallinfo2(ctypes.Structure):
            _fields_ = [(f, ctypes.c_size_t) for f in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                "fordblks", "keepcost")]

        info = libc.mallinfo2
        info.restype = _Mallinfo2
    except AttributeError:  # glibc before 2.33
        return trim, None

    def used() -> int:
        m = info()
        return int(m.uordblks + m.hblkhd)

    return trim, used


_MALLOC_TRIM, _HEAP_USED = _load_libc() if sys.platform.startswith("linux") else (None, None)

#: Resident-memory growth since the last trim that triggers the next one: both the fraction
#: and the bytes must be exceeded.
_TRIM_GROWTH = 0.05
_TRIM_MIN_BYTES = 16 << 20


def _resident_bytes() -> int | None:
    """Resident set size of this process (from /proc; None where it cannot be read)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class _MemoryGuard:
    """Hands freed heap memory back to the OS when resident memory creeps up (glibc only).

    glibc raises its mmap threshold after the first large free, so the forward pass's
    activations then live on the heap between the sinks' small long-lived buffers, and the
    process's resident memory can creep up with the number of batches although the live data
    stays bounded. ``malloc_trim`` undoes that, but it is not free: the next forward pass
    faults the released pages in again (tens of ms a trim on the digits networks; on
    mobilenet_v2 at 224 px the re-faulted activations cost more than the trim). So the resident
    size is read after every forward pass (a few microseconds) and a trim runs only when it has
    grown by more than ``_TRIM_GROWTH`` and ``_TRIM_MIN_BYTES`` over the baseline.

    The baseline is the resident size after the first pass, and after the first pass that
    follows a trim: that pass takes its working set back onto the heap once, which is the
    level a steady stream stays at, not creep. (Re-reading the baseline right after the trim,
    below that working set, made the guard trim every other pass of mobilenet_v2 at 224 px,
    and every forward pass after a trim pays its page faults again.)

    Growth of live data is not creep, and a trim cannot give it back: the sinks' buffers fill
    up over the first batches (sampled rows wait for a flush, reservoirs fill). So where glibc
    reports the bytes its allocations hold (``mallinfo2``), a trim also needs the resident
    memory that is *not* allocated, ``resident - allocated`` (freed memory that has become
    resident: the heap grew around holes it could not reuse, or passes touched free pages that
    a trim had released), to have grown by more than ``_TRIM_MIN_BYTES``. On the digits
    networks live data grows by about 60 MB over 29 batches, and the resident size alone made
    the guard trim 7 times a probe, each trim followed by a pass that faults its working set in
    again.
    """

    def __init__(self) -> None:
        self.base: int | None = None    # resident bytes at the baseline
        self.level: int | None = None   # of which not allocated (None: not known)
        self.trims = 0

    def check(self) -> None:
        if _MALLOC_TRIM is None:
            return
        rss = _resident_bytes()
        if rss is None:
            return
        # mallinfo2 walks glibc's free lists (about 1 ms after a forward pass of the digits
        # networks, against tens of microseconds for the resident size: memory_guard.py): read
        # only where it is used, at the baseline and once the resident size has grown past the
        # thresholds.
        if self.base is None:
            self.base, self.level = rss, rss - _HEAP_USED() if _HEAP_USED is not None else None
            return
        grown = rss - self.base
        if grown <= self.base * _TRIM_GROWTH or grown <= _TRIM_MIN_BYTES:
            return
        level = rss - _HEAP_USED() if _HEAP_USED is not None else None
        if level is not None and self.level is not None and level - self.level <= _TRIM_MIN_BYTES:
            return   # live data: nothing a trim could give back for good
        _MALLOC_TRIM(0)
        self.trims += 1
        self.base = self.level = None   # the next pass, back on its working set, sets the baseline
