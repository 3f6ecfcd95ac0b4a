"""Streaming, mergeable float64 accumulators for activations (docs/design.md).

Each sink sees a stream of points, one row per sample: an array of shape
(n_points, n_channels) per batch (a sample is one spatial position's channel vector, or one
image's pooled vector; see :mod:`probes.capture`). Memory is O(C^2 + K*C) per sink, independent
of the number of images, and two sinks fed with disjoint shards merge into the sink that one
pass over both shards gives::

    merge(sink(A), sink(B)) == sink(A + B)

(exactly for :class:`Activity` and :class:`Reservoir`, to float64 rounding for
:class:`Moments`). That is what lets a run be split over processes, GPUs or machines.

Every sink has ``update(...)``, ``merge(other) -> new sink``, ``state_dict()`` (plain numpy
arrays and scalars, so it can go into an ``.npz`` file without pickling) and the classmethod
``from_state_dict(state)``.

- :class:`Moments`: count, mean and centred second-moment matrix ``M2 = sum (x - mu)(x - mu)^T``,
  updated per batch with Chan et al.'s parallel formula (never ``E[xx^T] - mu mu^T``, which
  cancels catastrophically when the mean is large compared to the spread).
- :class:`Activity`: per-channel counts of points where the unit is in the activation's
  informative region, saturated counts (ReLU6) and the histogram of the number of active
  channels per point (paper Fig. 7).
- :class:`Extent`: per-channel min, max and active counts over *every* value, and a fixed-bin
  histogram of ``|x|`` (true calibration ranges and dead units, not a sample's).
- :class:`Reservoir`: a uniform, seeded sample of at most K points with their
  ``(image, y, x)`` ids, chosen by bottom-K sampling on a hash of the id, so the sample does not
  depend on batch boundaries, shard order or how the data was split.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any, TypeVar

import numpy as np

__all__ = [
    "ABS_HIST_EDGES",
    "ACTIVITY_KINDS",
    "Activity",
    "Extent",
    "Moments",
    "Reservoir",
    "abs_hist_bins",
    "active_mask",
    "active_terms",
    "chan_update",
    "merge",
    "position_hash",
]

#: Activation kinds with a flat (uninformative) region, for which :class:`Activity` is defined.
ACTIVITY_KINDS: tuple[str, ...] = ("relu", "relu6", "hswish")

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """Finaliser of the splitmix64 generator: a bijective, well-mixed map of uint64 to uint64."""
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


def position_hash(seed: int, image: Any, y: Any, x: Any, *, salt: int = 0) -> np.ndarray:
    """Deterministic 64-bit hash of sample ids: ``splitmix64`` chained over (salt, seed, image, y, x).

    Used as the sampling priority of a point: uniform on [0, 2^64), independent across ids, and
    a function of the id only, so every process that sees the same point gives it the same
    priority.

    Parameters
    ----------
    seed : int
    image, y, x : int or array of int (broadcast together)
        Global image index and spatial position.
    salt : int
        Separates independent uses of the hash (reservoir priorities, moment sampling).

    Returns
    -------
    ndarray of uint64, the broadcast shape of ``image``, ``y`` and ``x``.
    """
    mask32 = np.uint64(0xFFFFFFFF)
    with np.errstate(over="ignore"):
        h = _splitmix64(np.asarray(salt & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64))
        h = _splitmix64(h ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
        # Mix each argument only at its own (unbroadcast) shape; broadcast at the last round.
        h = _splitmix64(h ^ np.asarray(image, dtype=np.int64).astype(np.uint64))
        yx = ((np.asarray(y, dtype=np.int64).astype(np.uint64) << np.uint64(32))
              ^ (np.asarray(x, dtype=np.int64).astype(np.uint64) & mask32))
        return _splitmix64(h ^ yx)


def _as_points(x: Any, name: str, n_channels: int | None = None) -> np.ndarray:
    """``x`` as a float64 array of shape (n_points, n_channels), or a ValueError naming ``name``."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(
            f"The 'x' parameter of {name} must be an array of shape (n_points, n_channels). "
            f"Got shape {arr.shape} instead."
        )
    if n_channels is not None and arr.shape[1] != n_channels:
        raise ValueError(
            f"The 'x' parameter of {name} must have {n_channels} channels (columns). "
            f"Got {arr.shape[1]} instead."
        )
    return arr


