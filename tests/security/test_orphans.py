"""Report workers die with the report process, whichever signal ends it (issue 13, item 2).

A child process starts the report's process pool (the same ``_process_pool`` that
``bnprobe report`` uses) with two workers busy for two minutes, then the test kills the child
and checks that none of its descendants (workers, multiprocessing's resource tracker) is
still alive a few seconds later.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

REPO = Path(__file__).resolve().parents[2]


def _children(pid: int) -> set[int]:
    """All live descendants of ``pid`` (from /proc/*/stat)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_workers_die_with_the_report_process(sig: signal.Signals) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_pool_child.py"))], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, text=True)
    try:
        workers = {int(p) for p in proc.stdout.readline().split()}  # type: ignore[union-attr]
        assert len(workers) == 2, "the child did not start its workers"
        descendants = _children(proc.pid)
        assert workers <= descendants
        proc.send_signal(sig)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(p) for p in descendants):
            time.sleep(0.2)
        orphans = sorted(p for p in descendants if _alive(p))
        assert orphans == [], f"orphaned processes after {sig.name}: {orphans}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
