"""The capture's memory guard with and without glibc's allocated bytes, side by side.

    python benchmarks/memory_guard.py                  # digits network, 9 repeats
    python benchmarks/memory_guard.py --repeats 5

The guard (``probes/capture/memory.py``) calls ``malloc_trim`` when the resident size has
grown past its limits and, where glibc reports its allocated bytes (``mallinfo2``), only if
the resident memory that is not allocated grew too. Rows, interleaved in one process on
digits-linear-s0 over the 1,797 digits (batches of 64, 1 torch thread): the bare forward, the
default probe with that condition ("allocated bytes"), and the default probe with the
resident size alone (the reader of the allocated bytes switched off, as on a C library
without ``mallinfo2``). Printed: the fastest wall time, the median over the repeats of the
ratio to the same repeat's bare forward, the median page faults of a run and the trims a
probe made (median), then what one reading of the resident size and one of the allocated bytes
cost after a forward pass (timed in the warm-up). For a long stream see ``streaming.py --guard``.
"""

from __future__ import annotations

import argparse
import importlib
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)

    import torch

    from capture import _load  # benchmarks/capture.py: the digits model and data
    from probes.capture import probe
    from probes.preprocess import prepare

    memory = importlib.import_module("probes.capture.memory")   # probes.capture is the function
    if memory._MALLOC_TRIM is None or memory._HEAP_USED is None:
        print("skipped: no glibc malloc_trim / mallinfo2 here, the guard has one rule only")
        return 0
    reader = memory._HEAP_USED
    torch.set_num_threads(1)
    model, data, spec, what = _load()
    x = prepare(data.x, spec, name=data.name)
    trims: list[int] = []
    check = memory._MemoryGuard.check

    readings: dict[str, list[float]] | None = None   # what a reading costs after a pass (warm-up only)

    def counting(self: object) -> None:
        before = self.trims
        check(self)
        trims[-1] += self.trims - before
        if readings is not None:
            for name, read in (("resident size (/proc/self/statm)", memory._resident_bytes),
                               ("allocated bytes (mallinfo2)", reader)):
                t = time.perf_counter()
                read()
                readings.setdefault(name, []).append(time.perf_counter() - t)

    memory._MemoryGuard.check = counting

    def bare() -> None:
        with torch.no_grad():
            for i in range(0, len(x), 64):
                model(x[i:i + 64])

    def run(read: object) -> None:
        memory._HEAP_USED = read
        probe(model, x, batch_size=64, device="cpu", progress=False)

    rows = {"bare forward": bare, "allocated bytes": lambda: run(reader), "resident size alone": lambda: run(None)}
    for name, f in rows.items():   # warm-up
        trims.append(0)
        readings = {} if name == "allocated bytes" else None
        f()
        if readings is not None:
            taken = readings
    readings = None
    walls = {k: [] for k in rows}
    faults = {k: [] for k in rows}
    counts = {k: [] for k in rows}
    for _ in range(args.repeats):
        for name, f in rows.items():
            trims.append(0)
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t = time.perf_counter()
            f()
            walls[name].append(time.perf_counter() - t)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
            counts[name].append(trims[-1])
    memory._HEAP_USED, memory._MemoryGuard.check = reader, check
    print(f"digits-linear-s0 ({what}), 1797 images, batches of 64, 1 torch thread, {args.repeats} repeats")
    print(f"{'row':<22}{'wall s':>8}{'median x':>10}{'faults k':>10}{'trims':>7}")
    for name in rows:
        ratio = statistics.median(w / b for w, b in zip(walls[name], walls["bare forward"]))
        trim = "" if name == "bare forward" else f"{statistics.median(counts[name]):g}"
        print(f"{name:<22}{min(walls[name]):>8.3f}{ratio:>10.2f}{statistics.median(faults[name]) / 1000:>10.0f}{trim:>7}")
    # What a reading costs after a forward pass of a probe, on the heap the pass left (the guard
    # reads the resident size after every pass, the allocated bytes only at a baseline and once
    # the resident size has passed its thresholds).
    for name, ts in taken.items():
        print(f"one reading of the {name} after a pass: median {statistics.median(ts) * 1e6:.0f} us, "
              f"largest {max(ts) * 1e6:.0f} us ({len(ts)} passes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
