"""Capture-point names and the card -> table step of the report: the report's uses of the
shared capture-point vocabulary (:mod:`probes.points`) and checkpoint catalogue
(:mod:`probes.catalogue`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from probes.points import POINT_SUFFIXES, pattern_can_match

if TYPE_CHECKING:
    from analysis.report.config import ReportConfig, _Checker

__all__: list[str] = []


def _check_point_globs(ck: _Checker, patterns: Sequence[str]) -> None:
    """Each ``study.points`` name or glob must be able to match a capture point name
    (``blocks.N.SUFFIX``), so a typo fails before any job runs instead of failing every job."""
    for pat in patterns:
        if not pattern_can_match(pat):
            raise ck.fail("study.points", "names or globs of capture points like 'blocks.3.project' or "
                          f"'blocks.*.project*' (suffixes {', '.join(POINT_SUFFIXES)})", pat)


def _cards_frame(config: ReportConfig) -> pd.DataFrame:
    """``checkpoint, design, dataset, seed, test_accuracy`` of the config's checkpoints whose card
    has a design and a test accuracy (:func:`probes.catalogue.checkpoint_table`)."""
    from probes.catalogue import checkpoint_table

    cards = [{**c.card, "name": c.name} for c in config.checkpoints
             if c.card and "test_accuracy" in c.card and c.card.get("design") is not None]
    table = checkpoint_table(cards)
    return table.assign(dataset=table["dataset"].fillna("?").astype(str),
                        test_accuracy=table["test_accuracy"].astype(float))[
        ["checkpoint", "design", "dataset", "seed", "test_accuracy"]]
