"""Page parts shared by the dashboard's pages: the Overview and Block-explorer views (also shown
by "Probe a checkpoint" and "Reports"), the pickers and the "compute missing results" prompt,
and chart drawing.

Pages (:mod:`dashboard.views`) import from here and from :mod:`dashboard.state` (cached data),
never from each other. Every number shown comes from ``analysis`` (:func:`reading` and
:func:`comparison` call :mod:`analysis.compare`); this module only lays it out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from analysis import figures
from analysis.compare import COMPARE_COLUMNS, band_values, compare_bands, compare_designs, seed_interval
from analysis.metrics import metric_direction
from dashboard import state
from probes.points import STAGES, is_point_name, parse_point, point_sort_key, point_suffix

__all__ = ["TABLE_METRICS", "block_points", "checkpoint_picker", "comparison", "ensure_results",
           "metric_options", "point_blocks", "progress_steps", "reading", "show_block", "show_chart",
           "show_overview", "stage_options"]


# ------------------------------------------------------------------------------------ charts


def show_chart(builder: str, /, *args: Any, key: str, **kwargs: Any) -> None:
    """Draw ``analysis.figures.<builder>(*args, **kwargs)`` at its own size (spec cached)."""
    st.vega_lite_chart(state.chart_spec(builder, *args, **kwargs), theme=None, width="content", key=key)


def progress_steps(items: Sequence[str], work: Callable[[str], Any], *, label: str) -> list[Any]:
    """Run ``work(item)`` for each item under a Streamlit progress bar; return the results."""
    bar = st.progress(0.0, text=label)
    out = []
    for i, item in enumerate(items):
        bar.progress(i / max(len(items), 1), text=f"{label}: {item} ({i + 1} of {len(items)})")
        out.append(work(item))
    bar.progress(1.0, text=f"{label}: done")
    return out


# ---------------------------------------------------------------------------------- overview


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
    return [(s, p) for s in STAGES for p in (True, False) if (s, p) in have]


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
            progress_steps(missing, lambda c: state.compute_shipped(c, dataset),
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
    show_chart("depth_curve", rows, metric, stage=stage, pre=pre, width=640, height=300,
                     key=f"{key}-depth")
    st.markdown(reading(rows, metric, stage, pre))
    paired = comparison(rows, metric, stage, pre)
    if not paired.empty:
        show_chart("paired_difference_chart", paired, width=640, height=200, key=f"{key}-paired")
    if cards is not None and not cards.empty and cards["test_accuracy"].notna().any():
        show_chart("accuracy_chart", cards.dropna(subset=["test_accuracy"]), key=f"{key}-accuracy")


# ----------------------------------------------------------------------------- block explorer


#: Metrics listed in the per-point table, in this order (those present).
TABLE_METRICS = ("channels", "rank_frac", "effective_rank_frac", "dead_fraction", "saturated_fraction",
                 "positive_mean", "above_threshold_fraction", "lemma2_invertible_fraction",
                 "recon_error_linear", "recon_error_knn", "recon_error_mlp", "recon_error_exact",
                 "betti0", "betti1", "bottleneck_to_input_h1", "cka_to_input", "twonn_id",
                 "input_decode_r2", "label_decode_acc")


def block_points(metrics: pd.DataFrame, block: int) -> list[str]:
    """Capture points of ``block`` present in ``metrics``, in execution order."""
    pts = metrics.loc[metrics["block"] == block, "point"].astype(str).unique()
    return sorted(pts, key=point_sort_key)


def point_blocks(points: Sequence[str]) -> list[int]:
    """The blocks that capture-point names belong to, sorted (names outside the grammar skipped)."""
    return sorted({parse_point(p).block for p in points if is_point_name(p)})


def checkpoint_picker(names: list[str], *, key: str, label: str = "Checkpoint") -> str:
    """Selectbox of checkpoints, defaulting to the first linear-bottleneck one."""
    default = next((i for i, n in enumerate(names) if "linear" in n), 0)
    return st.selectbox(label, names, index=default, key=key)


def _spectra(details: dict[str, dict[str, np.ndarray]], points: list[str]) -> pd.DataFrame:
    frames = [pd.DataFrame({"point": p, "index": np.arange(1, len(ev) + 1), "eigenvalue": ev})
              for p in points if (ev := details.get(p, {}).get("eigenvalues")) is not None and len(ev)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["point", "index", "eigenvalue"])


def _activity(details: dict[str, dict[str, np.ndarray]], points: list[str],
              post: set[str]) -> pd.DataFrame:
    frames = []
    for p in points:
        frac = details.get(p, {}).get("active_fraction")
        if frac is not None:
            frames.append(pd.DataFrame({"point": p, "channel": np.arange(len(frac)), "active_fraction": frac}))
        elif p in post:
            # Listed as "activity not defined" by the builder (e.g. a linear projection).
            frames.append(pd.DataFrame({"point": [p], "channel": [0], "active_fraction": [np.nan]}))
    return (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame(columns=["point", "channel", "active_fraction"]))


def _point_table(rows: pd.DataFrame, points: list[str]) -> pd.DataFrame:
    table = rows.pivot_table(index="point", columns="metric", values="value", aggfunc="mean", dropna=False)
    channels = rows.groupby("point")["channels"].first()
    table["channels"] = channels
    cols = [m for m in TABLE_METRICS if m in table.columns]
    table = table.reindex([p for p in points if p in table.index])[cols]
    table.index = [point_suffix(p) for p in table.index]
    table.index.name = "point"
    return table


def _near_zero_errors(block_rows: pd.DataFrame, below: float = 0.005) -> list[str]:
    """``"design point decoder value"`` for mean reconstruction errors under ``below``."""
    rows = block_rows[block_rows["metric"].astype(str).str.startswith("recon_error_")]
    rows = rows[np.isfinite(rows["value"].astype(float))]
    means = rows.groupby(["design", "point", "metric"])["value"].mean()
    names = {"recon_error_linear": "ridge", "recon_error_knn": "k-NN", "recon_error_mlp": "MLP",
             "recon_error_exact": "active-set inverse"}
    return [f"{design} {point_suffix(point)} {names.get(metric, metric)} {value:.1g}"
            for (design, point, metric), value in means.items() if value < below]


def _lemma2(block_rows: pd.DataFrame, checkpoint: str) -> None:
    """Lemma-2 invertible fraction at the block's expansion: this checkpoint, and per design."""
    rows = block_rows[block_rows["metric"] == "lemma2_invertible_fraction"]
    finite = rows[np.isfinite(rows["value"].astype(float))]
    st.markdown("**Lemma 2: points whose expansion output determines its input**")
    if finite.empty:
        why = next((r for r in rows["reason"] if r), "this block has no expansion")
        st.caption(f"Not available: {why}.")
        return
    mine = finite.loc[finite["checkpoint"] == checkpoint, "value"]
    per_design = finite.groupby("design")["value"].agg(["mean", "std", "count"])
    cols = st.columns(1 + len(per_design))
    if len(mine):
        cols[0].metric(f"{checkpoint}", f"{100 * float(mine.mean()):.1f} %",
                       help="Fraction of sampled points x where the rows of the BN-folded expansion "
                            "weights at y's active units have rank C_in, so y = act(Bx) fixes x.")
    for col, (design, row) in zip(cols[1:], per_design.iterrows()):
        spread = f" \u00b1 {100 * row['std']:.1f}" if np.isfinite(row["std"]) else ""
        col.metric(f"design {design} ({int(row['count'])} checkpoint{'s' if row['count'] != 1 else ''})",
                   f"{100 * row['mean']:.1f}{spread} %")


