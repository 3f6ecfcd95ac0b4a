"""Time of the information family per checkpoint (feature passes and decoding), as a table.

Usage: ``python benchmarks/information.py [CHECKPOINT ...]`` (default: digits-linear-s0,
digits-relu6-s0), one torch thread, CPU.
"""

from __future__ import annotations

import sys
import time

import torch

from analysis.information import INFO_POINTS, bootstrap_counts, extract_features, information_metrics
from probes.datasets import load_dataset
from probes.loading import load_checkpoint


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    train, test = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    print(f"{'checkpoint':<22} {'points':>6} {'features s':>11} {'decode s':>9} {'total s':>8}")
    for name in names:
        loaded = load_checkpoint(name)
        t0 = time.perf_counter()
        ftr = extract_features(loaded.model, train, input_spec=loaded.input_spec, points=INFO_POINTS, device="cpu")
        fte = extract_features(loaded.model, test, input_spec=loaded.input_spec, points=INFO_POINTS, device="cpu")
        t1 = time.perf_counter()
        counts = bootstrap_counts(len(test))
        for p in fte:
            information_metrics(ftr[p], fte[p], train, test, counts=counts, point=p)
        t2 = time.perf_counter()
        print(f"{name:<22} {len(fte):>6} {t1 - t0:>11.1f} {t2 - t1:>9.1f} {t2 - t0:>8.1f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["digits-linear-s0", "digits-relu6-s0"])
