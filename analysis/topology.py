"""Persistent homology of activation clouds: diagrams, significant Betti numbers, distances.

Pipeline of :func:`persistent_homology` (ripser for homology, persim for distances):

1. Optional greedy-permutation (farthest-point) subsample of ``n_perm`` points, done by
   ripser's own ``n_perm`` option (:func:`ripser.ripser`): the first point is point 0, each
   next one is the point farthest from those already chosen. We use ripser's implementation
   rather than our own because it returns the covering radius r_cover = max_x min_p ||x - p||
   (the Hausdorff distance from the subsample to the cloud), which bounds the error: by Rips
   stability (Chazal, de Silva & Oudot 2014) the subsample's diagram is within bottleneck
   distance 2 r_cover of the full cloud's. Greedy subsamples cover thin parts of a cloud that a
   uniform random subsample of the same size misses (a torus from 250 random points loses its
   H2 bar; from 250 greedy points it keeps it).
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
import warnings
from typing import Literal

import numpy as np

__all__ = [
    "TopologyResult",
    "betti_numbers",
    "cloud_scale",
    "diagram_distances",
    "persistence_entropy",
    "persistent_homology",
    "total_persistence",
]

Normalize = Literal["rms", "median"] | None


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
    """Persistence entropy of the finite bars (Rucco et al. 2015; persim).

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
    from persim import persistent_entropy

    d = _finite_bars(_check_diagram(diagram, "persistence_entropy", "diagram"))
    d = d[d[:, 1] > d[:, 0]]
    if len(d) == 0:
        return float("nan")
    return float(persistent_entropy.persistent_entropy(d)[0])


def diagram_distances(diagram: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Bottleneck and 1-Wasserstein distance between two diagrams (persim).

    bottleneck = min over matchings g of max_p ||p - g(p)||_inf;
    wasserstein = min over matchings g of sum_p ||p - g(p)||_2 (persim's convention: p = 1,
    Euclidean ground metric), where g may match a point to its projection on the diagonal
    (distance (d - b) / 2 in L_inf, (d - b) / sqrt(2) in L_2). Infinite bars are excluded.

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
    from persim import bottleneck, wasserstein

    a = _finite_bars(_check_diagram(diagram, "diagram_distances", "diagram"))
    b = _finite_bars(_check_diagram(reference, "diagram_distances", "reference"))
    return {"bottleneck": float(bottleneck(a, b)), "wasserstein": float(wasserstein(a, b))}


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
    subsample = n_perm is not None and n_perm < n
    with warnings.catch_warnings():
        # Rows are points by contract; few points in many channels is legal here.
        warnings.filterwarnings("ignore", message="The input point cloud has more columns than rows")
        res = ripser(x, maxdim=maxdim, n_perm=n_perm if subsample else None)

    if normalize == "rms":
        scale = _rms_scale(x)
    elif normalize == "median":
        dm = res["dperm2all"][:, res["idx_perm"]] if subsample else res["dperm2all"]
        iu = np.triu_indices(dm.shape[0], k=1)
        scale = float(np.median(dm[iu])) if len(iu[0]) else 0.0
    else:
        scale = 1.0
    divisor = scale if scale > 0 else 1.0
    diagrams = [np.asarray(d, dtype=np.float64) / divisor for d in res["dgms"]]
    cover = float(res["r_cover"]) / divisor
    threshold = max(float(min_persistence), 2.0 * cover)

    metrics: dict[str, float] = {}
    reasons: dict[str, str] = {}
    for k, b in enumerate(betti_numbers(diagrams, threshold)):
        metrics[f"betti{k}"] = float(b)
    metrics["total_persistence_h1"] = total_persistence(diagrams[1])
    metrics["persistence_entropy_h1"] = persistence_entropy(diagrams[1])
    if np.isnan(metrics["persistence_entropy_h1"]):
        reasons["persistence_entropy_h1"] = "no H1 bar with positive persistence"
    if ref_h1 is not None:
        dist = diagram_distances(diagrams[1], ref_h1)
        metrics["bottleneck_to_input_h1"] = dist["bottleneck"]
        metrics["wasserstein_to_input_h1"] = dist["wasserstein"]

    return TopologyResult(
        diagrams=diagrams,
        metrics=metrics,
        reasons=reasons,
        scale=float(scale),
        threshold=threshold,
        cover_radius=cover,
        idx_perm=np.asarray(res["idx_perm"], dtype=np.int64),
        n_points=n,
    )
