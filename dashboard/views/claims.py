"""Claims of the notes: the scoreboard (every claim, its measurement, numbers, verdict), the
gradient flow over training and the deployment / memory / per-image tables.

Every number comes from :mod:`analysis.claims` on the stored studies, the checkpoint cards and
the cached model measurements; this page only shows them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from analysis import claims
from dashboard import state

__all__ = ["render", "zoo_card_dicts"]


def _stamp() -> tuple[tuple[str, float], ...]:
    from checkpoints import CHECKPOINT_DIR

    return tuple((p.name, p.stat().st_mtime) for p in sorted(Path(CHECKPOINT_DIR).glob("*.json")))


@st.cache_data(show_spinner=False, max_entries=4)
def _cards(stamp: tuple[tuple[str, float], ...]) -> list[dict[str, Any]]:
    from probes.catalogue import list_checkpoints

    return list_checkpoints()


def zoo_card_dicts(dataset: str) -> list[dict[str, Any]]:
    """Full cards (with ``gradient_norms``) of the checkpoints trained on ``dataset``."""
    return [c for c in _cards(_stamp()) if c.get("dataset", {}).get("name") == dataset]


@st.cache_data(show_spinner=False, max_entries=8)
def _measured(cards_json: str) -> claims.ModelMeasurements:
    """The cached model measurements only (measuring is the button's job)."""
    return claims.model_measurements(json.loads(cards_json), compute=False)


@st.cache_data(show_spinner=False, max_entries=8)
def _board(metrics: pd.DataFrame, cards_json: str, measured_key: str, dataset: str,
           _measured: claims.ModelMeasurements | None) -> pd.DataFrame:
    # ``_measured`` is not hashed by Streamlit; ``measured_key`` (its checkpoints) stands for it
    return claims.scoreboard(metrics, json.loads(cards_json), _measured, dataset=dataset)


def _chosen(dataset: str) -> list[dict[str, Any]]:
    return [c for c in zoo_card_dicts(dataset) if c.get("design") in ("linear", "relu6")]


def render() -> None:
    """The Claims page for the dataset chosen in the sidebar."""
    dataset = state.current_dataset()
    st.title("Claims of the notes")
    st.caption("Each claim of the background notes next to its measurement: linear vs relu6 bottleneck, "
               f"checkpoints on **{dataset}** paired by training seed. Verdicts are computed from the "
               "results: the 95 % interval of the paired difference excludes 0 (supported / contradicted) "
               "or covers it (no significant difference).")
    cards = _chosen(dataset)
    if not cards:
        st.info(f"No shipped linear or relu6 checkpoint is trained on **{dataset}**.")
        return
    metrics = state.dataset_metrics(dataset)
    cards_json = json.dumps(cards, sort_keys=True)
    measured = _measured(cards_json)
    missing = sorted({c["name"] for c in cards} - set(measured.fold.get("checkpoint", pd.Series(dtype=str))))
    if missing:
        st.caption(f"Model measurements (BN folding, memory, per-image rank, decoded edges) are cached for "
                   f"{len(cards) - len(missing)} of {len(cards)} checkpoints; rows that need them use those.")
        if st.button(f"Measure the missing checkpoints ({len(missing)})", key="claims-measure"):
            bar = st.progress(0.0, text="Measuring")
            claims.model_measurements(cards, on_step=lambda i, n, name: bar.progress(
                i / n, text=f"Measuring {name} ({i + 1}/{n}, about half a minute each)"))
            _measured.clear()
            st.rerun()
    have = measured if not measured.fold.empty else None
    key = ",".join(sorted(set(measured.fold["checkpoint"]))) if have is not None else ""
    board = _board(metrics, cards_json, key, dataset, have)
    counts = board["verdict"].value_counts()
    st.markdown(" \u00b7 ".join(f"**{n}** {v}" for v, n in counts.items()))
    st.dataframe(board.drop(columns=["claim_id"]), hide_index=True, width="stretch", key="claims-board",
                 column_config={"claim": st.column_config.TextColumn(width="large"),
                                "measurement": st.column_config.TextColumn(width="large"),
                                "detail": st.column_config.TextColumn(width="medium")})
    st.subheader("Gradient flow")
    from analysis.gradients import gradient_table

    # without gradient norms in the cards the figure is a message chart that says why
    st.vega_lite_chart(state.fixed_size_spec(_grad_spec(gradient_table(cards))), theme=None, width="content", key="claims-grad")
    if have is not None:
        st.subheader("Deployment")
        st.markdown(claims.fusion_markdown(have))
        first = have.memory.sort_values("checkpoint").iloc[0]["checkpoint"]
        st.subheader("Memory per block")
        st.markdown(claims.memory_markdown(have, str(first)))
        st.subheader("Per-image rank of the projection")
        st.markdown(claims.per_image_markdown(have, dataset))


@st.cache_data(show_spinner=False, max_entries=8)
def _grad_spec(grads: pd.DataFrame) -> dict[str, Any]:
    from analysis.gradients import gradient_figure

    return gradient_figure(grads).to_dict()
