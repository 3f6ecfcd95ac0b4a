"""Block explorer: one inverted-residual block, all its capture points side by side.

Spectrum (scree) plot, active-channels histogram against Lemma 2's threshold, per-channel
activity heatmap, reconstruction errors and the Lemma-2 invertible fraction.
:func:`dashboard.parts.show_block` draws it (the "Probe a checkpoint" page shows it too).
"""

from __future__ import annotations

import streamlit as st

from dashboard import parts, state

__all__ = ["render"]


def render() -> None:
    """The Block explorer page for a shipped checkpoint on the sidebar's dataset."""
    dataset = state.current_dataset()
    st.title("Block explorer")
    st.caption("One inverted-residual block: how much of its input each capture point keeps.")
    if not parts.ensure_results(dataset):
        return
    names = state.dataset_studies(dataset)
    checkpoint = parts.checkpoint_picker(names, key="block-checkpoint")
    view = state.study(checkpoint, dataset)
    if view is None:
        st.error(f"The study of {checkpoint} on {dataset} disappeared; reload the page.")
        return
    parts.show_block(state.dataset_metrics(dataset), view.details, checkpoint, key="block")
