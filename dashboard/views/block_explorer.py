"""Block explorer: one inverted-residual block, all its capture points side by side.

Spectrum (scree) plot, active-channels histogram against Lemma 2's threshold, per-channel
activity heatmap, reconstruction errors and the Lemma-2 invertible fraction.
:func:`show_block` is reused by the "Probe a checkpoint" page.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import streamlit as st

from analysis import figures
from dashboard import state
from dashboard.views.overview import ensure_results

__all__ = ["TABLE_METRICS", "block_points", "checkpoint_picker", "render", "show_block"]

#: Metrics listed in the per-point table, in this order (those present).
TABLE_METRICS = ("channels", "rank_frac", "effective_rank_frac", "dead_fraction", "saturated_fraction",
                 "positive_mean", "above_threshold_fraction", "lemma2_invertible_fraction",
                 "recon_error_linear", "recon_error_knn", "recon_error_mlp", "recon_error_exact",
                 "betti0", "betti1", "bottleneck_to_input_h1", "cka_to_input", "twonn_id",
                 "input_decode_r2", "label_decode_acc")


def _point_key(point: str) -> tuple[int, int]:
    m = re.match(r"^blocks\.(\d+)\.(.+)$", point)
    if not m:
        return (-1, 0)
    suffix = m.group(2)
    order = figures.POINT_ORDER
    return int(m.group(1)), order.index(suffix) if suffix in order else len(order)


def block_points(metrics: pd.DataFrame, block: int) -> list[str]:
    """Capture points of ``block`` present in ``metrics``, in execution order."""
    pts = metrics.loc[metrics["block"] == block, "point"].astype(str).unique()
    return sorted(pts, key=_point_key)


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
    table.index = [p.split(".", 2)[2] for p in table.index]
    table.index.name = "point"
    return table


def _near_zero_errors(block_rows: pd.DataFrame, below: float = 0.005) -> list[str]:
    """``"design point decoder value"`` for mean reconstruction errors under ``below``."""
    rows = block_rows[block_rows["metric"].astype(str).str.startswith("recon_error_")]
    rows = rows[np.isfinite(rows["value"].astype(float))]
    means = rows.groupby(["design", "point", "metric"])["value"].mean()
    names = {"recon_error_linear": "ridge", "recon_error_knn": "k-NN", "recon_error_mlp": "MLP",
             "recon_error_exact": "active-set inverse"}
    return [f"{design} {point.split('.', 2)[2]} {names.get(metric, metric)} {value:.1g}"
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
               f"{', '.join(p.split('.', 2)[2] for p in points)}.")

    spectra = _spectra(details, points)
    if spectra.empty:
        st.info("No covariance spectra stored for this block.")
    else:
        state.show_chart("scree_plot", spectra, title=f"Covariance spectrum, block {block}",
                         width=560, height=260, key=f"{key}-scree")
    hist_points = [p for p in points if details.get(p, {}).get("positive_hist") is not None]
    if not hist_points:
        st.info("No active-channel histograms: no point of this block has a flat activation.")
    else:
        chosen = st.radio("Active channels after the activation at", hist_points, horizontal=True,
                          key=f"{key}-hist-point", format_func=lambda p: p.split(".", 2)[2])
        hist = np.asarray(details[chosen]["positive_hist"])
        hist_df = pd.DataFrame({"n_active": np.arange(len(hist)), "count": hist})
        state.show_chart("positive_histogram", hist_df, threshold=int(info["block_in"]), width=560,
                         height=220, title=f"Active channels per point at {chosen.split('.', 2)[2]}",
                         key=f"{key}-hist")

    post = {p for p in points if not p.endswith((".pre", ".input", ".output"))}
    act = _activity(details, points, post)
    if not act.empty:
        state.show_chart("activity_heatmap", act, title=f"Channel activity, block {block}", width=820,
                         row_height=26, key=f"{key}-heatmap")

    block_rows = metrics[metrics["block"] == block]
    state.show_chart("reconstruction_bars", block_rows, width=300, height=220, key=f"{key}-recon")
    tiny = _near_zero_errors(block_rows)
    if tiny:
        st.caption("Bars too short to see (error \u2248 0, the input is recovered): " + "; ".join(tiny) + ".")
    _lemma2(block_rows, checkpoint)
    with st.expander("All metrics of this block's points"):
        st.dataframe(_point_table(rows, points).style.format(precision=3, na_rep="n/a"))


def render() -> None:
    """The Block explorer page for a shipped checkpoint on the sidebar's dataset."""
    dataset = state.current_dataset()
    st.title("Block explorer")
    st.caption("One inverted-residual block: how much of its input each capture point keeps.")
    if not ensure_results(dataset):
        return
    names = state.dataset_studies(dataset)
    checkpoint = checkpoint_picker(names, key="block-checkpoint")
    view = state.study(checkpoint, dataset)
    if view is None:
        st.error(f"The study of {checkpoint} on {dataset} disappeared; reload the page.")
        return
    show_block(state.dataset_metrics(dataset), view.details, checkpoint, key="block")
