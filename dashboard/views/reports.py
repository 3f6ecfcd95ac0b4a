"""Reports: open the ``metrics.parquet`` of a ``bnprobe report`` directory and browse it with the
same charts as the Overview, plus the per-block reconstruction errors and the paper's Figure 7
(active channels per point against the invertibility threshold).

Only folders under the report root are browsable: ``$BNPROBE_REPORT_ROOT``, by default the
folder the dashboard was started in. A path typed in is resolved (symbolic links included)
before the check, and every message shows paths relative to the root, so the page neither
reads nor reveals anything else on the server. A table that is not in the results schema ends
in one message, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import streamlit as st

from analysis import figures
from dashboard import parts, state

__all__ = ["REPORT_ENV", "REPORT_ROOT_ENV", "report_root", "resolve_report_dir", "render"]

#: Environment variable with the report directory the page opens first.
REPORT_ENV = "BNPROBE_REPORT_DIR"
#: Environment variable with the only folder whose subfolders the page may open.
REPORT_ROOT_ENV = "BNPROBE_REPORT_ROOT"

_COLUMNS = ("checkpoint", "design", "seed", "dataset", "block", "point", "stage", "pre", "metric", "value")


def report_root() -> Path:
    """The browsable root: ``$BNPROBE_REPORT_ROOT`` or the working directory, resolved."""
    return Path(os.environ.get(REPORT_ROOT_ENV) or os.getcwd()).expanduser().resolve()


def resolve_report_dir(text: str, root: Path) -> tuple[Path, str]:
    """The folder ``text`` names (relative paths are taken from ``root``) and its display name.

    Raises
    ------
    ValueError
        When the folder is not ``root`` or inside it, in the same words whether it exists or
        not; or when it is not a folder under the root.
    """
    raw = Path(text.strip()).expanduser()
    folder = (raw if raw.is_absolute() else root / raw).resolve()
    if folder != root and root not in folder.parents:
        raise ValueError("Only report folders under the report root are browsable: give a path "
                         f"relative to it (the root is set with ${REPORT_ROOT_ENV}).")
    shown = "." if folder == root else str(folder.relative_to(root))
    if not folder.is_dir():
        raise ValueError(f"There is no folder {shown!r} under the report root.")
    return folder, shown


def _clean(message: str, folder: Path, shown: str, root: Path) -> str:
    """A library's message with the server's absolute paths replaced by root-relative ones."""
    return message.replace(str(folder), shown).replace(str(root), ".").splitlines()[0][:300]


def _checked(df: pd.DataFrame, shown: str) -> pd.DataFrame:
    """The results-schema columns the page draws from, with their types checked."""
    missing = [c for c in _COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"The metrics table in {shown!r} lacks the columns {missing} of the results schema.")
    df = df.copy()
    block = pd.to_numeric(df["block"], errors="coerce")
    value = pd.to_numeric(df["value"], errors="coerce")
    for col, bad in (("block", block.isna() | (block % 1 != 0)), ("value", value.isna() & df["value"].notna())):
        if bad.any():
            raise ValueError(f"The metrics table in {shown!r} has a {col!r} value that is not "
                             f"{'an integer' if col == 'block' else 'a number'} "
                             f"({str(df[col][bad].iloc[0])[:40]!r}); it is not a bnprobe results table.")
    df["block"], df["value"] = block.astype(int), value.astype(float)
    if df.empty:
        raise ValueError(f"The metrics table in {shown!r} has no rows.")
    return df


def render() -> None:
    """The Reports page."""
    st.title("Reports")
    root = report_root()
    st.caption("A report directory written by `bnprobe report CONFIG.toml --out DIR` holds a tidy "
               "`metrics.parquet`; every chart below is drawn from it. Folders under the report "
               f"root (${REPORT_ROOT_ENV}, default: where the dashboard was started) can be opened.")
    folder_text = st.text_input("Report directory (relative to the report root)",
                                value=os.environ.get(REPORT_ENV, ""), key="report-dir",
                                placeholder="reports/paper")
    if not folder_text.strip():
        st.info("Type the path of a report directory under the report root.")
        return
    try:
        folder, shown = resolve_report_dir(folder_text, root)
    except ValueError as err:
        st.error(str(err))
        return
    try:
        df = _checked(state.load_report(folder), shown)
    except Exception as err:  # noqa: BLE001 - a readable message, never a traceback or server path
        st.error(f"Could not open the report {shown!r}: {_clean(str(err), folder, shown, root)}")
        return
    try:
        _show(df)
    except Exception as err:  # noqa: BLE001 - a table in the schema's columns but with odd content
        st.error(f"The report {shown!r} could not be drawn ({type(err).__name__}: "
                 f"{_clean(str(err), folder, shown, root)}); is it a bnprobe results table?")


def _show(df: pd.DataFrame) -> None:
    datasets = sorted(df["dataset"].astype(str).unique())
    sidebar = state.current_dataset()
    dataset = st.selectbox("Dataset of the report", datasets,
                           index=datasets.index(sidebar) if sidebar in datasets else 0, key="report-dataset")
    part = df[df["dataset"].astype(str) == dataset]
    st.caption(f"{len(df):,} values; {df['checkpoint'].nunique()} checkpoint(s) on {len(datasets)} dataset(s).")
    parts.show_overview(part, key="report-overview")

    st.subheader("One block")
    blocks = sorted(int(b) for b in part["block"].unique())
    block = st.select_slider("Block (execution order)", blocks, value=blocks[len(blocks) // 2], key="report-block")
    parts.show_chart("reconstruction_bars", part[part["block"] == block], width=280, height=220,
                     key="report-recon")
    designs = list(figures.design_colors(part["design"].astype(str)))
    has_fig7 = part["metric"].isin(["positive_mean"]).any()
    if has_fig7:
        st.subheader("Active channels per point (paper Figure 7)")
        design = st.radio("Design", designs, horizontal=True, key="report-design")
        fig7 = part[part["metric"].isin(["positive_min", "positive_mean", "positive_max"])]
        parts.show_chart("positive_channels_plot", fig7, design=design, dataset=dataset, width=330,
                         height=240, key="report-fig7")
