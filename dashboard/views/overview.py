"""Overview: one metric across depth for every design (mean +- std over seeds), the paired
difference of linear and relu6 per block with its 95 % interval, accuracy per design, and a
paragraph that reads the charts out in numbers (intervals, and "no significant difference"
where the interval covers 0; see :mod:`analysis.compare`).

:func:`show_overview` is reused by the "Probe a checkpoint" and "Reports" pages.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import streamlit as st

from analysis import figures
from analysis.compare import COMPARE_COLUMNS, band_values, compare_bands, compare_designs, seed_interval
from analysis.metrics import metric_direction
from dashboard import state

__all__ = ["comparison", "ensure_results", "metric_options", "reading",
           "render", "show_overview", "stage_options"]

_STAGE_WORDS = {"input": "the block input", "expand": "the expansion", "depthwise": "the depthwise conv",
                "project": "the projection", "output": "the block output"}
_DEFAULT_METRICS = ("effective_rank_frac", "rank_frac", "participation_ratio_frac")


def metric_options(df: pd.DataFrame) -> list[str]:
    """Metrics present in ``df`` with at least one finite value, in the order of METRIC_LABELS."""
    finite = df[np.isfinite(df["value"].astype(float))]
    present = set(finite["metric"].astype(str))
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


def _pair(designs: Sequence[str]) -> tuple[str, str] | None:
    """The two designs to compare: linear and relu6 when both are present; the first two when
    neither is (third-party designs); None when only one of them has values (a comparison of the
    other with an ablation of one seed would say nothing)."""
    if {"linear", "relu6"} <= set(designs):
        return "linear", "relu6"
    if {"linear", "relu6"} & set(designs) or len(designs) < 2:
        return None
    return designs[0], designs[1]


def _interval(mean: float, lo: float, hi: float) -> str:
    return f"{_fmt(mean)} [{_fmt(lo)}, {_fmt(hi)}]" if math.isfinite(lo) else f"{_fmt(mean)} (no interval)"


def comparison(df: pd.DataFrame, metric: str, stage: str, pre: bool) -> pd.DataFrame:
    """Per-block paired comparison (:func:`analysis.compare.compare_designs`) of the two designs
    that :func:`reading` compares, at one stage; empty when fewer than two designs have values."""
    rows = df[(df["metric"] == metric) & (df["stage"] == stage) & (df["pre"] == bool(pre))]
    pair = _pair(list(figures.design_colors(rows["design"].astype(str))))
    if pair is None or rows.empty:
        return pd.DataFrame(columns=list(COMPARE_COLUMNS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # reading() names the unpaired seeds
        try:
            return compare_designs(rows, *pair, metrics=[metric])
        except ValueError:  # checkpoints without a seed cannot be paired; reading() says why
            return pd.DataFrame(columns=list(COMPARE_COLUMNS))


def reading(df: pd.DataFrame, metric: str, stage: str, pre: bool) -> str:
    """A one-paragraph reading of the depth curve of ``metric`` at ``stage``, from the numbers.

    Per design: the per-seed mean over blocks (:func:`analysis.compare.band_values`, the
    aggregation shared with the report and the README findings), then the mean over seeds with
    its 95 % Student-t interval. Then the paired comparison of linear and relu6 (or the first two
    designs) over the seeds trained for both: the mean difference with its interval and the
    sign-flip p-value, "no significant difference" when the interval covers 0, and the blocks
    where the per-block difference is significant.
    """
    rows = df[(df["metric"] == metric) & (df["stage"] == stage) & (df["pre"] == bool(pre))]
    where = _STAGE_WORDS.get(stage, stage) + (" (before its activation)" if pre else "")
    label = figures.metric_label(metric).split(" (")[0]
    if len(label) > 1 and label[1].islower():
        label = label[0].lower() + label[1:]
    finite = rows[np.isfinite(rows["value"].astype(float))]
    if finite.empty:
        return f"No finite values of {label} at {where}."
    per_seed = band_values(finite, bands={"all": sorted(set(finite["block"].astype(int)))}, pre=None)
    designs = list(figures.design_colors(per_seed["design"].astype(str)))
    parts, counts = [], set()
    for d in designs:
        v = per_seed.loc[per_seed["design"] == d, "value"]
        mean, lo, hi, n = seed_interval(v)
        parts.append(f"**{d}** {_interval(mean, lo, hi)}")
        counts.add((int(finite.loc[finite["design"] == d, "block"].nunique()), n))
    if len(counts) == 1:
        b, n = counts.pop()
        over = (f"per seed the mean over {b} blocks; 95 % t-interval over {n} seeds" if n > 1
                else f"mean over {b} blocks of 1 checkpoint per design: no interval")
    else:
        over = "per seed the mean over blocks; 95 % t-intervals over seeds"
    text = f"At {where}, {label} averages " + (" vs ".join(parts) if len(parts) > 1 else parts[0]) + f" ({over})."
    pair = _pair(designs)
    if pair is not None:
        a, b = pair
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            try:
                band = compare_bands(finite, a, b, metrics=[metric], pre=None,
                                     bands={"all": sorted(set(finite["block"].astype(int)))})
            except ValueError as err:
                band = pd.DataFrame()
                text += f" {a} and {b} cannot be paired over seeds: {err}"
        dropped = [str(w.message).split(": ", 2)[-1] for w in caught]
        if not band.empty:
            r = band.iloc[0]
            if r["n_pairs"] < 2:
                text += (f" Only {int(r['n_pairs'])} seed has both {a} and {b}: no interval, so the designs "
                         f"cannot be compared here ({a} \u2212 {b} = {_fmt(r['mean_diff'])} for that seed).")
            else:
                verdict = r["verdict"]
                text += (f" Paired over {int(r['n_pairs'])} seeds, {a} \u2212 {b} = "
                         f"{_interval(r['mean_diff'], r['ci_low'], r['ci_high'])}, sign-flip p = "
                         f"{r['p_value']:.3g}: **{verdict}**.")
                excludes = r["ci_low"] > 0 or r["ci_high"] < 0
                if verdict == "no significant difference" and excludes:
                    text += (f" (The interval excludes 0, but with {int(r['n_pairs'])} seeds the sign-flip test "
                             "cannot confirm it.)")
                sign = metric_direction(metric)
                if sign and verdict.endswith(" higher"):
                    keeps = a if sign * r["mean_diff"] > 0 else b
                    more = "higher" if sign > 0 else "lower"
                    text += f" Here {more} means more information kept, so by this measure **{keeps}** keeps more."
                per_block = comparison(finite, metric, stage, pre)
                sig = per_block[per_block["verdict"].str.endswith(" higher")]
                n_blocks = int((per_block["n_pairs"] >= 2).sum())
                text += (f" Per block, the difference is significant at {len(sig)} of {n_blocks} blocks"
                         + (f" ({', '.join(str(x) for x in sig['block'])})." if len(sig) else "."))
        if dropped:
            text += f" Not paired: {dropped[0]}"
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
    paired = comparison(rows, metric, stage, pre)
    if not paired.empty:
        state.show_chart("paired_difference_chart", paired, width=640, height=200, key=f"{key}-paired")
    if cards is not None and not cards.empty and cards["test_accuracy"].notna().any():
        state.show_chart("accuracy_chart", cards.dropna(subset=["test_accuracy"]), key=f"{key}-accuracy")


def render() -> None:
    """The Overview page for the dataset chosen in the sidebar."""
    dataset = state.current_dataset()
    st.title("Overview")
    st.caption("Does the linear bottleneck keep more information than a ReLU bottleneck? "
               f"Shipped checkpoints on **{dataset}**, one line per design, band = mean \u00b1 std over seeds; "
               "below it, linear \u2212 relu6 paired over seeds with its 95 % interval per block.")
    if not ensure_results(dataset):
        return
    show_overview(state.dataset_metrics(dataset), state.dataset_cards(dataset), key="overview")
