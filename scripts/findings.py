"""Print the README's findings table from the precomputed shipped results.

For each metric at the projection point (after the bottleneck activation, ``pre=False``):
per seed, the mean over the blocks of a depth band; then mean +- sample std over the three
seeds, linear vs relu6, on the dataset given (default digits).

Usage::

    .venv/bin/python scripts/findings.py [--dataset digits] [--stage project]
"""

from __future__ import annotations

import argparse
import math
import sys

import pandas as pd

METRICS = (
    "rank_frac", "effective_rank_frac", "participation_ratio_frac", "pca_dims_90_frac",
    "dead_fraction", "positive_mean", "recon_error_linear", "recon_error_knn", "cka_to_input",
    "betti0", "betti1", "twonn_id", "int8_sqnr_db",
)
BANDS = {"0-5": range(0, 6), "6-11": range(6, 12), "12-16": range(12, 17), "all": range(0, 17)}


def findings(df: pd.DataFrame, *, stage: str = "project", designs: tuple[str, ...] = ("linear", "relu6")) -> pd.DataFrame:
    """Long table: metric, band, design, mean, std, n_seeds, reason (when all NaN)."""
    sel = df[(df.stage == stage) & (~df.pre) & df.design.isin(designs) & df.metric.isin(METRICS)]
    rows = []
    for (metric, design), g in sel.groupby(["metric", "design"]):
        for band, blocks in BANDS.items():
            b = g[g.block.isin(blocks)]
            per_seed = b.groupby("seed").value.mean()
            reason = "; ".join(sorted({r for r in b.reason if r})) if per_seed.isna().all() else ""
            rows.append({"metric": metric, "band": band, "design": design, "mean": per_seed.mean(),
                         "std": per_seed.std(), "n_seeds": int(per_seed.notna().sum()), "reason": reason})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, designs: tuple[str, ...] = ("linear", "relu6")) -> str:
    def cell(r: pd.Series) -> str:
        if r.n_seeds == 0:
            return "n/a"
        std = "" if math.isnan(r["std"]) else f" ± {r['std']:.3g}"
        return f"{r['mean']:.3g}{std}"

    lines = ["| metric | blocks | " + " | ".join(designs) + " |", "|---|---|" + "---|" * len(designs)]
    for metric in METRICS:
        for band in BANDS:
            t = table[(table.metric == metric) & (table.band == band)].set_index("design")
            if t.empty:
                continue
            lines.append(f"| {metric} | {band} | " + " | ".join(cell(t.loc[d]) if d in t.index else "-" for d in designs) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from analysis.study import load_shipped_metrics

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--stage", default="project")
    args = p.parse_args(argv)
    df = load_shipped_metrics(args.dataset)
    if df.empty:
        print("no precomputed results in checkpoints/results/", file=sys.stderr)
        return 2
    print(markdown(findings(df, stage=args.stage)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