def _check_channels(n_channels: Any, name: str) -> int:
    if isinstance(n_channels, bool) or not isinstance(n_channels, (int, np.integer)) or n_channels < 1:
        raise ValueError(
            f"The 'n_channels' parameter of {name} must be an int >= 1. Got {n_channels!r} instead."
        )
    return int(n_channels)


def _check_same(a: Any, b: Any, fields: tuple[str, ...]) -> None:
    if type(a) is not type(b):
        raise ValueError(f"Cannot merge a {type(a).__name__} with a {type(b).__name__}.")
    for f in fields:
        va, vb = getattr(a, f), getattr(b, f)
        if va != vb:
            raise ValueError(
                f"Cannot merge two {type(a).__name__} sinks with different '{f}': {va!r} and {vb!r}."
            )


def chan_update(count_a: int, mean_a: Any, m2_a: Any, count_b: int, mean_b: Any, m2_b: Any
                ) -> tuple[int, Any, Any]:
    """Chan, Golub & LeVeque's parallel update of (count, mean, centred m2) by a batch B.

    ``n = n_A + n_B``, ``delta = mean_B - mean_A``, ``mean = mean_A + delta n_B / n``,
    ``m2 = m2_A + m2_B + delta delta^T n_A n_B / n``. Works on numpy arrays and on torch
    tensors alike (on their device); returns new arrays, the inputs are not modified. With
    ``count_a == 0`` it returns B's statistics themselves.
    """
    if count_b == 0:
        return count_a, mean_a, m2_a
    if count_a == 0:
        return count_b, mean_b, m2_b
    n = count_a + count_b
    delta = mean_b - mean_a
    m2 = m2_a + m2_b + (delta[:, None] * delta[None, :]) * (count_a * count_b / n)
    return n, mean_a + delta * (count_b / n), m2


class Moments:
    """Count, mean and centred second moments of a stream of points (float64).

    State: ``count`` (int), ``mean`` (C,) and ``m2`` (C, C) with
    ``m2 = sum_i (x_i - mean)(x_i - mean)^T``. A batch B is folded into the running state A
    with Chan, Golub & LeVeque's parallel update (1979)::

        n = n_A + n_B,   delta = mean_B - mean_A
        mean = mean_A + delta * n_B / n
        m2   = m2_A + m2_B + delta delta^T * n_A n_B / n

    where ``m2_B`` is computed about the batch's own mean, so a large common offset never
    enters a difference of large numbers.

    Parameters
    ----------
    n_channels : int
        Number of channels C.

    Examples
    --------
    >>> m = Moments(2)
    >>> m.update(np.array([[1.0, 0.0], [3.0, 2.0]]))
    >>> m.mean.tolist(), m.covariance().tolist()
    ([2.0, 1.0], [[2.0, 2.0], [2.0, 2.0]])
    """

    def __init__(self, n_channels: int) -> None:
        self.n_channels = _check_channels(n_channels, "Moments")
        self.count = 0
        self.mean = np.zeros(self.n_channels)
        self.m2 = np.zeros((self.n_channels, self.n_channels))

    def update(self, x: Any) -> None:
        """Fold the points ``x`` (array of shape (n_points, n_channels)) into the state."""
        arr = _as_points(x, "Moments.update", self.n_channels)
        if arr.shape[0] == 0:
            return
        mean_b = arr.mean(axis=0)
        xc = arr - mean_b
        self.add_stats(arr.shape[0], mean_b, xc.T @ xc)

    def add_stats(self, count: int, mean: np.ndarray, m2: np.ndarray) -> None:
        """Fold in the statistics ``(count, mean, m2)`` of a batch (``m2`` centred on ``mean``)."""
        count = int(count)
        if count == 0:
            return
        mean = np.array(mean, dtype=np.float64)
        m2 = np.array(m2, dtype=np.float64)
        self.count, self.mean, self.m2 = chan_update(self.count, self.mean, self.m2, count, mean, m2)

    def merge(self, other: "Moments") -> "Moments":
        """A new sink holding the moments of both streams."""
        _check_same(self, other, ("n_channels",))
        out = Moments(self.n_channels)
        out.add_stats(self.count, self.mean, self.m2)
        out.add_stats(other.count, other.mean, other.m2)
        return out

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """Covariance ``m2 / (count - ddof)``, ndarray of shape (C, C).

        Raises ValueError when ``count <= ddof`` (not enough points).
        """
        if self.count <= ddof:
            raise ValueError(
                f"The covariance needs more than ddof={ddof} points. Got {self.count} points instead."
            )
        return self.m2 / (self.count - ddof)

    def state_dict(self) -> dict[str, Any]:
        return {"n_channels": self.n_channels, "count": self.count, "mean": self.mean.copy(),
                "m2": self.m2.copy()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "Moments":
        out = cls(int(state["n_channels"]))
        out.count = int(state["count"])
        out.mean = np.array(state["mean"], dtype=np.float64)
        out.m2 = np.array(state["m2"], dtype=np.float64)
        return out

    def __repr__(self) -> str:
        return f"Moments(n_channels={self.n_channels}, count={self.count})"


def active_terms(kind: str, *, pre: bool = False) -> tuple[tuple[int, str, float], ...]:
    """The informative (non-flat) region of activation ``kind`` as signed comparisons.

    The one definition of an active unit. Each term ``(sign, op, value)`` is the comparison
    ``x op value`` (``op`` one of ``"gt"``, ``"ge"``, ``"lt"``); the ``+1`` terms are disjoint,
    and each ``-1`` term lies inside them, so

    - active = (any ``+1`` term) and not (any ``-1`` term)  (:func:`active_mask`), and
    - #active = sum of ``sign * #(x op value)``, which lets a capture count units with cheap
      comparisons and sums instead of boolean masks.

    Post-activation values (``pre=False``): ``relu``: ``0 < y``; ``relu6``: ``0 < y < 6``
    (``y > 0`` minus ``y >= 6``); ``hswish``: ``y != 0`` (``y > 0`` plus ``y < 0``; hard-swish is
    0 exactly when its input is <= -3, or exactly 0). Pre-activation values (``pre=True``): the
    same for ``relu`` / ``relu6``; ``hswish``: ``x > -3``.
    """
    if kind == "relu":
        return ((1, "gt", 0.0),)
    if kind == "relu6":
        return ((1, "gt", 0.0), (-1, "ge", 6.0))
    if kind == "hswish":
        return ((1, "gt", -3.0),) if pre else ((1, "gt", 0.0), (1, "lt", 0.0))
    raise ValueError(
        f"The 'kind' parameter of Activity must be one of {list(ACTIVITY_KINDS)}. Got {kind!r} instead."
    )


_OPS = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt}


