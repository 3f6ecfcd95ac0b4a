"""The dashboard's layout: pages import no other page, and state.py computes nothing itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("page", sorted(p.name for p in (DASHBOARD / "views").glob("*.py") if p.name != "__init__.py"))
def test_pages_import_no_other_page(page: str) -> None:
    imported = _imports(DASHBOARD / "views" / page)
    assert not [m for m in imported if m.startswith("dashboard.views")], \
        f"{page} imports another page; shared parts belong in dashboard/parts.py"


def test_state_only_calls_into_analysis_and_probes() -> None:
    imported = _imports(DASHBOARD / "state.py")
    computing = {"sklearn", "umap", "torch", "probes.capture", "ripser", "scipy"}
    assert not {m for m in imported if m.split(".")[0] in computing or m in computing}
