"""Altair chart builders shared by the batch report and the dashboard.

Every builder is a pure function: a DataFrame (or arrays) in, an Altair chart out. Nothing is
computed in Vega: means and standard deviations over seeds are aggregated in pandas first, so the
numbers in a chart's data are the numbers in the tables. :func:`save_chart` writes SVG, PNG or
PDF through vl-convert (no browser) and never leaves a half-written file.

Most builders read the tidy results schema (one row per value): ``checkpoint, design,
bottleneck_act, expand_ratio, shortcut, seed, dataset, block, point, stage, pre, metric, value,
reason, n_points, channels, stride, act, block_in, block_hidden, block_out, has_residual``.

Style rules (for figures pasted into papers):

- colours come from the colour-blind-safe Okabe-Ito palette with a *fixed* mapping
  design -> colour (:data:`DESIGN_COLORS`): ``linear`` is always blue, ``relu6`` always
  vermillion, in every chart; unknown designs (third-party architectures) take the
  :data:`FALLBACK_COLORS` in sorted order;
- axis titles carry units (:data:`METRIC_LABELS`), legends are titled, fonts are sized for print;
- a chart never silently shows nothing: when nothing can be drawn the builder returns a
  :func:`message_chart` that says why ("not applicable: ..."), and values that are missing for
  some designs are named in the subtitle.

Builders apply the shared style with ``chart.configure_*``; pass ``configure=False`` to get an
unconfigured chart that can still be layered or concatenated (Vega-Lite allows ``config`` only at
the top level), and call :func:`style_chart` on the composition.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

from analysis.metrics import METRICS
from analysis.metrics import metric_label as registry_label

from probes._io import atomic_path
from probes.points import PRE, STAGES, is_point_name, point_sort_key, point_suffix, suffix_sort_key

__all__ = [
    "CATEGORICAL_COLORS",
    "DECODER_COLORS",
    "DECODER_LABELS",
    "DESIGN_COLORS",
    "DIM_COLORS",
    "FALLBACK_COLORS",
    "METRIC_LABELS",
    "OKABE_ITO",
    "STAGE_ORDER",
    "accuracy_chart",
    "activity_heatmap",
    "barcode",
    "betti_curve",
    "depth_curve",
    "design_colors",
    "embedding_scatter",
    "message_chart",
    "metric_label",
    "paired_difference_chart",
    "persistence_diagram",
    "positive_channels_plot",
    "positive_histogram",
    "reconstruction_bars",
    "save_chart",
    "scree_plot",
    "spiral_figure",
    "style_chart",
]

Chart = alt.Chart | alt.LayerChart | alt.ConcatChart | alt.HConcatChart | alt.VConcatChart | alt.FacetChart

OKABE_ITO: dict[str, str] = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
"""Okabe & Ito (2008) colour-blind-safe palette."""

CATEGORICAL_COLORS: list[str] = [
    OKABE_ITO[name]
    for name in ("blue", "vermillion", "bluish_green", "reddish_purple", "orange", "sky_blue",
                 "black", "yellow")
]
"""Okabe-Ito in the order used for categories without a fixed colour (yellow last: faint on white)."""

FALLBACK_COLORS: list[str] = ["#882255", "#999999", "#332288", "#117733", "#DDCC77", "#88CCEE",
                              "#AA4499", "#44AA99"]
"""Paul Tol's colour-blind-safe 'muted' colours, for designs outside :data:`DESIGN_COLORS`."""

DESIGN_COLORS: dict[str, str] = {
    "linear": OKABE_ITO["blue"],
    "relu6": OKABE_ITO["vermillion"],
    "partial": OKABE_ITO["bluish_green"],
    "shortcut_none": OKABE_ITO["reddish_purple"],
    "shortcut_expansion": OKABE_ITO["orange"],
    "hswish": OKABE_ITO["sky_blue"],
    "leaky_relu": OKABE_ITO["black"],
    "relu": "#882255",
    "partial_reverse": "#999999",
}
"""Fixed design -> colour mapping; the key order is the order designs are listed in legends."""

DECODER_COLORS: dict[str, str] = {
    "linear": OKABE_ITO["sky_blue"],
    "knn": OKABE_ITO["orange"],
    "mlp": OKABE_ITO["bluish_green"],
    "exact": OKABE_ITO["black"],
}
"""Reconstruction decoder -> colour (``recon_error_<decoder>``)."""

DECODER_LABELS: dict[str, str] = {
    "linear": "ridge (linear)",
    "knn": "k-NN",
    "mlp": "MLP",
    "exact": "active-set inverse",
}
"""Decoder id -> legend label (``linear`` is spelled out: it is not the linear design)."""

DIM_COLORS: dict[int, str] = {0: OKABE_ITO["black"], 1: OKABE_ITO["vermillion"], 2: OKABE_ITO["sky_blue"]}
"""Homology dimension -> colour for persistence diagrams and barcodes."""

STAGE_ORDER: tuple[str, ...] = STAGES
"""Capture stages in execution order (:data:`probes.points.STAGES`, the point vocabulary)."""

_POINT_COLORS: dict[str, str] = {
    "input": OKABE_ITO["black"],
    "expand": OKABE_ITO["orange"],
    "depthwise": OKABE_ITO["sky_blue"],
    "project": OKABE_ITO["bluish_green"],
    "output": OKABE_ITO["reddish_purple"],
}
_SOLID: list[float] = [1, 0]
_DASHED: list[float] = [6, 3]

# ASCII only: the renderers' fonts lack combining accents and fall back to a serif face.
_REL_ERR = "||x_rec - x|| / ||x - mean x||"

METRIC_LABELS: dict[str, str] = {name: info.label for name, info in METRICS.items()}
"""Metric identifier -> axis title with units (from the registry :mod:`analysis.metrics`)."""

_TIDY_REQUIRED = ("design", "dataset", "block", "point", "stage", "pre", "metric", "value")


# --------------------------------------------------------------------------------------- helpers


def metric_label(metric: str) -> str:
    """Readable axis title (with units) for a metric identifier; the identifier if unknown.

    Derived names (``*_ci_low``, ``factor_decode_r2_<f>`` ...) resolve through
    :func:`analysis.metrics.metric_label`.
    """
    return registry_label(metric)


def design_colors(designs: Iterable[str]) -> dict[str, str]:
    """Colour of each design: :data:`DESIGN_COLORS` where known, else fallbacks in sorted order.

    Parameters
    ----------
    designs : iterable of str
        Design labels present in one chart.

    Returns
    -------
    colors : dict
        ``design -> hex colour``, ordered as the legend lists them (known designs in
        :data:`DESIGN_COLORS` order, then unknown ones alphabetically).

    Examples
    --------
    >>> design_colors(["relu6", "linear"])
    {'linear': '#0072B2', 'relu6': '#D55E00'}
    """
    present = {str(d) for d in designs}
    out = {d: c for d, c in DESIGN_COLORS.items() if d in present}
    for i, d in enumerate(sorted(present - set(DESIGN_COLORS))):
        out[d] = FALLBACK_COLORS[i % len(FALLBACK_COLORS)]
    return out


def _color_scale(values: Iterable[Any], by: str) -> alt.Scale:
    """Fixed design colours when colouring by design; Okabe-Ito in sorted order otherwise."""
    if by == "design":
        mapping = design_colors(values)
        return alt.Scale(domain=list(mapping), range=list(mapping.values()))
    domain = sorted({str(v) for v in values})
    return alt.Scale(domain=domain, range=[CATEGORICAL_COLORS[i % len(CATEGORICAL_COLORS)]
                                           for i in range(len(domain))])


def _point_suffix(point: str) -> str:
    """``'blocks.3.expand.pre'`` -> ``'expand.pre'``; a name outside the grammar as it is."""
    return point_suffix(point) if is_point_name(point) else str(point)


def _point_key(point: str) -> tuple[int, int, str]:
    """Sort key putting capture points in execution order (block, then stage, pre first)."""
    return point_sort_key(str(point))


def _point_style(points: Sequence[str]) -> tuple[list[str], list[str], list[list[float]]]:
    """Domain, colours and dash patterns for capture points: colour by stage, dashed if ``.pre``."""
    domain = sorted({str(p) for p in points}, key=_point_key)
    colors, dashes = [], []
    for i, p in enumerate(domain):
        suffix = _point_suffix(p)
        stage = suffix.removesuffix(PRE)
        colors.append(_POINT_COLORS.get(stage, FALLBACK_COLORS[i % len(FALLBACK_COLORS)]))
        dashes.append(_DASHED if suffix.endswith(PRE) else _SOLID)
    return domain, colors, dashes


def _require_columns(df: pd.DataFrame, columns: Iterable[str], func: str, param: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"The '{param}' parameter of {func} must be a pandas DataFrame. "
                         f"Got {type(df).__name__} instead.")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"The '{param}' parameter of {func} must have columns {list(columns)}; "
                         f"missing {missing} (found {list(df.columns)}).")


def _check_size(value: Any, name: str, func: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"The '{name}' parameter of {func} must be a positive number. "
                         f"Got {value!r} instead.")


def _title(text: str, subtitle: Sequence[str] = ()) -> alt.TitleParams | str:
    lines = [s for s in subtitle if s]
    return alt.TitleParams(text=text, subtitle=lines) if lines else text