def show_block(metrics: pd.DataFrame, details: dict[str, dict[str, np.ndarray]], checkpoint: str, *,
               key: str = "block") -> None:
    """The block view of ``checkpoint``.

    Parameters
    ----------
    metrics : DataFrame
        Tidy results of one dataset; may hold other checkpoints too (their designs then get
        their own panels in the reconstruction chart and their own Lemma-2 numbers).
    details : dict
        Per-point arrays of ``checkpoint`` (``StudyResult.details``).
    checkpoint : str
    key : str
        Prefix of the widget keys.
    """
    mine = metrics[metrics["checkpoint"] == checkpoint]
    blocks = sorted(int(b) for b in mine["block"].unique())
    if not blocks:
        st.warning(f"No metrics for {checkpoint}.")
        return
    default = next((b for b in blocks if len(block_points(mine, b)) >= 7), blocks[0])
    block = st.select_slider("Block (execution order)", blocks, value=default, key=f"{key}-block")
    rows = mine[mine["block"] == block]
    points = block_points(mine, block)
    info = rows.iloc[0]
    st.caption(f"Block {block} of {checkpoint}: C_in = {int(info['block_in'])}, C_hidden = "
               f"{int(info['block_hidden'])}, C_out = {int(info['block_out'])}, stride {int(info['stride'])}, "
               f"{'with' if bool(info['has_residual']) else 'no'} residual; points: "
               f"{', '.join(point_suffix(p) for p in points)}.")

    spectra = _spectra(details, points)
    if spectra.empty:
        st.info("No covariance spectra stored for this block.")
    else:
        show_chart("scree_plot", spectra, title=f"Covariance spectrum, block {block}",
                         width=560, height=260, key=f"{key}-scree")
    hist_points = [p for p in points if details.get(p, {}).get("positive_hist") is not None]
    if not hist_points:
        st.info("No active-channel histograms: no point of this block has a flat activation.")
    else:
        chosen = st.radio("Active channels after the activation at", hist_points, horizontal=True,
                          key=f"{key}-hist-point", format_func=point_suffix)
        hist = np.asarray(details[chosen]["positive_hist"])
        hist_df = pd.DataFrame({"n_active": np.arange(len(hist)), "count": hist})
        show_chart("positive_histogram", hist_df, threshold=int(info["block_in"]), width=560,
                         height=220, title=f"Active channels per point at {point_suffix(chosen)}",
                         key=f"{key}-hist")

    post = {p for p in points if (q := parse_point(p)).stage not in ("input", "output") and not q.pre}
    act = _activity(details, points, post)
    if not act.empty:
        show_chart("activity_heatmap", act, title=f"Channel activity, block {block}", width=820,
                         row_height=26, key=f"{key}-heatmap")

    block_rows = metrics[metrics["block"] == block]
    show_chart("reconstruction_bars", block_rows, width=300, height=220, key=f"{key}-recon")
    tiny = _near_zero_errors(block_rows)
    if tiny:
        st.caption("Bars too short to see (error \u2248 0, the input is recovered): " + "; ".join(tiny) + ".")
    _lemma2(block_rows, checkpoint)
    with st.expander("All metrics of this block's points"):
        st.dataframe(_point_table(rows, points).style.format(precision=3, na_rep="n/a"))
