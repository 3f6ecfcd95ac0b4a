"""Dashboard render times per page, measured with ``streamlit.testing.v1.AppTest``.

For every page:

- **cold**: first render with every Streamlit cache cleared (reading results, loading models,
  probing, building charts);
- **new session**: first render of a second session (caches warm);
- **widget**: re-render after changing one widget to a value not shown before (this may
  compute something new: a spiral for a new seed, a PCA of a point cloud);
- **widget back**: re-render after changing it back (everything cached).

The dashboard's target is that, after the first computation, a widget change re-renders in
under a second. AppTest runs the page script in-process, so the times include Streamlit's own
script-run overhead but not the browser's drawing.

Usage::

    python benchmarks/dashboard.py [--results DIR] [--dataset NAME] [--report DIR]

``--results`` sets ``$BNPROBE_RESULTS_DIR`` (default: the shipped ``checkpoints/results``);
``--report`` a report directory for the Reports page (default: a temporary one written from
the studies' metrics).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# ``dashboard`` package it measures.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from streamlit.testing.v1 import AppTest  # noqa: E402

__all__ = ["PAGES", "main", "time_page"]

TIMEOUT = 600


def _page(name: str, dataset: str) -> None:
    import importlib

    import streamlit as st

    st.session_state.setdefault("dataset", dataset)
    importlib.import_module(f"dashboard.views.{name}").render()


def _changer(kind: str, key: str) -> Callable[[AppTest, bool], None]:
    """Change widget ``key`` (an ``AppTest`` accessor such as ``selectbox``) to another
    option, or (``back=True``) back to the value it had before."""
    original: dict[str, object] = {}

    def change(at: AppTest, back: bool) -> None:
        widget = getattr(at, kind)(key=key)
        if back:
            widget.set_value(original["value"])
            return
        original["value"] = widget.value
        if kind == "number_input":
            widget.set_value(widget.value + 1)
        else:
            widget.set_value(next(o for o in widget.options if o != widget.value))

    return change


#: page -> (widget that is changed, its label in the table, session state set before the run).
PAGES: dict[str, tuple[Callable[[], Callable[[AppTest, bool], None]], str, dict]] = {
    "overview": (lambda: _changer("selectbox", "overview-metric"), "metric", {}),
    "block_explorer": (lambda: _changer("select_slider", "block-block"), "block", {}),
    "topology": (lambda: _changer("select_slider", "topo-block"), "block", {}),
    "embeddings": (lambda: _changer("radio", "emb-method"), "UMAP -> PCA", {}),
    "spiral_lab": (lambda: _changer("number_input", "spiral-seed"), "seed of T", {}),
    "probe_checkpoint": (lambda: _changer("select_slider", "probe-images"), "test images", {}),
    "reports": (lambda: _changer("select_slider", "report-block"), "block", {}),
}


def _run(at: AppTest) -> float:
    t0 = time.perf_counter()
    at.run(timeout=TIMEOUT)
    elapsed = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"the page raised: {at.exception[0].value}")
    return elapsed


def _session(name: str, dataset: str, state: dict) -> AppTest:
    at = AppTest.from_function(_page, args=(name, dataset), default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    return at


def time_page(name: str, dataset: str, state: dict | None = None) -> dict[str, float]:
    """Cold, new-session, widget-change and widget-back render times of one page (seconds)."""
    import streamlit as st

    make_change, _, defaults = PAGES[name]
    state = {**defaults, **(state or {})}
    st.cache_data.clear()
    st.cache_resource.clear()
    cold = _run(_session(name, dataset, state))
    at = _session(name, dataset, state)
    warm = _run(at)
    change = make_change()
    change(at, False)
    widget = _run(at)
    change(at, True)
    back = _run(at)
    return {"cold": cold, "new session": warm, "widget": widget, "widget back": back}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", help="folder of <checkpoint>--<dataset>.parquet/.npz studies")
    parser.add_argument("--dataset", default=None, help="dataset of the pages (default: the first with studies)")
    parser.add_argument("--report", help="report directory for the Reports page")
    parser.add_argument("--pages", nargs="*", default=list(PAGES), choices=list(PAGES))
    args = parser.parse_args(argv)
    if args.results:
        os.environ["BNPROBE_RESULTS_DIR"] = str(Path(args.results).resolve())

    from dashboard import state as dash_state

    dataset = args.dataset or dash_state.default_dataset()
    tmp = tempfile.TemporaryDirectory(prefix="bnprobe-bench-")
    report = args.report
    if report is None:
        dash_state.dataset_metrics(dataset).to_parquet(Path(tmp.name) / "metrics.parquet", index=False)
        report = tmp.name
    os.environ["BNPROBE_CACHE"] = os.environ.get("BNPROBE_CACHE", str(Path(tmp.name) / "cache"))
    print(f"dataset {dataset}; studies from {dash_state.results_dir()}; "
          f"{len(dash_state.dataset_studies(dataset))} checkpoint(s)")
    header = f"{'page':<18} {'cold (s)':>9} {'new session (s)':>16} {'widget (s)':>11} {'widget back (s)':>16}  widget"
    print(header)
    print("-" * len(header))
    worst_change = worst_cached = 0.0
    for name in args.pages:
        extra = {"report-dir": report} if name == "reports" else {}
        times = time_page(name, dataset, extra)
        worst_change = max(worst_change, times["widget"])
        worst_cached = max(worst_cached, times["widget back"])
        print(f"{name:<18} {times['cold']:>9.2f} {times['new session']:>16.2f} {times['widget']:>11.2f} "
              f"{times['widget back']:>16.2f}  {PAGES[name][1]}", flush=True)
    print(f"slowest re-render after a widget change: {worst_change:.2f} s (includes new computations, "
          f"e.g. a new spiral seed); slowest cached re-render: {worst_cached:.2f} s "
          f"({'under' if worst_cached < 1 else 'OVER'} the 1 s target)")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
