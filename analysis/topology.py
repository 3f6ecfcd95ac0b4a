"""Persistent homology of activation clouds: diagrams, significant Betti numbers, distances.

Pipeline of :func:`persistent_homology` (ripser for homology, scipy's compiled matchings for exact diagram
distances):

1. Optional greedy-permutation (farthest-point) subsample of ``n_perm`` points
   (:func:`greedy_permutation`): the first point is point 0, each next one is the point farthest
   from those already chosen, exactly as ripser's own ``n_perm`` option picks them, but
   vectorised (the cloud's Gram matrix from one matrix product, then the distances of the
   ``n_perm`` rows picked only, by the operations of :func:`distance_matrix` in its order, so
   equal to that matrix's rows bit for bit; instead of one scikit-learn ``pairwise_distances``
   call per chosen point; a caller that already holds the whole matrix, e.g. for the
   intrinsic dimension of the same cloud, passes it as ``distances``, with the same result).
   It returns the covering radius
   r_cover = max_x min_p ||x - p|| (the Hausdorff distance from the subsample to the cloud),
   which bounds the error: by Rips stability (Chazal, de Silva & Oudot 2014) the subsample's
   diagram is within bottleneck distance 2 r_cover of the full cloud's. Greedy subsamples cover
   thin parts of a cloud that a uniform random subsample of the same size misses (a torus from
   250 random points loses its H2 bar; from 250 greedy points it keeps it). Ripser then runs on
   the subsample's precomputed distance matrix, which is what its ``n_perm`` path does too.
2. Vietoris-Rips persistence (ripser, Euclidean distance, Z/2 coefficients, filtration value =
   edge length, no truncation), H0..H``maxdim``.
3. Scale normalisation: every diagram is divided by the cloud's scale s, so that diagrams of
   clouds of different size (capture points with different channel counts and norms) are
   comparable, and the thresholds below are fractions of s. Dividing the diagrams equals
   running ripser on x / s, because Rips diagrams scale with the metric. Default
   (``normalize='rms'``): the RMS distance to the centroid of the full cloud,
   s = sqrt(1/n sum_i ||x_i - mean(x)||^2) (= radius for a circle or sphere; mean squared
   pairwise distance is 2 s^2); O(n C), so it adds nothing noticeable to ripser's cost.
   ``'median'``: the median pairwise distance between the points given to ripser (read from
   the distance matrix ripser already computed). ``None``: no normalisation.

Conventions
-----------
* Infinite bars: a full Rips filtration has exactly one infinite bar, in H0 (the connected
  cloud). It is kept in ``diagrams[0]`` as (0, inf), counted by ``betti0`` and excluded from
  every sum and distance (total persistence, entropy, bottleneck, Wasserstein).
* Significant bars: persistence d - b > ``threshold`` with
  threshold = max(min_persistence, 2 r_cover / s). ``min_persistence`` (default 0.25) is a
  fraction of the scale s; the second term applies only when subsampling: bars of a greedy
  subsample shorter than about 2 r_cover are at its sampling resolution (its points are at
  least r_cover apart, so all its H0 bars are at least r_cover long).
* Degenerate clouds (one point, all points equal; s = 0): diagrams are not divided; they are a
  single infinite H0 bar, so betti0 = 1, higher Betti numbers and total persistence are 0.
* ``reasons``: maps a metric name to a one-line reason, only for metrics that are NaN
  (e.g. persistence entropy of a diagram without bars).

Metric names (API): betti0, betti1, betti2 (if maxdim >= 2), total_persistence_h1,
persistence_entropy_h1, and with a reference diagram (the block input's) bottleneck_to_input_h1
and wasserstein_to_input_h1.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

__all__ = [
    "TopologyResult",
    "betti_numbers",
    "cloud_scale",
    "diagram_distances",
    "distance_matrix",
    "greedy_permutation",
    "persistence_entropy",
    "persistent_homology",
    "total_persistence",
    "with_reference",
]

Normalize = Literal["rms", "median"] | None

#: Clouds of at most this many points get their whole distance matrix at once (32 MB at the
#: limit) in :func:`greedy_permutation`; larger ones one row per chosen point.
DENSE_GREEDY_MAX = 2048


@dataclasses.dataclass(frozen=True)
class TopologyResult:
    """Persistence diagrams of one cloud and the metrics read from them.

    Attributes
    ----------
    diagrams : list of ndarray of shape (n_bars_k, 2)
        (birth, death) of H0..H``maxdim`` in units of ``scale``; ``diagrams[0]`` holds the one
        infinite bar as (0, inf).
    metrics : dict of str to float
        betti0.., total_persistence_h1, persistence_entropy_h1 and, with a reference,
        bottleneck_to_input_h1, wasserstein_to_input_h1.
    reasons : dict of str to str
        Why a metric is NaN (only NaN metrics appear).
    scale : float
        The scale s the diagrams were divided by (1.0 for ``normalize=None``; 0.0 for a
        degenerate cloud, whose diagrams are left as they are).
    threshold : float
        Persistence above which a bar is significant, in units of ``scale``.
    cover_radius : float
        r_cover / s, the Hausdorff distance from the points used to the whole cloud, in units
        of ``scale``; 0 without subsampling.
    idx_perm : ndarray of shape (n_used,)
        Indices of the points the diagrams were computed on (greedy order when subsampled).
    n_points : int
        Number of points in the input cloud.
    """

    diagrams: list[np.ndarray]
    metrics: dict[str, float]
    reasons: dict[str, str]
    scale: float
    threshold: float
    cover_radius: float
    idx_perm: np.ndarray
    n_points: int


def check_points(points: np.ndarray, func: str, name: str = "points") -> np.ndarray:
    """``points`` as a finite float64 (n_points, n_channels) array, else a ValueError naming ``func``."""
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(
            f"The '{name}' parameter of {func} must be an array of shape (n_points, n_channels) "
            f"with n_points >= 1 and n_channels >= 1. Got shape {np.shape(points)} instead."
        )
    if not np.all(np.isfinite(x)):
        bad = int(np.sum(~np.isfinite(x).all(axis=1)))
        raise ValueError(
            f"The '{name}' parameter of {func} must be finite. Got {bad} point(s) with NaN or Inf instead."
        )
    return x


def _check_diagram(diagram: np.ndarray, func: str, name: str) -> np.ndarray:
    d = np.asarray(diagram, dtype=np.float64)
    if d.size == 0:
        return np.zeros((0, 2))
    if d.ndim != 2 or d.shape[1] != 2:
        raise ValueError(
            f"The '{name}' parameter of {func} must be a diagram of shape (n_bars, 2). "
            f"Got shape {np.shape(diagram)} instead."
        )
    if np.any(np.isnan(d)) or np.any(d[:, 1] < d[:, 0]):
        raise ValueError(
            f"The '{name}' parameter of {func} must hold (birth, death) pairs without NaN and "
            f"with death >= birth. Got {d[np.isnan(d).any(axis=1) | (d[:, 1] < d[:, 0])][:3].tolist()} instead."
        )
    return d


def _finite_bars(diagram: np.ndarray) -> np.ndarray:
    return diagram[np.isfinite(diagram[:, 1])]


def cloud_scale(points: np.ndarray, method: Literal["rms"] = "rms") -> float:
    """RMS distance of a cloud's points to its centroid.

    s = sqrt(1/n sum_i ||x_i - mean(x)||^2), the square root of the covariance trace (biased).
    It is 1 for points on a unit circle or sphere, and the mean squared pairwise distance is
    2 s^2.

    Parameters
    ----------
    points : ndarray of shape (n_points, n_channels)
    method : {'rms'}

    Returns
    -------
    scale : float

    Examples
    --------
    >>> cloud_scale(np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    1.0
    """
    if method != "rms":
        raise ValueError(f"The 'method' parameter of cloud_scale must be 'rms'. Got {method!r} instead.")
    return _rms_scale(check_points(points, "cloud_scale"))


def _rms_scale(x: np.ndarray) -> float:
    centred = x - x.mean(axis=0)
    return float(np.sqrt(np.einsum("ij,ij->", centred, centred) / x.shape[0]))


def betti_numbers(diagrams: list[np.ndarray], threshold: float) -> list[int]:
    """Significant Betti numbers: bars whose persistence exceeds ``threshold``.

    b_k = #{(b, d) in diagram_k : d - b > threshold}; infinite bars count.

    Parameters
    ----------
    diagrams : list of ndarray of shape (n_bars_k, 2)
    threshold : float >= 0

    Returns
    -------
    betti : list of int, one per diagram

    Examples
    --------
    >>> betti_numbers([np.array([[0.0, np.inf], [0.0, 0.1]]), np.array([[0.2, 1.5]])], 0.25)
    [1, 1]
    """
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(
            f"The 'threshold' parameter of betti_numbers must be a float >= 0. Got {threshold!r} instead."
        )
    out = []
    for k, dgm in enumerate(diagrams):
        d = _check_diagram(dgm, "betti_numbers", f"diagrams[{k}]")
        out.append(int(np.sum(d[:, 1] - d[:, 0] > threshold)))
    return out


def total_persistence(diagram: np.ndarray) -> float:
    """Total persistence of the finite bars: sum_i (d_i - b_i).

    Parameters
    ----------
    diagram : ndarray of shape (n_bars, 2)
        Infinite bars are excluded.

    Returns
    -------
    total : float
        0.0 for a diagram without finite bars.

    Examples
    --------
    >>> total_persistence(np.array([[0.0, 1.0], [0.5, 0.75], [0.0, np.inf]]))
    1.25
    """
    d = _finite_bars(_check_diagram(diagram, "total_persistence", "diagram"))
    return float(np.sum(d[:, 1] - d[:, 0]))


def persistence_entropy(diagram: np.ndarray) -> float:
    """Persistence entropy of the finite bars (Rucco et al. 2015; as persim computes it).

    E = -sum_i p_i log p_i with p_i = l_i / sum_j l_j, l_i = d_i - b_i over the finite bars with
    l_i > 0 (natural log, not normalised). 0 for one bar, log m for m equal bars.

    Parameters
    ----------
    diagram : ndarray of shape (n_bars, 2)

    Returns
    -------
    entropy : float
        NaN when there is no finite bar with positive persistence (the distribution p is
        undefined).

    Examples
    --------
    >>> round(persistence_entropy(np.array([[0.0, 1.0], [0.0, 1.0]])), 6)
    0.693147
    """
    d = _finite_bars(_check_diagram(diagram, "persistence_entropy", "diagram"))
    life = d[:, 1] - d[:, 0]
    life = life[life > 0]
    if len(life) == 0:
        return float("nan")
    p = life / life.sum()
    return float(-np.sum(p * np.log(p)))


def _off_diagonal(d: np.ndarray) -> np.ndarray:
    # bars of zero length cost nothing in either distance (matched to the diagonal); they would
    # only add nodes to the matchings
    return d[d[:, 1] > d[:, 0]]


def diagram_distances(diagram: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Bottleneck and 1-Wasserstein distance between two diagrams, both exact.

    bottleneck = min over matchings g of max_p ||p - g(p)||_inf;
    wasserstein = min over matchings g of sum_p ||p - g(p)||_2 (persim's convention: p = 1,
    Euclidean ground metric), where g may match a point to its projection on the diagonal
    (distance (d - b) / 2 in L_inf, (d - b) / sqrt(2) in L_2). Infinite bars are excluded.

    Both are exact (no approximation parameter):

    * bottleneck: the distance is at most r exactly when the bipartite graph
      {(p, q) : ||p - q||_inf <= r} has a matching that covers every point of either diagram
      with (d - b) / 2 > r (the rest may go to the diagonal). By the Mendelsohn-Dulmage theorem
      a matching covering those of one diagram and one covering those of the other give one
      covering both, so two one-sided maximum matchings
      (``scipy.sparse.csgraph.maximum_bipartite_matching``, Hopcroft-Karp) decide it, and only
      points far from the diagonal take part. The distance is one of the pair and diagonal
      costs, at least the largest over points of min(diagonal cost, nearest partner). That
      lower bound is tried first (on the study's diagrams it is usually the answer: one long
      bar sets the distance); only when its matching check fails is the smallest feasible
      cost found by bisection over the candidates above it, without the pairs that cost at
      least both their diagonal costs (matching both to the diagonal costs no more, so they
      are never needed: the graph and the candidates shrink, the answer does not change).
      Before a matching is run, Hall's condition on the whole side is checked (no more points
      to cover than partners they reach), which rejects many infeasible r at once.
    * wasserstein: matching p with q instead of sending both to the diagonal saves
      s(p, q) = delta(p) + delta(q) - ||p - q||_2 (delta: the diagonal cost), so the distance is
      sum delta minus the largest total saving of a partial matching, and only pairs with
      s > 0 are worth matching. One dense maximum-weight assignment
      (``scipy.optimize.linear_sum_assignment``, savings clipped at 0) on the points that have
      such a pair solves it; an assigned pair with s <= 0 is sent to the diagonal instead.
      ||p - q||_2 is computed only for the pairs whose L_inf distance (shared with the
      bottleneck) is below delta(p) + delta(q); the others cannot save anything.

    Both agree with hera's exact bottleneck (``gudhi.hera.bottleneck_distance(delta=0)``), with
    POT's optimal transport (``gudhi.wasserstein``) and with persim to float rounding (tested,
    gudhi and POT are test dependencies only). On the study's H1 diagrams (hundreds of short
    bars) the bottleneck is about ten times faster than hera's and the Wasserstein distance
    several times faster than POT's network simplex.

    Parameters
    ----------
    diagram, reference : ndarray of shape (n_bars, 2)

    Returns
    -------
    distances : dict with keys 'bottleneck' and 'wasserstein'

    Examples
    --------
    >>> d = diagram_distances(np.array([[0.0, 1.0]]), np.zeros((0, 2)))
    >>> d["bottleneck"], round(d["wasserstein"], 6)
    (0.5, 0.707107)
    """
    a = _off_diagonal(_finite_bars(_check_diagram(diagram, "diagram_distances", "diagram")))
    b = _off_diagonal(_finite_bars(_check_diagram(reference, "diagram_distances", "reference")))
    if len(a) == 0 or len(b) == 0:
        return {"bottleneck": _bottleneck(a, b), "wasserstein": _wasserstein(a, b)}
    linf, work = _pair_costs(a, b)
    # the Wasserstein distance first: the bottleneck overwrites both arrays
    wasserstein = _wasserstein(a, b, linf, work)
    return {"bottleneck": _bottleneck(a, b, linf, work), "wasserstein": wasserstein}


def _pair_costs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """L_inf distance ||a_i - b_j||_inf of every pair, and a work array of the same shape.

    Both distances read the one L_inf matrix, and their n x m intermediates are written into
    these two arrays instead of fresh ones."""
    linf = np.subtract.outer(a[:, 0], b[:, 0])
    np.abs(linf, out=linf)
    work = np.subtract.outer(a[:, 1], b[:, 1])
    np.abs(work, out=work)
    np.maximum(linf, work, out=linf)
    return linf, work


def _covers_rows(adjacent: np.ndarray) -> bool:
    """Whether the bipartite graph (rows x columns, boolean adjacency) matches every row."""
    from scipy import sparse
    from scipy.sparse.csgraph import maximum_bipartite_matching

    k, m = adjacent.shape
    if k == 0:
        return True
    degree = np.count_nonzero(adjacent, axis=1)
    # Hall's condition for single rows and for all rows together: cheap necessary checks
    if degree.min() == 0 or np.count_nonzero(adjacent.any(axis=0)) < k:
        return False
    # and a sufficient one: a set S of rows reaches at least min degree >= k >= |S| columns
    if degree.min() >= k:
        return True
    # the CSR arrays written directly (scipy's conversion of a dense matrix costs several times
    # the matching)
    indptr = np.zeros(k + 1, dtype=np.int32)
    np.cumsum(degree, out=indptr[1:])
    cols = np.nonzero(adjacent)[1].astype(np.int32)
    graph = sparse.csr_matrix((np.ones(len(cols), dtype=np.int8), cols, indptr), shape=(k, m))
    match = maximum_bipartite_matching(graph, perm_type="column")
    return bool(np.all(match >= 0))


def _bottleneck(a: np.ndarray, b: np.ndarray, linf: np.ndarray | None = None,
                work: np.ndarray | None = None) -> float:
    # Matching p to the diagonal costs half its persistence; the distance is at most r exactly
    # when the graph "||p - q||_inf <= r" has a matching that covers every point of either
    # diagram farther than r from the diagonal. A matching covering those of `a` and one
    # covering those of `b` give one covering both (Mendelsohn-Dulmage), so two one-sided
    # maximum matchings decide it. A pair that costs at least both its diagonal costs is never
    # needed (matching both to the diagonal costs no more), so the graph and the candidate
    # costs keep only the other pairs. The distance is one of the candidate costs, at least
    # the lower bound `low`; `low` is checked first, and only if it fails is the smallest
    # feasible candidate above it found by bisection (medians by selection, not a full sort).
    # `linf` and `work` (from _pair_costs) are overwritten.
    da = (a[:, 1] - a[:, 0]) / 2.0
    db = (b[:, 1] - b[:, 0]) / 2.0
    if len(a) == 0 or len(b) == 0:
        return float(max(da.max(initial=0.0), db.max(initial=0.0)))
    if linf is None or work is None:
        linf, work = _pair_costs(a, b)
    cost = linf
    # every point pays at least min(its diagonal cost, its nearest partner); all to the diagonal
    # is always feasible
    low = max(np.minimum(da, cost.min(axis=1)).max(), np.minimum(db, cost.min(axis=0)).max())
    best = max(da.max(), db.max())
    if low >= best:
        return float(best)

    def feasible(r: float) -> bool:
        return _covers_rows(cost[da > r] <= r) and _covers_rows((cost[:, db > r] <= r).T)

    if feasible(low):
        # low is one of the candidate costs (a diagonal cost or a pair cost), so it is the answer
        return float(low)
    # the pairs not needed leave the graph (feasibility is the same without them) and the candidates
    np.maximum.outer(da, db, out=work)
    np.putmask(cost, cost >= work, np.inf)
    flat = cost.ravel()
    cand = np.concatenate([flat[(flat > low) & (flat < best)], da[(da > low) & (da < best)],
                           db[(db > low) & (db < best)]])
    while len(cand):
        r = np.partition(cand, len(cand) // 2)[len(cand) // 2]
        if feasible(r):
            best, cand = r, cand[cand < r]
        else:
            cand = cand[cand > r]
    return float(best)


def _wasserstein(a: np.ndarray, b: np.ndarray, linf: np.ndarray | None = None,
                 work: np.ndarray | None = None) -> float:
    # Every point goes to the diagonal (cost delta(p)) unless matched to a partner q; matching
    # (p, q) saves s(p, q) = delta(p) + delta(q) - ||p - q||_2 over sending both to the
    # diagonal. So W = sum delta - max over partial matchings of the summed savings, and only
    # pairs with s > 0 are worth matching: a dense maximum-weight assignment
    # (scipy.optimize.linear_sum_assignment, rectangular, savings clipped at 0) on the points
    # that have at least one such pair gives the optimum; assigned pairs with s <= 0 go to the
    # diagonal. The distance is summed as the augmented-graph matching reads it: matched pairs
    # in the order of a's points, then a's and b's unmatched points in their order.
    # ||p - q||_2 (np.hypot, the costly part) is computed only for the pairs whose L_inf
    # distance is below delta(p) + delta(q): the others cannot save (||.||_2 >= ||.||_inf).
    # `work` (from _pair_costs) is overwritten.
    from scipy.optimize import linear_sum_assignment

    n, m = len(a), len(b)
    da = (a[:, 1] - a[:, 0]) / np.sqrt(2.0)
    db = (b[:, 1] - b[:, 0]) / np.sqrt(2.0)
    if n == 0 or m == 0:
        return float(da.sum() + db.sum())
    if linf is None or work is None:
        linf, work = _pair_costs(a, b)
    both = np.add.outer(da, db, out=work)
    # the factor keeps the screen safe by a wide margin against a hypot rounded an ulp low
    both *= 1.0 + 2.0**-40
    i, j = np.divmod(np.flatnonzero(linf < both), m)
    a0, a1, b0, b1 = (np.ascontiguousarray(v) for v in (a[:, 0], a[:, 1], b[:, 0], b[:, 1]))
    saving = da.take(i) + db.take(j)
    saving -= np.hypot(a0.take(i) - b0.take(j), a1.take(i) - b1.take(j))
    positive = saving > 0
    i, j, saving = i[positive], j[positive], saving[positive]
    in_rows, in_cols = np.zeros(n, dtype=bool), np.zeros(m, dtype=bool)
    in_rows[i], in_cols[j] = True, True
    rows, cols = np.flatnonzero(in_rows), np.flatnonzero(in_cols)
    # minus the savings (clipped at 0: pairs without a saving hold -0.0), written into `work`:
    # exactly the matrix linear_sum_assignment(savings, maximize=True) would negate in a copy
    cost = work.ravel()[: len(rows) * len(cols)].reshape(len(rows), len(cols))
    cost.fill(-0.0)
    rank_r, rank_c = np.cumsum(in_rows) - 1, np.cumsum(in_cols) - 1
    cost.ravel()[rank_r.take(i) * len(cols) + rank_c.take(j)] = -saving
    r, c = linear_sum_assignment(cost)
    keep = cost[r, c] < 0
    i, j = rows[r[keep]], cols[c[keep]]
    free_a, free_b = np.ones(n, dtype=bool), np.ones(m, dtype=bool)
    free_a[i], free_b[j] = False, False
    return float(np.hypot(a0[i] - b0[j], a1[i] - b1[j]).sum() + da[free_a].sum() + db[free_b].sum())


def greedy_permutation(
    points: np.ndarray, n_perm: int, *, distances: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Farthest-point (greedy) permutation of a cloud, as ripser's ``n_perm`` option makes it.

    p_0 = 0; p_k = argmax_x min_{j<k} ||x - x_{p_j}|| (the first maximiser on ties, like
    ``np.argmax``). Distances are computed as ripser's scikit-learn call does,
    sqrt(max(|x|^2 + |y|^2 - 2 x.y, 0)), with the distance of a point to itself set to 0, so
    the same points are picked (up to exact ties of float64 rounding).

    Parameters
    ----------
    points : ndarray of shape (n_points, n_channels)
    n_perm : int
        Number of points to pick, 1 <= n_perm <= n_points.
    distances : ndarray of shape (n_points, n_points), optional
        The cloud's :func:`distance_matrix`, when the caller has it already; otherwise it is
        computed (clouds of at most ``DENSE_GREEDY_MAX`` points) or one row per chosen point.

    Returns
    -------
    idx_perm : ndarray of shape (n_perm,)
        Indices of the chosen points, in greedy order.
    dperm2all : ndarray of shape (n_perm, n_points)
        Distances from each chosen point to every point.
    r_cover : float
        max_x min_j ||x - x_{p_j}||, the covering radius of the subsample.

    Examples
    --------
    >>> idx, _, r = greedy_permutation(np.array([[0.0], [1.0], [10.0], [4.0]]), 3)
    >>> idx.tolist(), r
    ([0, 2, 3], 1.0)
    """
    x = check_points(points, "greedy_permutation")
    n = x.shape[0]
    n_perm = _check_int(n_perm, "greedy_permutation", "n_perm", 1)
    if n_perm > n:
        raise ValueError(
            f"The 'n_perm' parameter of greedy_permutation must be an int <= n_points ({n}). "
            f"Got {n_perm} instead."
        )
    full = None if distances is None else check_distances(distances, n, "greedy_permutation")
    return _greedy(x, n_perm, full)


def _greedy(x: np.ndarray, n_perm: int, full: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, float]:
    """:func:`greedy_permutation` of a checked cloud ``x``, from its distance matrix ``full`` if given."""
    n = x.shape[0]
    idx = np.zeros(n_perm, dtype=np.int64)
    if full is not None:
        nearest = full[0].copy()
        for k in range(1, n_perm):
            i = int(np.argmax(nearest))
            idx[k] = i
            np.minimum(nearest, full[i], out=nearest)
        return idx, full[idx], float(nearest.max())
    sq = np.einsum("ij,ij->i", x, x)
    dperm2all = np.empty((n_perm, n))
    if n <= DENSE_GREEDY_MAX:
        # The Gram matrix x x^T from one matrix product (numpy's syrk: a tenth of the time of
        # n_perm matrix-vector products), but the distances only of the rows picked: each row is
        # computed by the operations of distance_matrix in the same order, so it equals the
        # matrix's row bit for bit and the points picked are those picked from the matrix
        # (a caller that shares the matrix gets the same result); the n x n square roots of
        # the whole matrix are skipped.
        gram = x @ x.T

        def row(i: int, out: np.ndarray) -> np.ndarray:
            np.multiply(gram[i], -2.0, out=out)
            out += sq[i]
            out += sq
            np.maximum(out, 0.0, out=out)
            np.sqrt(out, out=out)
            out[i] = 0.0
            return out
    else:
        def row(i: int, out: np.ndarray) -> np.ndarray:
            np.dot(x, x[i], out=out)
            out *= -2.0
            out += sq
            out += sq[i]
            np.maximum(out, 0.0, out=out)
            np.sqrt(out, out=out)
            out[i] = 0.0
            return out

    nearest = row(0, dperm2all[0]).copy()
    for k in range(1, n_perm):
        i = int(np.argmax(nearest))
        idx[k] = i
        np.minimum(nearest, row(i, dperm2all[k]), out=nearest)
    return idx, dperm2all, float(nearest.max())


def distance_matrix(points: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix of a cloud, with a zero diagonal.

    D_ij = sqrt(max(|x_i|^2 + |x_j|^2 - 2 x_i.x_j, 0)) from one matrix product (the formula of
    scikit-learn's ``euclidean_distances`` and of ripser's greedy permutation).

    Parameters
    ----------
    points : ndarray of shape (n_points, n_channels)

    Returns
    -------
    distances : ndarray of shape (n_points, n_points)

    Examples
    --------
    >>> distance_matrix(np.array([[0.0, 0.0], [3.0, 4.0]])).tolist()
    [[0.0, 5.0], [5.0, 0.0]]
    """
    x = check_points(points, "distance_matrix")
    sq = np.einsum("ij,ij->i", x, x)
    d2 = x @ x.T
    d2 *= -2.0
    d2 += sq[:, None]
    d2 += sq[None, :]
    np.maximum(d2, 0.0, out=d2)
    np.sqrt(d2, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def check_distances(distances: np.ndarray, n_points: int, func: str) -> np.ndarray:
    """``distances`` as a float64 (n_points, n_points) array, else a ValueError naming ``func``."""
    d = np.asarray(distances, dtype=np.float64)
    if d.shape != (n_points, n_points):
        raise ValueError(
            f"The 'distances' parameter of {func} must be the cloud's distance matrix of shape "
            f"({n_points}, {n_points}). Got shape {np.shape(distances)} instead."
        )
    return d


def _check_int(value: object, func: str, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"The '{name}' parameter of {func} must be an int >= {minimum}. Got {value!r} instead.")
    return int(value)


def persistent_homology(
    points: np.ndarray,
    *,
    maxdim: int = 1,
    n_perm: int | None = None,
    normalize: Normalize = "rms",
    min_persistence: float = 0.25,
    reference: TopologyResult | np.ndarray | None = None,
    distances: np.ndarray | None = None,
) -> TopologyResult:
    """Scale-normalised Rips persistence of a cloud and its topology metrics.

    See the module docstring for the subsampling, normalisation, threshold and infinite-bar
    conventions. Metrics (diagrams D_k in units of the scale s, threshold tau):

    * betti_k = #{(b, d) in D_k : d - b > tau}, k = 0..maxdim (infinite bars count)
    * total_persistence_h1 = sum_{(b, d) in D_1} (d - b)
    * persistence_entropy_h1 = -sum p_i log p_i, p_i = (d_i - b_i) / total_persistence_h1
    * bottleneck_to_input_h1, wasserstein_to_input_h1: :func:`diagram_distances` between D_1
      and the reference's H1 diagram (only when ``reference`` is given)

    Parameters
    ----------
    points : ndarray of shape (n_points, n_channels)
        One point per row (a sample unit's channel vector).
    maxdim : int, default 1
        Highest homology dimension, >= 1. H2 (``maxdim=2``) costs far more than H1: keep
        ``n_perm`` at a few hundred points.
    n_perm : int or None, default None
        Greedy-permutation subsample size (>= 1); None, or >= n_points, uses every point.
        Without it ripser holds an n x n distance matrix and its time grows steeply with n
        (H0+H1 of 2,000 points in 64 dims: minutes); a few hundred points take about a second.
    normalize : {'rms', 'median'} or None, default 'rms'
        How the scale s is measured (module docstring).
    min_persistence : float, default 0.25
        Fraction of s above which a bar is significant (the threshold is raised to
        2 r_cover / s when subsampling).
    reference : TopologyResult or ndarray of shape (n_bars, 2), optional
        The block input's result (its H1 diagram is used) or an H1 diagram in the same
        normalised units.
    distances : ndarray of shape (n_points, n_points), optional
        The cloud's :func:`distance_matrix`, when the caller holds it already (the study
        shares it with the intrinsic dimension); the result is the same as without it.

    Returns
    -------
    result : TopologyResult

    Examples
    --------
    >>> t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    >>> res = persistent_homology(np.c_[np.cos(t), np.sin(t)])
    >>> res.metrics["betti0"], res.metrics["betti1"]
    (1.0, 1.0)
    """
    from ripser import ripser

    func = "persistent_homology"
    x = check_points(points, func)
    maxdim = _check_int(maxdim, func, "maxdim", 1)
    if n_perm is not None:
        n_perm = _check_int(n_perm, func, "n_perm", 1)
    if normalize not in ("rms", "median", None):
        raise ValueError(
            f"The 'normalize' parameter of {func} must be 'rms', 'median' or None. Got {normalize!r} instead."
        )
    if isinstance(min_persistence, bool) or not np.isfinite(min_persistence) or min_persistence < 0:
        raise ValueError(
            f"The 'min_persistence' parameter of {func} must be a float >= 0. Got {min_persistence!r} instead."
        )
    ref_h1 = None
    if reference is not None:
        if isinstance(reference, TopologyResult):
            ref_h1 = reference.diagrams[1]
        else:
            ref_h1 = _finite_bars(_check_diagram(reference, func, "reference"))

    n = x.shape[0]
    if distances is not None:
        distances = check_distances(distances, n, func)
    subsample = n_perm is not None and n_perm < n
    if subsample:
        idx_perm, dperm2all, r_cover = _greedy(x, n_perm, distances)
        dm = dperm2all[:, idx_perm]
    else:
        idx_perm, r_cover = np.arange(n), 0.0
        dm = distance_matrix(x) if distances is None else distances
    res = ripser(dm, maxdim=maxdim, distance_matrix=True)

    if normalize == "rms":
        scale = _rms_scale(x)
    elif normalize == "median":
        iu = np.triu_indices(dm.shape[0], k=1)
        scale = float(np.median(dm[iu])) if len(iu[0]) else 0.0
    else:
        scale = 1.0
    divisor = scale if scale > 0 else 1.0
    diagrams = [np.asarray(d, dtype=np.float64) / divisor for d in res["dgms"]]
    cover = float(r_cover) / divisor
    threshold = max(float(min_persistence), 2.0 * cover)

    metrics: dict[str, float] = {}
    reasons: dict[str, str] = {}
    for k, b in enumerate(betti_numbers(diagrams, threshold)):
        metrics[f"betti{k}"] = float(b)
    metrics["total_persistence_h1"] = total_persistence(diagrams[1])
    metrics["persistence_entropy_h1"] = persistence_entropy(diagrams[1])
    if np.isnan(metrics["persistence_entropy_h1"]):
        reasons["persistence_entropy_h1"] = "no H1 bar with positive persistence"
    return with_reference(TopologyResult(
        diagrams=diagrams,
        metrics=metrics,
        reasons=reasons,
        scale=float(scale),
        threshold=threshold,
        cover_radius=cover,
        idx_perm=np.asarray(idx_perm, dtype=np.int64),
        n_points=n,
    ), ref_h1)


def with_reference(result: TopologyResult, reference: TopologyResult | np.ndarray | None) -> TopologyResult:
    """``result`` with its distances to ``reference`` (as :func:`persistent_homology` would give).

    Diagrams, scale and threshold are kept; ``bottleneck_to_input_h1`` and
    ``wasserstein_to_input_h1`` are recomputed (dropped for ``reference=None``). Used when one
    cloud is compared with several references without recomputing its diagrams.
    """
    metrics = {k: v for k, v in result.metrics.items() if not k.endswith("_to_input_h1")}
    if reference is not None:
        ref_h1 = (reference.diagrams[1] if isinstance(reference, TopologyResult)
                  else _finite_bars(_check_diagram(reference, "with_reference", "reference")))
        dist = diagram_distances(result.diagrams[1], ref_h1)
        metrics["bottleneck_to_input_h1"] = dist["bottleneck"]
        metrics["wasserstein_to_input_h1"] = dist["wasserstein"]
    return dataclasses.replace(result, metrics=metrics)
