"""Time of the information family per checkpoint (what ``run_study`` spends on it), as a table.

Usage: ``python benchmarks/information.py [CHECKPOINT ...]`` (default: digits-linear-s0,
digits-relu6-s0); one torch thread, CPU. The first row also pays for the dataset's target
basis (cached per process).
"""

from __future__ import annotations

import sys
import time

import torch

from analysis.information import information_rows
from probes.loading import load_checkpoint


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    print(f"{'checkpoint':<22} {'points':>6} {'seconds':>8}")
    for name in names:
        loaded = load_checkpoint(name)
        t0 = time.perf_counter()
        metrics, _ = information_rows(loaded.model, "digits", input_spec=loaded.input_spec, device="cpu")
        print(f"{name:<22} {len(metrics):>6} {time.perf_counter() - t0:>8.1f}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["digits-linear-s0", "digits-relu6-s0"])