def _reasons(rows: pd.DataFrame) -> str:
    """Distinct non-empty reasons of all-NaN rows, joined; a generic phrase when none given."""
    if "reason" in rows.columns:
        # the metric reasons often already start with "not applicable: "; the callers add it
        found = [str(r).removeprefix("not applicable: ") for r in pd.unique(rows["reason"].dropna())
                 if str(r).strip()]
        if found:
            return "; ".join(found)
    return "no finite values"


def _seed_note(n: pd.Series) -> str:
    lo, hi = int(n.min()), int(n.max())
    if hi <= 1:
        return "One seed per line: no spread over seeds"
    count = f"n = {lo}" if lo == hi else f"n = {lo}\u2013{hi}"
    return f"Mean \u00b1 std over seeds ({count})"


def style_chart(chart: Chart) -> Chart:
    """Apply the shared print style (font sizes, title anchor, legend limits) to a chart.

    Call it once on the outermost chart; Vega-Lite accepts ``config`` only at the top level.
    """
    return (
        chart.configure_axis(labelFontSize=12, titleFontSize=13, titleFontWeight="normal",
                             labelLimit=260, titleLimit=520)
        .configure_legend(labelFontSize=12, titleFontSize=13, labelLimit=0, symbolSize=120)
        .configure_title(fontSize=15, subtitleFontSize=12, subtitleColor="#444444", anchor="start",
                         offset=8)
        .configure_header(labelFontSize=13, titleFontSize=13)
        .configure_view(strokeOpacity=0.3)
    )


def _finish(chart: Chart, configure: bool) -> Chart:
    return style_chart(chart) if configure else chart


def message_chart(text: str, *, title: str | None = None, width: float = 420, height: float = 120,
                  configure: bool = True) -> alt.Chart:
    """A chart that shows only ``text``, for cases where there is nothing to plot.

    Parameters
    ----------
    text : str
        The message, e.g. ``"not applicable: no activation after the projection"``; wrapped at
        70 characters.
    title, width, height, configure
        As for the other builders.

    Returns
    -------
    chart : alt.Chart
        A text mark centred in an empty view.
    """
    wrapped = "\n".join(textwrap.wrap(str(text), 70)) or " "
    chart = (
        alt.Chart(pd.DataFrame({"message": [wrapped]}))
        .mark_text(size=14, color="#333333", lineBreak="\n", align="center", baseline="middle")
        .encode(text="message:N", x=alt.value(width / 2), y=alt.value(height / 2))
        .properties(width=width, height=height)
    )
    if title:
        chart = chart.properties(title=title)
    return _finish(chart, configure)


def _block_x(blocks: pd.Series) -> alt.X:
    lo, hi = int(blocks.min()), int(blocks.max())
    return alt.X("block:Q", title="Block (execution order)",
                 scale=alt.Scale(domain=[lo, max(hi, lo + 1)], nice=False),
                 axis=alt.Axis(tickMinStep=1, format="d"))


def _agg_seeds(df: pd.DataFrame, keys: list[str], *, bounds: tuple[float, float] | None = None
               ) -> pd.DataFrame:
    """Mean, sample std (NaN for one seed), count and mean +- std bounds of ``value`` per group.

    ``lo``/``hi`` are clipped to ``bounds`` (the metric's possible range) so that a band never
    claims impossible values such as a negative count.
    """
    agg = (df.groupby(keys, sort=True, observed=True)["value"]
           .agg(mean="mean", std="std", n="count").reset_index())
    spread = agg["std"].fillna(0.0)
    agg["lo"] = agg["mean"] - spread
    agg["hi"] = agg["mean"] + spread
    if bounds is not None:
        agg["lo"] = agg["lo"].clip(lower=bounds[0], upper=bounds[1])
        agg["hi"] = agg["hi"].clip(lower=bounds[0], upper=bounds[1])
    return agg


def _metric_bounds(metric: str, values: pd.Series) -> tuple[float, float] | None:
    """Possible range of a metric: [0, 1] for fractions and CKA, [0, inf) if no value is < 0."""
    if metric.endswith(("_fraction", "_frac")) or metric == "cka_to_input":
        return 0.0, 1.0
    if metric.startswith(("recon_r2", "int8_sqnr")) or (values < 0).any():
        return None
    return 0.0, math.inf


# ----------------------------------------------------------------------------- depth curves


def depth_curve(
    df: pd.DataFrame,
    metric: str,
    *,
    stage: str = "project",
    pre: bool = False,
    by: str = "design",
    designs: Sequence[str] | None = None,
    title: str | None = None,
    width: float = 420,
    height: float = 260,
    configure: bool = True,
) -> Chart:
    """A metric across depth, one line per design, mean +- std band over seeds.

    Rows of ``df`` with ``metric``, ``stage`` and ``pre`` are grouped by ``(by, block)`` (and
    ``dataset``, faceted into columns when the frame holds several); the mean and the sample
    standard deviation over the remaining rows (the seeds) are computed in pandas:

        mean_b = (1/n) sum_s v_{b,s},   std_b = sqrt(sum_s (v_{b,s} - mean_b)^2 / (n - 1)),

    with the band drawn from ``mean - std`` to ``mean + std`` (zero width for one seed, whose
    std is NaN in the data), clipped to the metric's range ([0, 1] for fractions and CKA,
    >= 0 for metrics with no negative value) so it never shows impossible values. Non-finite
    values are skipped; a design whose values are all missing is named, with its ``reason``, in
    the subtitle; if no value is finite the chart is a :func:`message_chart`
    "not applicable: <reason>"; if the stage has no rows at all, one that says so.

    Parameters
    ----------
    df : DataFrame
        Tidy results (needs ``design, dataset, block, point, stage, pre, metric, value``; uses
        ``reason`` when present).
    metric : str
        Metric identifier, e.g. ``"effective_rank_frac"``; must occur in ``df``.
    stage : str, default="project"
        Capture stage (``input/expand/depthwise/project/output``).
    pre : bool, default=False
        Pre-activation (``.pre``) points instead of post-activation ones.
    by : str, default="design"
        Column that defines one line (colour); designs keep their fixed colours.
    designs : sequence of str, optional
        Keep only these designs.
    title : str, optional
        Chart title; default names the metric and the stage. ``""`` for none.
    width, height : float
        Size of the plot area (of each facet) in pixels.
    configure : bool, default=True
        Apply :func:`style_chart` (set False to compose the chart further).

    Returns
    -------
    chart : alt.LayerChart or alt.FacetChart or alt.Chart
        Layers: band (area ``lo``-``hi``), mean line, points with tooltips (mean, std, n seeds).
        The aggregated data has columns ``by, block, mean, std, n, lo, hi`` (+ ``dataset``).
    """
    func = "depth_curve"
    _require_columns(df, _TIDY_REQUIRED, func, "df")
    if by not in df.columns:
        raise ValueError(f"The 'by' parameter of {func} must be a column of df. Got {by!r} instead.")
    _check_size(width, "width", func)
    _check_size(height, "height", func)
    known = sorted(pd.unique(df["metric"].astype(str)))
    if metric not in known:
        raise ValueError(f"The 'metric' parameter of {func} must be a metric present in df, one of "
                         f"{known}. Got {metric!r} instead.")
    if stage not in STAGE_ORDER:
        raise ValueError(f"The 'stage' parameter of {func} must be one of {list(STAGE_ORDER)}. "
                         f"Got {stage!r} instead.")
    where = f"{stage}{' (pre-activation)' if pre else ''}"
    label = metric_label(metric)
    if title is None:
        title = f"{label.split(' (')[0]} across depth, {where}"
    sel = df[(df["metric"] == metric) & (df["stage"] == stage) & (df["pre"] == bool(pre))]
    if designs is not None:
        sel = sel[sel["design"].isin(list(designs))]
    if sel.empty:
        return message_chart(f"no values of {metric} at stage {where}", title=title, width=width,
                             configure=configure)
    finite = sel[np.isfinite(sel["value"].astype(float))]
    if finite.empty:
        return message_chart(f"not applicable: {_reasons(sel)}", title=title, width=width,
                             configure=configure)

    facet = sel["dataset"].nunique() > 1
    keys = [by, "block"] + (["dataset"] if facet else [])
    values = finite["value"].astype(float)
    agg = _agg_seeds(finite.assign(value=values), keys, bounds=_metric_bounds(metric, values))
    agg[by] = agg[by].astype(str)
    notes = [_seed_note(agg["n"])]
    for group in sorted(set(sel[by].astype(str)) - set(agg[by])):
        notes.append(f"not applicable for {group}: {_reasons(sel[sel[by].astype(str) == group])}")

    legend_title = by.replace("_", " ").capitalize()
    scale = _color_scale(agg[by], by)
    domain = scale.to_dict()["domain"]
    color = alt.Color(f"{by}:N", scale=scale, title=legend_title)
    x = _block_x(agg["block"])
    tooltip = [alt.Tooltip(f"{by}:N", title=legend_title), alt.Tooltip("block:Q", title="Block"),
               alt.Tooltip("mean:Q", format=".4g"), alt.Tooltip("std:Q", format=".3g"),
               alt.Tooltip("n:Q", title="n seeds")]
    if facet:
        tooltip.append(alt.Tooltip("dataset:N", title="Dataset"))
    base = alt.Chart().encode(x=x)
    band = base.mark_area(opacity=0.2).encode(
        y=alt.Y("lo:Q", title=label), y2="hi:Q", color=color)
    line = base.mark_line(strokeWidth=2).encode(y=alt.Y("mean:Q", title=label), color=color)
    points = base.mark_point(filled=True, size=45, opacity=1).encode(
        y=alt.Y("mean:Q", title=label), color=color,
        shape=alt.Shape(f"{by}:N", title=legend_title, scale=alt.Scale(domain=domain)),
        tooltip=tooltip)
    # Points first: the legend is built from the first layer, where colour and shape merge.
    layer = alt.layer(points, band, line, data=agg).properties(width=width, height=height)
    if facet:
        chart: Chart = layer.facet(column=alt.Column("dataset:N", title="Dataset"))
        chart = chart.properties(title=_title(title, notes)) if title else chart
    else:
        chart = layer.properties(title=_title(title, notes)) if title else layer
    return _finish(chart, configure)


