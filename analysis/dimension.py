"""Intrinsic dimension of activation clouds: TwoNN and Levina-Bickel MLE.

A small implementation on exact nearest neighbours rather than the ``scikit-dimension``
package: the two estimators are a few lines each; scikit-dimension 0.5.0 implements the same
conventions (we checked its TwoNN and MLE agree with ours to 1e-12 on clouds without
duplicates) but rejects one-channel clouds, leaves duplicate points to the MLE
as zero distances (an infinite log), loops over points in Python, and would add a dependency.

Conventions
-----------
* Duplicate points are removed first (rows equal in every channel, -0.0 == 0.0, as
  ``np.unique(points, axis=0)`` finds them; the first occurrence is kept): a repeated point is
  one point of the manifold, and both estimators need r_1 > 0. On the distance-matrix route
  (below) :func:`intrinsic_dimension` reads the candidates off the matrix it searches for
  neighbours: only a point whose nearest distance is 0 or closer than
  :data:`CLOSE_NEIGHBOUR` of its norm can have an equal twin, and only those rows are
  compared (by hashing their bytes), instead of every row.
* Exact Euclidean k-nearest neighbours, a point is not its own neighbour. Clouds of at most
  :data:`DENSE_MAX` distinct points read them from their distance matrix
  (:func:`analysis.topology.distance_matrix`, the formula of scikit-learn's Euclidean
  distances): the k smallest of each row by ``np.partition``. A caller that holds that matrix
  already passes it as ``distances`` (the study shares it with the topology of the same cloud
  and with every half-sample of the redraw interval, which is a sub-matrix). Larger clouds use
  ``sklearn.neighbors.NearestNeighbors``. Both compute distances as
  sqrt(|x|^2 + |y|^2 - 2 x.y), which loses digits when a neighbour is much closer than the
  points' norms; the neighbour distances of a point whose nearest neighbour is closer than
  :data:`CLOSE_NEIGHBOUR` (1 %) of its norm are recomputed from direct differences (against
  every point on the matrix route; to the neighbours found, on the centred cloud, on the
  scikit-learn route), so that every distance used has a relative error below about 1e-12 and
  the two routes agree to that (tested).
* Where an estimate is undefined (too few distinct points; all neighbour distances equal) the
  value is NaN, and :func:`intrinsic_dimension` says why in its ``reasons`` dict (metric name to
  a one-line reason, only for NaN metrics).

Metric names (API): twonn_id, mle_id.

Spread over reservoir redraws (:func:`redraw_interval`)
-------------------------------------------------------
A point-cloud metric computed on a reservoir of n points changes when the reservoir is drawn
again (TwoNN by 0.1-0.3 on the digits networks). Drawing again means another pass over the
data, so the spread is estimated from the reservoir itself by the delete-half jackknife (Shao &
Wu 1989): the metric is recomputed on ``n_halves`` seeded random halves (n // 2 points without
replacement); for d = n/2 deleted points the jackknife variance factor (n - d) / d is 1, so
the standard deviation s of the half-sample values estimates the standard deviation of the
full-reservoir value over redraws. The interval is value +- t_{0.975, K-1} s (K = n_halves, a
t quantile because s comes from K values). Used by the study for ``twonn_id``, ``mle_id`` and
the int8 SQNR metrics (``<metric>_ci_low`` / ``<metric>_ci_high`` rows). With
``on_indices=True`` the metric function receives the half's row indices instead of its rows,
so that it can reuse work done on the whole reservoir (the study passes the half's sub-matrix
of the reservoir's distance matrix to :func:`intrinsic_dimension`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
from scipy import stats

from analysis.topology import check_distances, check_points, distance_matrix

__all__ = [
    "CLOSE_NEIGHBOUR", "DENSE_MAX", "REDRAW_HALVES", "intrinsic_dimension", "mle_dimension", "redraw_interval",
    "twonn_dimension",
]

#: Random halves of the reservoir behind each redraw interval.
REDRAW_HALVES = 4

#: Clouds of at most this many distinct points take their neighbours from the whole distance
#: matrix (32 MB at the limit); larger ones from scikit-learn's neighbour search.
DENSE_MAX = 2048


def redraw_interval(
    points: np.ndarray,
    func: Callable[[np.ndarray], Mapping[str, object]],
    values: Mapping[str, float],
    *,
    n_halves: int = REDRAW_HALVES,
    seed: int = 0,
    on_indices: bool = False,
) -> dict[str, tuple[float, float]]:
    """95 % interval of each metric over reservoir redraws, by the delete-half jackknife.

    Parameters
    ----------
    points : ndarray of shape (n_points, C)
        The reservoir.
    func : callable
        ``func(points) -> {name: value or MetricValue}``, the metrics to resample (with
        ``on_indices``: ``func(rows)``, rows an ascending int array of the half's indices).
    values : dict of str to float
        The metrics on the whole reservoir (the centre of each interval).
    n_halves : int >= 2
        Random halves (seeded by ``seed``).
    on_indices : bool, default False
        Call ``func`` with the half's row indices instead of ``points[rows]`` (the halves are
        the same).

    Returns
    -------
    dict of str to (low, high)
        value +- t_{0.975, K-1} s with s the standard deviation over the K halves (module
        docstring); (NaN, NaN) where the value or any half is not finite.
    """
    if isinstance(n_halves, bool) or not isinstance(n_halves, (int, np.integer)) or n_halves < 2:
        raise ValueError(f"The 'n_halves' parameter of redraw_interval must be an int >= 2. Got {n_halves!r} instead.")
    X = np.asarray(points)
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in values}
    for _ in range(n_halves):
        rows = np.sort(rng.choice(n, n // 2, replace=False))
        res = func(rows if on_indices else X[rows])
        for k in draws:
            v = res.get(k, math.nan)
            draws[k].append(float(getattr(v, "value", v)))
    t = float(stats.t.ppf(0.975, n_halves - 1))
    out = {}
    for k, vs in draws.items():
        arr, centre = np.asarray(vs), float(values[k])
        if not (np.all(np.isfinite(arr)) and math.isfinite(centre)):
            out[k] = (math.nan, math.nan)
            continue
        half = t * float(arr.std(ddof=1))
        out[k] = (centre - half, centre + half)
    return out


def _check_k(k: object, func: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"The 'k' parameter of {func} must be an int >= 2. Got {k!r} instead.")
    return int(k)


def _check_discard(discard_fraction: object, func: str) -> float:
    if isinstance(discard_fraction, bool) or not isinstance(discard_fraction, (int, float, np.floating)) or not (
        0.0 <= discard_fraction < 1.0
    ):
        raise ValueError(
            f"The 'discard_fraction' parameter of {func} must be a float in [0, 1). "
            f"Got {discard_fraction!r} instead."
        )
    return float(discard_fraction)


def _neighbour_distances(x: np.ndarray, k: int, distances: np.ndarray | None = None) -> np.ndarray:
    """Distances from each point to its k nearest other points, ascending, shape (n, k)."""
    if distances is None and x.shape[0] > DENSE_MAX:
        from sklearn.neighbors import NearestNeighbors

        # the formula's error scales with the norms: centre first; close rows then get exact
        # distances to the neighbours found (re-scanning every point would cost n per row)
        centred = x - x.mean(axis=0)
        near, idx = NearestNeighbors(n_neighbors=k).fit(centred).kneighbors()
        sq = np.einsum("ij,ij->i", centred, centred)
        for i in np.flatnonzero(near[:, 0] ** 2 < CLOSE_NEIGHBOUR**2 * sq):
            diff = x[idx[i]] - x[i]
            near[i] = np.sort(np.sqrt(np.einsum("ij,ij->i", diff, diff)))
        return near
    d = distance_matrix(x) if distances is None else distances.copy()
    np.fill_diagonal(d, np.inf)
    return _nearest_from_matrix(x, d, k)


def _nearest_from_matrix(x: np.ndarray, d: np.ndarray, k: int) -> np.ndarray:
    """k nearest distances per row of ``d`` (a copy the caller owns, diagonal set to inf)."""
    d.partition(k - 1, axis=1)
    return _exact_close_rows(x, np.sort(d[:, :k], axis=1), k)


def _distinct_by_neighbours(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """:func:`_distinct_rows` of ``x``, reading the candidates off its distance matrix ``d``.

    ``d`` is the cloud's :func:`distance_matrix` with an infinite diagonal. A point with an
    equal twin has its nearest distance 0 (a zero row: the formula gives exactly 0) or below
    ``CLOSE_NEIGHBOUR`` of its norm (the formula's error on a twin is ~ eps |x|^2, far below
    CLOSE_NEIGHBOUR^2 |x|^2). Only those candidates are compared row by row; the others are
    distinct from every point.
    """
    nearest = d.min(axis=1)
    sq = np.einsum("ij,ij->i", x, x)
    suspect = np.flatnonzero((nearest == 0) | (nearest**2 < CLOSE_NEIGHBOUR**2 * sq))
    n = x.shape[0]
    if len(suspect) < 2:
        return np.arange(n)
    first = suspect[_distinct_rows(x[suspect])]
    if len(first) == len(suspect):
        return np.arange(n)
    keep = np.ones(n, dtype=bool)
    keep[suspect] = False
    keep[first] = True
    return np.flatnonzero(keep)


#: A point whose nearest neighbour is closer than this fraction of its norm gets its neighbour
#: distances from direct differences (module docstring).
CLOSE_NEIGHBOUR = 1e-2


def _exact_close_rows(x: np.ndarray, near: np.ndarray, k: int) -> np.ndarray:
    # The matrix-product formula |x|^2 + |y|^2 - 2 x.y loses digits to cancellation: its
    # relative error on d is about eps |x|^2 / d^2 (1e-8 at d = 1e-4 |x|; a distinct pair can
    # even read 0). Rows whose nearest neighbour is closer than CLOSE_NEIGHBOUR |x| are
    # recomputed as ||x_i - x_j|| against every point (error eps); the others keep a relative
    # error below ~eps / CLOSE_NEIGHBOUR^2 = 2e-12. Activation clouds of real size rarely have
    # such rows; smooth small-image clouds (neighbouring positions) do.
    sq = np.einsum("ij,ij->i", x, x)
    close = np.flatnonzero(near[:, 0] ** 2 < CLOSE_NEIGHBOUR**2 * sq)
    for i in close:
        diff = x - x[i]
        row = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        row[i] = np.inf
        near[i] = np.sort(np.partition(row, k - 1)[:k])
    return near


def _twonn(dist: np.ndarray, discard_fraction: float) -> tuple[float, str | None]:
    n = dist.shape[0]
    mu = np.sort(dist[:, 1] / dist[:, 0])
    n_keep = int(n * (1.0 - discard_fraction))
    if n_keep < 2:
        return float("nan"), f"TwoNN keeps {n_keep} of {n} ratios (discard_fraction={discard_fraction}); needs 2"
    x = np.log(mu[:n_keep])
    y = -np.log(1.0 - np.arange(1, n_keep + 1) / n)
    sxx = float(x @ x)
    if sxx == 0.0:
        return float("nan"), "all kept nearest-neighbour ratios r2/r1 are 1 (equidistant neighbours)"
    return float(x @ y) / sxx, None


def _mle(dist: np.ndarray, k: int) -> tuple[float, str | None]:
    t = dist[:, :k]
    s = float(np.sum(np.log(t[:, -1:] / t[:, :-1])))
    if s == 0.0:
        return float("nan"), f"all {k} nearest-neighbour distances are equal at every point"
    return (k - 1) * t.shape[0] / s, None


def _distinct_rows(x: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct row, ascending."""
    # hashing each row's bytes is linear, np.unique(axis=0) sorts the rows; adding 0.0 turns
    # -0.0 into 0.0, which np.unique counts as equal
    rows = np.ascontiguousarray(x + 0.0)
    first: dict[bytes, int] = {}
    for i, row in enumerate(rows):
        first.setdefault(row.tobytes(), i)
    return np.fromiter(first.values(), dtype=np.int64, count=len(first))


