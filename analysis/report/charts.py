"""The report's figures (built with :mod:`analysis.figures`) and their files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.report.config import ReportConfig
from analysis.report.jobs import _safe
from analysis.report.tables import _design_order

__all__ = ["report_figures"]


def _present(designs: Sequence[str], available: Sequence[str]) -> list[str]:
    chosen = [d for d in designs if d in set(available)]
    return chosen or _design_order(available)


def report_figures(metrics: pd.DataFrame, details: dict[str, dict[str, dict[str, np.ndarray]]],
                   cards: pd.DataFrame, config: ReportConfig) -> tuple[list[tuple[str, str, Any]], list[str]]:
    """The report's charts as ``(file stem, caption, chart)`` and notes on skipped figures.

    Parameters
    ----------
    metrics : DataFrame
        Tidy results of every finished job.
    details : dict
        Job id -> :attr:`analysis.study.StudyResult.details` (persistence diagrams).
    cards : DataFrame
        ``checkpoint, design, dataset, seed, test_accuracy`` (for the accuracy figure).
    config : ReportConfig
    """
    import altair as alt

    from analysis import figures as F

    out: list[tuple[str, str, Any]] = []
    notes: list[str] = []
    if not cards.empty:
        out.append(("accuracy", "Test accuracy per design (paper Fig. 6 ablations), from the "
                    "checkpoint cards: mean \u00b1 std over seeds, circles = seeds.",
                    F.accuracy_chart(cards)))
    if metrics.empty:
        notes.append("no metrics: every job failed")
        return out, notes
    available = sorted(pd.unique(metrics["design"].astype(str)))
    designs = _present(config.figure_designs, available)
    present_metrics = set(pd.unique(metrics["metric"].astype(str)))
    for metric in config.depth_metrics:
        for stage in config.depth_stages:
            if metric not in present_metrics:
                notes.append(f"depth curve of {metric}: no values in the results")
                continue
            chart = F.depth_curve(metrics, metric, stage=stage, designs=designs)
            out.append((f"depth-{metric}-{stage}",
                        f"{F.metric_label(metric)} across depth at the {stage} stage "
                        f"({', '.join(designs)}; mean \u00b1 std over seeds).", chart))
    out.extend(_paired_figures(metrics, config, notes))
    if "activity" in config.study.families:
        for ds in sorted(pd.unique(metrics["dataset"].astype(str))):
            part = metrics[metrics["dataset"].astype(str) == ds]
            for design in _present(config.figure_designs, sorted(pd.unique(part["design"].astype(str)))):
                chart = F.positive_channels_plot(part, design=design, dataset=ds,
                                                 title=f"Active channels per point, {design} ({ds})")
                out.append((f"positive-{_safe(ds)}-{_safe(design)}",
                            f"Active channels per point after each ReLU (paper Fig. 7), {design} "
                            f"on {ds}, against the invertibility threshold C_in.", chart))
    else:
        notes.append("positive-channel plot (Fig. 7): the 'activity' family is not computed")
    if config.diagram_points:
        index = (metrics[["checkpoint", "design", "dataset", "seed"]].drop_duplicates()
                 .assign(seed=lambda d: pd.to_numeric(d["seed"], errors="coerce"))
                 .sort_values(["dataset", "design", "seed", "checkpoint"], na_position="last"))
        job_of = {key: jid for jid, key in _job_keys(metrics).items()}
        for ds in sorted(index["dataset"].astype(str).unique()):
            rows = index[index["dataset"].astype(str) == ds]
            for point in config.diagram_points:
                panels = []
                for design in _present(config.figure_designs, sorted(rows["design"].astype(str).unique())):
                    first = rows[rows["design"].astype(str) == design].head(1)
                    if first.empty:
                        continue
                    ckpt = str(first["checkpoint"].iloc[0])
                    det = details.get(job_of.get((ckpt, ds), ""), {}).get(point, {})
                    dgms = [det[f"diagram_h{d}"] for d in range(3) if f"diagram_h{d}" in det]
                    if dgms:
                        panels.append(F.persistence_diagram(dgms, title=f"{design} ({ckpt})",
                                                            width=260, height=260, configure=False))
                if not panels:
                    notes.append(f"persistence diagram of {point} on {ds}: no diagram in the results")
                    continue
                chart = F.style_chart(alt.hconcat(*panels).properties(
                    title=alt.TitleParams(f"Persistence diagrams at {point} ({ds})",
                                          subtitle=["Lowest-seed checkpoint of each design; "
                                                    "scale-normalised point cloud"])))
                out.append((f"diagram-{_safe(ds)}-{_safe(point)}",
                            f"Persistence diagrams (H0, H1) at {point} on {ds}.", chart))
    return out, notes


def _paired_figures(metrics: pd.DataFrame, config: ReportConfig, notes: list[str]) -> list[tuple[str, str, Any]]:
    """Per dataset and depth stage: the paired difference of every depth metric across blocks."""
    import warnings

    from analysis import figures as F
    from analysis.compare import compare_designs

    a, b = config.compare_designs
    out: list[tuple[str, str, Any]] = []
    for ds in sorted(pd.unique(metrics["dataset"].astype(str))):
        part = metrics[metrics["dataset"].astype(str) == ds]
        if not {a, b} <= set(part["design"].astype(str)):
            continue
        wanted = [m for m in config.depth_metrics if m in set(part["metric"].astype(str))]
        if not wanted:
            continue
        with warnings.catch_warnings():
            # unpaired seeds are named once, in the notes of the comparison table
            warnings.simplefilter("ignore", UserWarning)
            cmp = compare_designs(part, a, b, metrics=wanted, level=config.compare_level)
        for stage in config.depth_stages:
            rows = cmp[(cmp["stage"] == stage) & ~cmp["pre"].astype(bool)]
            if rows.empty:
                continue
            out.append((f"paired-{_safe(ds)}-{stage}",
                        f"{a} \u2212 {b} per block at the {stage} stage on {ds}, paired over seeds: mean "
                        f"difference and its {100 * config.compare_level:g} % t-interval; filled points are "
                        "significant (interval excludes 0 and sign-flip p \u2264 "
                        f"{1 - config.compare_level:.2g}).",
                        F.paired_difference_chart(rows, metrics=list(config.depth_metrics), level=config.compare_level,
                                                  title=f"{a} \u2212 {b} on {ds}, {stage} stage", height=120)))
    return out


def _message_of(chart: Any) -> str | None:
    """The text of an :func:`analysis.figures.message_chart` ("not applicable: ..."), else None."""
    import altair as alt

    data = getattr(chart, "data", None)
    if isinstance(chart, alt.Chart) and isinstance(data, pd.DataFrame) and list(data.columns) == ["message"]:
        return " ".join(str(data["message"].iloc[0]).split())
    return None


def _job_keys(metrics: pd.DataFrame) -> dict[str, Any]:
    if "_job" not in metrics.columns:
        return {}
    keys = metrics[["_job", "checkpoint", "dataset"]].drop_duplicates("_job")
    return {str(j): (str(c), str(d)) for j, c, d in zip(keys["_job"], keys["checkpoint"], keys["dataset"])}


def _save_figure(chart: Any, stem: Path, formats: Sequence[str]) -> list[Path]:
    from analysis.figures import save_chart

    return [save_chart(chart, stem.parent / f"{stem.name}.{fmt}") for fmt in formats]