def betti_curve(
    df: pd.DataFrame,
    *,
    metrics: Sequence[str] = ("betti0", "betti1"),
    stage: str = "project",
    pre: bool = False,
    designs: Sequence[str] | None = None,
    title: str | None = None,
    width: float = 320,
    height: float = 240,
    configure: bool = True,
) -> alt.HConcatChart:
    """Betti numbers across depth per design: one :func:`depth_curve` panel per metric.

    Parameters
    ----------
    df : DataFrame
        Tidy results.
    metrics : sequence of str, default=("betti0", "betti1")
        Betti metrics to show, side by side; those absent from ``df`` are skipped, and if none is
        present a ValueError names what ``df`` has.
    stage, pre, designs
        As in :func:`depth_curve`.
    title : str, optional
        Overall title; default "Betti numbers across depth, <stage>".
    width, height : float
        Size of each panel.
    configure : bool, default=True
        Apply :func:`style_chart`.

    Returns
    -------
    chart : alt.HConcatChart
        Panels share the design colour scale (one legend).
    """
    _require_columns(df, _TIDY_REQUIRED, "betti_curve", "df")
    present = [m for m in metrics if m in set(df["metric"])]
    if not present:
        found = sorted(m for m in pd.unique(df["metric"].astype(str)) if m.startswith("betti"))
        raise ValueError(f"The 'metrics' parameter of betti_curve must name metrics present in df "
                         f"(Betti metrics there: {found}). Got {list(metrics)} instead.")
    panels = [depth_curve(df, m, stage=stage, pre=pre, designs=designs, title=f"H{m[-1]}"
                          if m[-1].isdigit() else m, width=width, height=height, configure=False)
              for m in present]
    where = f"{stage}{' (pre-activation)' if pre else ''}"
    chart = alt.hconcat(*panels).resolve_scale(color="shared", shape="shared")
    chart = chart.properties(title=title if title is not None else f"Betti numbers across depth, {where}")
    return _finish(chart, configure)


# ------------------------------------------------------------------------- activity (Fig. 7)


def positive_channels_plot(
    df: pd.DataFrame,
    *,
    design: str | None = None,
    dataset: str | None = None,
    title: str | None = None,
    width: float = 360,
    height: float = 260,
    configure: bool = True,
) -> Chart:
    """Active channels per point after each ReLU across depth, with the invertibility threshold.

    The paper's Figure 7: for the expansion and the depthwise activation of every block, the
    min, mean and max over points of the number of active channels (metrics ``positive_min``,
    ``positive_mean``, ``positive_max``; each averaged over seeds), against Lemma 2's threshold
    ``C_in`` (``block_in``; a fraction 1/t of the ``C_hidden = t * C_in`` channels): a point
    with fewer than ``C_in`` active channels cannot be inverted. The total ``C_hidden`` is drawn
    for scale. One panel per stage.

    Parameters
    ----------
    df : DataFrame
        Tidy results (needs ``block_in`` and ``block_hidden`` besides the usual columns).
    design : str, optional
        Design to show; required when ``df`` holds several.
    dataset : str, optional
        Dataset to show; required when ``df`` holds several.
    title : str, optional
        Default "Active channels per point, <design>".
    width, height : float
        Size of each panel.
    configure : bool, default=True
        Apply :func:`style_chart`.

    Returns
    -------
    chart : alt.HConcatChart or alt.Chart
        One layered panel per stage (band min-max, mean line, dashed threshold step, dotted
        total), sharing the y scale; a :func:`message_chart` when nothing is defined.
    """
    func = "positive_channels_plot"
    _require_columns(df, (*_TIDY_REQUIRED, "block_in", "block_hidden"), func, "df")
    _check_size(width, "width", func)
    _check_size(height, "height", func)
    rows = df[df["metric"].isin(["positive_min", "positive_mean", "positive_max"])
              & df["stage"].isin(["expand", "depthwise"]) & (df["pre"] == False)]  # noqa: E712
    for name, value in (("design", design), ("dataset", dataset)):
        choices = sorted(pd.unique(rows[name].astype(str)))
        if value is None and len(choices) > 1:
            raise ValueError(f"The '{name}' parameter of {func} must be one of {choices} when df "
                             f"holds several. Got None instead.")
        if value is not None:
            if value not in choices:
                raise ValueError(f"The '{name}' parameter of {func} must be one of {choices}. "
                                 f"Got {value!r} instead.")
            rows = rows[rows[name].astype(str) == value]
    design_name = design if design is not None else (str(rows["design"].iloc[0]) if len(rows) else "")
    if title is None:
        title = f"Active channels per point, {design_name}".rstrip(", ")
    if rows.empty:
        return message_chart("no positive_min/mean/max values at the expand or depthwise stage",
                             title=title, width=width, configure=configure)
    finite = rows[np.isfinite(rows["value"].astype(float))]
    if finite.empty:
        return message_chart(f"not applicable: {_reasons(rows)}", title=title, width=width,
                             configure=configure)

    series = ["mean over points", "min\u2013max over points", "threshold C_in (Lemma 2)",
              "all channels C_hidden"]
    legend = alt.Legend(symbolType="stroke", symbolStrokeWidth=3, symbolSize=300)
    color = alt.Color("series:N", title="Active channels", legend=legend, scale=alt.Scale(
        domain=series, range=[OKABE_ITO["blue"], "#9ECAE9", OKABE_ITO["black"], "#888888"]))
    dash = alt.StrokeDash("series:N", title="Active channels", legend=legend, scale=alt.Scale(
        domain=series, range=[_SOLID, _SOLID, _DASHED, [2, 2]]))
    y_title = "Active channels per point (count)"
    x = _block_x(finite["block"])
    panels = []
    for stage in ("expand", "depthwise"):
        part = finite[finite["stage"] == stage]
        if part.empty:
            continue
        stats = (part.astype({"value": float})
                 .pivot_table(index="block", columns="metric", values="value", aggfunc="mean")
                 .reset_index())
        seeds = part[part["metric"] == "positive_mean"].groupby("block")["value"].count()
        stats["n"] = stats["block"].map(seeds).fillna(0).astype(int)
        meta = part.groupby("block")[["block_in", "block_hidden", "act"] if "act" in part
                                     else ["block_in", "block_hidden"]].first().reset_index()
        stats = stats.merge(meta, on="block")
        for m in ("positive_min", "positive_mean", "positive_max"):
            if m not in stats:
                stats[m] = np.nan
        act = f" ({stats['act'].iloc[0]})" if "act" in stats else ""
        band_df = stats.assign(series=series[1])
        mean_df = stats.assign(series=series[0])
        ref_df = pd.concat([
            stats[["block"]].assign(count=stats["block_in"].astype(float), series=series[2]),
            stats[["block"]].assign(count=stats["block_hidden"].astype(float), series=series[3]),
        ])
        tooltip = [alt.Tooltip("block:Q", title="Block"),
                   alt.Tooltip("positive_min:Q", title="min", format=".1f"),
                   alt.Tooltip("positive_mean:Q", title="mean", format=".1f"),
                   alt.Tooltip("positive_max:Q", title="max", format=".1f"),
                   alt.Tooltip("block_in:Q", title="C_in (threshold)"),
                   alt.Tooltip("block_hidden:Q", title="C_hidden"),
                   alt.Tooltip("n:Q", title="n seeds")]
        band = alt.Chart(band_df).mark_area(opacity=0.8).encode(
            x=x, y=alt.Y("positive_min:Q", title=y_title), y2="positive_max:Q", color=color)
        mean = alt.Chart(mean_df).mark_line(strokeWidth=2, point=alt.OverlayMarkDef(size=30)).encode(
            x=x, y=alt.Y("positive_mean:Q", title=y_title), color=color, strokeDash=dash,
            tooltip=tooltip)
        refs = alt.Chart(ref_df).mark_line(interpolate="step", strokeWidth=1.5).encode(
            x=x, y=alt.Y("count:Q", title=y_title), color=color, strokeDash=dash,
            tooltip=[alt.Tooltip("block:Q", title="Block"), "series:N",
                     alt.Tooltip("count:Q", title="channels")])
        panels.append(alt.layer(band, refs, mean).properties(
            width=width, height=height, title=f"after {stage} activation{act}"))
    n_seeds = finite[finite["metric"] == "positive_mean"].groupby(["stage", "block"])["value"].count()
    averaged = (_seed_note(n_seeds).replace("Mean \u00b1 std", "Each statistic averaged")
                if len(n_seeds) else "Each statistic averaged over seeds")
    notes = [f"{averaged}; "
             "a point below the dashed threshold cannot be inverted"]
    chart = alt.hconcat(*panels).resolve_scale(y="shared").properties(title=_title(title, notes))
    return _finish(chart, configure)