def _unique(x: np.ndarray) -> np.ndarray:
    return x[_distinct_rows(x)]


def twonn_dimension(points: np.ndarray, *, discard_fraction: float = 0.1) -> float:
    """TwoNN intrinsic dimension (Facco et al. 2017; as used by Ansuini et al. 2019).

    With r1_i, r2_i the distances of point i to its first and second nearest neighbours,
    mu_i = r2_i / r1_i follows a Pareto law with F(mu) = 1 - mu^(-d). Sorting the N ratios and
    keeping the smallest m = floor((1 - discard_fraction) N), d is the least-squares slope
    through the origin of y_i = -log(1 - i / N) against x_i = log mu_(i):

        d = sum_i x_i y_i / sum_i x_i^2,   i = 1..m.

    Parameters
    ----------
    points : ndarray of shape (n_points, n_channels)
    discard_fraction : float in [0, 1), default 0.1
        Fraction of the largest ratios left out of the fit (the reference's 10 %).

    Returns
    -------
    d : float
        NaN when fewer than 3 distinct points remain or every kept ratio is 1.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2000, 3)) @ rng.normal(size=(3, 10))
    >>> round(twonn_dimension(x))
    3
    """
    func = "twonn_dimension"
    x = _unique(check_points(points, func))
    discard_fraction = _check_discard(discard_fraction, func)
    if x.shape[0] < 3:
        return float("nan")
    return _twonn(_neighbour_distances(x, 2), discard_fraction)[0]


