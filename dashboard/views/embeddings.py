"""Embeddings: 2-D UMAP or PCA of one capture point's sampled activations, for two checkpoints
side by side on the same inputs, coloured by class or by a ``shapes`` generating factor.

The activations are probed live (only the chosen point is hooked) and cached.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analysis.settings import SHIPPED_CONFIG
from dashboard import parts, state
from probes.points import is_point_name, parse_point

__all__ = ["default_point", "render"]


def default_point(points: list[str]) -> str:
    """A middle block's projection (the bottleneck itself), else the first point."""
    projections = [p for p in points if is_point_name(p) and parse_point(p).suffix == "project"]
    return projections[len(projections) // 2] if projections else points[0]


def _pair_defaults(designs: list[str]) -> tuple[int, int]:
    """Indices of the first linear and the first relu6 checkpoint (the paper's comparison)."""
    left = next((i for i, d in enumerate(designs) if d == "linear"), 0)
    right = next((i for i, d in enumerate(designs) if d == "relu6"),
                 next((i for i in range(len(designs)) if i != left), left))
    return left, right


def render() -> None:
    """The Embeddings page for the sidebar's dataset."""
    dataset = state.current_dataset()
    st.title("Embeddings")
    st.caption("The same sampled positions of the same test images, seen through two checkpoints "
               "at one capture point. UMAP is seeded (random_state = seed), so the picture is reproducible.")
    cards = state.dataset_cards(dataset)
    names = list(cards["checkpoint"])
    if not names:
        st.info(f"No shipped checkpoint is trained on **{dataset}**; pick another dataset in the sidebar.")
        return
    left_i, right_i = _pair_defaults(list(cards["design"]))
    c1, c2, c3 = st.columns([2, 2, 3])
    left = c1.selectbox("Left checkpoint", names, index=left_i, key="emb-left")
    right = c2.selectbox("Right checkpoint", names, index=right_i, key="emb-right")
    try:
        points = state.model_points(left)
        common = [p for p in points if p in set(state.model_points(right))]
    except Exception as err:  # noqa: BLE001 - shown in the page
        st.error(f"Could not read the capture points of {left} / {right}: {err}")
        return
    if not common:
        st.error(f"{left} and {right} share no capture point.")
        return
    point = c3.selectbox("Capture point", common, index=common.index(default_point(common)), key="emb-point")
    c4, c8, c5, c6, c7 = st.columns([2, 3, 2, 2, 1])
    method = c4.radio("Projection", ["UMAP", "PCA"], horizontal=True, key="emb-method")
    unit = c8.radio("One point per", ["position", "image"], horizontal=True, key="emb-unit",
                    format_func=lambda u: "spatial position" if u == "position" else "image (average-pooled)",
                    help="position: every pixel of the feature map is a point (the paper's view); "
                         "image: one global-average-pooled vector per image.")
    n_images = c6.select_slider("Test images", [50, 100, 200, 400], value=100, key="emb-images")
    seed = c7.number_input("Seed", min_value=0, max_value=10_000, value=0, step=1, key="emb-seed")

    clouds = {}
    with st.spinner(f"Probing {point} of {left} and {right} on {n_images} {dataset} images ..."):
        try:
            for name in (left, right):
                # the reservoir size of the shipped studies' point-cloud metrics
                clouds[name] = state.point_cloud(name, dataset, point, n_images=int(n_images),
                                                 reservoir_size=SHIPPED_CONFIG.reservoir_size, seed=int(seed),
                                                 sample_unit=unit)
        except Exception as err:  # noqa: BLE001 - shown in the page
            st.error(f"Probing failed: {err}")
            return
    labels = clouds[left][0]
    color_options = [c for c in labels.columns if c not in ("image", "y", "x")]
    color = c5.selectbox("Colour by", color_options, key="emb-color",
                         help="class label, or one of the generating factors of the shapes dataset")
    cols = st.columns(2)
    for col, side, name in zip(cols, ("left", "right"), (left, right)):
        frame, values = clouds[name]
        first = " (UMAP's first run in a server compiles its kernels: about 20 s)" if method == "UMAP" else ""
        with st.spinner(f"{method} of {name} ...{first}"):
            xy, x_title, y_title = state.embed_points(values, method, seed=int(seed))
        emb = pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], color: frame[color].to_numpy()})
        with col:
            parts.show_chart("embedding_scatter", emb, color=color, title=f"{name}: {point}",
                             x_title=x_title, y_title=y_title, width=380, height=380,
                             key=f"emb-chart-{side}")
            st.caption(f"{len(frame)} points of {values.shape[1]} channels from {frame['image'].nunique()} images "
                       f"(one per {'image' if unit == 'image' else 'sampled position'}).")
