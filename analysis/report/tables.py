"""The report's summary tables as DataFrames (per design over seeds; paired comparisons).

Rendering them (Markdown, LaTeX) is :mod:`analysis.report.document`'s job.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.metrics import METRICS

__all__ = ["HIGHER_IS_BETTER", "accuracy_table", "comparison_table", "metrics_table"]


#: Direction of "better" per metric for the bold cell of a table row (True: higher keeps more),
#: from the registry :mod:`analysis.metrics`. Metrics without a direction there (Betti numbers,
#: intrinsic dimension, CKA, interval bounds ...) get no bold cell; derived names resolve
#: through :func:`analysis.metrics.higher_is_better`.
HIGHER_IS_BETTER: dict[str, bool] = {
    name: info.direction == "higher keeps more" for name, info in METRICS.items() if info.direction is not None
}


def _design_order(designs: Sequence[str]) -> list[str]:
    from analysis.figures import design_colors

    return list(design_colors(sorted(set(designs))))


def metrics_table(df: pd.DataFrame, *, metrics: Sequence[str], stages: Sequence[str],
                  designs: Sequence[str] = ()) -> pd.DataFrame:
    """Summary per (stage, metric) x design: mean and sample std over seeds of the block mean.

    Each checkpoint contributes one value per (stage, metric): the mean over blocks of the
    post-activation points of that stage, ``v_c = (1/B) sum_b value_{c,b}`` (non-finite values
    skipped; :func:`analysis.compare.band_values`, the per-seed summary shared with the paired
    comparison); a design's cell is ``mean_c v_c`` and ``std_c v_c`` (sample std, ddof = 1; NaN
    for one seed) over its checkpoints. This table describes each design; whether two designs
    differ is answered by :func:`comparison_table` (paired over seeds, with an interval).

    Parameters
    ----------
    df : DataFrame
        Tidy results of one dataset.
    metrics, stages : sequence of str
        Rows of the table (stage-major order).
    designs : sequence of str
        Columns; empty = every design in ``df`` (fixed legend order).

    Returns
    -------
    DataFrame
        Columns ``stage, metric, design, mean, std, n``; rows with no finite value are absent.
    """
    sel = df[df["metric"].isin(list(metrics)) & df["stage"].isin(list(stages)) & ~df["pre"].astype(bool)]
    if designs:
        sel = sel[sel["design"].isin(list(designs))]
    sel = sel[np.isfinite(sel["value"].astype(float))]
    cols = ["stage", "metric", "design", "mean", "std", "n"]
    if sel.empty:
        return pd.DataFrame(columns=cols)
    from analysis.compare import band_values

    per_ckpt = band_values(sel.assign(seed=sel["seed"] if "seed" in sel.columns else np.nan),
                           bands={"all": sorted(set(sel["block"].astype(int)))}, pre=False)
    agg = (per_ckpt.groupby(["stage", "metric", "design"], sort=True)["value"]
           .agg(mean="mean", std="std", n="count").reset_index())
    order = {(s, m): i for i, (s, m) in enumerate((s, m) for s in stages for m in metrics)}
    dorder = {d: i for i, d in enumerate(list(designs) or _design_order(agg["design"]))}
    agg["_k"] = [(order[(s, m)], dorder.get(d, len(dorder))) for s, m, d in
                 zip(agg["stage"], agg["metric"], agg["design"])]
    out = agg.sort_values("_k", kind="stable").drop(columns="_k").reset_index(drop=True)[cols]
    out.attrs["designs"] = sorted(set(out["design"]), key=lambda d: dorder.get(d, len(dorder)))
    return out


def accuracy_table(cards: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy (%) per dataset x design, mean and sample std over seeds (from cards)."""
    cols = ["stage", "metric", "design", "mean", "std", "n"]
    if cards.empty:
        return pd.DataFrame(columns=cols)
    agg = (cards.assign(value=100.0 * cards["test_accuracy"].astype(float))
           .groupby(["dataset", "design"], sort=True)["value"]
           .agg(mean="mean", std="std", n="count").reset_index())
    agg = agg.rename(columns={"dataset": "stage"}).assign(metric="test_accuracy")
    dorder = {d: i for i, d in enumerate(_design_order(agg["design"]))}
    agg["_k"] = agg["design"].map(dorder)
    out = agg.sort_values(["stage", "_k"], kind="stable").drop(columns="_k").reset_index(drop=True)[cols]
    out.attrs["designs"] = list(dorder)
    return out


def comparison_table(df: pd.DataFrame, design_a: str, design_b: str, *, metrics: Sequence[str],
                     stages: Sequence[str], cards: pd.DataFrame | None = None,
                     level: float = 0.95) -> pd.DataFrame:
    """Paired comparison of two designs per (stage, metric), all blocks: the report's answer.

    Per seed the mean over all blocks of the stage's post-activation points
    (:func:`analysis.compare.band_values`), then :func:`analysis.compare.paired_stats` over the
    seeds trained for both designs: mean difference ``a - b``, Student-t interval, exact
    sign-flip p-value and verdict. With ``cards`` (``design, dataset, seed, test_accuracy``) a
    first row compares test accuracy (%) the same way.

    Returns
    -------
    DataFrame
        :data:`analysis.compare.BAND_COLUMNS` (band ``all``), in (stage, metric) order; empty
        when a design is missing.
    """
    from analysis.compare import BAND_COLUMNS, compare_bands, paired_stats

    rows = []
    if cards is not None and not cards.empty:
        acc = {(str(d), int(s)): 100.0 * float(v) for d, s, v in
               zip(cards["design"], cards["seed"], cards["test_accuracy"]) if pd.notna(s)}
        seeds = sorted({s for d, s in acc if d == design_a} & {s for d, s in acc if d == design_b})
        if seeds:
            r = paired_stats([acc[(design_a, s)] for s in seeds], [acc[(design_b, s)] for s in seeds],
                             seeds=seeds, level=level, names=(design_a, design_b))
            rows.append(pd.DataFrame([{"dataset": str(cards["dataset"].iloc[0]), "metric": "test_accuracy",
                                       "stage": "checkpoint", "pre": False, "band": "all", "blocks": "",
                                       "design_a": design_a, "design_b": design_b, **r}]))
    present = set(df["design"].astype(str)) if not df.empty else set()
    if {design_a, design_b} <= present:
        sel = df[df["metric"].isin(list(metrics)) & df["stage"].isin(list(stages))]
        if not sel.empty:
            blocks = sorted(set(sel["block"].astype(int)))
            paired = compare_bands(sel, design_a, design_b, stages=stages, pre=False, bands={"all": blocks},
                                   level=level)
            if not paired.empty:
                rows.append(paired)
    if not rows:
        return pd.DataFrame(columns=list(BAND_COLUMNS))
    out = pd.concat(rows, ignore_index=True)
    order = {("checkpoint", "test_accuracy"): -1,
             **{(st, m): i for i, (st, m) in enumerate((st, m) for st in stages for m in metrics)}}
    out["_k"] = [order.get((st, m), len(order)) for st, m in zip(out["stage"], out["metric"])]
    return out.sort_values("_k", kind="stable").drop(columns="_k").reset_index(drop=True)