def positive_histogram(
    hist_df: pd.DataFrame,
    *,
    threshold: int,
    title: str | None = None,
    width: float = 420,
    height: float = 240,
    configure: bool = True,
) -> alt.LayerChart:
    """Histogram of the number of active channels per point at one capture point.

    Bars show the fraction of points with ``n_active`` active channels,
    ``count(n) / sum_n count(n)``; a dashed rule separates the points below Lemma 2's threshold
    (``n_active < threshold``: not invertible, vermillion) from the rest (blue).

    Parameters
    ----------
    hist_df : DataFrame
        Columns ``n_active`` (int) and ``count`` (int >= 0), one row per value of ``n_active``
        for one capture point.
    threshold : int
        Invertibility threshold ``C_in`` of the block (> 0).
    title : str, optional
        Default "Active channels per point".
    width, height : float
        Plot size in pixels.
    configure : bool, default=True
        Apply :func:`style_chart`.

    Returns
    -------
    chart : alt.LayerChart
        Bars (``x=n_active - 0.5 .. n_active + 0.5``, ``y=percent``), the rule at
        ``threshold - 0.5`` and its label.
    """
    func = "positive_histogram"
    _require_columns(hist_df, ("n_active", "count"), func, "hist_df")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or threshold <= 0:
        raise ValueError(f"The 'threshold' parameter of {func} must be a positive int. "
                         f"Got {threshold!r} instead.")
    counts = hist_df["count"].astype(float)
    if (counts < 0).any() or not np.isfinite(counts).all():
        raise ValueError(f"The 'hist_df' parameter of {func} must have finite counts >= 0. "
                         f"Got {counts[(counts < 0) | ~np.isfinite(counts)].tolist()[:5]} instead.")
    title = "Active channels per point" if title is None else title
    if counts.sum() == 0:
        return message_chart("no points: all counts are zero", title=title, width=width,
                             configure=configure)
    data = pd.DataFrame({"n_active": hist_df["n_active"].astype(int), "count": counts})
    data = data[data["count"] > 0].sort_values("n_active").reset_index(drop=True)
    data["percent"] = 100.0 * data["count"] / data["count"].sum()
    data["lo"] = data["n_active"] - 0.5
    data["hi"] = data["n_active"] + 0.5
    data["side"] = np.where(data["n_active"] < threshold, "below threshold: not invertible",
                            "at or above threshold")
    below = float(data.loc[data["n_active"] < threshold, "percent"].sum())
    x_lo = min(float(data["lo"].min()), threshold - 1.5)
    x_hi = max(float(data["hi"].max()), threshold + 0.5)
    x = alt.X("lo:Q", title="Active channels per point (count)",
              scale=alt.Scale(domain=[x_lo, x_hi], nice=False), axis=alt.Axis(tickMinStep=1, format="d"))
    bars = alt.Chart(data).mark_rect().encode(
        x=x, x2="hi:Q", y2=alt.datum(0),
        # Headroom above the tallest bar keeps the threshold label clear of the bars.
        y=alt.Y("percent:Q", title="Points (%)",
                scale=alt.Scale(domain=[0, 1.2 * float(data["percent"].max())], nice=False)),
        color=alt.Color("side:N", title="Lemma 2", scale=alt.Scale(
            domain=["below threshold: not invertible", "at or above threshold"],
            range=[OKABE_ITO["vermillion"], OKABE_ITO["blue"]])),
        tooltip=[alt.Tooltip("n_active:Q", title="active channels"), alt.Tooltip("count:Q", format="d"),
                 alt.Tooltip("percent:Q", title="% of points", format=".2f")])
    rule_df = pd.DataFrame({"x": [threshold - 0.5], "label": [f"threshold C_in = {threshold}"]})
    rule = alt.Chart(rule_df).mark_rule(strokeDash=_DASHED, strokeWidth=2, color="black").encode(
        x=alt.X("x:Q"))
    text = alt.Chart(rule_df).mark_text(align="left", baseline="top", dx=5, dy=3, fontSize=12).encode(
        x=alt.X("x:Q"), y=alt.value(0), text="label:N")
    notes = [f"{below:.1f} % of {int(data['count'].sum())} points below the threshold"]
    chart = alt.layer(bars, rule, text).properties(width=width, height=height,
                                                   title=_title(title, notes) if title else "")
    return _finish(chart, configure)


def activity_heatmap(
    act_df: pd.DataFrame,
    *,
    title: str | None = None,
    width: float = 520,
    row_height: float = 24,
    configure: bool = True,
) -> Chart:
    """Per-channel activity of each capture point: the fraction of points where a unit is active.

    Parameters
    ----------
    act_df : DataFrame
        Columns ``point`` (str), ``channel`` (int, 0-based), ``active_fraction`` (float in
        [0, 1], NaN where activity is not defined, e.g. a linear output).
    title : str, optional
        Default "Channel activity".
    width : float
        Plot width in pixels.
    row_height : float
        Height of one capture-point row.
    configure : bool, default=True
        Apply :func:`style_chart`.

    Returns
    -------
    chart : alt.Chart
        ``rect`` marks, ``x=channel``, ``y=point`` (execution order), colour = active fraction
        (viridis, fixed domain [0, 1]: dead channels are the darkest). Points whose activity is
        undefined are listed in the subtitle.
    """
    func = "activity_heatmap"
    _require_columns(act_df, ("point", "channel", "active_fraction"), func, "act_df")
    _check_size(width, "width", func)
    _check_size(row_height, "row_height", func)
    frac = act_df["active_fraction"].astype(float)
    bad = frac[np.isfinite(frac) & ((frac < 0) | (frac > 1))]
    if len(bad):
        raise ValueError(f"The 'act_df' parameter of {func} must have active_fraction in [0, 1]. "
                         f"Got {bad.tolist()[:5]} instead.")
    title = "Channel activity" if title is None else title
    data = pd.DataFrame({"point": act_df["point"].astype(str), "channel": act_df["channel"].astype(int),
                         "active_fraction": frac})
    undefined = sorted(set(data["point"]) - set(data.loc[np.isfinite(frac), "point"]), key=_point_key)
    data = data[np.isfinite(data["active_fraction"])].copy()
    if data.empty:
        return message_chart("not applicable: activity is undefined at every point", title=title,
                             width=width, configure=configure)
    data["channel_end"] = data["channel"] + 1
    data["label"] = data["point"].map(_point_suffix)
    points = sorted(set(data["point"]), key=_point_key)
    labels = list(dict.fromkeys(_point_suffix(p) for p in points))
    if len(labels) != len(points):
        data["label"] = data["point"]
        labels = points
    dead = data.groupby("label")["active_fraction"].apply(lambda s: float((s == 0).mean()))
    n_ch = int(data["channel"].max()) + 1
    chart = alt.Chart(data).mark_rect().encode(
        x=alt.X("channel:Q", title="Channel index", scale=alt.Scale(domain=[0, n_ch], nice=False),
                axis=alt.Axis(tickMinStep=1, format="d")),
        x2="channel_end:Q",
        y=alt.Y("label:N", title="Capture point", sort=labels),
        color=alt.Color("active_fraction:Q", title=["Active", "fraction"],
                        scale=alt.Scale(scheme="viridis", domain=[0, 1])),
        tooltip=[alt.Tooltip("point:N"), alt.Tooltip("channel:Q", title="channel"),
                 alt.Tooltip("active_fraction:Q", title="active fraction", format=".1%")],
    ).properties(width=width, height=row_height * len(labels))
    notes = ["dead channels (never active): " + ", ".join(
        f"{lab} {100 * dead[lab]:.0f} %" for lab in labels)]
    if undefined:
        notes.append("activity not defined at: " + ", ".join(_point_suffix(p) for p in undefined))
    chart = chart.properties(title=_title(title, notes) if title else "")
    return _finish(chart, configure)


# ------------------------------------------------------------------------------ accuracy


