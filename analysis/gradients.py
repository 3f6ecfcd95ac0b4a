"""Gradient flow during training, linear vs ReLU bottleneck, from the checkpoint cards.

The notes claim that the linear bottleneck "lets gradients flow more stably in
back-propagation". The training recipes (:func:`probes.train.train`) write, per epoch and per
block, the mean and the across-batch sample standard deviation of the L2 norm of the gradient
of the block's parameters into the card's ``gradient_norms``. This module reads them:

- :func:`gradient_table`: one row per (checkpoint, epoch, block);
- :func:`gradient_summary`: per checkpoint and block, ``mean_norm`` = mean over epochs of the
  per-epoch mean norm, and ``cv`` = mean over epochs of ``std / mean`` (the across-batch
  coefficient of variation: lower = steadier);
- :func:`gradient_comparison`: linear vs relu6 paired over seeds, per block and over all blocks;
- :func:`gradient_figure`: norm per block over training, mean over seeds per design.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from analysis.compare import paired_stats

__all__ = ["GRADIENT_COLUMNS", "gradient_comparison", "gradient_figure", "gradient_summary", "gradient_table"]

#: Columns of :func:`gradient_table`.
GRADIENT_COLUMNS = ("checkpoint", "dataset", "design", "seed", "epoch", "block", "mean", "std")


def gradient_table(cards: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The ``gradient_norms`` of checkpoint cards as a tidy table.

    Parameters
    ----------
    cards : iterable of dict
        Zoo cards (``probes.catalogue.list_checkpoints()``); cards without ``gradient_norms`` (trained
        before the recipes logged them) are skipped.

    Returns
    -------
    DataFrame with columns :data:`GRADIENT_COLUMNS`
        ``mean``/``std``: mean and sample std over the optimiser steps of one epoch of the
        gradient L2 norm of one block's parameters.

    Raises
    ------
    ValueError
        A card whose ``gradient_norms`` is malformed (names the card and the field).
    """
    frames = []
    for card in cards:
        g = card.get("gradient_norms")
        if not g:
            continue
        name = card.get("name", "?")
        mean, std = np.asarray(g.get("mean"), dtype=float), np.asarray(g.get("std"), dtype=float)
        blocks = g.get("blocks")
        if mean.ndim != 2 or mean.shape != std.shape or mean.shape[1] != blocks:
            raise ValueError(f"Card {name!r}: 'gradient_norms' must hold 'mean' and 'std' of shape "
                             f"(epochs, blocks={blocks}). Got shapes {mean.shape} and {std.shape} instead.")
        epochs, n_blocks = mean.shape
        frames.append(pd.DataFrame({
            "checkpoint": name, "dataset": card.get("dataset", {}).get("name"), "design": card.get("design"),
            "seed": card.get("seed"), "epoch": np.repeat(np.arange(epochs), n_blocks),
            "block": np.tile(np.arange(n_blocks), epochs), "mean": mean.ravel(), "std": std.ravel()}))
    if not frames:
        return pd.DataFrame(columns=list(GRADIENT_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(GRADIENT_COLUMNS)]


def gradient_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint and block: mean gradient norm over training and its across-batch CV.

    ``mean_norm = mean_e m_e`` and ``cv = mean_e (s_e / m_e)`` over epochs ``e``, where
    ``m_e``, ``s_e`` are the mean and sample std over the steps of epoch ``e``
    (epochs with ``m_e = 0`` are left out of the CV).

    Returns
    -------
    DataFrame with columns checkpoint, dataset, design, seed, block, mean_norm, cv.
    """
    t = table.assign(ratio=np.where(table["mean"] > 0, table["std"] / table["mean"].where(table["mean"] > 0), np.nan))
    return (t.groupby(["checkpoint", "dataset", "design", "seed", "block"], as_index=False)
            .agg(mean_norm=("mean", "mean"), cv=("ratio", "mean")))


def gradient_comparison(summary: pd.DataFrame, *, a: str = "linear", b: str = "relu6",
                        dataset: str | None = None) -> pd.DataFrame:
    """Design ``a`` vs design ``b`` paired over seeds, per block and over all blocks.

    For each quantity (``log10_norm`` = log10 of ``mean_norm``; ``cv``) and each block, the
    per-seed values of ``a`` and ``b`` (same seed = same initial weights) go to
    :func:`analysis.compare.paired_stats`; the row ``block = "all"`` pairs the per-seed means over
    blocks. Only seeds present for both designs count.

    Returns
    -------
    DataFrame with columns dataset, quantity, block, n_pairs, mean_a, mean_b, mean_diff, ci_low,
    ci_high, p_value, verdict (``"<a> higher"``, ``"<b> higher"``, ``"no significant
    difference"`` or ``"n/a"`` with fewer than 2 seeds).
    """
    s = summary if dataset is None else summary[summary["dataset"] == dataset]
    s = s.assign(log10_norm=np.log10(s["mean_norm"].where(s["mean_norm"] > 0)))
    rows = []
    for ds, part in s.groupby("dataset"):
        for q in ("log10_norm", "cv"):
            wide = part.pivot_table(index=["seed", "block"], columns="design", values=q)
            if a not in wide or b not in wide:
                continue
            wide = wide[[a, b]].dropna()
            per_seed = wide.groupby(level="seed").mean()
            groups = [(str(blk), g.droplevel("block")) for blk, g in wide.groupby(level="block")]
            for blk, g in groups + [("all", per_seed)]:
                r = paired_stats(g[a].to_numpy(), g[b].to_numpy(), names=(a, b))
                rows.append({"dataset": ds, "quantity": q, "block": blk, **r})
    return pd.DataFrame(rows, columns=["dataset", "quantity", "block", "n_pairs", "mean_a", "mean_b", "mean_diff",
                                       "ci_low", "ci_high", "p_value", "verdict"])


def gradient_figure(table: pd.DataFrame, *, blocks: Sequence[int] | None = None, columns: int = 6,
                    configure: bool = True) -> alt.Chart | alt.FacetChart:
    """Gradient norm of each block over training epochs, one line per design (mean over seeds).

    Band: the range (min to max) over seeds at each epoch. Log y axis (norms fall by orders of
    magnitude under the one-cycle schedule).
    """
    from analysis.figures import design_colors, message_chart, style_chart

    if table.empty:
        return message_chart("no gradient norms: the checkpoint cards predate the per-block logging "
                             "(retrain with the current recipes)", title="Gradient norm per block",
                             configure=configure)
    t = table if blocks is None else table[table["block"].isin(list(blocks))]
    agg = (t.groupby(["design", "block", "epoch"], as_index=False)["mean"]
           .agg(norm="mean", low="min", high="max", seeds="count"))
    colors = design_colors(agg["design"].astype(str))
    color = alt.Color("design:N", title="design", scale=alt.Scale(domain=list(colors), range=list(colors.values())))
    base = alt.Chart(agg).encode(x=alt.X("epoch:Q", title="epoch"), color=color)
    y = alt.Y("norm:Q", title="gradient L2 norm", scale=alt.Scale(type="log"))
    layer = alt.layer(
        base.mark_area(opacity=0.2).encode(y=alt.Y("low:Q", scale=alt.Scale(type="log"), title="gradient L2 norm"),
                                           y2="high:Q"),
        base.mark_line().encode(y=y, tooltip=["design", "block", "epoch", alt.Tooltip("norm:Q", format=".3g"),
                                              "seeds"]),
    ).properties(width=150, height=110)
    seeds = table.groupby("design")["checkpoint"].nunique()
    chart = layer.facet(facet=alt.Facet("block:O", title="block"), columns=columns).properties(
        title=alt.Title("Gradient norm per block over training",
                        subtitle="line: mean over seeds; band: min-max over seeds; "
                                 + ", ".join(f"{d}: {n} seeds" for d, n in seeds.items())))
    return style_chart(chart) if configure else chart
