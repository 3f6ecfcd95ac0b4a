"""Test data: point clouds with known topology and intrinsic dimension.

The known answers of the topology and dimension tests (and of ``benchmarks/topology.py``);
they live under ``tests/`` because nothing at run time needs them.

Every cloud is drawn in its *native* space (``MANIFOLD_FACTS[name]["native_dim"]``
coordinates), Gaussian noise of standard deviation ``noise`` is added to every native
coordinate, and the result is optionally mapped into ``ambient_dim`` dimensions by a random
linear map with orthonormal columns. The embedding is an isometry, so pairwise distances, and
hence persistence diagrams and nearest-neighbour ratios, do not depend on ``ambient_dim``.

=============  ========================================================  =====  ======  ====
name           native cloud                                              betti  id      dim
=============  ========================================================  =====  ======  ====
circle         unit circle                                               1 1 0  1       2
two_circles    unit circles centred at (-2, 0) and (2, 0) (gap 2)        2 2 0  1       2
spiral         r = t / (3 pi), t in [0, 3 pi] (1.5 turns, arm gap 2/3)  1 0 0  1       2
torus          tube radius 1 around a circle of radius 2, in R^3         1 2 1  2       3
sphere         unit 2-sphere in R^3                                      1 0 1  2       3
swiss_roll     scikit-learn's ``make_swiss_roll`` (its units)            1 0 0  2       3
=============  ========================================================  =====  ======  ====

Points are uniform with respect to arc length / surface area (the torus by rejection sampling,
the spiral by t = 3 pi sqrt(u), which is uniform in arc length up to O(1/t^2)).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MANIFOLD_FACTS", "MANIFOLDS", "make_manifold"]

#: Known answers per manifold: Betti numbers (b0, b1, b2), intrinsic dimension, and the
#: number of coordinates of the native cloud before any embedding.
MANIFOLD_FACTS: dict[str, dict[str, Any]] = {
    "circle": {"betti": (1, 1, 0), "intrinsic_dim": 1, "native_dim": 2},
    "two_circles": {"betti": (2, 2, 0), "intrinsic_dim": 1, "native_dim": 2},
    "spiral": {"betti": (1, 0, 0), "intrinsic_dim": 1, "native_dim": 2},
    "torus": {"betti": (1, 2, 1), "intrinsic_dim": 2, "native_dim": 3},
    "sphere": {"betti": (1, 0, 1), "intrinsic_dim": 2, "native_dim": 3},
    "swiss_roll": {"betti": (1, 0, 0), "intrinsic_dim": 2, "native_dim": 3},
}

#: Names that :func:`make_manifold` understands.
MANIFOLDS: tuple[str, ...] = tuple(MANIFOLD_FACTS)

_TORUS_R, _TORUS_TUBE = 2.0, 1.0
_SPIRAL_T = 3 * np.pi


def _circle(n: int, rng: np.random.Generator) -> np.ndarray:
    theta = rng.uniform(0.0, 2 * np.pi, size=n)
    return np.column_stack([np.cos(theta), np.sin(theta)])


def _two_circles(n: int, rng: np.random.Generator) -> np.ndarray:
    a = _circle(n - n // 2, rng) + [-2.0, 0.0]
    b = _circle(n // 2, rng) + [2.0, 0.0]
    return np.concatenate([a, b])


def _spiral(n: int, rng: np.random.Generator) -> np.ndarray:
    t = _SPIRAL_T * np.sqrt(rng.uniform(0.0, 1.0, size=n))
    r = t / _SPIRAL_T
    return np.column_stack([r * np.cos(t), r * np.sin(t)])


def _torus(n: int, rng: np.random.Generator) -> np.ndarray:
    # Area element is proportional to R + r cos(v): accept v with that probability.
    vs: list[np.ndarray] = []
    have = 0
    while have < n:
        v = rng.uniform(0.0, 2 * np.pi, size=2 * n)
        keep = rng.uniform(0.0, _TORUS_R + _TORUS_TUBE, size=2 * n) < _TORUS_R + _TORUS_TUBE * np.cos(v)
        vs.append(v[keep])
        have += int(keep.sum())
    v = np.concatenate(vs)[:n]
    u = rng.uniform(0.0, 2 * np.pi, size=n)
    ring = _TORUS_R + _TORUS_TUBE * np.cos(v)
    return np.column_stack([ring * np.cos(u), ring * np.sin(u), _TORUS_TUBE * np.sin(v)])


def _sphere(n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.normal(size=(n, 3))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _swiss_roll(n: int, rng: np.random.Generator) -> np.ndarray:
    from sklearn.datasets import make_swiss_roll

    x, _ = make_swiss_roll(n, noise=0.0, random_state=int(rng.integers(2**31 - 1)))
    return x


_GENERATORS = {
    "circle": _circle,
    "two_circles": _two_circles,
    "spiral": _spiral,
    "torus": _torus,
    "sphere": _sphere,
    "swiss_roll": _swiss_roll,
}


def make_manifold(
    name: str,
    n: int,
    *,
    noise: float = 0.0,
    seed: int = 0,
    ambient_dim: int | None = None,
) -> np.ndarray:
    """Sample ``n`` points from a manifold with known topology (see module docstring).

    Parameters
    ----------
    name : {'circle', 'two_circles', 'spiral', 'torus', 'sphere', 'swiss_roll'}
    n : int
        Number of points, >= 1.
    noise : float, default 0.0
        Standard deviation of isotropic Gaussian noise added to each native coordinate
        (before the embedding, so the noise lies in the native subspace).
    seed : int, default 0
        Seeds both the sample and the embedding.
    ambient_dim : int or None, default None
        If given, map the native cloud x (n, D) into ``ambient_dim`` >= D dimensions as
        x Q^T with Q (ambient_dim, D) having orthonormal columns (QR of a Gaussian matrix).

    Returns
    -------
    points : ndarray of shape (n, D) or (n, ambient_dim), float64

    Examples
    --------
    >>> make_manifold("circle", 5, ambient_dim=64).shape
    (5, 64)
    >>> MANIFOLD_FACTS["torus"]["betti"]
    (1, 2, 1)
    """
    if name not in _GENERATORS:
        raise ValueError(
            f"The 'name' parameter of make_manifold must be one of {list(MANIFOLDS)}. Got {name!r} instead."
        )
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"The 'n' parameter of make_manifold must be an int >= 1. Got {n!r} instead.")
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"The 'noise' parameter of make_manifold must be a float >= 0. Got {noise!r} instead.")
    native = MANIFOLD_FACTS[name]["native_dim"]
    if ambient_dim is not None and (
        isinstance(ambient_dim, bool) or not isinstance(ambient_dim, (int, np.integer)) or ambient_dim < native
    ):
        raise ValueError(
            f"The 'ambient_dim' parameter of make_manifold must be None or an int >= {native} "
            f"(the native dimension of {name!r}). Got {ambient_dim!r} instead."
        )
    rng = np.random.default_rng(seed)
    x = _GENERATORS[name](int(n), rng)
    if noise > 0:
        x = x + rng.normal(scale=noise, size=x.shape)
    if ambient_dim is not None and ambient_dim != native:
        q, _ = np.linalg.qr(rng.normal(size=(int(ambient_dim), native)))
        x = x @ q.T
    return np.ascontiguousarray(x, dtype=np.float64)
