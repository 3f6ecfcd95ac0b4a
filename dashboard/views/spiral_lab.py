"""Spiral lab: the paper's Figure 1, interactive.

A 2-D spiral is embedded in n dimensions by a random matrix T, passed through an activation and
mapped back to 2-D three ways (``analysis.spiral.run_spiral``): ``pinv(T)`` (the paper's
"T^-1"; for ReLU it returns x/2 + pinv(T)|Tx|/2, the spiral at about half its size at large n),
the active-set inverse (exact iff Lemma 2 holds) and a learned k-NN decoder. The page shows the
picture and, for each n, two errors per way back: the centred relative error (is x_hat = x?)
and the Procrustes disparity (is the shape kept, up to rotation and size?).
"""

from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from analysis import figures
from analysis.activity import ACTIVATIONS
from analysis.spiral import METHOD_LABELS, METHODS
from dashboard import state

__all__ = ["DIM_CHOICES", "error_chart", "render"]

#: Embedding dimensions offered (the paper shows 2, 3, 5, 15, 30).
DIM_CHOICES = (2, 3, 4, 5, 8, 10, 15, 20, 30, 50)
_ERROR_FLOOR = 1e-12


def error_chart(table: pd.DataFrame, *, width: float = 480, height: float = 260) -> alt.LayerChart:
    """Relative reconstruction error against n, one line per way back (log y).

    Errors below 1e-12 (an exact inverse in floating point) are drawn at 1e-12 so that they
    stay on the log axis; the tooltip shows the true value.
    """
    data = table.assign(way=table["method"].map(METHOD_LABELS),
                        drawn=table["recon_error"].clip(lower=_ERROR_FLOOR))
    labels = [METHOD_LABELS[m] for m in METHODS]
    colors = [figures.OKABE_ITO[c] for c in ("vermillion", "blue", "bluish_green")]
    color = alt.Color("way:N", title="Way back to 2-D", sort=labels,
                      scale=alt.Scale(domain=labels, range=colors), legend=alt.Legend(orient="right"))
    base = alt.Chart(data).encode(
        x=alt.X("n:Q", title="Embedding dimension n", scale=alt.Scale(type="log"),
                axis=alt.Axis(values=sorted(data["n"].unique().tolist()), format="d")),
        y=alt.Y("drawn:Q", title="Relative error ||x\u0302 \u2212 x|| / ||x \u2212 mean(x)|| (log)",
                scale=alt.Scale(type="log"), axis=alt.Axis(format=".0e", tickCount=6)),
        color=color)
    lines = base.mark_line(strokeWidth=2) + base.mark_point(filled=True, size=60).encode(
        shape=alt.Shape("way:N", sort=labels, title="Way back to 2-D"),
        tooltip=[alt.Tooltip("n:Q"), alt.Tooltip("way:N", title="way back"),
                 alt.Tooltip("recon_error:Q", title="error", format=".3g"),
                 alt.Tooltip("procrustes_disparity:Q", title="Procrustes disparity", format=".3g"),
                 alt.Tooltip("procrustes_scale:Q", title="Procrustes scale", format=".3g"),
                 alt.Tooltip("invertible_fraction:Q", title="Lemma-2 invertible", format=".1%")])
    chart = lines.properties(width=width, height=height, title=alt.TitleParams(
        "Reconstruction error of the three ways back",
        subtitle=[f"errors below {_ERROR_FLOOR:.0e} (exact) drawn at {_ERROR_FLOOR:.0e}"]))
    return figures.style_chart(chart)


@st.cache_data(show_spinner=False, max_entries=64)
def _error_spec(table: pd.DataFrame) -> dict:
    return state.fixed_size_spec(error_chart(table).to_dict())


def render() -> None:
    """The Spiral lab page."""
    st.title("Spiral lab")
    st.caption("MobileNetV2, Figure 1: a 2-D spiral, embedded by a random n \u00d7 2 matrix T, "
               "through an activation and back. Low n loses information (points collapse: the "
               "Procrustes disparity is high for every way back); high n keeps it (disparity near 0). "
               "pinv(T) ReLU(Tx) = x/2 + pinv(T)|Tx|/2 keeps the shape at about half the size, so its "
               "relative error stays near 0.5 at large n: that measures the scale, not lost information. "
               "Only an inverse that knows which units were active returns x itself.")
    c1, c2, c3 = st.columns([4, 2, 1])
    dims = c1.multiselect("Embedding dimensions n", DIM_CHOICES, default=[2, 3, 5, 15, 30], key="spiral-dims")
    activation = c2.selectbox("Activation", ACTIVATIONS, index=ACTIVATIONS.index("relu"), key="spiral-act")
    seed = c3.number_input("Seed of T", min_value=0, max_value=10_000, value=0, step=1, key="spiral-seed")
    c4, c5, _ = st.columns([2, 2, 3])
    radius = c4.select_slider("Spiral radius", [0.5, 1.0, 2.0, 4.0, 8.0], value=1.0, key="spiral-radius",
                              help="Pre-activations scale with it: ReLU6 saturates only when |Tx| reaches 6.")
    noise = c5.select_slider("Noise (fraction of the radius)", [0.0, 0.01, 0.02, 0.05, 0.1], value=0.0,
                             key="spiral-noise")
    if not dims:
        st.info("Choose at least one embedding dimension n.")
        return
    with st.spinner("Embedding and inverting the spiral ..."):
        table, spec = state.spiral_study(tuple(sorted(dims)), activation, int(seed), radius=float(radius),
                                         noise=float(noise))
    st.vega_lite_chart(spec, theme=None, width="content", key="spiral-figure")
    st.vega_lite_chart(_error_spec(table), theme=None, width="content", key="spiral-errors")
    wide = table.pivot(index="n", columns="method", values="recon_error")
    wide = wide[list(METHODS)].rename(columns=METHOD_LABELS)
    inv = table.groupby("n")[["invertible_fraction", "expected_invertible_fraction"]].first()
    wide["Lemma-2 invertible"] = inv["invertible_fraction"]
    if np.isfinite(inv["expected_invertible_fraction"]).any():
        wide["expected (Thm. 1)"] = inv["expected_invertible_fraction"]
    st.markdown("**Relative error per way back, and the Lemma-2 invertible fraction**")
    st.dataframe(wide.style.format("{:.3g}", subset=[METHOD_LABELS[m] for m in METHODS])
                 .format("{:.1%}", subset=[c for c in wide.columns if "invertible" in c or "expected" in c]))
    shape = table.pivot(index="n", columns="method", values="procrustes_disparity")[list(METHODS)]
    scale = table.pivot(index="n", columns="method", values="procrustes_scale")[list(METHODS)]
    shape = pd.concat({"Procrustes disparity": shape.rename(columns=METHOD_LABELS),
                       "scale of the fit": scale.rename(columns=METHOD_LABELS)}, axis=1)
    st.markdown("**Shape kept? Procrustes disparity (0 = same shape up to rotation and size) and "
                "the scale of the fit (1 = same size)**")
    st.dataframe(shape.style.format("{:.3g}"))
    last = table.loc[table["n"] == max(dims)].set_index("method")
    st.caption(f"At n = {max(dims)}: relative error pinv {last.at['pinv', 'recon_error']:.3g}, "
               f"active-set {last.at['active_set', 'recon_error']:.3g}, learned "
               f"{last.at['learned', 'recon_error']:.3g}; Procrustes disparity pinv "
               f"{last.at['pinv', 'procrustes_disparity']:.3g} at scale "
               f"{last.at['pinv', 'procrustes_scale']:.2g}.")