def accuracy_chart(
    cards_df: pd.DataFrame,
    *,
    title: str | None = None,
    width: float = 380,
    height: float | None = None,
    configure: bool = True,
) -> Chart:
    """Test accuracy per design (the paper's Fig. 6 ablations), from checkpoint cards.

    For each dataset and design: the mean over seeds (bar from the axis origin would hide
    sub-percent differences, so the mean is a thick tick on a zoomed axis), an error bar of
    +- one sample standard deviation, each seed as a hollow circle, and a "mean +- std" label.

    Parameters
    ----------
    cards_df : DataFrame
        Columns ``checkpoint, design, dataset, seed, test_accuracy`` (fraction in [0, 1]).
    title : str, optional
        Default "Test accuracy per design".
    width : float
        Width of each dataset's panel.
    height : float, optional
        Default 32 px per design.
    configure : bool, default=True
        Apply :func:`style_chart`.

    Returns
    -------
    chart : alt.HConcatChart
        One panel per dataset; aggregated data columns ``dataset, design, mean, std, n, lo, hi``
        in percent.
    """
    func = "accuracy_chart"
    _require_columns(cards_df, ("checkpoint", "design", "dataset", "seed", "test_accuracy"), func,
                     "cards_df")
    acc = cards_df["test_accuracy"].astype(float)
    bad = acc[~np.isfinite(acc) | (acc < 0) | (acc > 1)]
    if len(bad):
        raise ValueError(f"The 'cards_df' parameter of {func} must have test_accuracy as a fraction "
                         f"in [0, 1]. Got {bad.tolist()[:5]} instead.")
    title = "Test accuracy per design" if title is None else title
    if cards_df.empty:
        return message_chart("no checkpoint cards", title=title, width=width, configure=configure)
    data = cards_df[["checkpoint", "design", "dataset", "seed"]].astype(
        {"design": str, "dataset": str}).assign(value=100.0 * acc)
    agg = _agg_seeds(data, ["dataset", "design"], bounds=(0.0, 100.0))
    agg["label"] = [f"{m:.2f} \u00b1 {s:.2f}" if np.isfinite(s) else f"{m:.2f} (1 seed)"
                    for m, s in zip(agg["mean"], agg["std"])]
    order = list(design_colors(agg["design"]))
    design_scale = _color_scale(agg["design"], "design")
    panels = []
    for ds in sorted(agg["dataset"].unique()):
        a = agg[agg["dataset"] == ds]
        d = data[data["dataset"] == ds]
        lo = float(min(a["lo"].min(), d["value"].min()))
        hi = float(max(a["hi"].max(), d["value"].max()))
        pad = max(0.15 * (hi - lo), 0.2)
        scale = alt.Scale(domain=[max(lo - pad, 0.0), hi + pad], zero=False, nice=False)
        x_title = "Test accuracy (%)"
        y = alt.Y("design:N", title="Design", sort=order)
        color = alt.Color("design:N", scale=design_scale, title="Design", legend=None)
        tooltip = [alt.Tooltip("design:N", title="Design"),
                   alt.Tooltip("mean:Q", format=".2f", title="mean (%)"),
                   alt.Tooltip("std:Q", format=".2f", title="std (%)"),
                   alt.Tooltip("n:Q", title="n seeds")]
        base = alt.Chart(a).encode(y=y, color=color)
        err = base.mark_rule(strokeWidth=2).encode(
            x=alt.X("lo:Q", title=x_title, scale=scale), x2="hi:Q")
        tick = base.mark_tick(thickness=4, size=22, opacity=1).encode(
            x=alt.X("mean:Q", title=x_title, scale=scale), tooltip=tooltip)
        seeds = alt.Chart(d).mark_point(size=50, filled=False, strokeWidth=1.5, opacity=0.9).encode(
            x=alt.X("value:Q", title=x_title, scale=scale), y=y, color=color,
            tooltip=["checkpoint:N", alt.Tooltip("seed:Q", title="seed"),
                     alt.Tooltip("value:Q", title="accuracy (%)", format=".2f")])
        # Labels sit right of the plot area (autosize pads for them), never over the data.
        text = alt.Chart(a).mark_text(align="left", dx=8, fontSize=12, color="#222222").encode(
            y=y, x=alt.value(width), text="label:N")
        h = height if height is not None else 34 * a["design"].nunique()
        panels.append(alt.layer(err, tick, seeds, text).properties(
            width=width, height=h, title=f"{ds}" if agg["dataset"].nunique() > 1 else ""))
    notes = [f"{_seed_note(agg['n'])}; circles = individual seeds; axis zoomed, not from 0"]
    chart = alt.hconcat(*panels).properties(title=_title(title, notes) if title else "")
    return _finish(chart, configure)


# ------------------------------------------------------------------------ paired comparison


def paired_difference_chart(
    comparison: pd.DataFrame,
    *,
    metrics: Sequence[str] | None = None,
    level: float = 0.95,
    title: str | None = None,
    width: float = 420,
    height: float = 150,
    configure: bool = True,
) -> Chart:
    """Paired difference ``a - b`` across depth with its confidence band, one panel per metric.

    Draws the rows of :func:`analysis.compare.compare_designs` for one capture stage: the mean
    paired difference over seeds per block (line), its Student-t interval (band, absent where
    fewer than two seeds pair), a rule at 0, and points that are filled where the verdict names
    a design and hollow where it says "no significant difference". Nothing is recomputed here:
    the numbers are the comparison table's.

    Parameters
    ----------
    comparison : DataFrame
        Rows of :data:`analysis.compare.COMPARE_COLUMNS` (one stage and ``pre`` value; several
        metrics are drawn as rows with independent y scales).
    metrics : sequence of str, optional
        Metrics to draw, in this order (default: those in ``comparison``).
    level : float, default=0.95
        The confidence level the comparison was computed with (named in the subtitle).
    title : str, optional
        Default "<a> - <b>, paired over seeds, at <stage>".
    width, height : float
        Size of each metric's panel in pixels.
    configure : bool, default=True
        Apply :func:`style_chart`.

    Returns
    -------
    chart : alt.VConcatChart or alt.Chart
        One layered panel per metric; a :func:`message_chart` naming the reason when no
        difference is finite.
    """
    func = "paired_difference_chart"
    _require_columns(comparison, ("metric", "block", "stage", "design_a", "design_b", "n_pairs", "mean_diff",
                                  "ci_low", "ci_high", "p_value", "verdict"), func, "comparison")
    _check_size(width, "width", func)
    _check_size(height, "height", func)
    if comparison.empty:
        return message_chart("no paired values to draw", title=title, width=width, configure=configure)
    pairs = comparison[["design_a", "design_b"]].drop_duplicates()
    stages = sorted(pd.unique(comparison["stage"].astype(str)))
    if len(pairs) != 1 or len(stages) != 1:
        raise ValueError(f"The 'comparison' parameter of {func} must hold one design pair at one stage. Got "
                         f"pairs {[tuple(p) for p in pairs.to_numpy()]} at stages {stages} instead.")
    a, b = (str(x) for x in pairs.iloc[0])
    stage = stages[0] + (" (pre-activation)" if "pre" in comparison.columns and comparison["pre"].any() else "")
    title = f"{a} \u2212 {b}, paired over seeds, at {stage}" if title is None else title
    present = list(dict.fromkeys(comparison["metric"].astype(str)))
    chosen = [m for m in (metrics if metrics is not None else present) if m in present]
    panels, notes = [], []
    n = comparison.loc[comparison["n_pairs"] > 0, "n_pairs"]
    if not n.empty:
        notes.append(f"Line: mean difference; band: {100 * level:g} % t-interval over n = {int(n.min())}"
                     + (f"\u2013{int(n.max())}" if n.max() != n.min() else "")
                     + " seed pairs; filled points: significant (interval excludes 0 and sign-flip "
                     f"p <= {1 - level:.2g})")
    for metric in chosen:
        rows = comparison[(comparison["metric"] == metric) & np.isfinite(comparison["mean_diff"].astype(float))]
        if rows.empty:
            reasons = comparison.loc[comparison["metric"] == metric, "reason"] if "reason" in comparison else []
            why = next((str(r) for r in reasons if str(r)), "no finite difference")
            notes.append(f"{metric}: not drawn ({why.split('; ')[-1]})")
            continue
        data = rows[["block", "mean_diff", "ci_low", "ci_high", "p_value", "n_pairs", "verdict"]].copy()
        data["significant"] = ~data["verdict"].isin(["no significant difference", "n/a"])
        label = metric_label(metric).split(" (")[0]
        x = _block_x(data["block"])
        y_title = f"\u0394 {metric_label(metric)}"
        base = alt.Chart(data).encode(x=x)
        zero = alt.Chart(pd.DataFrame({"y": [0.0]})).mark_rule(color="#555555", strokeDash=_DASHED).encode(y="y:Q")
        band = base.mark_area(opacity=0.25, color="#999999").encode(
            y=alt.Y("ci_low:Q", title=y_title), y2="ci_high:Q")
        line = base.mark_line(color="#222222", strokeWidth=1.8).encode(y=alt.Y("mean_diff:Q", title=y_title))
        pts = base.mark_point(size=55, strokeWidth=1.5, color="#222222", opacity=1).encode(
            y=alt.Y("mean_diff:Q", title=y_title),
            fill=alt.condition("datum.significant", alt.value("#222222"), alt.value("white")),
            tooltip=[alt.Tooltip("block:Q", title="Block"), alt.Tooltip("mean_diff:Q", format=".4g", title=f"{a} - {b}"),
                     alt.Tooltip("ci_low:Q", format=".4g"), alt.Tooltip("ci_high:Q", format=".4g"),
                     alt.Tooltip("p_value:Q", format=".3g", title="sign-flip p"),
                     alt.Tooltip("n_pairs:Q", title="seed pairs"), alt.Tooltip("verdict:N")])
        panels.append(alt.layer(band, zero, line, pts).properties(width=width, height=height, title=label))
    if not panels:
        return message_chart("; ".join(notes[1:] or notes) or "no finite difference", title=title, width=width,
                             configure=configure)
    chart = panels[0] if len(panels) == 1 else alt.vconcat(*panels).resolve_scale(y="independent")
    return _finish(chart.properties(title=_title(title, notes)), configure)


# ------------------------------------------------------------------------------- spectra


