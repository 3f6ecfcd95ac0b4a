"""Reports: open the ``metrics.parquet`` of a ``bnprobe report`` directory and browse it with the
same charts as the Overview, plus the per-block reconstruction errors and the paper's Figure 7
(active channels per point against the invertibility threshold).
"""

from __future__ import annotations

import os

import streamlit as st

from analysis import figures
from dashboard import state
from dashboard.views.overview import show_overview

__all__ = ["REPORT_ENV", "render"]

#: Environment variable with the report directory the page opens first.
REPORT_ENV = "BNPROBE_REPORT_DIR"


def render() -> None:
    """The Reports page."""
    st.title("Reports")
    st.caption("A report directory written by `bnprobe report CONFIG.toml --out DIR` holds a tidy "
               "`metrics.parquet`; every chart below is drawn from it.")
    folder = st.text_input("Report directory", value=os.environ.get(REPORT_ENV, ""), key="report-dir",
                           placeholder="/path/to/report")
    if not folder.strip():
        st.info("Type the path of a report directory (on the machine that runs the dashboard).")
        return
    try:
        df = state.load_report(folder.strip())
    except Exception as err:  # noqa: BLE001 - a readable message, never a traceback
        st.error(f"Could not open the report: {err}")
        return
    missing = [c for c in ("design", "dataset", "block", "stage", "pre") if c not in df.columns]
    if missing:
        st.error(f"The metrics table of {folder} lacks the columns {missing} of the results schema.")
        return
    datasets = sorted(df["dataset"].astype(str).unique())
    sidebar = state.current_dataset()
    dataset = st.selectbox("Dataset of the report", datasets,
                           index=datasets.index(sidebar) if sidebar in datasets else 0, key="report-dataset")
    part = df[df["dataset"].astype(str) == dataset]
    st.caption(f"{len(df):,} values; {df['checkpoint'].nunique()} checkpoint(s) on {len(datasets)} dataset(s).")
    show_overview(part, key="report-overview")

    st.subheader("One block")
    blocks = sorted(int(b) for b in part["block"].unique())
    block = st.select_slider("Block (execution order)", blocks, value=blocks[len(blocks) // 2], key="report-block")
    state.show_chart("reconstruction_bars", part[part["block"] == block], width=280, height=220,
                     key="report-recon")
    designs = list(figures.design_colors(part["design"].astype(str)))
    has_fig7 = part["metric"].isin(["positive_mean"]).any()
    if has_fig7:
        st.subheader("Active channels per point (paper Figure 7)")
        design = st.radio("Design", designs, horizontal=True, key="report-design")
        fig7 = part[part["metric"].isin(["positive_min", "positive_mean", "positive_max"])]
        state.show_chart("positive_channels_plot", fig7, design=design, dataset=dataset, width=330,
                         height=240, key="report-fig7")