def active_mask(y: Any, kind: str, *, pre: bool = False) -> Any:
    """Where units are active (:func:`active_terms`); ``y`` a numpy array or a torch tensor,
    the result a boolean array of the same kind."""
    keep = drop = None
    for sign, op, value in active_terms(kind, pre=pre):
        m = _OPS[op](y, value)
        if sign > 0:
            keep = m if keep is None else keep | m
        else:
            drop = m if drop is None else drop | m
    return keep if drop is None else keep & ~drop


class Activity:
    """Per-channel activity counts of a post-activation stream.

    "Active" means the unit is in the activation's informative (non-flat) region (see
    :func:`active_mask`); for ``relu6`` the points with ``y >= 6`` are counted as saturated.
    The values may be taken after the activation (default) or just before it (``pre=True``,
    a ``.pre`` capture point); the counts are the same either way.

    State: ``n_points``; ``active`` (C,) and ``saturated`` (C,) int64 counts;
    ``histogram`` (C + 1,) int64 where ``histogram[k]`` is the number of points with exactly k
    active channels (min / mean / max active channels per point, paper Fig. 7).

    Parameters
    ----------
    n_channels : int
    kind : str
        One of :data:`ACTIVITY_KINDS`. Not defined for linear or leaky points (no flat region).
    pre : bool
        The values are pre-activation (matters for ``hswish`` only: active means ``x > -3``).

    Examples
    --------
    >>> a = Activity(3, "relu6")
    >>> a.update(np.array([[0.0, 1.0, 7.0], [2.0, 3.0, -1.0]]))
    >>> a.active.tolist(), a.saturated.tolist(), a.histogram.tolist()
    ([1, 2, 0], [0, 0, 1], [0, 1, 1, 0])
    """

    def __init__(self, n_channels: int, kind: str, *, pre: bool = False) -> None:
        self.n_channels = _check_channels(n_channels, "Activity")
        self.pre = bool(pre)
        if kind not in ACTIVITY_KINDS:
            raise ValueError(
                f"The 'kind' parameter of Activity must be one of {list(ACTIVITY_KINDS)}. "
                f"Got {kind!r} instead (linear and leaky activations have no flat region)."
            )
        self.kind = kind
        self.n_points = 0
        self.active = np.zeros(self.n_channels, dtype=np.int64)
        self.saturated = np.zeros(self.n_channels, dtype=np.int64)
        self.histogram = np.zeros(self.n_channels + 1, dtype=np.int64)

    def update(self, y: Any) -> None:
        """Count the points ``y`` (array of shape (n_points, n_channels), post-activation)."""
        arr = _as_points(y, "Activity.update", self.n_channels)
        act = active_mask(arr, self.kind, pre=self.pre)
        sat = arr >= 6 if self.kind == "relu6" else np.zeros_like(act)
        self.add_counts(arr.shape[0], act.sum(axis=0), sat.sum(axis=0),
                        np.bincount(act.sum(axis=1), minlength=self.n_channels + 1))

    def add_counts(self, n_points: int, active: np.ndarray, saturated: np.ndarray,
                   histogram: np.ndarray) -> None:
        """Add the counts of a batch (as computed by :meth:`update`)."""
        self.n_points += int(n_points)
        self.active = self.active + np.asarray(active, dtype=np.int64)
        self.saturated = self.saturated + np.asarray(saturated, dtype=np.int64)
        self.histogram = self.histogram + np.asarray(histogram, dtype=np.int64)

    def merge(self, other: "Activity") -> "Activity":
        _check_same(self, other, ("n_channels", "kind", "pre"))
        out = Activity(self.n_channels, self.kind, pre=self.pre)
        out.add_counts(self.n_points, self.active, self.saturated, self.histogram)
        out.add_counts(other.n_points, other.active, other.saturated, other.histogram)
        return out

    @property
    def active_fraction(self) -> np.ndarray:
        """Fraction of points where each channel is active, shape (C,)."""
        return self.active / max(self.n_points, 1)

    @property
    def positive_min(self) -> int:
        """Fewest active channels at any point."""
        return int(np.flatnonzero(self.histogram)[0]) if self.n_points else 0

    @property
    def positive_max(self) -> int:
        """Most active channels at any point."""
        return int(np.flatnonzero(self.histogram)[-1]) if self.n_points else 0

    @property
    def positive_mean(self) -> float:
        """Mean number of active channels per point."""
        return float(self.histogram @ np.arange(self.n_channels + 1) / max(self.n_points, 1))

    def state_dict(self) -> dict[str, Any]:
        return {"n_channels": self.n_channels, "kind": self.kind, "pre": self.pre, "n_points": self.n_points,
                "active": self.active.copy(), "saturated": self.saturated.copy(),
                "histogram": self.histogram.copy()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "Activity":
        out = cls(int(state["n_channels"]), str(state["kind"]), pre=bool(state.get("pre", False)))
        out.n_points = int(state["n_points"])
        out.active = np.array(state["active"], dtype=np.int64)
        out.saturated = np.array(state["saturated"], dtype=np.int64)
        out.histogram = np.array(state["histogram"], dtype=np.int64)
        return out

    def __repr__(self) -> str:
        return (f"Activity(n_channels={self.n_channels}, kind={self.kind!r}, pre={self.pre}, "
                f"n_points={self.n_points})")


#: Bins of :attr:`Extent.abs_hist`: bin k holds the values whose float32 ``|x|`` has the bit
#: pattern ``k << 20`` up to ``(k + 1) << 20`` (exclusive), i.e. sign-less exponent and the top
#: 3 mantissa bits: 8 bins per octave (relative width at most 1/8), fixed for every point so
#: that histograms merge by addition. Bin 0 starts at 0; bins 2040 to 2047 hold inf and NaN.
ABS_HIST_BINS = 2048
ABS_HIST_EDGES: np.ndarray = np.concatenate([
    (np.arange(2040, dtype=np.int64) << 20).astype(np.int32).view(np.float32).astype(np.float64),
    np.full(ABS_HIST_BINS + 1 - 2040, np.inf),
])


def abs_hist_bins(x: Any) -> Any:
    """Bin index in :data:`ABS_HIST_EDGES` of every value of ``x`` (numpy array or torch tensor)."""
    if hasattr(x, "detach"):
        import torch  # only with a tensor in hand: this module does not need torch otherwise

        return x.detach().float().abs().contiguous().view(torch.int32) >> 20
    return np.abs(np.asarray(x, dtype=np.float32)).view(np.int32) >> 20


class Extent:
    """Per-channel range and activity over *every* value of a stream, plus a histogram of |x|.

    The exact complement of the sampled sinks: the min and max of each channel (int8
    calibration from the true range, not a sample's), the count of rows where each unit is
    active (so ``dead`` means never active at any position, not in a sample) and a fixed-bin
    histogram of ``|x|`` over all channels, from which a percentile-clipped range is read
    (:meth:`abs_quantile`). All of it merges exactly (min, max, sums).

    State: ``n_points``; ``ch_min``, ``ch_max`` float64 (C,) (+inf / -inf while empty);
    ``active``, ``saturated`` int64 (C,) or None (None for a ``kind`` without a flat region;
    ``saturated`` counts ``y >= 6`` for relu6 and stays 0 otherwise); ``abs_hist`` int64
    (2048,) on the bins of :data:`ABS_HIST_EDGES`; ``hist_points``, the rows that went into the
    histogram (a capture may feed the histogram a uniform sample of the rows it counts).

    Parameters
    ----------
    n_channels : int
    kind : str or None
        Activation kind of the point (one of :data:`ACTIVITY_KINDS`) to count active units
        with :func:`active_mask`, or None.
    pre : bool
        The values are pre-activation.

    Examples
    --------
    >>> e = Extent(2, "relu6")
    >>> e.update(np.array([[0.0, 1.0], [7.0, 3.0]]))
    >>> e.ch_min.tolist(), e.ch_max.tolist(), e.active.tolist(), e.saturated.tolist()
    ([0.0, 1.0], [7.0, 3.0], [0, 2], [1, 0])
    """

    def __init__(self, n_channels: int, kind: str | None = None, *, pre: bool = False) -> None:
        self.n_channels = _check_channels(n_channels, "Extent")
        if kind is not None and kind not in ACTIVITY_KINDS:
            raise ValueError(
                f"The 'kind' parameter of Extent must be None or one of {list(ACTIVITY_KINDS)}. "
                f"Got {kind!r} instead."
            )
        self.kind, self.pre = kind, bool(pre)
        self.n_points = 0
        self.ch_min = np.full(self.n_channels, np.inf)
        self.ch_max = np.full(self.n_channels, -np.inf)
        counted = kind is not None
        self.active = np.zeros(self.n_channels, dtype=np.int64) if counted else None
        self.saturated = np.zeros(self.n_channels, dtype=np.int64) if counted else None
        self.abs_hist = np.zeros(ABS_HIST_BINS, dtype=np.int64)
        self.hist_points = 0

    def update(self, x: Any) -> None:
        """Fold in the points ``x`` (array of shape (n_points, n_channels)), all into the histogram."""
        arr = _as_points(x, "Extent.update", self.n_channels)
        if arr.shape[0] == 0:
            return
        active = saturated = None
        if self.kind is not None:
            active = active_mask(arr, self.kind, pre=self.pre).sum(axis=0)
            saturated = (arr >= 6).sum(axis=0) if self.kind == "relu6" else np.zeros(self.n_channels)
        self.add_counts(arr.shape[0], arr.min(axis=0), arr.max(axis=0), active, saturated)
        self.add_hist(np.bincount(abs_hist_bins(arr).ravel(), minlength=ABS_HIST_BINS), arr.shape[0])

    def add_counts(self, n_points: int, ch_min: Any, ch_max: Any, active: Any = None,
                   saturated: Any = None) -> None:
        """Fold in the per-channel min, max and counts of ``n_points`` rows."""
        self.n_points += int(n_points)
        self.ch_min = np.minimum(self.ch_min, np.asarray(ch_min, dtype=np.float64))
        self.ch_max = np.maximum(self.ch_max, np.asarray(ch_max, dtype=np.float64))
        if self.active is not None:
            self.active = self.active + np.asarray(active, dtype=np.int64)
            self.saturated = self.saturated + np.asarray(saturated, dtype=np.int64)

    def add_hist(self, hist: Any, n_points: int) -> None:
        """Add a histogram of |x| on :data:`ABS_HIST_EDGES` taken over ``n_points`` rows."""
        self.abs_hist = self.abs_hist + np.asarray(hist, dtype=np.int64)
        self.hist_points += int(n_points)

    def merge(self, other: "Extent") -> "Extent":
        _check_same(self, other, ("n_channels", "kind", "pre"))
        out = Extent(self.n_channels, self.kind, pre=self.pre)
        for e in (self, other):
            out.add_counts(e.n_points, e.ch_min, e.ch_max, e.active, e.saturated)
            out.add_hist(e.abs_hist, e.hist_points)
        return out

    @property
    def active_fraction(self) -> np.ndarray | None:
        """Fraction of all rows where each channel is active, shape (C,) (None without a kind)."""
        return None if self.active is None else self.active / max(self.n_points, 1)

    def abs_quantile(self, q: float) -> float:
        """An upper bound of the ``q``-quantile of ``|x|`` over the histogram's values.

        The upper edge of the bin where the cumulative count reaches ``q`` of all values, at
        most ``max |x|`` (so ``q = 1`` gives the true absolute maximum); it exceeds the exact
        quantile by less than one bin (a factor of at most 1.125). NaN when empty.
        """
        if not 0 <= q <= 1:
            raise ValueError(f"The 'q' parameter of Extent.abs_quantile must be in [0, 1]. Got {q!r} instead.")
        total = int(self.abs_hist.sum())
        if total == 0:
            return float("nan")
        k = int(np.searchsorted(np.cumsum(self.abs_hist), q * total, side="left"))
        top = float(max(np.max(np.abs(self.ch_min)), np.max(np.abs(self.ch_max))))
        return min(float(ABS_HIST_EDGES[min(k, ABS_HIST_BINS - 1) + 1]), top)

    def state_dict(self) -> dict[str, Any]:
        out = {"n_channels": self.n_channels, "kind": self.kind or "", "pre": self.pre,
               "n_points": self.n_points, "ch_min": self.ch_min.copy(), "ch_max": self.ch_max.copy(),
               "abs_hist": self.abs_hist.copy(), "hist_points": self.hist_points}
        if self.active is not None:
            out.update(active=self.active.copy(), saturated=self.saturated.copy())
        return out

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "Extent":
        out = cls(int(state["n_channels"]), str(state["kind"]) or None, pre=bool(state["pre"]))
        out.n_points = int(state["n_points"])
        out.ch_min = np.array(state["ch_min"], dtype=np.float64)
        out.ch_max = np.array(state["ch_max"], dtype=np.float64)
        if out.active is not None:
            out.active = np.array(state["active"], dtype=np.int64)
            out.saturated = np.array(state["saturated"], dtype=np.int64)
        out.abs_hist = np.array(state["abs_hist"], dtype=np.int64)
        out.hist_points = int(state["hist_points"])
        return out

    def __repr__(self) -> str:
        return (f"Extent(n_channels={self.n_channels}, kind={self.kind!r}, pre={self.pre}, "
                f"n_points={self.n_points})")


class Reservoir:
    """Seeded uniform sample of at most ``k`` points with their ``(image, y, x)`` ids.

    Bottom-k sampling: every point gets the priority ``position_hash(seed, image, y // stride,
    x // stride)`` and the reservoir keeps the ``k`` points of smallest priority seen so far,
    sorted by priority. Because the priority is a function of the id alone, the sample is a
    uniform sample without replacement that does not depend on batch boundaries or on the order
    or split of shards, and merging is "keep the k smallest of the union".

    ``stride`` pairs reservoirs across the capture points of one block: ids are stored in the
    point's own spatial frame, while the priority hashes the position in the block's output
    frame ``(image, y // stride, x // stride)``. Points before a stride-s depthwise conv use
    ``stride=s`` and are offered only the positions ``(s*y_out, s*x_out)``; then every point of
    the block holds the same block-frame ids in the same order (see :meth:`block_ids`).

    State: ``values`` float32 (n, C), ``ids`` int64 (n, 3), ``priority`` uint64 (n,),
    ``n_seen`` (points offered).

    Parameters
    ----------
    n_channels : int
    k : int
        Maximum number of points kept (>= 0).
    seed : int
    stride : int
        Step between this point's frame and the block's output frame (>= 1).
    """

    SALT = 0x5EED

    def __init__(self, n_channels: int, k: int, *, seed: int = 0, stride: int = 1) -> None:
        self.n_channels = _check_channels(n_channels, "Reservoir")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"The 'k' parameter of Reservoir must be an int >= 0. Got {k!r} instead.")
        if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(
                f"The 'stride' parameter of Reservoir must be an int >= 1. Got {stride!r} instead."
            )
        self.k, self.seed, self.stride = int(k), int(seed), int(stride)
        self.n_seen = 0
        self.values = np.zeros((0, self.n_channels), dtype=np.float32)
        self.ids = np.zeros((0, 3), dtype=np.int64)
        self.priority = np.zeros(0, dtype=np.uint64)

    def priorities(self, ids: np.ndarray) -> np.ndarray:
        """Priorities of ``ids`` (int array of shape (n, 3)), uint64 of shape (n,)."""
        ids = np.asarray(ids, dtype=np.int64)
        return position_hash(self.seed, ids[:, 0], ids[:, 1] // self.stride, ids[:, 2] // self.stride,
                             salt=self.SALT)

    @property
    def threshold(self) -> np.uint64 | None:
        """Largest kept priority when full (a new point must be below it), else None."""
        return self.priority[-1] if len(self.priority) >= self.k and self.k > 0 else None

    def update(self, values: Any, ids: Any) -> None:
        """Offer points ``values`` (n, C) with ``ids`` (n, 3) = (image, y, x) in this point's frame."""
        vals = _as_points(values, "Reservoir.update", self.n_channels)
        ids = np.asarray(ids, dtype=np.int64)
        if ids.shape != (vals.shape[0], 3):
            raise ValueError(
                f"The 'ids' parameter of Reservoir.update must have shape ({vals.shape[0]}, 3). "
                f"Got shape {ids.shape} instead."
            )
        self.offer(vals, ids, self.priorities(ids), n_seen=vals.shape[0])

    def offer(self, values: Any, ids: np.ndarray, priority: np.ndarray, *, n_seen: int) -> None:
        """Add candidates with known priorities; ``n_seen`` counts all points they were drawn from.

        Candidates may be a pre-filtered subset of the offered points (those below
        :attr:`threshold`); the result is the same as offering all of them.
        """
        self.n_seen += int(n_seen)
        if len(priority) == 0 or self.k == 0:
            return
        values = np.concatenate([self.values, np.asarray(values, dtype=np.float32)])
        ids = np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)])
        priority = np.concatenate([self.priority, np.asarray(priority, dtype=np.uint64)])
        # Sort by priority; ties (hash collisions) by id, so the order never depends on arrival.
        order = np.lexsort((ids[:, 2], ids[:, 1], ids[:, 0], priority))[: self.k]
        self.values, self.ids, self.priority = values[order], ids[order], priority[order]

    def merge(self, other: "Reservoir") -> "Reservoir":
        """The k smallest-priority points of both reservoirs (ids must not overlap)."""
        _check_same(self, other, ("n_channels", "k", "seed", "stride"))
        out = Reservoir(self.n_channels, self.k, seed=self.seed, stride=self.stride)
        out.offer(self.values, self.ids, self.priority, n_seen=self.n_seen)
        out.offer(other.values, other.ids, other.priority, n_seen=other.n_seen)
        return out

    def block_ids(self) -> np.ndarray:
        """Ids in the block's output frame ``(image, y // stride, x // stride)``, shape (n, 3)."""
        out = self.ids.copy()
        out[:, 1:] //= self.stride
        return out

    def __len__(self) -> int:
        return len(self.priority)

    def state_dict(self) -> dict[str, Any]:
        return {"n_channels": self.n_channels, "k": self.k, "seed": self.seed, "stride": self.stride,
                "n_seen": self.n_seen, "values": self.values.copy(), "ids": self.ids.copy(),
                "priority": self.priority.copy()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "Reservoir":
        out = cls(int(state["n_channels"]), int(state["k"]), seed=int(state["seed"]),
                  stride=int(state["stride"]))
        out.n_seen = int(state["n_seen"])
        out.values = np.array(state["values"], dtype=np.float32).reshape(-1, out.n_channels)
        out.ids = np.array(state["ids"], dtype=np.int64).reshape(-1, 3)
        out.priority = np.array(state["priority"], dtype=np.uint64)
        return out

    def __repr__(self) -> str:
        return (f"Reservoir(n_channels={self.n_channels}, k={self.k}, seed={self.seed}, "
                f"stride={self.stride}, n={len(self)}, n_seen={self.n_seen})")


_Sink = TypeVar("_Sink", Moments, Activity, Extent, Reservoir)


def merge(a: _Sink, b: _Sink) -> _Sink:
    """``a.merge(b)``: the sink one pass over both streams would give."""
    return a.merge(b)
