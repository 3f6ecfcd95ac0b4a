"""Quantization metrics: how well does a capture point survive int8 fake quantization?

Fake quantization with b bits (b = 8) and min-max calibration on the points themselves:

``affine`` (asymmetric, the usual activation scheme)
    [lo, hi] = [min(min x, 0), max(max x, 0)] (0 is kept exactly representable, as in PyTorch's
    ``MinMaxObserver``), s = (hi - lo) / (2^b - 1), zero point zp = round(-lo / s) clipped to
    [0, 2^b - 1], q(x) = (clip(round(x / s) + zp, 0, 2^b - 1) - zp) * s.
``symmetric``
    s = max |x| / (2^(b-1) - 1), q(x) = clip(round(x / s), -(2^(b-1) - 1), 2^(b-1) - 1) * s
    (the restricted signed range -127..127).

Per tensor: one (s, zp) for the whole point; per channel: one per channel (last axis).

SQNR in dB = 10 log10(sum x^2 / sum (x - q(x))^2), sums over all points and channels (also for
the per-channel scheme: one number per capture point). For data uniform on a full range of
2^b levels it is 6.02 b dB (48.16 dB for b = 8).

Metrics (:func:`quantization_metrics`):

- ``int8_sqnr_db``: per tensor, affine
- ``int8_sqnr_db_per_channel``: per channel, affine
- ``int8_sqnr_db_symmetric``: per tensor, symmetric
- ``int8_sqnr_db_per_channel_symmetric``: per channel, symmetric

Affine is the headline: symmetric quantization wastes the negative half of the range on a
ReLU output (about 6 dB), which would bias a linear-vs-ReLU comparison.

Calibration from all values (:func:`calibrated_metrics`): the four metrics above calibrate on
the points they score (the reservoir), which misses rare extreme values (a point whose
reservoir missed every value saturated at 6 reads too high). With the capture's ``Extent``
sink (per-channel min / max over every captured value, and a histogram of |x|):

- ``int8_sqnr_db_stream``: per channel, affine, [lo, hi] = [min(ch_min, 0), max(ch_max, 0)]
  over all values (a deployment calibrated on the same data would use this range);
- ``int8_sqnr_db_clipped``: per tensor, affine, the range clipped at the 99.99th percentile
  a of |x| (``Extent.abs_quantile``; an upper bound within one histogram bin):
  [max(-a, min ch_min), min(a, max ch_max)] (with 0 kept inside), values beyond it clipped.

Both are scored on the reservoir points (the SQNR is an estimate from them; the range is not).
Without an ``Extent`` they are NaN with a reason.
Return values follow the metric convention of :mod:`analysis.spectrum`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import ArrayLike, NDArray

from analysis.spectrum import MetricValue, check_finite, undefined

__all__ = ["CALIBRATED_METRICS", "CLIP_QUANTILE", "QUANTIZATION_METRICS", "RESAMPLED_METRICS", "calibrated_metrics",
           "fake_quantize", "fake_quantize_range", "quantization_metrics", "resampled_metrics", "sqnr_db"]

#: Metric identifiers returned by :func:`quantization_metrics`, with (per_channel, symmetric).
QUANTIZATION_METRICS: dict[str, tuple[bool, bool]] = {
    "int8_sqnr_db": (False, False),
    "int8_sqnr_db_per_channel": (True, False),
    "int8_sqnr_db_symmetric": (False, True),
    "int8_sqnr_db_per_channel_symmetric": (True, True),
}


#: Metrics of :func:`calibrated_metrics` (ranges from every captured value).
CALIBRATED_METRICS: tuple[str, ...] = ("int8_sqnr_db_stream", "int8_sqnr_db_clipped")
#: Quantile of |x| at which ``int8_sqnr_db_clipped`` clips the range.
CLIP_QUANTILE = 0.9999
#: The metrics that get a redraw interval (``_ci_low`` / ``_ci_high`` rows of a study), which
#: :func:`resampled_metrics` computes alone: the affine per-tensor and per-channel SQNR of
#: :func:`quantization_metrics` and both of :func:`calibrated_metrics`.
RESAMPLED_METRICS: tuple[str, ...] = ("int8_sqnr_db", "int8_sqnr_db_per_channel") + CALIBRATED_METRICS


def _check_bits(bits: int, func: str) -> int:
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 2 <= bits <= 16:
        raise ValueError(f"The 'bits' parameter of {func} must be an int in [2, 16]. Got {bits!r} instead.")
    return int(bits)


def _points(points: ArrayLike, func: str) -> NDArray[np.float64]:
    """``points`` as a float64 (n_points, C) array with C >= 1, or a ValueError naming ``func``."""
    X = np.asarray(points, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] == 0:
        raise ValueError(
            f"The 'points' parameter of {func} must be a 2-D array (n_points, C) "
            f"with C >= 1. Got an array of shape {X.shape} instead."
        )
    return X


def fake_quantize(
    x: ArrayLike, *, bits: int = 8, per_channel: bool = False, symmetric: bool = False
) -> NDArray[np.float64]:
    """Quantize and dequantize ``x`` with min-max calibration (formulas in the module docstring).

    Parameters
    ----------
    x : array-like of shape (n_points, C)
        Points; channels on the last axis.
    bits : int in [2, 16], default 8
    per_channel : bool, default False
        One scale (and zero point) per channel instead of one for the whole array.
    symmetric : bool, default False
        Symmetric signed range instead of affine.

    Returns
    -------
    q : ndarray of shape (n_points, C)
        The dequantized values q(x). A channel (or array) that is all zero stays zero.
    """
    bits = _check_bits(bits, "fake_quantize")
    X = np.asarray(x, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(
            f"The 'x' parameter of fake_quantize must be a 2-D array (n_points, C). "
            f"Got an array of shape {X.shape} instead."
        )
    lo, hi = _ranges(X)[per_channel]
    return _symmetric(X, lo, hi, bits) if symmetric else _affine(X, lo, hi, bits)


def _ranges(X: NDArray[np.float64]) -> dict[bool, tuple[NDArray[np.float64], NDArray[np.float64]]]:
    """Min-max calibration ranges {per_channel: (lo, hi)}: shapes (1, C) and (1, 1)."""
    lo, hi = np.min(X, axis=0, keepdims=True), np.max(X, axis=0, keepdims=True)
    return {True: (lo, hi), False: (np.min(lo, keepdims=True), np.max(hi, keepdims=True))}


def _symmetric(X: NDArray[np.float64], lo: ArrayLike, hi: ArrayLike, bits: int) -> NDArray[np.float64]:
    # max |x| = max(-min x, max x); the operations of the module docstring, in place
    qmax = 2 ** (bits - 1) - 1
    amax = np.maximum(np.negative(lo), hi)
    s = np.where(amax > 0, amax / qmax, 1.0)
    q = np.divide(X, s)
    np.round(q, out=q)
    np.clip(q, -qmax, qmax, out=q)
    q *= s
    return q


def _affine(X: NDArray[np.float64], lo: ArrayLike, hi: ArrayLike, bits: int) -> NDArray[np.float64]:
    qmax = 2**bits - 1
    lo = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    s = np.where(hi > lo, (hi - lo) / qmax, 1.0)
    zp = np.clip(np.round(-lo / s), 0, qmax)
    # (clip(round(x / s) + zp, 0, qmax) - zp) * s, in place: round(x / s) and zp are integers
    # (exact in float64 below 2^53), so clipping round(x / s) to [-zp, qmax - zp] is the same
    q = np.divide(X, s)
    np.round(q, out=q)
    np.clip(q, -zp, qmax - zp, out=q)
    q *= s
    return q


def fake_quantize_range(x: ArrayLike, lo: ArrayLike, hi: ArrayLike, *, bits: int = 8) -> NDArray[np.float64]:
    """Affine fake quantization of ``x`` (n_points, C) with a given range [lo, hi].

    ``lo`` / ``hi`` are scalars (per tensor) or arrays of shape (C,) (per channel); 0 is put
    inside the range as in :func:`fake_quantize`; values outside are clipped.
    """
    bits = _check_bits(bits, "fake_quantize_range")
    return _affine(np.asarray(x, dtype=np.float64), lo, hi, bits)


def calibrated_metrics(
    points: ArrayLike,
    extent: object | None,
    *,
    bits: int = 8,
    point: str | None = None,
) -> dict[str, MetricValue]:
    """int8 SQNR with ranges calibrated on every captured value (module docstring).

    Parameters
    ----------
    points : array-like of shape (n_points, C)
        The points scored (the reservoir).
    extent : probes.sinks.Extent or None
        Per-channel ``ch_min`` / ``ch_max`` over all values and ``abs_quantile``; None gives
        NaN with a reason.
    bits : int, default 8
    point : str, optional

    Returns
    -------
    dict of str to MetricValue
        Keys of :data:`CALIBRATED_METRICS`.
    """
    bits = _check_bits(bits, "calibrated_metrics")
    X = np.asarray(points, dtype=np.float64)
    reason = _calibration_reason(X, extent, point)
    if reason is not None:
        return undefined(CALIBRATED_METRICS, reason)
    return _calibrated(X, float(np.sum(X**2)), extent, bits)


def _calibration_reason(X: NDArray[np.float64], extent: object | None, point: str | None) -> str | None:
    """Why :func:`calibrated_metrics` is not defined on ``X``, or None."""
    if extent is None or getattr(extent, "ch_min", None) is None:
        return ("not available: the probe result has no streaming per-channel range (Extent sink); "
                "int8_sqnr_db calibrates on the reservoir and can miss rare extreme values")
    if X.ndim != 2 or X.shape[0] < 1:
        return "too few points: 0"
    reason = check_finite(X, name="points", family="quantization", point=point)
    if reason is not None:
        return reason
    ch_min = np.asarray(extent.ch_min, dtype=np.float64)
    ch_max = np.asarray(extent.ch_max, dtype=np.float64)
    if ch_min.shape != (X.shape[1],) or not (np.all(np.isfinite(ch_min)) and np.all(np.isfinite(ch_max))):
        return "not defined: the streaming range is empty or does not match the points"
    return None


def _calibrated(X: NDArray[np.float64], signal: float, extent: object, bits: int) -> dict[str, MetricValue]:
    """:data:`CALIBRATED_METRICS` of finite ``X`` with a valid ``extent`` (``signal`` = sum X^2)."""
    ch_min = np.asarray(extent.ch_min, dtype=np.float64)
    ch_max = np.asarray(extent.ch_max, dtype=np.float64)
    a = float(extent.abs_quantile(CLIP_QUANTILE))
    lo, hi = float(ch_min.min()), float(ch_max.max())
    if math.isfinite(a):
        lo, hi = max(-a, lo), min(a, hi)
    return {"int8_sqnr_db_stream": _sqnr_metric(signal, X, _affine(X, ch_min, ch_max, bits)),
            "int8_sqnr_db_clipped": _sqnr_metric(signal, X, _affine(X, lo, hi, bits))}


def _sqnr(signal: float, noise: float) -> float:
    if signal == 0:
        return math.nan
    if noise == 0:
        return math.inf
    return 10.0 * math.log10(signal / noise)


def _sqnr_metric(signal: float, X: NDArray[np.float64], q: NDArray[np.float64]) -> MetricValue:
    """SQNR of the fake-quantized ``q`` (overwritten) of ``X``, with its reason when not finite."""
    q -= X  # (q - x)^2 == (x - q)^2 exactly
    q *= q
    value = _sqnr(signal, float(np.sum(q)))
    if math.isnan(value):
        return MetricValue(value, "not defined: zero signal (all points are 0)")
    if math.isinf(value):
        return MetricValue(value, "infinite: quantization is exact (zero error)")
    return MetricValue(value)


def sqnr_db(x: ArrayLike, q: ArrayLike) -> float:
    """10 log10(sum x^2 / sum (x - q)^2); +inf if q == x, NaN if x is all zero."""
    X = np.asarray(x, dtype=np.float64)
    Q = np.asarray(q, dtype=np.float64)
    return _sqnr(float(np.sum(X**2)), float(np.sum((X - Q) ** 2)))


def quantization_metrics(
    points: ArrayLike, *, bits: int = 8, point: str | None = None
) -> dict[str, MetricValue]:
    """int8 fake-quant SQNR of one capture point, four schemes (see the module docstring).

    Parameters
    ----------
    points : array-like of shape (n_points, C)
        Activations at the capture point (e.g. the reservoir sample).
    bits : int, default 8
        Bit width; the metric names say ``int8`` whatever the width.
    point : str, optional
        Capture-point name for warnings.

    Returns
    -------
    metrics : dict of str to MetricValue
        Keys of :data:`QUANTIZATION_METRICS`. All-zero points give NaN ("zero signal"); an
        exact quantization (e.g. a constant cloud) gives +inf with a reason.
    """
    bits, X = _check_bits(bits, "quantization_metrics"), _points(points, "quantization_metrics")
    if X.shape[0] < 1:
        return undefined(QUANTIZATION_METRICS, "too few points: 0")
    reason = check_finite(X, name="points", family="quantization", point=point)
    if reason is not None:
        return undefined(QUANTIZATION_METRICS, reason)
    signal = float(np.sum(X**2))
    ranges = _ranges(X)  # one min / max pass serves the four schemes
    out: dict[str, MetricValue] = {}
    for name, (per_channel, symmetric) in QUANTIZATION_METRICS.items():
        q = (_symmetric if symmetric else _affine)(X, *ranges[per_channel], bits)
        out[name] = _sqnr_metric(signal, X, q)
    return out


def resampled_metrics(
    points: ArrayLike, extent: object | None, *, bits: int = 8, point: str | None = None
) -> dict[str, MetricValue]:
    """The metrics of :data:`RESAMPLED_METRICS` alone, for reservoir redraws.

    Each value equals (bit for bit) the same key of ``quantization_metrics(points, bits=bits) |
    calibrated_metrics(points, extent, bits=bits)``, without the two symmetric schemes, which get
    no redraw interval.
    """
    bits, X = _check_bits(bits, "resampled_metrics"), _points(points, "resampled_metrics")
    if X.shape[0] < 1 or not np.all(np.isfinite(X)):  # NaN with the reasons of the full functions
        full = quantization_metrics(X, bits=bits, point=point) | calibrated_metrics(X, extent, bits=bits, point=point)
        return {k: full[k] for k in RESAMPLED_METRICS}
    signal = float(np.sum(X**2))
    ranges = _ranges(X)
    out = {name: _sqnr_metric(signal, X, _affine(X, *ranges[QUANTIZATION_METRICS[name][0]], bits))
           for name in RESAMPLED_METRICS[:2]}
    reason = _calibration_reason(X, extent, point)
    if reason is not None:
        return out | undefined(CALIBRATED_METRICS, reason)
    return out | _calibrated(X, signal, extent, bits)
