"""The paper's Figure 1: a 2-D spiral through act(T x) and back, for growing n.

A 2-D spiral x (n_points, 2) is embedded by a random matrix T (n x 2, standard Gaussian,
seeded), passed through an activation, y = act(T x), and mapped back to 2-D by

``pinv``        x_hat = pinv(T) act(T x): the paper's "T^-1". For ReLU, act(Tx) = (Tx + |Tx|) / 2,
                so x_hat = x / 2 + pinv(T) |Tx| / 2: at large n the second term is small and
                x_hat is the spiral at half its size (its relative error sits near 0.5 although
                the shape is kept, which is what the paper's Fig. 1 shows at n = 15, 30).
``active_set``  least squares on the rows of T whose outputs are in the activation's
                injective region (see :func:`analysis.reconstruction.active_set_inverse`),
                the minimum-norm solution where fewer than 2 independent rows are active (the
                point then collapses, exactly as in the paper's n = 2, 3 panels). Exact iff
                Lemma 2 holds.
``learned``     a k-NN regressor (k = 5, distance-weighted) from y to x, 5-fold cross-fitted:
                every point is predicted by a decoder that never saw it (held out).

For each (n, seed) the table reports, per method,

- ``recon_error``: the centred relative error sqrt(sum ||x_hat - x||^2 / sum ||x - mean(x)||^2)
  over all points (:func:`analysis.reconstruction.relative_error`): does x_hat equal x?
- ``procrustes_disparity``: :func:`scipy.spatial.procrustes` of x and x_hat, both centred and
  scaled to unit Frobenius norm, then x_hat rotated / reflected and scaled onto x; the
  disparity is the remaining sum of squares, 1 - (sum_i s_i)^2 with s_i the singular values
  of x_c^T x_hat_c / (||x_c|| ||x_hat_c||), in [0, 1]: is the *shape* kept?
- ``procrustes_scale``: the size of the fit, s in x_hat_c ~ s x_c R (R orthogonal),
  s = sum_i sigma_i(x_c^T x_hat_c) / ||x_c||^2 (0.5 for pinv at large n, 1 for an exact inverse),

and the Lemma-2 invertible fraction
(:func:`analysis.activity.lemma2_invertible`). For ReLU and rows with a sign-symmetric
distribution, Theorem 1 of the paper's appendix gives its expectation over T when the
spiral's angles are uniform (they are here, with whole turns): the probability that at least
2 of the n rows are active, sum_{k=0}^{n-2} C(n, k) / 2^n (:func:`expected_invertible_fraction`).

The expected finding (and what the tests check): at n = 2, 3 points collapse (large error and
large Procrustes disparity for every method); at n = 15, 30 the shape is kept by every method
(disparity near 0), the active-set inverse is exact (error ~ 1e-15) and the learned decoder is
close, while ``pinv`` returns the spiral shrunk by about half (error near 0.5, scale near 0.5):
its error measures the scale, not a loss of information.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.spatial import procrustes
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.neighbors import KNeighborsRegressor

from analysis.activity import ACTIVATIONS, lemma2_invertible
from analysis.reconstruction import active_set_inverse, relative_error

__all__ = [
    "METHODS",
    "METHOD_LABELS",
    "activate",
    "expected_invertible_fraction",
    "make_spiral",
    "procrustes_fit",
    "run_spiral",
]

#: Ways back to 2-D, in table / figure order.
METHODS: tuple[str, ...] = ("pinv", "active_set", "learned")
#: Row labels of the figure.
METHOD_LABELS: dict[str, str] = {
    "pinv": "pinv(T) act(Tx)",
    "active_set": "active-set inverse",
    "learned": "learned (k-NN)",
}
_LEAKY_SLOPE = 0.1  # the zoo's nn.LeakyReLU(0.1)


def activate(z: NDArray[np.float64], activation: str) -> NDArray[np.float64]:
    """The activation on an array: relu, relu6, leaky_relu (slope 0.1), hswish or linear."""
    if activation == "relu":
        return np.maximum(z, 0.0)
    if activation == "relu6":
        return np.clip(z, 0.0, 6.0)
    if activation == "leaky_relu":
        return np.where(z >= 0, z, _LEAKY_SLOPE * z)
    if activation == "hswish":
        return z * np.clip(z + 3.0, 0.0, 6.0) / 6.0
    if activation == "linear":
        return np.asarray(z, dtype=np.float64)
    raise ValueError(
        f"The 'activation' parameter of activate must be one of {list(ACTIVATIONS)}. "
        f"Got {activation!r} instead."
    )


def make_spiral(
    n_points: int = 1000,
    *,
    turns: int = 2,
    radius: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A 2-D Archimedean spiral centred at the origin.

    Points at s_i = i / (n_points - 1): angle 2 pi turns s, radius radius * (0.1 + 0.9 s), plus
    Gaussian noise of standard deviation ``noise * radius`` (seeded).

    Returns
    -------
    X : ndarray of shape (n_points, 2)
    s : ndarray of shape (n_points,)
        Position along the spiral in [0, 1] (for colouring).
    """
    if isinstance(n_points, bool) or not isinstance(n_points, numbers.Integral) or n_points < 20:
        raise ValueError(f"The 'n_points' parameter of make_spiral must be an int >= 20. Got {n_points!r} instead.")
    if isinstance(turns, bool) or not isinstance(turns, numbers.Integral) or turns < 1:
        raise ValueError(f"The 'turns' parameter of make_spiral must be an int >= 1. Got {turns!r} instead.")
    if not isinstance(radius, numbers.Real) or not radius > 0:
        raise ValueError(f"The 'radius' parameter of make_spiral must be a float > 0. Got {radius!r} instead.")
    if not isinstance(noise, numbers.Real) or not noise >= 0:
        raise ValueError(f"The 'noise' parameter of make_spiral must be a float >= 0. Got {noise!r} instead.")
    s = np.linspace(0.0, 1.0, n_points)
    theta = 2 * np.pi * turns * s
    r = radius * (0.1 + 0.9 * s)
    X = np.column_stack([r * np.cos(theta), r * np.sin(theta)])
    if noise > 0:
        X = X + np.random.default_rng(seed).normal(scale=noise * radius, size=X.shape)
    return X, s


