"""The Reports page opens only folders under its root and never shows a traceback or a server
path (issue 13, item 7)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

TIMEOUT = 120
OUTSIDE = "Only report folders under the report root are browsable: give a path relative to it (the root is set with $BNPROBE_REPORT_ROOT)."


def _page() -> None:
    import streamlit as st

    from dashboard.views.reports import render

    st.session_state.setdefault("dataset", "digits")
    render()


def _run(root: Path, folder: str, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("BNPROBE_REPORT_ROOT", str(root))
    at = AppTest.from_function(_page, default_timeout=TIMEOUT)
    at.session_state["report-dir"] = folder
    return at.run()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "root" / "escape").symlink_to(tmp_path / "secret")
    return tmp_path / "root"


@pytest.mark.parametrize("folder", ["/etc", "/no/such/folder", "../secret", "../nothing", "escape", "{root}/../secret"])
def test_folders_outside_the_root_are_refused_alike(root: Path, folder: str, monkeypatch) -> None:
    at = _run(root, folder.format(root=root), monkeypatch)
    assert not at.exception
    assert [e.value for e in at.error] == [OUTSIDE]


@pytest.mark.parametrize("content", ["checkpoint,point,metric,value\n\"unterminated", "a;b\n1;2\n",
                                     "checkpoint,design,dataset,block,point,stage,pre,metric,value\n"
                                     "c,linear,digits,three,p,project,False,rank,1.0\n"])
def test_malformed_metrics_is_one_message_without_server_paths(root: Path, content: str, monkeypatch) -> None:
    (root / "rep").mkdir()
    (root / "rep" / "metrics.csv").write_text(content)
    at = _run(root, "rep", monkeypatch)
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Could not open the report 'rep': "), errors
    assert str(root) not in errors[0] and "Traceback" not in errors[0] and "\n" not in errors[0]


def test_relative_folder_under_the_root_opens(root: Path, monkeypatch) -> None:
    import pandas as pd

    (root / "rep").mkdir()
    pd.DataFrame({"checkpoint": ["c"] * 2, "design": ["linear"] * 2, "seed": [0, 0], "dataset": ["digits"] * 2,
                  "block": [0, 1], "point": ["blocks.0.project", "blocks.1.project"], "stage": ["project"] * 2,
                  "pre": [False] * 2, "metric": ["effective_rank_frac"] * 2, "value": [0.5, 0.7]}
                 ).to_csv(root / "rep" / "metrics.csv", index=False)
    at = _run(root, "rep", monkeypatch)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.caption[1].value.startswith("2 values; 1 checkpoint(s) on 1 dataset(s)")