def mle_dimension(points: np.ndarray, *, k: int = 20) -> float:
    """Levina-Bickel maximum-likelihood intrinsic dimension, MacKay-Ghahramani averaged.

    With T_j(x) the distance from x to its j-th nearest neighbour, the local estimate is
    m_k(x) = [1/(k-1) sum_{j=1}^{k-1} log(T_k(x) / T_j(x))]^(-1) (Levina & Bickel 2005), and
    the local estimates are combined by averaging their inverses (MacKay & Ghahramani 2005):

        m_k = [1/N sum_x 1 / m_k(x)]^(-1) = (k-1) N / sum_x sum_{j<k} log(T_k(x) / T_j(x)).

    Parameters
    ----------
    points : ndarray of shape (n_points, n_channels)
    k : int, default 20
        Neighbours per point, >= 2 (Levina & Bickel use 10-20).

    Returns
    -------
    d : float
        NaN when fewer than k + 1 distinct points remain or all distances are equal.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2000, 3)) @ rng.normal(size=(3, 10))
    >>> round(mle_dimension(x))
    3
    """
    func = "mle_dimension"
    x = _unique(check_points(points, func))
    k = _check_k(k, func)
    if x.shape[0] < k + 1:
        return float("nan")
    return _mle(_neighbour_distances(x, k), k)[0]


