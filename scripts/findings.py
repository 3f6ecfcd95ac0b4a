"""Print the README's findings section (Markdown, ready to paste) from the shipped studies.

Every number comes from :mod:`analysis.compare`, the one seed aggregation of the project:

1. per checkpoint, the mean of a metric over the blocks of a depth band at a capture stage
   (:func:`analysis.compare.band_values`; bands = thirds of the blocks and ``all``);
2. paired over the seeds trained for both designs (same initial weights and batch order):
   mean difference ``a - b``, 95 % Student-t interval, exact sign-flip p-value over all 2^n sign
   patterns, and a verdict that names a design only when the interval excludes 0 and p <= 0.05
   (:func:`analysis.compare.paired_stats`);
3. test accuracy from the checkpoint cards, paired the same way.

The section lists the per-seed values, the paired differences, and plain statements of what is
and is not significant. Nothing in it is typed by hand: rerun the script after recomputing
``checkpoints/results/`` and paste its output over the README section.

Usage::

    .venv/bin/python scripts/findings.py [--dataset digits] [--designs linear relu6] [--out FILE]
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

#: Design-independent information metrics (same target for both designs), at these stages.
INFORMATION_PREFIXES = ("input_decode_", "label_decode_", "factor_decode_")
INFORMATION_STAGES = ("project", "output")
#: Metrics of the block's own geometry, at the projection (after the bottleneck activation).
GEOMETRY_METRICS = (
    "rank_frac", "effective_rank_frac", "participation_ratio_frac", "pca_dims_90_frac",
    "dead_fraction", "positive_mean", "recon_r2_linear", "recon_r2_knn", "cka_to_input",
    "betti0", "betti1", "twonn_id", "int8_sqnr_db",
)
GEOMETRY_STAGES = ("project",)
LEVEL = 0.95


def _fmt(x: float) -> str:
    if not isinstance(x, (int, float)) or not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    return f"{x:.3g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def _p(p: float) -> str:
    return "n/a" if not math.isfinite(p) else f"{p:.3g}"


def _interval(row: pd.Series) -> str:
    if not math.isfinite(row["ci_low"]):
        return f"{_fmt(row['mean_diff'])} (no interval)" if math.isfinite(row["mean_diff"]) else "n/a"
    return f"{_fmt(row['mean_diff'])} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"


def _blocks(row: pd.Series) -> str:
    return f"all ({row['blocks']})" if row["band"] == "all" else str(row["blocks"])


def information_metrics(df: pd.DataFrame) -> list[str]:
    """Information metrics present in ``df`` (not their within-run ``_ci_low``/``_ci_high`` bounds)."""
    names = sorted(pd.unique(df["metric"].astype(str)))
    return [m for m in names if m.startswith(INFORMATION_PREFIXES) and not m.endswith(("_ci_low", "_ci_high"))]


def findings(df: pd.DataFrame, design_a: str, design_b: str, *, dataset: str) -> pd.DataFrame:
    """Paired band comparisons (``analysis.compare.BAND_COLUMNS``) of the findings' metrics."""
    from analysis.compare import compare_bands
    from probes.points import STAGES

    parts = []
    info = information_metrics(df)
    if info:
        parts.append(compare_bands(df, design_a, design_b, dataset=dataset, metrics=info,
                                   stages=INFORMATION_STAGES, level=LEVEL))
    present = [m for m in GEOMETRY_METRICS if m in set(df["metric"].astype(str))]
    parts.append(compare_bands(df, design_a, design_b, dataset=dataset, metrics=present,
                               stages=GEOMETRY_STAGES, level=LEVEL))
    out = pd.concat(parts, ignore_index=True)
    order = {m: i for i, m in enumerate([*info, *GEOMETRY_METRICS])}
    stage_order = {s: i for i, s in enumerate(STAGES)}
    key = [(order.get(m, 99), stage_order.get(s, 9)) for m, s in zip(out["metric"], out["stage"])]
    return out.assign(_k=key).sort_values("_k", kind="stable").drop(columns="_k").reset_index(drop=True)


