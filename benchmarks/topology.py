"""Time of our topology step against a direct ripser call on the same cloud.

    python benchmarks/topology.py                 # 2,000-point noisy circle in 64 dims (~6 min)
    python benchmarks/topology.py --n 600         # a quick look

Rows: ``ripser`` (``ripser.ripser(x, maxdim=1)``, the baseline), ``ours`` (
:func:`analysis.topology.persistent_homology` with the same options: validation, RMS scale,
ripser, diagram normalisation, Betti numbers, total persistence, entropy), and both with a
greedy-permutation subsample (``n_perm``). The target is ours / ripser - 1 <= 10 % without
subsampling. Wall time and process CPU time are printed: on a machine shared with other jobs
CPU time is the steadier measure of the work done. Imports (persim pulls in matplotlib) are done
before timing; they are a one-off per process.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time(func: Callable[[], object], repeats: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        func()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="points in the cloud (default 2000)")
    parser.add_argument("--dim", type=int, default=64, help="ambient dimension (default 64)")
    parser.add_argument("--noise", type=float, default=0.1, help="noise std relative to the radius (default 0.1)")
    parser.add_argument("--n-perm", type=int, default=500, help="greedy subsample size (default 500)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row, the fastest is shown (default 1)")
    args = parser.parse_args(argv)

    import persim  # noqa: F401  (imported here so that its import time is not counted)
    from ripser import ripser

    from analysis.topology import persistent_homology
    from tests.manifolds import make_manifold

    x = make_manifold("circle", args.n, noise=args.noise, seed=0, ambient_dim=args.dim)
    rows = [
        ("ripser", None, lambda: ripser(x, maxdim=1)),
        ("ours", None, lambda: persistent_homology(x, maxdim=1)),
        ("ripser", args.n_perm, lambda: ripser(x, maxdim=1, n_perm=args.n_perm)),
        ("ours", args.n_perm, lambda: persistent_homology(x, maxdim=1, n_perm=args.n_perm)),
    ]
    print(f"noisy circle (noise {args.noise}), {args.n} points in {args.dim} dims, H0+H1, repeats={args.repeats}")
    print(f"{'step':<8} {'points used':>11} {'wall s':>9} {'cpu s':>9} {'overhead (wall / cpu)':>22}")
    base: tuple[float, float] | None = None
    for name, n_perm, func in rows:
        wall, cpu = _time(func, args.repeats)
        used = args.n if n_perm is None else min(n_perm, args.n)
        if name == "ripser":
            base, note = (wall, cpu), "baseline"
        else:
            assert base is not None
            note = f"{wall / base[0] - 1:+.1%} / {cpu / base[1] - 1:+.1%}"
        print(f"{name:<8} {used:>11} {wall:>9.2f} {cpu:>9.2f} {note:>22}", flush=True)
    res = persistent_homology(x, n_perm=args.n_perm)
    print(f"subsample metrics: betti0={res.metrics['betti0']:.0f} betti1={res.metrics['betti1']:.0f} "
          f"cover radius={res.cover_radius:.3f} (units of the RMS scale)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
