"""Topology: persistence diagrams and barcodes of chosen capture points, Betti numbers across
depth, and how far each point's H1 diagram is from its block input's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import parts, state
from probes.points import point_name, point_suffix

__all__ = ["DISTANCE_METRICS", "diagrams_of", "distance_table", "render"]

#: Diagram distances to the block input (tidy metric names).
DISTANCE_METRICS = ("bottleneck_to_input_h1", "wasserstein_to_input_h1")


def diagrams_of(details: dict[str, dict[str, np.ndarray]], point: str) -> list[np.ndarray]:
    """``[H0, H1, ...]`` diagrams stored for ``point`` (empty list when none)."""
    out = []
    d = details.get(point, {})
    while f"diagram_h{len(out)}" in d:
        out.append(np.asarray(d[f"diagram_h{len(out)}"], dtype=float).reshape(-1, 2))
    return out


def distance_table(metrics: pd.DataFrame, block: int) -> pd.DataFrame:
    """Mean over seeds of the diagram distances to the block input, per design and point."""
    rows = metrics[(metrics["block"] == block) & metrics["metric"].isin(DISTANCE_METRICS)]
    rows = rows[np.isfinite(rows["value"].astype(float))]
    if rows.empty:
        return pd.DataFrame()
    table = rows.pivot_table(index="point", columns=["metric", "design"], values="value", aggfunc="mean")
    order = sorted(table.index, key=lambda p: parts.block_points(rows, block).index(p))
    table = table.reindex(order)
    table.index = [point_suffix(p) for p in table.index]
    table.columns = [f"{'bottleneck' if m.startswith('bottleneck') else 'Wasserstein'} ({d})"
                     for m, d in table.columns]
    return table


def render() -> None:
    """The Topology page for a shipped checkpoint on the sidebar's dataset."""
    dataset = state.current_dataset()
    st.title("Topology")
    st.caption("Persistent homology (ripser) of each capture point's sampled cloud, after a "
               "greedy-permutation subsample and scale normalisation.")
    if not parts.ensure_results(dataset):
        return
    metrics = state.dataset_metrics(dataset)
    c1, c2 = st.columns([2, 3])
    with c1:
        checkpoint = parts.checkpoint_picker(state.dataset_studies(dataset), key="topo-checkpoint")
    view = state.study(checkpoint, dataset)
    if view is None:
        st.error(f"The study of {checkpoint} on {dataset} disappeared; reload the page.")
        return
    mine = metrics[metrics["checkpoint"] == checkpoint]
    with_diagrams = [p for p in view.details if diagrams_of(view.details, p)]
    blocks = parts.point_blocks(with_diagrams)
    if not blocks:
        st.info(f"The study of {checkpoint} holds no persistence diagrams (topology was not computed).")
    else:
        with c2:
            default = next((b for b in blocks if len(parts.block_points(mine, b)) >= 7), blocks[0])
            block = st.select_slider("Block (execution order)", blocks, value=default, key="topo-block")
        points = [p for p in parts.block_points(mine, block) if p in with_diagrams]
        suffixes = [point_suffix(p) for p in points]
        preferred = [s for s in ("input", "expand", "project") if s in suffixes] or suffixes[:2]
        chosen = st.multiselect("Capture points", suffixes, default=preferred, key="topo-points",
                                max_selections=4)
        for suffix in chosen:
            dgms = diagrams_of(view.details, point_name(block, suffix))
            left, right = st.columns([2, 3])
            with left:
                parts.show_chart("persistence_diagram", dgms, title=f"{suffix}, block {block}", width=240,
                                 height=240, key=f"topo-dgm-{suffix}")
            with right:
                parts.show_chart("barcode", dgms, title="", width=380, height=180, max_bars=30,
                                 key=f"topo-bar-{suffix}")
        table = distance_table(metrics, block)
        if not table.empty:
            st.markdown(f"**H1 distance of each point's diagram to the block input's diagram, block {block}** "
                        "(mean over seeds)")
            st.dataframe(table.style.format(precision=3, na_rep="n/a"))

    st.subheader("Across depth")
    betti = [m for m in ("betti0", "betti1", "betti2") if m in set(metrics["metric"])]
    if not betti:
        st.info("No Betti numbers in these studies.")
        return
    options = parts.stage_options(metrics, betti[0])
    labels = [f"{s} (before activation)" if p else s for s, p in options]
    default = labels.index("project") if "project" in labels else 0
    choice = st.selectbox("Capture stage", labels, index=default, key="topo-stage")
    stage, pre = options[labels.index(choice)]
    parts.show_chart("betti_curve", metrics[metrics["metric"].isin(betti)], metrics=betti, stage=stage,
                     pre=pre, width=300, height=220, key="topo-betti")
    distances = [m for m in DISTANCE_METRICS if m in set(metrics["metric"])]
    if distances and stage != "input":
        metric = st.radio("Distance to the block input", distances, horizontal=True, key="topo-distance",
                          format_func=lambda m: "bottleneck" if m.startswith("bottleneck") else "Wasserstein-1")
        parts.show_chart("depth_curve", metrics[metrics["metric"] == metric], metric, stage=stage, pre=pre,
                         width=640, height=260, key="topo-distance-chart")
