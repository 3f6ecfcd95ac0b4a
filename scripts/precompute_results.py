"""Precompute the studies of the shipped checkpoints into ``checkpoints/results/``.

The dashboard opens on these (``analysis.study.load_shipped``), so it is instant on a fresh
clone. Each checkpoint is studied on the dataset it was trained on by
``analysis.study.compute_shipped`` (``SHIPPED_CONFIG``, CPU, one torch and one BLAS thread), in
worker processes started with ``SHIPPED_ENV`` (kernels pinned to AVX2, so an AVX-512 machine
gives the same bytes). A result whose checkpoint sha256 no longer matches the card is
recomputed; an up-to-date one is skipped.

Usage::

    .venv/bin/python scripts/precompute_results.py [--workers 2] [NAME ...]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import time


def _one(name: str, dataset: str) -> tuple[str, float]:
    # compute_shipped pins torch and BLAS to one thread: the byte-for-byte recompute test
    # (tests/analysis/test_shipped_results.py) goes through the same function
    from analysis.study import compute_shipped, shipped_result_path

    t0 = time.perf_counter()
    compute_shipped(name, dataset).save(shipped_result_path(name, dataset))
    return name, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    from analysis.study import SHIPPED_ENV, StudyResult, shipped_result_path
    from probes.catalogue import list_checkpoints

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="checkpoints (default: all shipped)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="recompute up-to-date results too")
    args = parser.parse_args(argv)
    cards = {c["name"]: c for c in list_checkpoints()}
    names = args.names or sorted(cards)
    todo = []
    for name in names:
        if name not in cards:
            print(f"unknown checkpoint {name!r}; available: {sorted(cards)}", file=sys.stderr)
            return 2
        dataset = cards[name]["dataset"]["name"]
        stem = shipped_result_path(name, dataset)
        if not args.force and stem.with_suffix(".npz").exists() and stem.with_suffix(".parquet").exists():
            if StudyResult.load(stem).meta.get("sha256") == cards[name]["sha256"]:
                print(f"{name}: up to date")
                continue
        todo.append((name, dataset))
    # the workers start fresh interpreters: they load numpy and torch under the pinned
    # instruction set (analysis.study.SHIPPED_ENV), as the byte-for-byte test does
    os.environ.update(SHIPPED_ENV)
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
        for fut in cf.as_completed([pool.submit(_one, n, d) for n, d in todo]):
            name, seconds = fut.result()
            print(f"{name}: {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
