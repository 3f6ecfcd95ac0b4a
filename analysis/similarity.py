"""Linear centred kernel alignment (CKA) between two paired point sets.

Row i of both sets must describe the same sample (the same image position seen at two capture
points of a block, or at the same point of two designs). Linear CKA (Kornblith et al. 2019) is
invariant to orthogonal transforms and isotropic scaling of either set, not to general
invertible linear maps. The debiased variant replaces HSIC by its unbiased estimator (Song et
al. 2012), as in Nguyen, Raghu & Kornblith (2021); it is near 0 for independent sets where the
plain estimate is biased upwards by roughly sqrt(C1 C2) / n.

Everything is computed from three Frobenius products, in feature space (C x C matrices) or in
sample space (n x n Gram matrices), whichever is smaller: O(n (C1 + C2) min(n, C1 + C2)).

``reasons`` (from :func:`similarity_metrics`) maps a metric name to a one-line reason, only for
NaN metrics. Metric name (API): cka_to_input.
"""

from __future__ import annotations

import numpy as np

from analysis.topology import check_points

__all__ = ["linear_cka", "similarity_metrics"]


def _check_pair(x: np.ndarray, y: np.ndarray, func: str, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    x = check_points(x, func, names[0])
    y = check_points(y, func, names[1])
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"The '{names[0]}' and '{names[1]}' parameters of {func} must have the same number of "
            f"(paired) points. Got {x.shape[0]} and {y.shape[0]} instead."
        )
    return x, y


def _centred_unit(x: np.ndarray) -> np.ndarray | None:
    # Centre, then divide by the Frobenius norm (CKA ignores isotropic scale; this keeps the
    # products near 1 whatever the activations' magnitude).
    c = x - x.mean(axis=0)
    norm = np.linalg.norm(c)
    return c / norm if norm > 0 else None


def _cka(x: np.ndarray, y: np.ndarray, debiased: bool) -> tuple[float, str | None]:
    n = x.shape[0]
    if debiased and n < 4:
        return float("nan"), f"debiased CKA needs at least 4 points; got {n}"
    xc, yc = _centred_unit(x), _centred_unit(y)
    if xc is None or yc is None:
        which = "points" if xc is None else "input points"
        return float("nan"), f"{which} have zero variance (constant cloud)"
    if n < x.shape[1] + y.shape[1]:
        k, l_ = xc @ xc.T, yc @ yc.T
        xy, xx, yy = np.vdot(k, l_), np.vdot(k, k), np.vdot(l_, l_)
    else:
        xy = np.linalg.norm(xc.T @ yc) ** 2
        xx = np.linalg.norm(xc.T @ xc) ** 2
        yy = np.linalg.norm(yc.T @ yc) ** 2
    if debiased:
        # n (n - 3) HSIC_1 for centred features (K 1 = 0), Kornblith et al.'s feature-space form
        rx, ry = np.einsum("ij,ij->i", xc, xc), np.einsum("ij,ij->i", yc, yc)
        sx, sy = rx.sum(), ry.sum()

        def hsic(prod: float, ra: np.ndarray, rb: np.ndarray, sa: float, sb: float) -> float:
            return prod - n / (n - 2.0) * float(ra @ rb) + sa * sb / ((n - 1.0) * (n - 2.0))

        xy, xx, yy = hsic(xy, rx, ry, sx, sy), hsic(xx, rx, rx, sx, sx), hsic(yy, ry, ry, sy, sy)
        if xx <= 0 or yy <= 0:
            return float("nan"), "unbiased HSIC of a set with itself is not positive (too few points)"
    return float(xy / np.sqrt(xx * yy)), None


def linear_cka(x: np.ndarray, y: np.ndarray, *, debiased: bool = False) -> float:
    """Linear CKA between paired point sets (Kornblith et al. 2019).

    With X, Y column-centred and K = X X^T, L = Y Y^T,

        CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))
                  = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F),

    in [0, 1], and 1 when Y = s X Q + b (s > 0, Q orthogonal). ``debiased=True`` uses
    the unbiased estimator (Song et al. 2012) with K~, L~ the Gram matrices with zeroed diagonal:

        HSIC_1(K, L) = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3)),

    which can be slightly negative for unrelated sets.

    Parameters
    ----------
    x : ndarray of shape (n_points, n_channels_x)
    y : ndarray of shape (n_points, n_channels_y)
        Row i of ``y`` pairs with row i of ``x``.
    debiased : bool, default False

    Returns
    -------
    cka : float
        NaN when undefined: a set has zero variance, or ``debiased`` with fewer than 4 points
        (:func:`similarity_metrics` gives the reason).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(100, 5))
    >>> q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    >>> round(linear_cka(x, 3 * x @ q + 1), 12)
    1.0
    """
    x, y = _check_pair(x, y, "linear_cka", ("x", "y"))
    return _cka(x, y, bool(debiased))[0]


def similarity_metrics(
    points: np.ndarray, input_points: np.ndarray, *, debiased: bool = False
) -> tuple[dict[str, float], dict[str, str]]:
    """CKA between a capture point's cloud and the block input's cloud on the same samples.

    cka_to_input = :func:`linear_cka` (points, input_points) (formula there).

    Parameters
    ----------
    points : ndarray of shape (n_points, n_channels)
    input_points : ndarray of shape (n_points, n_input_channels)
        Paired row by row with ``points``.
    debiased : bool, default False

    Returns
    -------
    metrics : dict
        ``{'cka_to_input': float}``.
    reasons : dict
        ``{'cka_to_input': reason}`` when it is NaN, else empty.

    Examples
    --------
    >>> similarity_metrics(np.ones((5, 3)), np.eye(5))
    ({'cka_to_input': nan}, {'cka_to_input': 'points have zero variance (constant cloud)'})
    """
    x, y = _check_pair(points, input_points, "similarity_metrics", ("points", "input_points"))
    value, why = _cka(x, y, bool(debiased))
    return {"cka_to_input": value}, ({"cka_to_input": why} if why else {})