def intrinsic_dimension(
    points: np.ndarray, *, k: int = 20, discard_fraction: float = 0.1, distances: np.ndarray | None = None
) -> tuple[dict[str, float], dict[str, str]]:
    """TwoNN and MLE intrinsic dimension of one cloud, from one neighbour search.

    twonn_id: :func:`twonn_dimension`; mle_id: :func:`mle_dimension` (formulas there).

    Parameters
    ----------
    points : ndarray of shape (n_points, n_channels)
    k : int, default 20
        Neighbours for the MLE.
    discard_fraction : float in [0, 1), default 0.1
        Largest TwoNN ratios left out of the fit.
    distances : ndarray of shape (n_points, n_points), optional
        The cloud's :func:`analysis.topology.distance_matrix` (duplicates included), when the
        caller holds it already; the neighbours are read from it whatever the cloud's size.

    Returns
    -------
    metrics : dict
        ``{'twonn_id': float, 'mle_id': float}``.
    reasons : dict
        Metric name to why it is NaN; empty when both are defined.

    Examples
    --------
    >>> metrics, reasons = intrinsic_dimension(np.zeros((10, 4)))
    >>> metrics["twonn_id"], reasons["twonn_id"]
    (nan, 'needs at least 3 distinct points; got 1')
    """
    func = "intrinsic_dimension"
    x = check_points(points, func)
    if distances is not None:
        distances = check_distances(distances, x.shape[0], func)
    k = _check_k(k, func)
    discard_fraction = _check_discard(discard_fraction, func)
    d = None
    if distances is not None or x.shape[0] <= DENSE_MAX:
        # duplicates are found from the same distance matrix the neighbours are read from
        d = distance_matrix(x) if distances is None else distances.copy()
        np.fill_diagonal(d, np.inf)
        keep = _distinct_by_neighbours(x, d)
        if len(keep) < x.shape[0]:
            x = x[keep]
            if distances is None:
                d = distance_matrix(x)
                np.fill_diagonal(d, np.inf)
            else:
                d = d[np.ix_(keep, keep)]
    else:
        x = _unique(x)
    n = x.shape[0]
    metrics = {"twonn_id": float("nan"), "mle_id": float("nan")}
    reasons: dict[str, str] = {}
    if n >= 3:
        kk = min(max(k, 2), n - 1)
        dist = _neighbour_distances(x, kk) if d is None else _nearest_from_matrix(x, d, kk)
        metrics["twonn_id"], why = _twonn(dist, discard_fraction)
        if why:
            reasons["twonn_id"] = why
        if n >= k + 1:
            metrics["mle_id"], why = _mle(dist, k)
            if why:
                reasons["mle_id"] = why
    else:
        reasons["twonn_id"] = f"needs at least 3 distinct points; got {n}"
    if n < k + 1:
        reasons["mle_id"] = f"needs at least k + 1 = {k + 1} distinct points; got {n}"
    return metrics, reasons