def expected_invertible_fraction(m: int, n: int = 2) -> float:
    """Theorem 1 (MobileNetV2 appendix): sum_{k=0}^{m-n} C(m, k) / 2^m.

    The probability that at least n of m sign-symmetric random rows are active at a fixed
    direction, i.e. the expected Lemma-2 invertible fraction of ReLU(T x) for T of size m x n.
    """
    if m < n:
        return 0.0
    return sum(math.comb(m, k) for k in range(m - n + 1)) / 2**m


def procrustes_fit(x_hat: NDArray[np.float64], x: NDArray[np.float64]) -> tuple[float, float]:
    """Procrustes disparity and scale of x_hat against x (shape kept up to rotation and size).

    Parameters
    ----------
    x_hat, x : ndarray of shape (n_points, 2)

    Returns
    -------
    disparity : float
        :func:`scipy.spatial.procrustes` disparity in [0, 1]: 0 when x_hat = s x R + c for
        some scale s > 0, orthogonal R and shift c. NaN when x_hat is a single point (a
        collapse to one point has no shape; scipy cannot scale it).
    scale : float
        s = sum_i sigma_i(x_c^T x_hat_c) / ||x_c||^2 (c: centred), the factor of the best fit
        x_hat_c ~ s x_c R; 0 when x_hat is a single point.
    """
    xc = x - x.mean(axis=0)
    hc = x_hat - x_hat.mean(axis=0)
    scale = float(np.linalg.svd(xc.T @ hc, compute_uv=False).sum() / np.sum(xc**2))
    if not np.any(hc):
        return math.nan, 0.0
    return float(procrustes(x, x_hat)[2]), scale