def scree_plot(
    spectra_df: pd.DataFrame,
    *,
    floor: float = 1e-12,
    title: str | None = None,
    width: float = 380,
    height: float = 260,
    configure: bool = True,
) -> Chart:
    """Covariance spectra of capture points, normalised ``lambda_i / lambda_1`` on a log scale.

    Each curve (one per ``point``, per ``design`` and ``checkpoint`` when those columns exist)
    is divided by its largest eigenvalue ``lambda_1``; ratios below ``floor`` (numerically zero
    directions, undefined on a log axis) are drawn at ``floor`` and counted in the subtitle.
    Colour = stage of the point, dashed = pre-activation; one panel per design.

    Parameters
    ----------
    spectra_df : DataFrame
        Columns ``point`` (str), ``index`` (int, 1-based), ``eigenvalue`` (float >= 0);
        optionally ``design`` and ``checkpoint``.
    floor : float, default=1e-12
        Smallest ratio drawn, in (0, 1).
    title : str, optional
        Default "Covariance spectrum".
    width, height : float
        Size of each panel.
    configure : bool, default=True
        Apply :func:`style_chart`.

    Returns
    -------
    chart : alt.Chart or alt.HConcatChart
        Line marks ``x=index``, ``y=ratio`` (log scale).
    """
    func = "scree_plot"
    _require_columns(spectra_df, ("point", "index", "eigenvalue"), func, "spectra_df")
    if not isinstance(floor, (int, float)) or not 0 < floor < 1:
        raise ValueError(f"The 'floor' parameter of {func} must be a float in (0, 1). "
                         f"Got {floor!r} instead.")
    title = "Covariance spectrum" if title is None else title
    data = spectra_df.copy()
    data["point"] = data["point"].astype(str)
    data["eigenvalue"] = data["eigenvalue"].astype(float)
    data = data[np.isfinite(data["eigenvalue"])]
    groups = ["point"] + [c for c in ("design", "checkpoint") if c in data.columns]
    lam1 = data.groupby(groups)["eigenvalue"].transform("max")
    data["ratio"] = np.where(lam1 > 0, data["eigenvalue"] / lam1.where(lam1 > 0), np.nan)
    degenerate = sorted(set(data.loc[~np.isfinite(data["ratio"]), "point"]), key=_point_key)
    data = data[np.isfinite(data["ratio"])].copy()
    if data.empty:
        return message_chart("no positive eigenvalues: every spectrum is zero", title=title,
                             width=width, configure=configure)
    clipped = int((data["ratio"] < floor).sum())
    data["ratio"] = data["ratio"].clip(lower=floor)
    data["label"] = data["point"].map(_point_suffix)
    if data.groupby("label")["point"].nunique().max() > 1:
        data["label"] = data["point"]
    domain, colors, dashes = _point_style(sorted(set(data["point"]), key=_point_key))
    labels = list(dict.fromkeys(data.set_index("point")["label"].to_dict()[p] for p in domain))
    legend = "Capture point"
    color = alt.Color("label:N", title=legend, scale=alt.Scale(domain=labels, range=colors))
    dash = alt.StrokeDash("label:N", title=legend, scale=alt.Scale(domain=labels, range=dashes))
    designs = list(design_colors(data["design"])) if "design" in data.columns else [None]
    panels = []
    for d in designs:
        part = data if d is None else data[data["design"].astype(str) == d]
        enc: dict[str, Any] = {}
        if "checkpoint" in part.columns:
            enc["detail"] = "checkpoint:N"
        panel = alt.Chart(part).mark_line(strokeWidth=2, clip=True).encode(
            x=alt.X("index:Q", title="Component index i", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("ratio:Q", title="Eigenvalue / largest eigenvalue (log scale)",
                    scale=alt.Scale(type="log", domainMax=1), axis=alt.Axis(format=".0e")),
            color=color, strokeDash=dash,
            tooltip=[alt.Tooltip("point:N"), alt.Tooltip("index:Q", title="i"),
                     alt.Tooltip("eigenvalue:Q", format=".3e"),
                     alt.Tooltip("ratio:Q", title="lambda_i / lambda_1", format=".3e")],
            **enc,
        ).properties(width=width, height=height, title=str(d) if d is not None and len(designs) > 1 else "")
        panels.append(panel)
    notes = []
    if clipped:
        notes.append(f"{clipped} ratios below {floor:.0e} drawn at {floor:.0e}")
    if degenerate:
        notes.append("zero spectrum (not drawn): " + ", ".join(degenerate))
    chart: Chart = panels[0] if len(panels) == 1 else alt.hconcat(*panels).resolve_scale(y="shared")
    if title:
        chart = chart.properties(title=_title(title, notes))
    return _finish(chart, configure)


# ------------------------------------------------------------------------------- topology


def _diagram_frame(diagrams: Sequence[Any], func: str) -> pd.DataFrame:
    if isinstance(diagrams, np.ndarray) or not isinstance(diagrams, Sequence):
        raise ValueError(f"The 'diagrams' parameter of {func} must be a list of (k, 2) arrays, one "
                         f"per homology dimension. Got {type(diagrams).__name__} instead.")
    frames = []
    for dim, dgm in enumerate(diagrams):
        arr = np.asarray(dgm, dtype=float)
        if arr.size == 0:
            continue
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(f"The 'diagrams' parameter of {func} must hold arrays of shape (k, 2). "
                             f"Got shape {arr.shape} for H{dim} instead.")
        frames.append(pd.DataFrame({"dim": f"H{dim}", "birth": arr[:, 0], "death": arr[:, 1]}))
    if not frames:
        return pd.DataFrame({"dim": [], "birth": [], "death": []})
    out = pd.concat(frames, ignore_index=True)
    if np.isnan(out[["birth", "death"]].to_numpy()).any():
        raise ValueError(f"The 'diagrams' parameter of {func} must not contain NaN.")
    out["infinite"] = np.isinf(out["death"])
    out["persistence"] = out["death"] - out["birth"]
    out["death_label"] = [("inf" if inf else f"{v:.4g}") for v, inf in zip(out["death"], out["infinite"])]
    return out


def _dim_scale(dims: Iterable[str]) -> alt.Scale:
    domain = sorted(set(dims), key=lambda s: int(s[1:]))
    return alt.Scale(domain=domain, range=[DIM_COLORS.get(int(d[1:]), FALLBACK_COLORS[0]) for d in domain])


def persistence_diagram(
    diagrams: Sequence[Any],
    *,
    title: str = "Persistence diagram",
    width: float = 320,
    height: float = 320,
    configure: bool = True,
) -> alt.LayerChart | alt.Chart:
    """Birth-death scatter of persistence pairs with the diagonal; infinite deaths on a top line.

    Parameters
    ----------
    diagrams : list of ndarray of shape (k_d, 2)
        ``diagrams[d]`` holds the (birth, death) pairs of H_d (ripser's ``dgms``); ``death`` may
        be ``inf``.
    title : str, default="Persistence diagram"
    width, height : float
        Plot size in pixels.
    configure : bool, default=True
        Apply :func:`style_chart`.

    Returns
    -------
    chart : alt.LayerChart
        Diagonal ``death = birth``, a dashed rule labelled "inf" at ``1.1 * max finite value``
        where infinite pairs are drawn, and the points (colour and shape = dimension). A
        :func:`message_chart` for an empty diagram.
    """
    func = "persistence_diagram"
    data = _diagram_frame(diagrams, func)
    if data.empty:
        return message_chart("empty diagram: no persistence pairs", title=title, width=width,
                             configure=configure)
    finite_vals = np.concatenate([data["birth"].to_numpy(), data.loc[~data["infinite"], "death"].to_numpy()])
    top = float(np.max(finite_vals)) if finite_vals.size else 0.0
    lo = min(0.0, float(data["birth"].min()))
    inf_y = top + 0.1 * (top - lo) if top > lo else lo + 1.0
    data["death_plot"] = np.where(data["infinite"], inf_y, data["death"])
    scale = alt.Scale(domain=[lo, inf_y + 0.04 * (inf_y - lo)], nice=False, padding=0)
    x = alt.X("birth:Q", title="Birth (distance)", scale=scale)
    y = alt.Y("death_plot:Q", title="Death (distance)", scale=scale)
    diag = alt.Chart(pd.DataFrame({"birth": [lo, inf_y], "death_plot": [lo, inf_y]})).mark_line(
        color="#777777", strokeWidth=1).encode(x=x, y=y)
    layers = [diag]
    if data["infinite"].any():
        inf_df = pd.DataFrame({"death_plot": [inf_y], "label": ["inf"]})
        layers.append(alt.Chart(inf_df).mark_rule(strokeDash=_DASHED, color="#777777").encode(y=y))
        layers.append(alt.Chart(inf_df).mark_text(align="right", baseline="bottom", dx=-4, dy=-2,
                                                  fontSize=12, color="#444444").encode(
            y=y, x=alt.value(width), text="label:N"))
    dim_scale = _dim_scale(data["dim"])
    pts = alt.Chart(data).mark_point(filled=True, size=45, opacity=0.75).encode(
        x=x, y=y, color=alt.Color("dim:N", title="Homology", scale=dim_scale),
        shape=alt.Shape("dim:N", title="Homology", scale=alt.Scale(domain=dim_scale.to_dict()["domain"])),
        tooltip=[alt.Tooltip("dim:N", title="dim"), alt.Tooltip("birth:Q", format=".4g"),
                 alt.Tooltip("death_label:N", title="death"),
                 alt.Tooltip("persistence:Q", format=".4g")])
    layers.append(pts)
    counts = data.groupby("dim").size()
    notes = [", ".join(f"{d}: {counts[d]} pairs" for d in sorted(counts.index, key=lambda s: int(s[1:])))]
    chart = alt.layer(*layers).properties(width=width, height=height,
                                          title=_title(title, notes) if title else "")
    return _finish(chart, configure)


def barcode(
    diagrams: Sequence[Any],
    *,
    max_bars: int | None = 50,
    title: str = "Barcode",
    width: float = 420,
    height: float = 180,
    configure: bool = True,
) -> Chart:
    """Persistence barcode: one horizontal bar per pair, one panel per homology dimension.

    Bars are sorted by persistence (longest on top); infinite bars run to a dashed "inf" line.

    Parameters
    ----------
    diagrams : list of ndarray of shape (k_d, 2)
        As in :func:`persistence_diagram`.
    max_bars : int or None, default=50
        Show only the longest ``max_bars`` bars of each dimension (the panel title says so).
    title : str, default="Barcode"
    width : float
        Plot width in pixels.
    height : float
        Maximum panel height; each panel gets 6 px per bar, at least 40 px.
    configure : bool, default=True
        Apply :func:`style_chart`.

    Returns
    -------
    chart : alt.VConcatChart
        Panels with ``rule`` marks ``x=birth``, ``x2=death``; shared x scale.
    """
    func = "barcode"
    if max_bars is not None and (isinstance(max_bars, bool) or not isinstance(max_bars, int) or max_bars < 1):
        raise ValueError(f"The 'max_bars' parameter of {func} must be a positive int or None. "
                         f"Got {max_bars!r} instead.")
    data = _diagram_frame(diagrams, func)
    if data.empty:
        return message_chart("empty diagram: no persistence pairs", title=title, width=width,
                             configure=configure)
    finite_vals = np.concatenate([data["birth"].to_numpy(), data.loc[~data["infinite"], "death"].to_numpy()])
    top = float(np.max(finite_vals)) if finite_vals.size else 0.0
    lo = min(0.0, float(data["birth"].min()))
    inf_x = top + 0.1 * (top - lo) if top > lo else lo + 1.0
    data["death_plot"] = np.where(data["infinite"], inf_x, data["death"])
    x_scale = alt.Scale(domain=[lo, inf_x + 0.06 * (inf_x - lo)], nice=False)
    dim_scale = _dim_scale(data["dim"])
    panels = []
    dims = sorted(set(data["dim"]), key=lambda s: int(s[1:]))
    for k, dim in enumerate(dims):
        part = data[data["dim"] == dim].sort_values(["persistence", "birth"], ascending=[False, True])
        total = len(part)
        if max_bars is not None:
            part = part.head(max_bars)
        part = part.assign(rank=np.arange(len(part)))
        label = f"{dim} ({total} bars)" if len(part) == total else f"{dim} (longest {len(part)} of {total})"
        x = alt.X("birth:Q", scale=x_scale,
                  title="Filtration value (distance)" if k == len(dims) - 1 else None)
        bars = alt.Chart(part).mark_rule(strokeWidth=max(1.0, min(4.0, 120 / max(len(part), 1)))).encode(
            x=x, x2="death_plot:Q",
            y=alt.Y("rank:O", title=label, axis=alt.Axis(labels=False, ticks=False, titleAngle=0,
                                                           titleAlign="right", titleBaseline="middle")),
            color=alt.Color("dim:N", scale=dim_scale, legend=None),
            tooltip=[alt.Tooltip("dim:N"), alt.Tooltip("birth:Q", format=".4g"),
                     alt.Tooltip("death_label:N", title="death"),
                     alt.Tooltip("persistence:Q", format=".4g")])
        layers = [bars]
        if part["infinite"].any():
            inf_df = pd.DataFrame({"birth": [inf_x], "label": ["inf"]})
            layers.append(alt.Chart(inf_df).mark_rule(strokeDash=_DASHED, color="#777777").encode(x=x))
            layers.append(alt.Chart(inf_df).mark_text(align="left", dx=3, baseline="top", fontSize=12,
                                                      color="#444444").encode(
                x=x, y=alt.value(0), text="label:N"))
        panels.append(alt.layer(*layers).properties(
            width=width, height=float(min(height, max(40, 6 * len(part))))))
    chart = alt.vconcat(*panels, spacing=6).resolve_scale(x="shared")
    chart = chart.properties(title=title) if title else chart
    return _finish(chart, configure)


# ------------------------------------------------------------------------------ embeddings


def embedding_scatter(
    emb_df: pd.DataFrame,
    *,
    color: str,
    title: str = "",
    x_title: str = "Component 1",
    y_title: str = "Component 2",
    max_categories: int = 20,
    width: float = 340,
    height: float = 340,
    configure: bool = True,
) -> alt.Chart:
    """2-D embedding (UMAP, PCA ...) of a point's reservoir, coloured by a label or a factor.

    The colour column is treated as categorical when it is text, boolean, categorical, or an
    integer with at most ``max_categories`` distinct values (class labels): Okabe-Ito for up to
    8 classes, Tableau-10/20 beyond. Otherwise it is continuous (a ``shapes`` factor such as
    size or angle): viridis.

    Parameters
    ----------
    emb_df : DataFrame
        Columns ``x``, ``y`` (float) and ``color``.
    color : str
        Name of the colour column; also the legend title.
    title : str, default=""
    x_title, y_title : str
        Axis titles (e.g. "UMAP 1" / "PC 1 (23 % var.)").
    max_categories : int, default=20
        Largest number of distinct integers treated as classes.
    width, height : float
        Plot size in pixels.
    configure : bool, default=True
        Apply :func:`style_chart`.

    Returns
    -------
    chart : alt.Chart
        Circle marks, colour type ``N`` (categorical) or ``Q`` (continuous).
    """
    func = "embedding_scatter"
    if not isinstance(color, str):
        raise ValueError(f"The 'color' parameter of {func} must be a column name (str). "
                         f"Got {color!r} instead.")
    _require_columns(emb_df, ("x", "y", color), func, "emb_df")
    col = emb_df[color]
    n_unique = col.nunique(dropna=True)
    categorical = (not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)
                   or (pd.api.types.is_integer_dtype(col) and n_unique <= max_categories))
    data = emb_df[["x", "y", color]].copy()
    finite = np.isfinite(data["x"].astype(float)) & np.isfinite(data["y"].astype(float))
    data = data[finite]
    if data.empty:
        return message_chart("no finite embedding coordinates", title=title or None, width=width,
                             configure=configure)
    legend_title = color.replace("_", " ")
    legend_title = legend_title[:1].upper() + legend_title[1:]
    if categorical:
        values = sorted(pd.unique(data[color].dropna()), key=lambda v: (str(type(v)), v))
        if len(values) <= len(CATEGORICAL_COLORS):
            scale = alt.Scale(domain=[str(v) for v in values] if not pd.api.types.is_numeric_dtype(col)
                              else values, range=CATEGORICAL_COLORS[:len(values)])
        else:
            scale = alt.Scale(scheme="tableau10" if len(values) <= 10 else "tableau20")
        enc = alt.Color(f"{color}:N", title=legend_title, scale=scale, sort=values)
    else:
        enc = alt.Color(f"{color}:Q", title=legend_title, scale=alt.Scale(scheme="viridis"))
    chart = alt.Chart(data).mark_circle(size=14, opacity=0.75).encode(
        # Embedding coordinates have no units: no tick labels, no grid.
        x=alt.X("x:Q", title=x_title, axis=alt.Axis(labels=False, ticks=False, grid=False)),
        y=alt.Y("y:Q", title=y_title, axis=alt.Axis(labels=False, ticks=False, grid=False)),
        color=enc,
        tooltip=[alt.Tooltip(f"{color}:{'N' if categorical else 'Q'}", title=legend_title)],
    ).properties(width=width, height=height)
    if title:
        chart = chart.properties(title=title)
    return _finish(chart, configure)


