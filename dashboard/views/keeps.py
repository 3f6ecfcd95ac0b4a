"""What each design keeps: channel maps of one test image at every capture point of a block,
for two checkpoints side by side, and the network input decoded from each block's output
(the information family's decoder) next to the original, with the share of the input's edge
detail that the decoded image recovers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import parts, state
from probes.points import point_block, point_suffix

__all__ = ["default_pair", "render"]

_SUFFIXES = ("input", "expand", "depthwise", "project.pre", "project", "output")


def default_pair(cards: pd.DataFrame) -> tuple[str, str]:
    """The first linear and the first relu6 checkpoint (else the first two)."""
    names = list(cards["checkpoint"])
    lin = next((n for n, d in zip(names, cards["design"]) if d == "linear"), names[0])
    relu = next((n for n, d in zip(names, cards["design"]) if d == "relu6"), names[min(1, len(names) - 1)])
    return lin, relu


@st.cache_data(show_spinner=False, max_entries=4)
def _test_images(dataset: str) -> np.ndarray:
    from analysis.study import load_inputs

    return load_inputs(dataset, split="test").x


@st.cache_data(show_spinner=False, max_entries=64)
def _maps(checkpoint: str, dataset: str, image: int, block: int) -> dict[str, np.ndarray]:
    """Channel grids (2-D, [0, 1]) at each capture point of ``block`` for one test image."""
    from analysis.keeps import capture_tensors, channel_grid
    from probes.blocks import find_blocks
    from probes.preprocess import prepare

    lm = state.shipped_model(checkpoint)
    x = prepare(_test_images(dataset)[image:image + 1], lm.input_spec)
    blocks = find_blocks(lm.model, x)
    names = [p.name for p in blocks[block].points if point_suffix(p.name) in _SUFFIXES]
    acts = capture_tensors(lm.model, x, names)
    return {n: channel_grid(acts[n][0]) for n in names}


@st.cache_data(show_spinner=False, max_entries=8)
def _decoded(checkpoint: str) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    from analysis.keeps import decoded_inputs

    return decoded_inputs(checkpoint)


def _show(img: np.ndarray, caption: str, width: int) -> None:
    st.image(np.clip(img, 0, 1), caption=caption, width=width, clamp=True, output_format="PNG")


def render() -> None:
    """The "What each design keeps" page for the dataset chosen in the sidebar."""
    dataset = state.current_dataset()
    st.title("What each design keeps")
    st.caption("Channel maps of one test image at every capture point of a block (each channel scaled "
               "to its own min-max), and the network input decoded from each block's output by the "
               "information family's ridge decoder (fitted on the train split, applied to test images).")
    cards = state.dataset_cards(dataset)
    if cards.empty:
        st.info(f"No shipped checkpoint is trained on **{dataset}**.")
        return
    names = list(cards["checkpoint"])
    lin, relu = default_pair(cards)
    n_images = len(_test_images(dataset))
    c1, c2, c3, c4 = st.columns([3, 3, 2, 2])
    a = c1.selectbox("Left checkpoint", names, index=names.index(lin), key="keeps-a")
    b = c2.selectbox("Right checkpoint", names, index=names.index(relu), key="keeps-b")
    image = int(c3.number_input("Test image", 0, n_images - 1, 0, key="keeps-image"))
    n_blocks = 1 + max(parts.point_blocks(state.model_points(a)))
    block = int(c4.selectbox("Block", list(range(n_blocks)), index=min(6, n_blocks - 1), key="keeps-block"))

    st.subheader(f"Channel maps at block {block}")
    left, right = st.columns(2)
    for col, name in ((left, a), (right, b)):
        with col:
            st.markdown(f"**{name}**")
            for point, grid in _maps(name, dataset, image, block).items():
                _show(grid, point, width=min(480, 12 * grid.shape[1]))

    st.subheader("Network input decoded from each block's output")
    original = _test_images(dataset)[image, 0]
    _show(original, f"original (test image {image})", width=96)
    tables = []
    for name in (a, b):
        with st.spinner(f"Decoding the input from every block of {name} (first time: about half a minute)..."):
            scores, images = _decoded(name)
        st.markdown(f"**{name}**")
        points = sorted(images, key=point_block)
        row = st.columns(len(points))
        for col, p in zip(row, points):
            with col:
                _show(images[p][image, 0], str(point_block(p)), width=64)
        tables.append(scores.assign(checkpoint=name))
    table = pd.concat(tables, ignore_index=True)
    wide = table.pivot_table(index="block", columns="checkpoint",
                             values=["highpass_r2", "edge_energy_ratio", "input_decode_r2"])
    wide.columns = [f"{m} ({c})" for m, c in wide.columns]
    st.markdown("Share of the input's edge detail recovered by the decoded images (all test images): "
                "**high-pass R\u00b2** = 1 - error / variance of the detail band x - Gaussian(x, 1 px) "
                "(1 = every edge in place, 0 = no better than the mean image); **edge energy ratio** = "
                "Sobel energy of the decoded images / of the originals; **input R\u00b2** = the information "
                "family's input_decode_r2. Paired intervals over seeds: *Claims of the notes* page.")
    st.vega_lite_chart(_edge_spec(table), theme=None, width="content", key="keeps-edges")
    st.dataframe(wide.round(3), key="keeps-scores")


@st.cache_data(show_spinner=False, max_entries=16)
def _edge_spec(table: pd.DataFrame) -> dict:
    import altair as alt

    from analysis.figures import style_chart

    long = table.melt(id_vars=["checkpoint", "block"], value_vars=["highpass_r2", "edge_energy_ratio"],
                      var_name="score", value_name="value")
    chart = alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("block:O", title="block (decoded from its output)"),
        y=alt.Y("value:Q", title="score"),
        color=alt.Color("checkpoint:N", title="checkpoint"),
        strokeDash=alt.StrokeDash("score:N", title="score"),
        tooltip=["checkpoint", "block", "score", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=560, height=240, title=alt.Title(
        "Edge detail of the decoded input per block",
        subtitle="high-pass R\u00b2 (in place) and Sobel energy ratio; 1 = all of the original's detail"))
    return state.fixed_size_spec(style_chart(chart).to_dict())