def accuracy(cards: Sequence[dict], design_a: str, design_b: str, dataset: str) -> dict:
    """Paired test accuracy (%) from the cards: :func:`analysis.compare.paired_stats` over seeds."""
    from analysis.compare import paired_stats

    acc = {(str(c.get("design")), int(c["seed"])): 100.0 * float(c["test_accuracy"]) for c in cards
           if (c.get("dataset") or {}).get("name") == dataset and c.get("test_accuracy") is not None
           and isinstance(c.get("seed"), int)}
    seeds = sorted({s for d, s in acc if d == design_a} & {s for d, s in acc if d == design_b})
    return paired_stats([acc[(design_a, s)] for s in seeds], [acc[(design_b, s)] for s in seeds],
                        seeds=seeds, level=LEVEL, names=(design_a, design_b))


def _settings(dataset: str, checkpoints: Sequence[str]) -> str:
    from analysis.study import SHIPPED_CONFIG, load_shipped

    meta = load_shipped(checkpoints[0], dataset, compute=False).meta if checkpoints else {}
    cfg = meta.get("config", SHIPPED_CONFIG.to_dict())
    n_img = meta.get("n_images")
    unit = "every spatial position a point" if cfg.get("sample_unit") == "position" else "one point per image"
    return (f"the {n_img} {dataset} {cfg.get('split')} images" if n_img else f"{dataset} ({cfg.get('split')} split)") + (
        f", {unit}, {cfg.get('reservoir_size'):,}-point reservoirs per capture point, "
        f"{cfg.get('topology_points')}-point greedy subsamples for homology, study seed {cfg.get('seed')}")


