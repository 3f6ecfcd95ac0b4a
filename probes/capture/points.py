"""Which capture points a capture reads, and the checks of its arguments."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from probes.blocks import CapturePoint

__all__ = ["PointSpec", "select_points"]

PointSpec = str | Sequence[str] | Callable[[CapturePoint], bool] | None


def _check_choice(value: Any, name: str, func: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(
            f"The '{name}' parameter of {func} must be one of {list(choices)}. Got {value!r} instead."
        )


def _check_positive(value: Any, name: str, func: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0:
        raise ValueError(
            f"The '{name}' parameter of {func} must be a number > 0. Got {value!r} instead."
        )
    return float(value)


def _check_int(value: Any, name: str, func: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(
            f"The '{name}' parameter of {func} must be an int >= {low}. Got {value!r} instead."
        )
    return int(value)


def select_points(points: Sequence[CapturePoint], spec: PointSpec = None) -> list[CapturePoint]:
    """The points of ``points`` (in their order) that ``spec`` selects.

    Parameters
    ----------
    points : sequence of CapturePoint
    spec : None, str, sequence of str or callable
        None: all points. A string: an exact name or a glob (``"blocks.*.project*"``,
        ``fnmatch`` rules, case-sensitive). A sequence: the union of its names/globs. A callable:
        ``spec(point) -> bool``.

    Raises ValueError when a name or glob matches nothing, or when nothing is selected.
    """
    if spec is None:
        chosen = list(points)
    elif callable(spec):
        chosen = [p for p in points if spec(p)]
    else:
        patterns = [spec] if isinstance(spec, str) else list(spec)
        if not patterns or not all(isinstance(s, str) for s in patterns):
            raise ValueError(
                "The 'points' parameter must be None, a name or glob, a list of those, or a "
                f"predicate. Got {spec!r} instead."
            )
        names = [p.name for p in points]
        for pat in patterns:
            if not fnmatch.filter(names, pat):
                raise ValueError(
                    f"The 'points' pattern {pat!r} matches no capture point. Available points "
                    f"look like {names[:4] + (['...'] if len(names) > 4 else [])} ({len(names)} in all)."
                )
        chosen = [p for p in points if any(fnmatch.fnmatchcase(p.name, pat) for pat in patterns)]
    if not chosen:
        raise ValueError(f"The 'points' parameter {spec!r} selects no capture point.")
    return chosen
