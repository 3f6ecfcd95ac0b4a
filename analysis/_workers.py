"""Initialiser of report worker processes: they die with their parent, however it dies.

Kept free of heavy imports: a spawned worker imports this module before it can run the
initialiser, and a worker still importing numpy or torch when its parent is killed would
otherwise live on for the length of those imports (tens of seconds on a loaded machine).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time

__all__ = ["die_with_parent", "init_worker"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Make this process end when process ``parent`` dies (SIGKILL and SIGTERM included).

    Linux: the kernel sends SIGKILL on the parent's death (``prctl(PR_SET_PDEATHSIG)``); the
    check of ``getppid`` after it closes the race of a parent that died before the call.
    Elsewhere a daemon thread polls ``getppid`` every second. Without this, the workers of a
    killed report live on (hundreds of MB each), and so does multiprocessing's resource
    tracker, which waits for them.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="bnprobe-parent-watch", daemon=True).start()


def init_worker(parent: int) -> None:
    """Initialiser of a report worker: die with ``parent``; torch on one thread."""
    die_with_parent(parent)
    import torch

    torch.set_num_threads(1)
