"""One study in one process against the same study sharded over a local Dask cluster.

    python benchmarks/dask_shard.py                          # digits-linear-s0, 2 workers
    python benchmarks/dask_shard.py --checkpoint torchvision:mobilenet_v2 --dataset rgb.npz
    python benchmarks/dask_shard.py --workers 2 4 --families spectrum activity

Runs :func:`analysis.study.run_study` with the shipped settings (``SHIPPED_CONFIG``, or
``--families`` / ``--n-images`` over it) once in this process and once per ``--workers`` count
(``workers=N``: the images are split into shards, each probed on a worker of a local cluster,
the probe results merged, the metrics computed here). Prints the wall and CPU time of each run
(CPU time of this process only: the workers' CPU is not counted, which is why wall time is the
figure to read here) and how the sharded table compares with the single-process one: the row
count, the largest absolute and relative difference of ``value`` and whether every other
column is equal. Target (issue 14): the same table up to float64 merge rounding. The cluster's
start-up is included in the time (it is what a user waits for); no on-disk cache is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="digits-linear-s0", help="shipped name, torchvision:/timm: name or file")
    parser.add_argument("--dataset", default="digits", help="dataset name or file (default digits)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2], help="local Dask worker counts (default 2)")
    parser.add_argument("--families", nargs="+", default=None, help="metric families (default: all)")
    parser.add_argument("--n-images", type=int, default=None, help="images probed (default: the shipped setting)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in this process (default 1)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from analysis.settings import SHIPPED_CONFIG
    from analysis.study import run_study
    from probes.loading import load_checkpoint

    torch.set_num_threads(args.threads)
    changes: dict = {"dataset": args.dataset}
    if args.families:
        changes["families"] = tuple(args.families)
    if args.n_images:
        changes["n_images"] = args.n_images
    config = dataclasses.replace(SHIPPED_CONFIG, **changes)
    loaded = load_checkpoint(args.checkpoint)
    print(f"{args.checkpoint} on {args.dataset}, families {', '.join(config.families)}, "
          f"{args.threads} torch thread(s) here")
    print(f"{'run':<18} {'wall s':>8} {'cpu s':>8} {'rows':>6} {'max |diff|':>11} {'max rel':>9} {'other columns':>14}")

    def run(workers: int | None):  # noqa: ANN202
        w, c = time.perf_counter(), time.process_time()
        table = run_study(loaded, config, progress=False, device="cpu", workers=workers).metrics
        return table, time.perf_counter() - w, time.process_time() - c

    one, wall, cpu = run(None)
    print(f"{'1 process':<18} {wall:>8.1f} {cpu:>8.1f} {len(one):>6} {'':>11} {'':>9} {'':>14}", flush=True)
    a = one["value"].to_numpy(float)
    for n in args.workers:
        table, wall, cpu = run(n)
        same_len = len(table) == len(one)
        if same_len:
            b = table["value"].to_numpy(float)
            both = np.isfinite(a) & np.isfinite(b)
            nan_same = bool(np.array_equal(np.isnan(a), np.isnan(b)))
            diff = np.abs(a - b)[both]
            rel = diff / np.maximum(np.abs(a[both]), 1e-300)
            rest = one.drop(columns="value").fillna("").astype(str).equals(
                table.drop(columns="value").fillna("").astype(str)) and nan_same
            print(f"{f'{n} Dask workers':<18} {wall:>8.1f} {cpu:>8.1f} {len(table):>6} "
                  f"{diff.max(initial=0.0):>11.2e} {rel.max(initial=0.0):>9.2e} {'equal' if rest else 'DIFFER':>14}")
        else:
            print(f"{f'{n} Dask workers':<18} {wall:>8.1f} {cpu:>8.1f} {len(table):>6}   row counts differ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
