"""Overview: one metric across depth for every design (mean +- std over seeds), accuracy per
design, and a paragraph that reads the chart out in numbers.

:func:`show_overview` is reused by the "Probe a checkpoint" and "Reports" pages.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from analysis import figures
from analysis.metrics import metric_direction
from dashboard import state

__all__ = ["ensure_results", "metric_options", "reading",
           "render", "show_overview", "stage_options"]

_STAGE_WORDS = {"input": "the block input", "expand": "the expansion", "depthwise": "the depthwise conv",
                "project": "the projection", "output": "the block output"}
_DEFAULT_METRICS = ("effective_rank_frac", "rank_frac", "participation_ratio_frac")


def metric_options(df: pd.DataFrame) -> list[str]:
    """Metrics present in ``df`` with at least one finite value, in the order of METRIC_LABELS
    (``*_ci_low`` / ``*_ci_high`` bounds excluded)."""
    finite = df[np.isfinite(df["value"].astype(float))]
    # interval bounds are drawn with their metric, not offered as metrics of their own
    present = {m for m in finite["metric"].astype(str) if not m.endswith(("_ci_low", "_ci_high"))}
    known = [m for m in figures.METRIC_LABELS if m in present]
    return known + sorted(present - set(known))


def stage_options(df: pd.DataFrame, metric: str) -> list[tuple[str, bool]]:
    """``(stage, pre)`` pairs where ``metric`` has rows, in execution order."""
    rows = df[df["metric"] == metric]
    have = set(zip(rows["stage"].astype(str), rows["pre"].astype(bool)))
    return [(s, p) for s in figures.STAGE_ORDER for p in (True, False) if (s, p) in have]


def _stage_label(option: tuple[str, bool]) -> str:
    stage, pre = option
    return f"{stage} (before activation)" if pre else stage


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "n/a"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def reading(df: pd.DataFrame, metric: str, stage: str, pre: bool) -> str:
    """A one-paragraph reading of the depth curve of ``metric`` at ``stage``, from the numbers.

    Per design: the mean over all blocks of the per-block mean over seeds; then the largest
    per-block gap between the first two designs (linear and relu6 when present).
    """
    rows = df[(df["metric"] == metric) & (df["stage"] == stage) & (df["pre"] == bool(pre))]
    rows = rows[np.isfinite(rows["value"].astype(float))]
    where = _STAGE_WORDS.get(stage, stage) + (" (before its activation)" if pre else "")
    label = figures.metric_label(metric).split(" (")[0]
    if len(label) > 1 and label[1].islower():
        label = label[0].lower() + label[1:]
    if rows.empty:
        return f"No finite values of {label} at {where}."
    per_block = rows.groupby(["design", "block"])["value"].mean().reset_index()
    seeds = rows.groupby("design")["checkpoint"].nunique()
    designs = list(figures.design_colors(per_block["design"].astype(str)))
    means = per_block.groupby("design")["value"].mean()
    n_blocks = per_block.groupby("design")["block"].nunique()
    parts = [f"**{d}** {_fmt(means[d])}" for d in designs]
    counts = {(int(n_blocks[d]), int(seeds[d])) for d in designs}
    if len(counts) == 1:
        b, s = counts.pop()
        over = f"mean over {b} blocks and {s} checkpoint{'s' if s != 1 else ''} per design"
    else:
        over = "mean over blocks and checkpoints; " + ", ".join(
            f"{d}: {int(n_blocks[d])} blocks, {int(seeds[d])} checkpoints" for d in designs)
    text = f"At {where}, {label} averages " + (" vs ".join(parts) if len(parts) > 1 else parts[0]) + f" ({over})."
    if len(designs) >= 2:
        a, b = designs[0], designs[1]
        wide = per_block.pivot(index="block", columns="design", values="value")[[a, b]].dropna()
        if not wide.empty:
            diff = means[a] - means[b]
            rel = f" ({100 * diff / abs(means[b]):+.0f} %)" if means[b] != 0 else ""
            gap = (wide[a] - wide[b]).abs()
            blk = int(gap.idxmax())
            text += (f" {a} minus {b}: {_fmt(diff)}{rel}; the largest gap is at block {blk} "
                     f"({_fmt(wide.loc[blk, a])} vs {_fmt(wide.loc[blk, b])}).")
            sign = metric_direction(metric)
            if sign and diff != 0:
                keeps = a if sign * diff > 0 else b
                more = "higher" if sign > 0 else "lower"
                text += f" Here {more} means more information kept, so by this measure **{keeps}** keeps more."
    missing = sorted(set(df.loc[(df["metric"] == metric) & (df["stage"] == stage), "design"].astype(str))
                     - set(designs))
    if missing:
        text += f" Not defined for {', '.join(missing)} at this stage."
    return text


def ensure_results(dataset: str) -> bool:
    """True when studies on ``dataset`` exist; otherwise explain and offer to compute them."""
    missing = state.missing_checkpoints(dataset)
    have = state.dataset_studies(dataset)
    if have and not missing:
        return True
    cards = state.dataset_cards(dataset)
    if cards.empty:
        st.info(f"No shipped checkpoint is trained on **{dataset}**. Pick another dataset in the "
                "sidebar, or use *Probe a checkpoint*.")
        return bool(have)
    if not have:
        st.info(f"No precomputed studies on **{dataset}** were found in `{state.results_dir()}`. "
                f"Computing them takes about a minute per checkpoint ({len(missing)} missing).")
    else:
        st.caption(f"{len(missing)} shipped checkpoint(s) on {dataset} have no study yet: "
                   f"{', '.join(missing)}.")
    if st.button(f"Compute missing results ({len(missing)})", key=f"compute-{dataset}"):
        try:
            state.progress_steps(missing, lambda c: state.compute_shipped(c, dataset),
                                 label="Computing studies")
        except Exception as err:  # noqa: BLE001 - shown to the user, never a traceback
            st.error(f"Computing the studies failed: {err}")
        else:
            st.rerun()
    return bool(have)


def show_overview(df: pd.DataFrame, cards: pd.DataFrame | None = None, *, key: str = "overview") -> None:
    """Metric and stage pickers, the depth curve, its reading and (if ``cards``) accuracy."""
    metrics = metric_options(df)
    if not metrics:
        st.warning("The results table holds no finite values.")
        return
    default = next((m for m in _DEFAULT_METRICS if m in metrics), metrics[0])
    c1, c2, c3 = st.columns([3, 2, 3])
    metric = c1.selectbox("Metric", metrics, index=metrics.index(default), key=f"{key}-metric",
                          format_func=figures.metric_label)
    options = stage_options(df, metric)
    names = [_stage_label(o) for o in options]
    preferred = next((n for n in ("project", "expand", "depthwise", "output", "input") if n in names),
                     names[0])
    choice = c2.selectbox("Capture stage", names, index=names.index(preferred), key=f"{key}-stage",
                          help="'before activation' = the .pre point, after conv + BN.")
    stage, pre = options[names.index(choice)]
    datasets = sorted(df["dataset"].astype(str).unique())
    c3.caption(f"{df['checkpoint'].nunique()} checkpoint(s), designs: "
               f"{', '.join(figures.design_colors(df['design'].astype(str)))}; dataset: {', '.join(datasets)}.")
    rows = df[df["metric"] == metric]
    state.show_chart("depth_curve", rows, metric, stage=stage, pre=pre, width=640, height=300,
                     key=f"{key}-depth")
    st.markdown(reading(rows, metric, stage, pre))
    if cards is not None and not cards.empty and cards["test_accuracy"].notna().any():
        state.show_chart("accuracy_chart", cards.dropna(subset=["test_accuracy"]), key=f"{key}-accuracy")


def render() -> None:
    """The Overview page for the dataset chosen in the sidebar."""
    dataset = state.current_dataset()
    st.title("Overview")
    st.caption("Does the linear bottleneck keep more information than a ReLU bottleneck? "
               f"Shipped checkpoints on **{dataset}**, one line per design, band = mean \u00b1 std over seeds.")
    if not ensure_results(dataset):
        return
    show_overview(state.dataset_metrics(dataset), state.dataset_cards(dataset), key="overview")
