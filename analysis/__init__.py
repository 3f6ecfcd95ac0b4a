"""Turning sink states into numbers, tables, figures and reports (design: ``docs/design.md``).

The public API:

- :func:`run_study` (:mod:`analysis.study`): probe one checkpoint on one dataset and compute
  the metric families into the tidy results table (one row per value; formulas in each
  family's module: :mod:`analysis.spectrum`, :mod:`analysis.activity`,
  :mod:`analysis.reconstruction`, :mod:`analysis.topology`, :mod:`analysis.dimension`,
  :mod:`analysis.similarity`, :mod:`analysis.quantization`).
- :class:`StudyConfig` (:mod:`analysis.study`): every setting that changes the numbers.
- :func:`compare_designs` (:mod:`analysis.compare`): two designs paired over their shared
  training seeds, per metric x block x point: mean difference, Student-t interval, exact
  sign-flip p-value and a verdict.
- :func:`paired_stats` (:mod:`analysis.compare`): the same statistics for two arrays of
  per-seed values.

Examples
--------
>>> from analysis import StudyConfig, run_study
>>> config = StudyConfig(n_images=8, points="blocks.2.project", families=("spectrum",))
>>> result = run_study("digits-linear-s0", config, progress=False, device="cpu")
>>> row = result.metrics.set_index("metric").loc["rank_frac"]
>>> print(row["point"], row["value"])
blocks.2.project 1.0
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["StudyConfig", "compare_designs", "paired_stats", "run_study"]

# Imported on first use (PEP 562): ``import analysis.spectrum`` must not import torch and pandas.
_WHERE = {
    "StudyConfig": "analysis.study",
    "compare_designs": "analysis.compare",
    "paired_stats": "analysis.compare",
    "run_study": "analysis.study",
}

if TYPE_CHECKING:
    from analysis.compare import compare_designs, paired_stats
    from analysis.study import StudyConfig, run_study


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
