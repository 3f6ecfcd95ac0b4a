"""Paired comparison of two designs over seeds, as the claims modules need it.

:func:`paired_stats` has the signature and result fields of ``analysis.compare.paired_stats``
(n_pairs, mean_a, mean_b, mean_diff, ci_low, ci_high, p_value, verdict, reason) with a
Student-t interval and the paired t-test p-value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["NO_DIFFERENCE", "paired_stats"]

#: Verdict when the interval of the paired difference covers 0.
NO_DIFFERENCE = "no significant difference"


def paired_stats(a: Sequence[float], b: Sequence[float], *, level: float = 0.95,
                 names: tuple[str, str] = ("a", "b")) -> dict[str, Any]:
    """Paired difference ``a - b`` over seeds: mean, Student-t interval, paired t-test p-value.

    ``a[i]`` and ``b[i]`` are the two designs trained with the same seed. With the differences
    ``d_i = a_i - b_i`` (n of them, pairs with a NaN dropped)::

        mean_diff = mean(d),  half = t_{(1+level)/2, n-1} * std(d, ddof=1) / sqrt(n)

    and the verdict is ``"<a> higher"`` or ``"<b> higher"`` when the interval excludes 0, else
    ``"no significant difference"``; ``"n/a"`` for n < 2, where no interval exists.

    Returns
    -------
    dict
        n_pairs, mean_a, mean_b, mean_diff, ci_low, ci_high, p_value, verdict, reason.
    """
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"The 'a' and 'b' parameters of paired_stats must be 1-D of the same length (one "
                         f"value per seed). Got shapes {x.shape} and {y.shape} instead.")
    if not 0 < level < 1:
        raise ValueError(f"The 'level' parameter of paired_stats must be a float in (0, 1). Got {level!r} instead.")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    d = x - y
    n = int(d.size)
    nan = float("nan")
    out: dict[str, Any] = {"n_pairs": n, "mean_a": float(x.mean()) if n else nan,
                           "mean_b": float(y.mean()) if n else nan, "mean_diff": float(d.mean()) if n else nan,
                           "ci_low": nan, "ci_high": nan, "p_value": nan, "verdict": "n/a", "reason": ""}
    if n < 2:
        out["reason"] = f"{n} pair(s): an interval needs at least 2 seeds"
        return out
    sd = float(d.std(ddof=1))
    if sd == 0:
        low = high = float(d.mean())
        p = 1.0 if low == 0 else 0.0
    else:
        half = float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / np.sqrt(n)
        low, high = float(d.mean()) - half, float(d.mean()) + half
        p = float(stats.ttest_rel(x, y).pvalue)
    verdict = NO_DIFFERENCE if low <= 0 <= high else (f"{names[0]} higher" if low > 0 else f"{names[1]} higher")
    out.update(ci_low=low, ci_high=high, p_value=p, verdict=verdict)
    return out