# ------------------------------------------------------------------------- reconstruction


def reconstruction_bars(
    df_block: pd.DataFrame,
    *,
    title: str | None = None,
    width: float = 380,
    height: float = 240,
    configure: bool = True,
) -> Chart:
    """Reconstruction error of each capture point of one block, per decoder.

    Bars show the mean over seeds of the centred relative error ``||x_hat - x|| / ||x - mean(x)||`` (metrics
    ``recon_error_<decoder>``) of decoding the block input from each point; error bars +- one
    sample std. Decoders with no value at a point (e.g. no exact inverse) are named in the
    subtitle with their reason. One panel per design, shared y.

    Parameters
    ----------
    df_block : DataFrame
        Tidy rows of exactly one block and one dataset (other metrics are ignored).
    title : str, optional
        Default "Reconstruction of the input of block <i>".
    width, height : float
        Size of each panel.
    configure : bool, default=True
        Apply :func:`style_chart`.

    Returns
    -------
    chart : alt.HConcatChart
        Bars ``x=label`` (point), ``xOffset`` and ``color`` = ``decoder_label``
        (:data:`DECODER_LABELS`), ``y=mean``, plus error-bar rules; aggregated data has
        ``design, point, decoder, decoder_label, mean, std, n, lo, hi``.
    """
    func = "reconstruction_bars"
    _require_columns(df_block, _TIDY_REQUIRED, func, "df_block")
    rows = df_block[df_block["metric"].astype(str).str.startswith("recon_error_")].copy()
    blocks = sorted(int(b) for b in pd.unique(rows["block"]))
    if len(blocks) > 1:
        raise ValueError(f"The 'df_block' parameter of {func} must hold one block. Got blocks "
                         f"{blocks} instead.")
    datasets = sorted(pd.unique(rows["dataset"].astype(str)))
    if len(datasets) > 1:
        raise ValueError(f"The 'df_block' parameter of {func} must hold one dataset. Got "
                         f"{datasets} instead.")
    if title is None:
        title = f"Reconstruction of the input of block {blocks[0]}" if blocks else "Reconstruction"
    if rows.empty:
        return message_chart("no recon_error_* metrics for this block", title=title, width=width,
                             configure=configure)
    rows["decoder"] = rows["metric"].astype(str).str.removeprefix("recon_error_")
    rows["design"] = rows["design"].astype(str)
    rows["value"] = rows["value"].astype(float)
    finite = rows[np.isfinite(rows["value"])]
    if finite.empty:
        return message_chart(f"not applicable: {_reasons(rows)}", title=title, width=width,
                             configure=configure)
    agg = _agg_seeds(finite, ["design", "point", "decoder"], bounds=(0.0, math.inf))
    agg["label"] = agg["point"].map(_point_suffix)
    notes = [_seed_note(agg["n"])]
    have = set(zip(agg["design"], agg["point"], agg["decoder"]))
    missing = rows[[(d, p, c) not in have for d, p, c in zip(rows["design"], rows["point"], rows["decoder"])]]
    missing = missing.assign(why=missing["reason"].astype(str) if "reason" in missing else "")
    several = agg["design"].nunique() > 1
    for (design, dec, reason), grp in missing.groupby(["design", "decoder", "why"]):
        pts = ", ".join(sorted({_point_suffix(p) for p in grp["point"]},
                               key=suffix_sort_key))
        why = f" ({reason})" if reason.strip() else ""
        notes.append(f"{design + ': ' if several else ''}no {dec} value at {pts}{why}")
    labels = [_point_suffix(p) for p in sorted(set(rows["point"].astype(str)), key=_point_key)]
    decoders = [d for d in DECODER_COLORS if d in set(agg["decoder"])] + sorted(
        set(agg["decoder"]) - set(DECODER_COLORS))
    agg["decoder_label"] = agg["decoder"].map(lambda d: DECODER_LABELS.get(d, d))
    dec_labels = [DECODER_LABELS.get(d, d) for d in decoders]
    color = alt.Color("decoder_label:N", title="Decoder", scale=alt.Scale(
        domain=dec_labels, range=[DECODER_COLORS.get(d, FALLBACK_COLORS[i % len(FALLBACK_COLORS)])
                                  for i, d in enumerate(decoders)]))
    designs = list(design_colors(agg["design"]))
    panels = []
    for d in designs:
        part = agg[agg["design"] == d]
        x = alt.X("label:N", title="Capture point", sort=labels, axis=alt.Axis(labelAngle=-30))
        off = alt.XOffset("decoder_label:N", sort=dec_labels)
        tooltip = [alt.Tooltip("point:N"), alt.Tooltip("decoder:N"),
                   alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("std:Q", format=".3f"),
                   alt.Tooltip("n:Q", title="n seeds")]
        bars = alt.Chart(part).mark_bar().encode(
            x=x, xOffset=off, y=alt.Y("mean:Q", title=f"Relative error {_REL_ERR}"), color=color,
            tooltip=tooltip)
        err = alt.Chart(part).mark_rule(color="black").encode(
            x=x, xOffset=off, y=alt.Y("lo:Q", title=f"Relative error {_REL_ERR}"), y2="hi:Q")
        panels.append(alt.layer(bars, err).properties(
            width=width, height=height, title=d if len(designs) > 1 else ""))
    chart = alt.hconcat(*panels).resolve_scale(y="shared").properties(title=_title(title, notes))
    return _finish(chart, configure)


