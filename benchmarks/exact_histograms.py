"""Exact mode with the |x| histograms binned once per hooked tensor, against every point binning its own.

    python benchmarks/exact_histograms.py                   # 1 and 2 torch threads, 4 repeats
    python benchmarks/exact_histograms.py --threads 1 --repeats 6

In exact mode every value of every point goes into its |x| histogram. A hooked tensor is
binned once, as a histogram kept apart by sign (``accumulate._signed_hist``): the other points
on the same values fold it, and a post-activation point derived from them (relu, relu6) reads
its histogram off it through the clamp (``accumulate._clamped_hist``), so it bins nothing
itself. The second route switches that off (``hooks._given_hist`` answers None: every point
bins its own values, as before the change; the signed histogram costs the same three passes as
the |x| one). Rows, interleaved in one process: torchvision mobilenet_v2 (random weights) on
``--images`` random images at 224 px in batches of 32, the bare forward, the probe binned once
and the probe with each point binning its own. Printed: the fastest and the median wall time,
the median over the repeats of the ratio to the same repeat's bare forward, and the median
over the repeats of the paired difference between the two probes, and the values each route
bins (counted in the warm-up runs). The histograms of both are checked to be equal.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads (default 1 2)")
    parser.add_argument("--repeats", type=int, default=4, help="interleaved repeats (default 4)")
    parser.add_argument("--images", type=int, default=64, help="images at 224 px (default 64)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    import torchvision

    from probes.capture import accumulate, hooks, probe

    once = hooks._given_hist
    binned: list[int] = []   # values of each binning call (list.append is atomic across threads)
    signed_hist = accumulate._signed_hist

    def counting(x, ws):   # counts the values binned (warm-up runs only)
        binned.append(x.numel())
        return signed_hist(x, ws)

    def own(acc, kind, signed):   # every point bins its own values
        return None

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    x = torch.randn(args.images, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    kw = dict(batch_size=32, device="cpu", progress=False, moments="exact")

    def bare() -> None:
        with torch.no_grad():
            for i in range(0, len(x), 32):
                model(x[i:i + 32])

    def run(route):
        hooks._given_hist = route
        try:
            return probe(model, x, **kw)
        finally:
            hooks._given_hist = once

    for n in args.threads:
        torch.set_num_threads(n)
        bare()
        # warm-up, the values each route bins, and the check that both give the same histograms
        accumulate._signed_hist = counting
        try:
            a = run(once)
            n_once = sum(binned)
            binned.clear()
            b = run(own)
            n_own = sum(binned)
        finally:
            accumulate._signed_hist = signed_hist
        for name in a.stats:
            ea, eb = a.stats[name].extent, b.stats[name].extent
            if not (np.array_equal(ea.abs_hist, eb.abs_hist) and ea.hist_points == eb.hist_points):
                raise SystemExit(f"histograms differ at {name}")
        times: dict[str, list[float]] = {"bare forward": [], "binned once": [], "each its own": []}
        funcs = {"bare forward": bare, "binned once": lambda: run(once), "each its own": lambda: run(own)}
        for _ in range(args.repeats):
            for name, func in funcs.items():
                t = time.perf_counter()
                func()
                times[name].append(time.perf_counter() - t)
        print(f"== exact mode, mobilenet_v2 at 224 px, {args.images} images in batches of 32; torch threads {n}; "
              f"{args.repeats} interleaved repeats (histograms equal at all {len(a.stats)} points) ==")
        print(f"values binned a probe: {n_once / 1e6:.0f} M binned once, {n_own / 1e6:.0f} M each its own "
              f"({1 - n_once / n_own:.0%} fewer)")
        print(f"{'row':<14}{'fastest s':>11}{'median s':>10}{'median x bare':>15}")
        for name, ts in times.items():
            ratio = statistics.median(t / base for t, base in zip(ts, times["bare forward"]))
            print(f"{name:<14}{min(ts):>11.3f}{statistics.median(ts):>10.3f}{ratio:>15.2f}")
        diff = statistics.median(o - s for o, s in zip(times["each its own"], times["binned once"]))
        print(f"each its own - binned once, median of the paired differences: {diff:.3f} s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