def markdown(table: pd.DataFrame, acc: dict, design_a: str, design_b: str, *, dataset: str,
             settings: str, missing: Sequence[str] = ()) -> str:
    """The README section: method, accuracy, paired table, statements, per-seed values."""
    from analysis.compare import values_mean

    a, b = design_a, design_b
    seeds = acc["seeds"].split(";") if acc["seeds"] else []
    if not table.empty:
        seeds = str(table["seeds"].iloc[0]).split(";")
    lines = [
        "## Findings on the shipped checkpoints", "",
        f"Generated by `scripts/findings.py --dataset {dataset} --designs {a} {b}` from the precomputed "
        f"studies in `checkpoints/results/` ({settings}). {len(seeds)} training seeds "
        f"({', '.join(seeds)}) of each design; a seed gives both designs the same initial weights and batch "
        "order, so the designs are compared *paired over seeds*. Per seed, a metric is averaged over "
        "the blocks of a depth band (thirds of the blocks, and all blocks) at a capture stage; "
        f"`{a} − {b}` is the mean paired difference with its {LEVEL:.0%} Student-t interval, `p` the exact "
        "sign-flip permutation p-value over all 2^n sign patterns (two-sided; with n pairs it cannot go "
        f"below 2/2^n). A design is called higher only when the interval excludes 0 **and** p ≤ {1 - LEVEL:.2g}; "
        "otherwise the row says *no significant difference*. `n/a`: not defined (reason given).", "",
        "### Test accuracy (%)", "",
        f"| | {a} | {b} | {a} − {b} [{LEVEL:.0%} CI] | p | verdict |", "|---|---|---|---|---|---|",
        f"| {dataset} test set | {_fmt(acc['mean_a'])} | {_fmt(acc['mean_b'])} | {_interval(pd.Series(acc))} | "
        f"{_p(acc['p_value'])} | {acc['verdict']} |", "",
    ]
    for stage, part in table.groupby("stage", sort=False):
        lines += [f"### At the `{stage}` point", "",
                  f"| metric | blocks | {a} | {b} | {a} − {b} [{LEVEL:.0%} CI] | p | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for _, r in part.iterrows():
            if r["n_pairs"] == 0:
                # one design may still have values (dead units of a ReLU6 output): show them
                lines.append(f"| `{r['metric']}` | {_blocks(r)} | {_fmt(values_mean(r['values_a']))} | "
                             f"{_fmt(values_mean(r['values_b']))} | n/a | n/a | n/a |")
                continue
            lines.append(f"| `{r['metric']}` | {_blocks(r)} | {_fmt(r['mean_a'])} | {_fmt(r['mean_b'])} | "
                         f"{_interval(r)} | {_p(r['p_value'])} | {r['verdict']} |")
        lines.append("")
    lines += ["### What is and is not significant", ""]
    lines += _statements(table, acc, a, b, missing)
    lines += ["", "<details><summary>Per-seed values (all blocks; "
              f"{a} / {b})</summary>", "",
              "| metric | stage | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|---|" + "---|" * len(seeds)]
    acc_a, acc_b = acc["values_a"].split(";"), acc["values_b"].split(";")
    if acc["seeds"].split(";") == seeds:
        lines.append("| test accuracy (%) | - | " + " | ".join(
            f"{_fmt(float(x))} / {_fmt(float(y))}" for x, y in zip(acc_a, acc_b)) + " |")
    for _, r in table[table["band"] == "all"].iterrows():
        va, vb = str(r["values_a"]).split(";"), str(r["values_b"]).split(";")
        lines.append(f"| `{r['metric']}` | {r['stage']} | " + " | ".join(
            f"{_fmt(float(x))} / {_fmt(float(y))}" for x, y in zip(va, vb)) + " |")
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def _statements(table: pd.DataFrame, acc: dict, a: str, b: str, missing: Sequence[str]) -> list[str]:
    out = [f"- **Test accuracy**: {acc['verdict']} ({a} − {b} = {_interval(pd.Series(acc))} points, "
           f"p = {_p(acc['p_value'])}, {acc['n_pairs']} seeds)."]
    sig = table[table["verdict"].str.endswith(" higher")]
    for (metric, stage), g in sig.groupby(["metric", "stage"], sort=False):
        bands = "; ".join(f"blocks {_blocks(r)}: {r['verdict']}, {_interval(r)}, p = {_p(r['p_value'])}"
                          for _, r in g.iterrows())
        out.append(f"- **`{metric}` at `{stage}`** differs significantly ({bands}).")
    none = table[table["verdict"] == "no significant difference"]
    excludes = (none["ci_low"] > 0) | (none["ci_high"] < 0)
    groups = [f"`{metric}` at `{stage}` (blocks {', '.join(_blocks(r) for _, r in g.iterrows())})"
              for (metric, stage), g in none[~excludes].groupby(["metric", "stage"], sort=False)]
    if groups:
        out.append(f"- **No significant difference** between {a} and {b} (the interval covers 0): "
                   + "; ".join(groups) + ".")
    short = [f"`{metric}` at `{stage}` (" + "; ".join(
                 f"blocks {_blocks(r)}: {_interval(r)}, p = {_p(r['p_value'])}" for _, r in g.iterrows()) + ")"
             for (metric, stage), g in none[excludes].groupby(["metric", "stage"], sort=False)]
    if short:
        n = int(none["n_pairs"].max())
        out.append(f"- **Interval excludes 0, but not significant** (the sign-flip test with {n} pairs cannot "
                   f"reach p ≤ {1 - LEVEL:.2g}; more seeds are needed to call these): " + "; ".join(short) + ".")
    undefined = table[table["verdict"] == "n/a"]
    for (metric, stage), g in undefined.groupby(["metric", "stage"], sort=False):
        reasons = sorted({s for r in g["reason"] for s in str(r).split("; ")
                          if s.startswith(("not applicable", "undefined")) or "no flat region" in s})
        why = f": {reasons[0]}" if reasons else ""
        out.append(f"- `{metric}` at `{stage}` is not compared (fewer than 2 seeds with values for both designs{why}).")
    if missing:
        out.append(f"- Not in these results (recompute the studies to include them): {', '.join(f'`{m}`' for m in missing)}.")
    return out


def main(argv: list[str] | None = None) -> int:
    from analysis.compare import load_design_metrics
    from probes.catalogue import list_checkpoints

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--designs", nargs=2, default=["linear", "relu6"], metavar="DESIGN")
    p.add_argument("--out", default=None, help="also write the paired band table (.csv or .parquet)")
    args = p.parse_args(argv)
    a, b = args.designs
    try:
        df = load_design_metrics(args.dataset, args.designs, compute=False, progress=False)
    except (ValueError, FileNotFoundError) as exc:
        print(f"findings.py: error: {exc}", file=sys.stderr)
        return 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        table = findings(df, a, b, dataset=args.dataset)
    for w in caught:
        print(f"findings.py: warning: {w.message}", file=sys.stderr)
    cards = list_checkpoints()
    acc = accuracy(cards, a, b, args.dataset)
    present = set(df["metric"].astype(str))
    missing = [m for m in GEOMETRY_METRICS if m not in present]
    if not information_metrics(df):
        missing = ["input_decode_r2", "label_decode_acc", *missing]
    ckpts = sorted(pd.unique(df["checkpoint"].astype(str)))
    print(markdown(table, acc, a, b, dataset=args.dataset, settings=_settings(args.dataset, ckpts),
                   missing=missing))
    if args.out:
        from analysis.study import write_table

        write_table(table, Path(args.out))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
