"""Keeps a long capture's resident memory flat (glibc's heap, trimmed only after growth)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        return None if name is None else ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _load_malloc_trim() if sys.platform.startswith("linux") else None

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
    """

    def __init__(self) -> None:
        self.base: int | None = None
        self.trims = 0

    def check(self) -> None:
        if _MALLOC_TRIM is None:
            return
        rss = _resident_bytes()
        if rss is None:
            return
        if self.base is None:
            self.base = rss
        elif rss > self.base * (1 + _TRIM_GROWTH) and rss - self.base > _TRIM_MIN_BYTES:
            _MALLOC_TRIM(0)
            self.trims += 1
            self.base = None   # the next pass, back on its working set, sets the baseline
