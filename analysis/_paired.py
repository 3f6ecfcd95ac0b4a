"""Paired comparison of two designs over seeds, as the claims modules need it.

One function, :func:`paired`, with the result fields of ``analysis.compare`` (mean_diff,
ci_low, ci_high, p_value, verdict); the claims modules call only this, so that the paired
statistics live in one place.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["NO_DIFFERENCE", "paired"]

#: Verdict when the interval of the paired difference covers 0.
NO_DIFFERENCE = "no significant difference"


def paired(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95) -> dict[str, float | int | str]:
    """Paired difference ``a - b`` over seeds: mean, Student-t interval, paired t-test p-value.

    ``a[i]`` and ``b[i]`` are the two designs trained with the same seed. With the differences
    ``d_i = a_i - b_i`` (n of them, NaN pairs dropped)::

        mean_diff = mean(d),  half = t_{(1+c)/2, n-1} * std(d, ddof=1) / sqrt(n)

    and the verdict is ``"a > b"`` or ``"a < b"`` when the interval excludes 0, else
    ``"no significant difference"`` (also for n < 2, where no interval exists).

    Returns
    -------
    dict
        n, mean_a, mean_b, mean_diff, ci_low, ci_high, p_value, verdict.
    """
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"The 'a' and 'b' parameters of paired must be 1-D of the same length (one value "
                         f"per seed). Got shapes {x.shape} and {y.shape} instead.")
    if not 0 < confidence < 1:
        raise ValueError(f"The 'confidence' parameter of paired must be a float in (0, 1). Got {confidence!r} instead.")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    d = x - y
    n = int(d.size)
    out: dict[str, float | int | str] = {"n": n, "mean_a": float(x.mean()) if n else float("nan"),
                                         "mean_b": float(y.mean()) if n else float("nan"),
                                         "mean_diff": float(d.mean()) if n else float("nan"),
                                         "ci_low": float("nan"), "ci_high": float("nan"),
                                         "p_value": float("nan"), "verdict": NO_DIFFERENCE}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    if sd == 0:
        low = high = float(d.mean())
        p = 1.0 if low == 0 else 0.0
    else:
        half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / np.sqrt(n)
        low, high = float(d.mean()) - half, float(d.mean()) + half
        p = float(stats.ttest_rel(x, y).pvalue)
    out.update(ci_low=low, ci_high=high, p_value=p,
               verdict=NO_DIFFERENCE if low <= 0 <= high else ("a > b" if low > 0 else "a < b"))
    return out
