"""Capture-point names and the card -> table step of the report, kept in one place.

These are the report's own copies of two project-wide facts that are being made shared
modules (issue 15): the capture-point vocabulary (``blocks.N.SUFFIX`` names, their suffixes,
glob checking) and the checkpoint-card -> table conversion. Nothing else in
:mod:`analysis.report` defines them; when the shared capture-point vocabulary and the
checkpoint catalogue land, this module is the only one to swap.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from analysis.report.config import ReportConfig, _Checker

__all__: list[str] = []


# --- capture-point vocabulary (to be replaced by the shared capture-point module) ---------

#: A capture point's full name, ``blocks.N.SUFFIX``.
_POINT_RE = re.compile(r"^blocks\.(\d+)\.(input|expand\.pre|expand|depthwise\.pre|depthwise|"
                       r"project\.pre|project|output)$")
#: The suffixes of a block's capture points, in data-flow order.
_POINT_SUFFIXES = ("input", "expand.pre", "expand", "depthwise.pre", "depthwise", "project.pre", "project",
                   "output")


def _check_point_globs(ck: _Checker, patterns: Sequence[str]) -> None:
    """Each ``study.points`` name or glob must be able to match a capture point name
    (``blocks.N.SUFFIX``), so a typo fails before any job runs instead of failing every job."""
    names = [f"blocks.{i}.{suffix}" for i in range(1000) for suffix in _POINT_SUFFIXES]
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            raise ck.fail("study.points", "names or globs of capture points like 'blocks.3.project' or "
                          f"'blocks.*.project*' (suffixes {', '.join(_POINT_SUFFIXES)})", pat)


# --- checkpoint cards -> table (to be replaced by the shared checkpoint catalogue) -------


def _cards_frame(config: ReportConfig) -> pd.DataFrame:
    """``checkpoint, design, dataset, seed, test_accuracy`` of the config's checkpoints with a card."""
    rows = []
    for c in config.checkpoints:
        card = c.card or {}
        if "test_accuracy" in card and card.get("design") is not None:
            rows.append({"checkpoint": c.name, "design": str(card["design"]),
                         "dataset": str((card.get("dataset") or {}).get("name", "?")),
                         "seed": card.get("seed"), "test_accuracy": float(card["test_accuracy"])})
    return pd.DataFrame(rows, columns=["checkpoint", "design", "dataset", "seed", "test_accuracy"])
