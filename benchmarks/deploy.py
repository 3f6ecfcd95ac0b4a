"""CPU latency of every zoo network with BatchNorm folded into the convs vs unfolded.

    python benchmarks/deploy.py                       # batch 1 and 64, 1 thread
    python benchmarks/deploy.py --batch-sizes 1 --repeats 30 --threads 2

One row per shipped design (the ``-s0`` checkpoint of each dataset and design; a design's
architecture is the same for every seed) and batch size: the median wall time of one forward
pass under ``torch.no_grad()`` of the original network and of its copy with every BN folded
(:func:`analysis.deployment.fold_batchnorm`), the ratio folded / unfolded (median over repeats
of the per-repeat ratio, rows interleaved so that a drifting machine speed cancels), the number
of BNs folded, and the largest output difference over the test images (the fold must be
exact up to float32 rounding). Random weights of the recipe's architecture stand in for a
missing checkpoint, and the row says so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def _networks() -> list[tuple[str, torch.nn.Module, dict, str]]:
    """(name, model, input spec dict, weights note) for the -s0 recipe of each dataset x design."""
    from probes.catalogue import list_checkpoints
    from probes.loading import load_checkpoint
    from probes.train import RECIPES
    from probes.zoo import build_model

    shipped = {c["name"] for c in list_checkpoints()}
    out = []
    for name, recipe in RECIPES.items():
        if recipe.seed != 0:
            continue
        if name in shipped:
            out.append((name, load_checkpoint(name).model, recipe.input_spec(), "trained"))
        else:
            out.append((name, build_model(recipe.zoo_config()).eval(), recipe.input_spec(), "random weights"))
    return out


def _time(model: torch.nn.Module, x: torch.Tensor, inner: int) -> float:
    t = time.perf_counter()
    for _ in range(inner):
        model(x)
    return (time.perf_counter() - t) / inner


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--repeats", type=int, default=15, help="timed repeats per row (median reported)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from analysis.deployment import fold_batchnorm, fold_error
    from analysis.study import load_inputs
    from probes.preprocess import InputSpec, prepare

    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.repeats} repeats; "
          "times: median ms per forward pass")
    print("| network | weights | batch | BN folded | unfolded ms | folded ms | folded/unfolded | max abs error |")
    print("|---|---|---|---|---|---|---|---|")
    for name, model, spec, note in _networks():
        data = load_inputs(name.split("-")[0], split="test")
        x_all = prepare(data.x, InputSpec.from_dict(spec))
        folded, pairs = fold_batchnorm(model, x_all[:1])
        with torch.no_grad():
            err = fold_error(model, folded, torch.split(x_all, 128))["max_abs_error"]
            for bs in args.batch_sizes:
                x = x_all[:bs]
                inner = max(1, 64 // bs)
                for m in (model, folded):  # warm-up: first calls allocate and pick kernels
                    _time(m, x, inner)
                t_u, t_f, ratios = [], [], []
                for _ in range(args.repeats):
                    a, b = _time(model, x, inner), _time(folded, x, inner)
                    t_u.append(a)
                    t_f.append(b)
                    ratios.append(b / a)
                print(f"| {name} | {note} | {bs} | {len(pairs)} | {1e3 * statistics.median(t_u):.2f} | "
                      f"{1e3 * statistics.median(t_f):.2f} | {statistics.median(ratios):.3f} | {err:.2e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
