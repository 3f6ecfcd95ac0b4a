"""Overview: one metric across depth for every design (mean +- std over seeds), the paired
difference of linear and relu6 per block with its 95 % interval, accuracy per design, and a
paragraph that reads the charts out in numbers (intervals, and "no significant difference"
where the interval covers 0; see :mod:`analysis.compare`).

:func:`dashboard.parts.show_overview` draws it (the "Probe a checkpoint" and "Reports" pages
show it too).
"""

from __future__ import annotations

import streamlit as st

from dashboard import parts, state

__all__ = ["render"]


def render() -> None:
    """The Overview page for the dataset chosen in the sidebar."""
    dataset = state.current_dataset()
    st.title("Overview")
    st.caption("Does the linear bottleneck keep more information than a ReLU bottleneck? "
               f"Shipped checkpoints on **{dataset}**, one line per design, band = mean \u00b1 std over seeds; "
               "below it, linear \u2212 relu6 paired over seeds with its 95 % interval per block.")
    if not parts.ensure_results(dataset):
        return
    parts.show_overview(state.dataset_metrics(dataset), state.dataset_cards(dataset), key="overview")
