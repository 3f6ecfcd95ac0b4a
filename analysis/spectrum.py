"""Spectrum metrics: how many directions a capture point's cloud really uses.

All metrics are functions of the eigenvalues lambda_1 >= lambda_2 >= ... >= 0 of the
covariance matrix of the points (what the Moments sink gives, ``M2 / (n - 1)``), with
sigma_i = sqrt(lambda_i) and C the number of channels:

========================  ====================================================================
``rank``                  #{i : lambda_i > rtol * lambda_1}  (numerical rank, rtol = 1e-6)
``pca_dims_90/95/99``     smallest k with sum_{i<=k} lambda_i >= q * sum_i lambda_i
``effective_rank``        exp(-sum_i p_i log p_i), p_i = sigma_i / sum_j sigma_j
                          (Roy & Vetterli 2007; 1 <= erank <= rank)
``participation_ratio``   (sum_i lambda_i)^2 / sum_i lambda_i^2
``stable_rank``           sum_i lambda_i / lambda_1  (= ||X||_F^2 / ||X||_2^2)
``<name>_frac``           each of the above divided by C
========================  ====================================================================

Metric convention (shared by ``analysis.spectrum``, ``activity``, ``reconstruction``,
``quantization`` and ``spiral``)
-------------------------------------------------------------------------------------------
A metric family function returns ``dict[str, MetricValue]``: the metric identifier (the
``metric`` column of the results table; docs/design.md "Metrics") mapped to a
:class:`MetricValue` ``(value, reason)``. ``value`` is a Python float; ``reason`` is ``None``
for an ordinary finite number and otherwise a short sentence that says why the value is NaN
(or, rarely, infinite). The families never raise because the *data* makes a metric undefined
(NaN/Inf activations, too few points, all points equal, C = 1, a linear output for activity
metrics): they return NaN with a reason. They raise ``ValueError`` only on impossible input
(wrong shapes, bad parameters), with the message format "The 'rtol' parameter of
spectrum_metrics must be a float in (0, 1). Got -1 instead.". Non-finite data also emits a
:class:`NonFiniteWarning` that names the capture point when a ``point`` name is passed.
:func:`to_records` turns a metric dict into rows ``{"metric", "value", "reason"}`` for the
tidy results table.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(500, 3)) @ rng.normal(size=(3, 8))  # a rank-3 cloud in 8 dims
>>> m = spectrum_metrics_from_points(X)
>>> m["rank"].value, m["rank_frac"].value
(3.0, 0.375)
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "MetricValue",
    "NonFiniteWarning",
    "SPECTRUM_METRICS",
    "check_finite",
    "covariance_spectrum",
    "effective_rank",
    "numerical_rank",
    "participation_ratio",
    "pca_dims",
    "spectrum_metrics",
    "spectrum_metrics_from_points",
    "stable_rank",
    "to_records",
    "undefined",
]

_BASE = (
    "rank",
    "pca_dims_90",
    "pca_dims_95",
    "pca_dims_99",
    "effective_rank",
    "participation_ratio",
    "stable_rank",
)
#: Metric identifiers returned by :func:`spectrum_metrics`, in order.
SPECTRUM_METRICS: tuple[str, ...] = _BASE + tuple(f"{name}_frac" for name in _BASE)


class MetricValue(NamedTuple):
    """One metric value and, when it is not an ordinary finite number, the reason why."""

    value: float
    reason: str | None = None


class NonFiniteWarning(RuntimeWarning):
    """Activations (or statistics) contain NaN or Inf; the affected metrics are NaN."""


def undefined(names: Iterable[str], reason: str) -> dict[str, MetricValue]:
    """Every metric in ``names`` as NaN with the same ``reason``."""
    return {name: MetricValue(math.nan, reason) for name in names}


def to_records(metrics: Mapping[str, MetricValue]) -> list[dict[str, object]]:
    """Rows ``{"metric": name, "value": float, "reason": str | None}`` for a tidy table."""
    return [{"metric": k, "value": float(v.value), "reason": v.reason} for k, v in metrics.items()]


def check_finite(
    arr: NDArray[np.floating], *, name: str, family: str, point: str | None = None
) -> str | None:
    """Return ``None`` if ``arr`` is all finite; else warn (naming ``point``) and return a reason.

    Parameters
    ----------
    arr : ndarray
        Data to check.
    name : str
        What ``arr`` is, for the message (``"points"``, ``"covariance"`` ...).
    family : str
        The metric family, for the message (``"spectrum"`` ...).
    point : str, optional
        Capture-point name (``"blocks.3.project"``), named in the warning.
    """
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad == 0:
        return None
    where = f"capture point {point!r}" if point is not None else "an unnamed capture point"
    reason = f"{name} contain {bad} non-finite value(s) (NaN or Inf)"
    warnings.warn(
        f"The {name} at {where} contain {bad} non-finite value(s) (NaN or Inf); "
        f"the {family} metrics there are NaN.",
        NonFiniteWarning,
        stacklevel=3,
    )
    return reason


def _check_rtol(rtol: float, func: str) -> float:
    if (
        isinstance(rtol, bool)
        or not isinstance(rtol, numbers.Real)
        or not (0.0 < float(rtol) < 1.0)
    ):
        raise ValueError(
            f"The 'rtol' parameter of {func} must be a float in (0, 1). Got {rtol!r} instead."
        )
    return float(rtol)


def _as_eigenvalues(eigvals: ArrayLike, func: str) -> NDArray[np.float64]:
    lam = np.asarray(eigvals, dtype=np.float64)
    if lam.ndim != 1:
        raise ValueError(
            f"The 'eigvals' parameter of {func} must be a 1-D array of covariance eigenvalues. "
            f"Got an array of shape {lam.shape} instead."
        )
    return np.sort(np.clip(lam, 0.0, None))[::-1]


def covariance_spectrum(cov: ArrayLike) -> NDArray[np.float64]:
    """Eigenvalues of a covariance matrix, descending, clipped at 0.

    Parameters
    ----------
    cov : array-like of shape (C, C)
        Symmetric positive semi-definite matrix (only its symmetric part is used).

    Returns
    -------
    eigvals : ndarray of shape (C,)
        ``numpy.linalg.eigvalsh(cov)`` sorted descending; negative round-off is clipped to 0,
        and eigenvalues below ``C * eps * lambda_1`` (round-off level, the
        ``numpy.linalg.matrix_rank`` rule) are set to exactly 0.
    """
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise ValueError(
            "The 'cov' parameter of covariance_spectrum must be a square (C, C) matrix with "
            f"C >= 1. Got an array of shape {cov.shape} instead."
        )
    lam = np.linalg.eigvalsh(0.5 * (cov + cov.T))[::-1]
    lam = np.clip(lam, 0.0, None)
    if lam[0] > 0:
        lam[lam < cov.shape[0] * np.finfo(np.float64).eps * lam[0]] = 0.0
    return lam


def numerical_rank(eigvals: ArrayLike, *, rtol: float = 1e-6) -> int:
    """Numerical rank #{i : lambda_i > rtol * lambda_1}; 0 for a zero spectrum.

    Parameters
    ----------
    eigvals : array-like of shape (C,)
        Covariance eigenvalues (any order; negatives are clipped to 0).
    rtol : float in (0, 1), default 1e-6
        Threshold relative to the largest eigenvalue.
    """
    rtol = _check_rtol(rtol, "numerical_rank")
    lam = _as_eigenvalues(eigvals, "numerical_rank")
    if lam.size == 0 or lam[0] <= 0:
        return 0
    return int(np.count_nonzero(lam > rtol * lam[0]))


def pca_dims(eigvals: ArrayLike, q: float) -> int:
    """Smallest k with sum_{i<=k} lambda_i >= q * sum_i lambda_i (PCA dims for q of the variance).

    Parameters
    ----------
    eigvals : array-like of shape (C,)
        Covariance eigenvalues; their sum must be positive.
    q : float in (0, 1]
        Fraction of the total variance, e.g. 0.9.
    """
    if isinstance(q, bool) or not isinstance(q, numbers.Real) or not (0.0 < float(q) <= 1.0):
        raise ValueError(f"The 'q' parameter of pca_dims must be a float in (0, 1]. Got {q!r} instead.")
    lam = _as_eigenvalues(eigvals, "pca_dims")
    total = lam.sum()
    if not total > 0:
        raise ValueError("pca_dims is not defined for a zero spectrum (total variance 0).")
    frac = np.cumsum(lam) / total
    # A tiny slack so that exactly q (e.g. 9 equal eigenvalues of 10 for q = 0.9) counts.
    return int(min(np.searchsorted(frac, q - 1e-12) + 1, lam.size))


def effective_rank(eigvals: ArrayLike) -> float:
    """Effective rank exp(-sum p_i log p_i), p_i = sigma_i / sum sigma, sigma_i = sqrt(lambda_i).

    Roy & Vetterli (2007), on the singular values of the centred data matrix, which are
    proportional to sqrt(lambda_i). Terms with p_i = 0 contribute 0.
    """
    lam = _as_eigenvalues(eigvals, "effective_rank")
    sigma = np.sqrt(lam)
    total = sigma.sum()
    if not total > 0:
        raise ValueError("effective_rank is not defined for a zero spectrum (total variance 0).")
    p = sigma[sigma > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def participation_ratio(eigvals: ArrayLike) -> float:
    """Participation ratio (sum lambda)^2 / sum lambda^2 (biased low on few samples)."""
    lam = _as_eigenvalues(eigvals, "participation_ratio")
    sq = np.sum(lam**2)
    if not sq > 0:
        raise ValueError("participation_ratio is not defined for a zero spectrum (total variance 0).")
    return float(lam.sum() ** 2 / sq)


def stable_rank(eigvals: ArrayLike) -> float:
    """Stable rank sum lambda / lambda_1 (= ||X||_F^2 / ||X||_2^2 of the centred data)."""
    lam = _as_eigenvalues(eigvals, "stable_rank")
    if lam.size == 0 or not lam[0] > 0:
        raise ValueError("stable_rank is not defined for a zero spectrum (total variance 0).")
    return float(lam.sum() / lam[0])


def spectrum_metrics(
    cov: ArrayLike,
    *,
    rtol: float = 1e-6,
    n_points: int | None = None,
    point: str | None = None,
    eigvals: ArrayLike | None = None,
) -> dict[str, MetricValue]:
    """All spectrum metrics of one capture point from its covariance matrix.

    Parameters
    ----------
    cov : array-like of shape (C, C)
        Covariance of the points (Moments sink: ``M2 / (n - 1)``).
    rtol : float in (0, 1), default 1e-6
        Relative threshold of the numerical rank: #{lambda_i > rtol * lambda_1}.
    n_points : int, optional
        Number of points behind ``cov``; with fewer than 2 every metric is NaN.
    point : str, optional
        Capture-point name, used in the warning about non-finite values.
    eigvals : array-like of shape (C,), optional
        ``covariance_spectrum(cov)`` when the caller has it already (saves a second
        eigendecomposition).

    Returns
    -------
    metrics : dict of str to MetricValue
        The keys of :data:`SPECTRUM_METRICS` (formulas in the module docstring). A zero
        covariance (all points equal) has rank 0 and every other metric NaN with a reason.
    """
    rtol = _check_rtol(rtol, "spectrum_metrics")
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise ValueError(
            "The 'cov' parameter of spectrum_metrics must be a square (C, C) matrix with C >= 1. "
            f"Got an array of shape {cov.shape} instead."
        )
    if n_points is not None and n_points < 2:
        return undefined(SPECTRUM_METRICS, f"too few points: {n_points} (a covariance needs >= 2)")
    reason = check_finite(cov, name="covariance entries", family="spectrum", point=point)
    if reason is not None:
        return undefined(SPECTRUM_METRICS, reason)
    lam = covariance_spectrum(cov) if eigvals is None else _as_eigenvalues(eigvals, "spectrum_metrics")
    c = lam.size
    out: dict[str, MetricValue] = {}
    if lam[0] > 0:
        values = {
            "rank": float(numerical_rank(lam, rtol=rtol)),
            "pca_dims_90": float(pca_dims(lam, 0.90)),
            "pca_dims_95": float(pca_dims(lam, 0.95)),
            "pca_dims_99": float(pca_dims(lam, 0.99)),
            "effective_rank": effective_rank(lam),
            "participation_ratio": participation_ratio(lam),
            "stable_rank": stable_rank(lam),
        }
        out = {k: MetricValue(v) for k, v in values.items()}
    else:
        out = {"rank": MetricValue(0.0)}
        out |= undefined(_BASE[1:], "not defined: zero total variance (all points equal)")
    for name in _BASE:
        v = out[name]
        out[f"{name}_frac"] = MetricValue(v.value / c, v.reason)
    return {name: out[name] for name in SPECTRUM_METRICS}


def spectrum_metrics_from_points(
    points: ArrayLike, *, rtol: float = 1e-6, point: str | None = None
) -> dict[str, MetricValue]:
    """Spectrum metrics of a raw point cloud (covariance with ``ddof=1``, float64).

    Parameters
    ----------
    points : array-like of shape (n_points, C)
        One row per sample.
    rtol : float in (0, 1), default 1e-6
        Relative threshold of the numerical rank.
    point : str, optional
        Capture-point name, used in the warning about non-finite values.

    Returns
    -------
    metrics : dict of str to MetricValue
        As :func:`spectrum_metrics`.
    """
    X = np.asarray(points, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] == 0:
        raise ValueError(
            "The 'points' parameter of spectrum_metrics_from_points must be a 2-D array of "
            f"shape (n_points, C) with C >= 1. Got an array of shape {X.shape} instead."
        )
    _check_rtol(rtol, "spectrum_metrics_from_points")
    if X.shape[0] < 2:
        return undefined(SPECTRUM_METRICS, f"too few points: {X.shape[0]} (a covariance needs >= 2)")
    reason = check_finite(X, name="points", family="spectrum", point=point)
    if reason is not None:
        return undefined(SPECTRUM_METRICS, reason)
    Xc = X - X.mean(axis=0)
    cov = Xc.T @ Xc / (X.shape[0] - 1)
    return spectrum_metrics(cov, rtol=rtol, n_points=X.shape[0], point=point)