def _check_int_list(values: Iterable[int], name: str, minimum: int) -> list[int]:
    out = list(values)
    if not out or any(
        isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum for v in out
    ):
        raise ValueError(
            f"The '{name}' parameter of run_spiral must be a non-empty list of ints >= {minimum}. "
            f"Got {out!r} instead."
        )
    return [int(v) for v in out]


def run_spiral(
    dims: Sequence[int] = (2, 3, 5, 15, 30),
    *,
    activation: str = "relu",
    seeds: Sequence[int] = (0, 1, 2),
    n_points: int = 1000,
    noise: float = 0.0,
    turns: int = 2,
    radius: float = 1.0,
    n_neighbors: int = 5,
) -> tuple[pd.DataFrame, dict]:
    """Figure 1 of the paper as numbers: the three ways back for each n and seed.

    Parameters
    ----------
    dims : sequence of int >= 1, default (2, 3, 5, 15, 30)
        Embedding dimensions n (rows of T).
    activation : {"relu", "relu6", "leaky_relu", "hswish", "linear"}, default "relu"
    seeds : sequence of int, default (0, 1, 2)
        Seeds of T (and of the learned decoder's folds); one row block per seed.
    n_points : int, default 1000
        Points on the spiral.
    noise : float, default 0.0
        Noise on the spiral (relative to its radius); the spiral is the same for every seed.
    turns : int, default 2
    radius : float, default 1.0
        Outer radius of the spiral; pre-activations scale with it (ReLU6 saturates only
        when |T x| reaches 6, e.g. radius 4 and up).
    n_neighbors : int, default 5
        k of the learned decoder.

    Returns
    -------
    table : pandas.DataFrame
        One row per (n, seed, method) with columns ``n, seed, activation, method,
        recon_error, procrustes_disparity, procrustes_scale, invertible_fraction,
        expected_invertible_fraction, n_points`` (formulas in the module docstring)
        (``expected_invertible_fraction``: Theorem 1, for ``relu`` only, else NaN).
    reconstructions : dict
        ``"input"``: the spiral (n_points, 2); ``"s"``: position along it (n_points,);
        ``"activation"``: the activation; and for each ``(n, seed)`` a dict with the
        reconstructions ``"pinv"``, ``"active_set"``, ``"learned"`` (each (n_points, 2)) and
        ``"invertible"`` (bool (n_points,), Lemma 2).
    """
    dims = _check_int_list(dims, "dims", 1)
    seeds = _check_int_list(seeds, "seeds", 0)
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"The 'activation' parameter of run_spiral must be one of {list(ACTIVATIONS)}. "
            f"Got {activation!r} instead."
        )
    X, s = make_spiral(n_points, turns=turns, radius=radius, noise=noise, seed=0)
    recon: dict = {"input": X, "s": s, "activation": activation}
    rows = []
    for n in dims:
        for seed in seeds:
            T = np.random.default_rng(seed).normal(size=(n, 2))
            Y = activate(X @ T.T, activation)
            invertible = lemma2_invertible(T, None, X, activation=activation)
            x_set, _ = active_set_inverse(Y, T, activation=activation, negative_slope=_LEAKY_SLOPE)
            knn = KNeighborsRegressor(n_neighbors=n_neighbors, weights="distance")
            folds = KFold(n_splits=5, shuffle=True, random_state=seed)
            estimates = {
                "pinv": Y @ np.linalg.pinv(T).T,
                "active_set": x_set,
                "learned": cross_val_predict(knn, Y, X, cv=folds),
            }
            recon[(n, seed)] = {**estimates, "invertible": invertible}
            expected = expected_invertible_fraction(n, 2) if activation == "relu" else math.nan
            for method in METHODS:
                disparity, scale = procrustes_fit(estimates[method], X)
                rows.append(
                    {
                        "n": n,
                        "seed": seed,
                        "activation": activation,
                        "method": method,
                        "recon_error": relative_error(estimates[method], X),
                        "procrustes_disparity": disparity,
                        "procrustes_scale": scale,
                        "invertible_fraction": float(invertible.mean()),
                        "expected_invertible_fraction": expected,
                        "n_points": n_points,
                    }
                )
    return pd.DataFrame(rows), recon