# ----------------------------------------------------------------------------------- saving


def _vl_version() -> str | None:
    import vl_convert as vlc

    m = re.match(r"^v?(\d+)\.(\d+)", alt.SCHEMA_VERSION)
    version = f"{m.group(1)}.{m.group(2)}" if m else None
    return version if version in vlc.get_vegalite_versions() else None


def save_chart(chart: Chart, path: str | Path, *, scale: float = 2.0) -> Path:
    """Write ``chart`` as SVG, PNG or PDF (chosen by the suffix) with vl-convert, atomically.

    Parameters
    ----------
    chart : Altair chart
        Any top-level chart.
    path : str or Path
        Output file; suffix ``.svg``, ``.png`` or ``.pdf`` (case-insensitive).
    scale : float, default=2.0
        Pixel scale of PNG output (2 = sharp on print and high-DPI screens).

    Returns
    -------
    path : Path
        The written file. No external data is fetched (``allowed_base_urls=[]``), and the file
        appears only once complete (:func:`probes._io.atomic_path`).
    """
    import vl_convert as vlc

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".svg", ".png", ".pdf"):
        raise ValueError(f"The 'path' parameter of save_chart must end in .svg, .png or .pdf. "
                         f"Got {str(path)!r} instead.")
    _check_size(scale, "scale", "save_chart")
    spec = chart.to_dict()
    kwargs: dict[str, Any] = {"vl_version": _vl_version(), "allowed_base_urls": []}
    if suffix == ".svg":
        payload: bytes = vlc.vegalite_to_svg(spec, **kwargs).encode("utf-8")
    elif suffix == ".png":
        payload = vlc.vegalite_to_png(spec, scale=float(scale), **kwargs)
    else:
        payload = vlc.vegalite_to_pdf(spec, **kwargs)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path


def spiral_figure(
    reconstructions: dict,
    *,
    seed: int | None = None,
    methods: Sequence[str] | None = None,
    panel_size: int = 110,
    max_points: int = 600,
) -> alt.Chart:
    """Figure 1 as an Altair chart: the input spiral and, per n, each method's reconstruction.

    A grid with one row per method and one column per panel: ``input`` (the spiral itself,
    repeated in every row for comparison) then ``n = ...``; points coloured by position along
    the spiral (viridis, colour-blind safe). Render with
    ``vl_convert.vegalite_to_png(chart.to_json())``.

    Parameters
    ----------
    reconstructions : dict
        The second value of :func:`analysis.spiral.run_spiral`.
    seed : int, optional
        Which seed's T to show (default: the first one in ``reconstructions``).
    methods : sequence of str, optional
        Default: all of :data:`analysis.spiral.METHODS`.
    panel_size : int, default 110
        Width and height of each panel in pixels.
    max_points : int, default 600
        Points drawn per panel (evenly along the spiral) to keep the chart light.
    """
    from analysis.spiral import METHOD_LABELS, METHODS  # spiral pulls scikit-learn: only when drawn

    methods = METHODS if methods is None else methods
    keys = [k for k in reconstructions if isinstance(k, tuple)]
    if not keys or "input" not in reconstructions:
        raise ValueError(
            "The 'reconstructions' parameter of spiral_figure must be the dict returned by "
            "run_spiral (with 'input' and (n, seed) keys)."
        )
    if seed is None:
        seed = keys[0][1]
    ns = sorted({n for n, s_ in keys if s_ == seed})
    if not ns:
        raise ValueError(
            f"The 'seed' parameter of spiral_figure must be one of "
            f"{sorted({s_ for _, s_ in keys})}. Got {seed!r} instead."
        )
    for m in methods:
        if m not in METHODS:
            raise ValueError(
                f"The 'methods' parameter of spiral_figure must contain only {list(METHODS)}. "
                f"Got {m!r} instead."
            )
    X = reconstructions["input"]
    pos = reconstructions["s"]
    idx = np.unique(np.linspace(0, len(X) - 1, min(max_points, len(X))).round().astype(int))
    panels = ["input"] + [f"n = {n}" for n in ns]
    frames = []
    for m in methods:
        label = METHOD_LABELS[m]
        frames.append(pd.DataFrame({"x": X[idx, 0], "y": X[idx, 1], "s": pos[idx], "panel": "input", "method": label}))
        for n in ns:
            est = reconstructions[(n, seed)][m]
            frames.append(
                pd.DataFrame({"x": est[idx, 0], "y": est[idx, 1], "s": pos[idx], "panel": f"n = {n}", "method": label})
            )
    df = pd.concat(frames, ignore_index=True).round({"x": 4, "y": 4, "s": 4})
    activation = reconstructions.get("activation", "act")
    # Inline values: the figure is meant to be self-contained (vl_convert, report files), and
    # its size is bounded by max_points, so Altair's 5,000-row guard does not apply.
    data = alt.Data(values=df.to_dict(orient="records"))
    return (
        alt.Chart(data)
        .mark_circle(size=9, opacity=0.85)
        .encode(
            x=alt.X("x:Q", title=None, axis=alt.Axis(tickCount=3, grid=False)),
            y=alt.Y("y:Q", title=None, axis=alt.Axis(tickCount=3, grid=False)),
            color=alt.Color(
                "s:Q",
                scale=alt.Scale(scheme="viridis"),
                title=["position", "along spiral"],
                legend=alt.Legend(gradientLength=120),
            ),
            column=alt.Column("panel:N", sort=panels, title=None, header=alt.Header(labelFontSize=12)),
            row=alt.Row(
                "method:N",
                sort=[METHOD_LABELS[m] for m in methods],
                title=None,
                header=alt.Header(labelFontSize=12, labelAngle=-90),
            ),
        )
        .properties(
            width=panel_size,
            height=panel_size,
            title=alt.TitleParams(
                f"2-D spiral → {activation}(T x), T random n × 2 (seed {seed}) → back to 2-D",
                subtitle="MobileNetV2 Fig. 1. Columns: embedding dimension n; rows: the way back to 2-D",
            ),
        )
    )
