"""Activity metrics: which units of an activation are alive, and is the point invertible?

"Active" means the unit is in the activation's informative (non-flat) region (docs/design.md):

==============  ==============================  ============================================
activation      active (pre-activation z)        flat regions
==============  ==============================  ============================================
``relu``        0 < z                            z <= 0 (output 0)
``relu6``       0 < z < 6                        z <= 0 (0) and z >= 6 (saturated at 6)
``hswish``      -3 < z                           z <= -3 (output 0)
``leaky_relu``  everywhere                       none: activity metrics not applicable
``linear``      everywhere                       none: activity metrics not applicable
==============  ==============================  ============================================

Metrics (from the Activity sink: per-channel active counts a_c, per-channel saturated counts
s_c, the number of points n, and the histogram h_k of the number of active channels per point,
k = 0..C):

- ``dead_fraction`` = #{c : a_c = 0} / C  (channels never active)
- ``rare_fraction`` = #{c : a_c < 0.01 n} / C  (rarely active, dead channels included)
- ``saturated_fraction`` = sum_c s_c / (n C)  (entries at the upper flat region; ReLU6 only)
- ``positive_min`` / ``positive_max`` = smallest / largest k with h_k > 0;
  ``positive_mean`` = sum_k k h_k / n  (active channels per point, paper Fig. 7; for ReLU6 a
  saturated channel is not counted)
- ``above_threshold_fraction`` = sum_{k >= T} h_k / n with T the invertibility threshold, the
  block's C_in = C / t (paper Fig. 7: fewer than C_in active channels cannot be inverted)
- ``lemma2_invertible_fraction``: fraction of points x (block inputs, from the reservoir) for
  which the rows of the BN-folded expansion weights W' at the active units of z = W' x + b'
  have rank C_in (MobileNetV2 appendix, Lemma 2): exactly the points whose activation output
  determines x uniquely.

Return values follow the metric convention of :mod:`analysis.spectrum` (``dict`` of
:class:`~analysis.spectrum.MetricValue`, NaN with a reason where a metric is not defined).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from numpy.typing import ArrayLike, NDArray

from analysis.spectrum import MetricValue, check_finite, undefined
from probes.activations import ACTIVATIONS, ACTIVITY_KINDS
from probes.activations import active_mask as probes_active_mask

__all__ = [
    "ACTIVATIONS",
    "ACTIVITY_METRICS",
    "LEMMA2_NOT_GIVEN",
    "active_mask",
    "active_set_solve",
    "activity_metrics",
    "fold_bn",
    "lemma2_invertible",
    "lemma2_invertible_fraction",
]

_NO_FLAT_REGION = tuple(a for a in ACTIVATIONS if a not in ACTIVITY_KINDS)  # linear, leaky_relu

#: Metric identifiers returned by :func:`activity_metrics`, in order.
ACTIVITY_METRICS: tuple[str, ...] = (
    "dead_fraction",
    "rare_fraction",
    "saturated_fraction",
    "positive_min",
    "positive_mean",
    "positive_max",
    "above_threshold_fraction",
    "lemma2_invertible_fraction",
)

#: Reason of a NaN ``lemma2_invertible_fraction`` from :func:`activity_metrics` called without
#: ``weight`` and ``inputs`` (a caller that computes it apart, as the study does, replaces it).
LEMMA2_NOT_GIVEN = ("not available: needs the folded weights of a 1x1 map and its inputs "
                    "(the expansion point of a block)")

# Float64 entries of one block of Gram upper triangles (about 32 MB; the stack of full Gram
# matrices is twice that) and of one block of row products in active_set_solve.
_CHUNK_ENTRIES = 4_000_000


def _check_activation(activation: str, func: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"The 'activation' parameter of {func} must be one of {list(ACTIVATIONS)}. "
            f"Got {activation!r} instead."
        )
    return activation


def _not_applicable(activation: str) -> str:
    kind = "linear" if activation == "linear" else "leaky ReLU"
    return f"not applicable: {kind} output has no flat region"


def _unsupported(activation: str) -> str:
    return (
        "not available: activity metrics need a relu, relu6 or hswish output; "
        f"this point's activation is {activation!r}"
    )


def active_mask(pre: ArrayLike, activation: str) -> NDArray[np.bool_]:
    """Which units are in the activation's non-flat region, from the pre-activation ``z``.

    Parameters
    ----------
    pre : array-like of shape (n_points, n_units)
        Pre-activation values z (after conv + BN, before the activation).
    activation : {"relu", "relu6", "hswish", "leaky_relu", "linear"}
        ``relu``: 0 < z; ``relu6``: 0 < z < 6; ``hswish``: z > -3; ``leaky_relu`` and
        ``linear``: every unit.

    Returns
    -------
    mask : ndarray of bool, same shape as ``pre``
    """
    _check_activation(activation, "active_mask")
    z = np.asarray(pre, dtype=np.float64)
    if activation in ACTIVITY_KINDS:
        return probes_active_mask(z, activation, pre=True)  # the one rule (probes.sinks.active_terms)
    return np.ones(z.shape, dtype=bool)


def fold_bn(
    weight: ArrayLike,
    bias: ArrayLike | None,
    running_mean: ArrayLike,
    running_var: ArrayLike,
    gamma: ArrayLike,
    beta: ArrayLike,
    eps: float = 1e-5,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Fold an eval-mode BatchNorm into the preceding conv / linear map.

    BN(W x + b) = W' x + b' with s = gamma / sqrt(running_var + eps),
    W' = s[:, None] * W (scaling output channel o) and b' = s * (b - running_mean) + beta.

    Parameters
    ----------
    weight : array-like of shape (C_out, C_in) or (C_out, C_in, kh, kw)
    bias : array-like of shape (C_out,) or None (no conv bias: zeros)
    running_mean, running_var, gamma, beta : array-like of shape (C_out,)
    eps : float, default 1e-5

    Returns
    -------
    weight_folded : ndarray, same shape as ``weight``
    bias_folded : ndarray of shape (C_out,)
    """
    W = np.asarray(weight, dtype=np.float64)
    if W.ndim not in (2, 4):
        raise ValueError(
            "The 'weight' parameter of fold_bn must have shape (C_out, C_in) or "
            f"(C_out, C_in, kh, kw). Got an array of shape {W.shape} instead."
        )
    c_out = W.shape[0]
    vecs = {}
    for name, v in (
        ("running_mean", running_mean),
        ("running_var", running_var),
        ("gamma", gamma),
        ("beta", beta),
        ("bias", np.zeros(c_out) if bias is None else bias),
    ):
        a = np.asarray(v, dtype=np.float64)
        if a.shape != (c_out,):
            raise ValueError(
                f"The '{name}' parameter of fold_bn must have shape ({c_out},) to match the "
                f"weight's output channels. Got an array of shape {a.shape} instead."
            )
        vecs[name] = a
    if np.any(vecs["running_var"] + eps <= 0):
        raise ValueError("The 'running_var' parameter of fold_bn must satisfy running_var + eps > 0.")
    s = vecs["gamma"] / np.sqrt(vecs["running_var"] + eps)
    W_f = W * s.reshape((-1,) + (1,) * (W.ndim - 1))
    b_f = s * (vecs["bias"] - vecs["running_mean"]) + vecs["beta"]
    return W_f, b_f


def _as_matrix(weight: ArrayLike, func: str) -> NDArray[np.float64]:
    W = np.asarray(weight, dtype=np.float64)
    if W.ndim == 4 and W.shape[2:] == (1, 1):
        W = W[:, :, 0, 0]
    if W.ndim != 2 or W.shape[0] == 0 or W.shape[1] == 0:
        raise ValueError(
            f"The 'weight' parameter of {func} must be a (hidden, in) matrix or a 1x1 conv "
            f"weight (hidden, in, 1, 1). Got an array of shape {W.shape} instead."
        )
    if not np.all(np.isfinite(W)):  # a NaN would pass the Cholesky test unnoticed
        raise ValueError(f"The 'weight' parameter of {func} must be finite. Got NaN or Inf entries instead.")
    return W


def _unique_rows(M: NDArray[np.bool_]) -> tuple[NDArray[np.bool_], NDArray[np.intp]]:
    """Distinct rows of a boolean matrix in ``np.unique(M, axis=0)`` order, and the inverse.

    Rows are packed to bytes first (big-endian bits keep the lexicographic order), so the sort
    compares n_units / 8 bytes per row instead of n_units.
    """
    packed = np.ascontiguousarray(np.packbits(M, axis=1))
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).reshape(-1)
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return M[first], inverse.reshape(-1)


def _masked_grams(W: NDArray[np.float64], masks: NDArray[np.float64]) -> NDArray[np.float64]:
    """G_u = W[A_u]^T W[A_u] = sum_j m_uj w_j w_j^T for each row m_u of ``masks``.

    One GEMM of the masks (n_sets, hidden) with the products P[(a, b), j] = w_ja w_jb of the
    upper triangle a <= b (d (d + 1) / 2, hidden), in blocks of units of at most
    ``_CHUNK_ENTRIES`` entries of P; the full matrices are gathered from the triangles.
    """
    h, d = W.shape
    iu, ju = np.triu_indices(d)
    step = max(1, _CHUNK_ENTRIES // iu.size)
    upper = np.zeros((masks.shape[0], iu.size))
    for j0 in range(0, h, step):
        WT = np.ascontiguousarray(W[j0 : j0 + step].T)
        P = np.empty((iu.size, WT.shape[1]))
        offset = 0
        for a in range(d):  # row a of the triangle: w_a * w_b for b >= a, contiguous slices
            np.multiply(WT[a], WT[a:], out=P[offset : offset + d - a])
            offset += d - a
        upper += masks[:, j0 : j0 + step] @ P.T
    where = np.empty((d, d), dtype=np.intp)  # position of entry (a, b) in the triangle
    where[iu, ju] = where[ju, iu] = np.arange(iu.size)
    return np.take(upper, where.reshape(-1), axis=1).reshape(-1, d, d)


def _positive_after_shift(G: NDArray[np.float64], shift: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Which G_i satisfy lambda_min(G_i) > shift_i, by the Cholesky factorisation of G_i - shift_i I.

    It completes iff that matrix is positive definite; its rounding errors (~ d^2 eps ||G||) are
    far below the shifts used here (>= 1e-8 ||G||). One LAPACK ``dpotrf`` per matrix, whose
    ``info`` says whether it completed (no exception to catch, and no second factorisation of
    the stack after one failure). G is shifted in place and restored.
    """
    from scipy.linalg.lapack import dpotrf

    diag = np.arange(G.shape[-1])
    kept = G[:, diag, diag]
    G[:, diag, diag] -= shift[:, None]
    try:
        # G_i is symmetric: its transpose is the Fortran-ordered matrix dpotrf reads (a copy)
        return np.array([dpotrf(H.T, lower=1, clean=0)[1] == 0 for H in G], dtype=bool).reshape(G.shape[0])
    finally:
        G[:, diag, diag] = kept


def _subset_certificate(W: NDArray[np.float64], sets: NDArray[np.bool_], clear_cond: float) -> NDArray[np.bool_]:
    """Active sets proven clearly full rank from their rows in a fixed subset S of the units.

    With B = A & S, G_A = G_B + (a PSD matrix), so lambda_min(G_A) >= lambda_min(G_B), and
    lambda_max(G_A) <= ||W||_2^2: lambda_min(G_B) > clear_cond ||W||_2^2 proves
    lambda_min(G_A) > clear_cond lambda_max(G_A), hence full rank, at |S| / hidden of the cost of
    G_A. S holds the most often active units, as few as give 95 % of the sets 1.25 in rows in
    S; no set is certified when that needs more than 60 % of the units.
    """
    h, d = W.shape
    order = np.argsort(-sets.sum(axis=0), kind="stable")
    need = math.ceil(1.25 * d)
    cum = np.cumsum(sets[:, order], axis=1)
    reach = np.where(cum[:, -1] >= need, np.argmax(cum >= need, axis=1) + 1, h)
    size = int(np.ceil(np.quantile(reach, 0.95)))
    ok = np.zeros(sets.shape[0], dtype=bool)
    if size > 0.6 * h:
        return ok
    S = np.sort(order[:size])
    shift = clear_cond * np.linalg.norm(W, 2) ** 2
    step = max(1, _CHUNK_ENTRIES // (d * (d + 1) // 2))
    for start in range(0, sets.shape[0], step):
        G = _masked_grams(W[S], sets[start : start + step][:, S].astype(np.float64))
        ok[start : start + step] = _positive_after_shift(G, np.full(G.shape[0], shift))
    return ok


def active_set_solve(
    weight: ArrayLike,
    mask: ArrayLike,
    rhs: ArrayLike | None = None,
    *,
    rtol: float | None = None,
) -> tuple[NDArray[np.int64], NDArray[np.float64] | None]:
    """Rank of the active rows of ``weight`` per point, and optionally the least-squares solve.

    For each point i with active set A_i (``mask[i]``), rank(W[A_i]) follows the
    ``numpy.linalg.matrix_rank`` rule: singular values above ``S_max * max(|A_i|, in) * eps``
    count (``rtol`` replaces ``max(|A_i|, in) * eps``). With ``rhs`` it also returns the
    minimum-norm least-squares solution x_i = pinv(W[A_i]) rhs[i, A_i] (0 where A_i is empty);
    it is the unique exact solution iff the rank equals ``in``.

    Speed: identical active sets are handled once, and the sets with at least ``in`` rows in
    stacks: their Gram matrices G = W[A]^T W[A] come from one matrix product of the masks with
    the products w_ja w_jb of each row's entries, and a stacked Cholesky factorisation of
    G - c ||G||_F I (c = 1e-8) picks the sets with lambda_min(G) > c ||G||_F, so
    cond(W[A]) < 1e4: full rank under any tolerance below 1e-4 (``rtol`` above 1e-5 raises
    c to (10 rtol)^2). Those are solved from G (relative error ~ cond(G) eps); every other set
    gets an SVD of W[A] (the exact rule above). Without ``rhs`` most sets are first settled
    from their rows among the most often active units (lambda_min(G) can only grow with more
    rows). All routes give the rank of the rule exactly;
    the solutions agree to rounding (``tests/analysis/test_activity.py`` checks them against
    ``matrix_rank`` and ``lstsq`` point by point).

    Parameters
    ----------
    weight : array-like of shape (hidden, in)
    mask : array-like of bool, shape (n_points, hidden)
    rhs : array-like of shape (n_points, hidden), optional
    rtol : float, optional

    Returns
    -------
    rank : ndarray of int, shape (n_points,)
    solution : ndarray of shape (n_points, in), or None without ``rhs``
    """
    W = _as_matrix(weight, "active_set_solve")
    M = np.asarray(mask, dtype=bool)
    h, d = W.shape
    if M.ndim != 2 or M.shape[1] != h:
        raise ValueError(
            f"The 'mask' parameter of active_set_solve must have shape (n_points, {h}). "
            f"Got an array of shape {M.shape} instead."
        )
    R = B = None
    if rhs is not None:
        R = np.asarray(rhs, dtype=np.float64)
        if R.shape != M.shape:
            raise ValueError(
                f"The 'rhs' parameter of active_set_solve must have shape {M.shape}. "
                f"Got an array of shape {R.shape} instead."
            )
        R = np.where(M, R, 0.0)  # inactive entries never enter the solve (they may be inf)
        B = R @ W  # W[A]^T rhs[A], the normal-equation right-hand side
    n = M.shape[0]
    rank = np.zeros(n, dtype=np.int64)
    sol = np.zeros((n, d)) if R is not None else None
    if n == 0:
        return rank, sol
    uniq, inverse = _unique_rows(M)
    n_uniq = uniq.shape[0]
    sizes = np.bincount(inverse, minlength=n_uniq)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(sizes)[:-1])
    k = uniq.sum(axis=1)
    clear_cond = max(1e-8, (10.0 * rtol) ** 2) if rtol is not None else 1e-8
    rank_u = np.zeros(n_uniq, dtype=np.int64)
    candidates = np.flatnonzero(k >= d)  # fewer rows than columns: never full rank
    if R is None and candidates.size:  # the rank alone: most sets are settled by part of their rows
        proven = _subset_certificate(W, uniq[candidates], clear_cond)
        rank_u[candidates[proven]] = d
        candidates = candidates[~proven]
    step = max(1, _CHUNK_ENTRIES // (d * (d + 1) // 2))
    for start in range(0, candidates.size, step):
        ids = candidates[start : start + step]
        G = _masked_grams(W, uniq[ids].astype(np.float64))
        # lambda_min(G) > clear_cond ||G||_F >= clear_cond lambda_max(G)
        clear = _positive_after_shift(G, clear_cond * np.sqrt(np.einsum("ijk,ijk->i", G, G)))
        rank_u[ids[clear]] = d
        if R is None:
            continue
        single = clear & (sizes[ids] == 1)
        if single.any():  # one point per set: one stacked solve G x = W[A]^T rhs[A]
            pts = np.array([members[u][0] for u in ids[single]])
            sol[pts] = np.linalg.solve(G[single], B[pts][:, :, None])[:, :, 0]
        for j in np.flatnonzero(clear & ~single):
            pts = members[ids[j]]
            sol[pts] = np.linalg.solve(G[j], B[pts].T).T
    for u in np.flatnonzero(rank_u < d):  # exact rule by SVD, one active set at a time
        A = W[uniq[u]]
        if A.shape[0] == 0:
            continue  # no active row: rank 0, solution 0
        factor = rtol if rtol is not None else max(A.shape[0], d) * np.finfo(np.float64).eps
        if R is None:
            S = np.linalg.svd(A, compute_uv=False)
        else:
            U, S, Vt = np.linalg.svd(A, full_matrices=False)
        keep = S > S[0] * factor
        rank_u[u] = int(keep.sum())
        if R is not None:
            pts = members[u]
            coef = (R[pts][:, uniq[u]] @ U[:, keep]) / S[keep]
            sol[pts] = coef @ Vt[keep]
    rank = rank_u[inverse]
    return rank, sol


def lemma2_invertible(
    weight: ArrayLike,
    bias: ArrayLike | None,
    inputs: ArrayLike,
    *,
    activation: str = "relu",
    rtol: float | None = None,
) -> NDArray[np.bool_]:
    """Lemma 2 of the MobileNetV2 appendix: is x determined by act(W x + b)?

    For each input x the active units A = {j : z_j active} of z = W x + b (see
    :func:`active_mask`) are found; x is invertible iff rank(W[A]) = in (so in particular
    |A| >= in). The rank is exact up to the ``numpy.linalg.matrix_rank`` tolerance
    ``S_max * max(|A|, in) * eps`` (see :func:`active_set_solve`). For ``leaky_relu`` and
    ``linear`` every unit counts. For ``hswish`` the active region z > -3 is not injective on
    (-3, 0), so there the test is a necessary condition only.

    Parameters
    ----------
    weight : array-like of shape (hidden, in) or (hidden, in, 1, 1)
        BN-folded weights W' of the map (see :func:`fold_bn`).
    bias : array-like of shape (hidden,) or None
        BN-folded bias b'.
    inputs : array-like of shape (n_points, in)
        Points x (block inputs).
    activation : str, default "relu"
    rtol : float, optional
        Overrides ``max(|A|, in) * eps`` in the rank tolerance.

    Returns
    -------
    invertible : ndarray of bool, shape (n_points,)
    """
    _check_activation(activation, "lemma2_invertible")
    W = _as_matrix(weight, "lemma2_invertible")
    X = np.asarray(inputs, dtype=np.float64)
    b = np.zeros(W.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != W.shape[1]:
        raise ValueError(
            f"The 'inputs' parameter of lemma2_invertible must have shape (n_points, {W.shape[1]}) "
            f"to match the weight. Got an array of shape {X.shape} instead."
        )
    if b.shape != (W.shape[0],):
        raise ValueError(
            f"The 'bias' parameter of lemma2_invertible must have shape ({W.shape[0]},). "
            f"Got an array of shape {b.shape} instead."
        )
    mask = active_mask(X @ W.T + b, activation)
    out = np.zeros(X.shape[0], dtype=bool)
    enough = mask.sum(axis=1) >= W.shape[1]  # fewer active rows than inputs: rank < in
    if enough.any():
        rank, _ = active_set_solve(W, mask[enough], rtol=rtol)
        out[enough] = rank == W.shape[1]
    return out


def lemma2_invertible_fraction(
    weight: ArrayLike,
    bias: ArrayLike | None,
    inputs: ArrayLike,
    *,
    activation: str = "relu",
    rtol: float | None = None,
    point: str | None = None,
) -> MetricValue:
    """Fraction of points for which :func:`lemma2_invertible` holds, as a metric value.

    NaN with a reason for a linear / leaky-ReLU activation (or a kind other than
    relu / relu6 / hswish), no points, or non-finite inputs.
    """
    if activation in _NO_FLAT_REGION:
        return MetricValue(math.nan, _not_applicable(activation))
    if activation not in ACTIVATIONS:
        return MetricValue(math.nan, _unsupported(activation))
    X = np.asarray(inputs, dtype=np.float64)
    if X.ndim == 2 and X.shape[0] == 0:
        return MetricValue(math.nan, "too few points: 0")
    for name, arr in (("inputs", X), ("weights", np.asarray(weight, dtype=np.float64))):
        reason = check_finite(arr, name=name, family="activity", point=point)
        if reason is not None:
            return MetricValue(math.nan, reason)
    inv = lemma2_invertible(weight, bias, X, activation=activation, rtol=rtol)
    return MetricValue(float(inv.mean()))


def _count_vector(v: ArrayLike, name: str, shape: tuple[int, ...]) -> NDArray[np.float64]:
    a = np.asarray(v, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(
            f"The '{name}' parameter of activity_metrics must have shape {shape}. "
            f"Got an array of shape {a.shape} instead."
        )
    return a


def activity_metrics(
    active_counts: ArrayLike,
    *,
    n_points: int,
    histogram: ArrayLike,
    activation: str,
    saturated_counts: ArrayLike | None = None,
    threshold: int | None = None,
    rare_rate: float = 0.01,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    inputs: ArrayLike | None = None,
    lemma2_rtol: float | None = None,
    point: str | None = None,
) -> dict[str, MetricValue]:
    """All activity metrics of one capture point (formulas in the module docstring).

    Parameters
    ----------
    active_counts : array-like of shape (C,)
        Per channel, the number of points where it is active.
    n_points : int
        Number of points the counts were taken over.
    histogram : array-like of shape (C + 1,)
        ``histogram[k]`` = number of points with exactly k active channels; sums to n_points.
    activation : str
        The activation at this point: ``relu``, ``relu6`` or ``hswish``. For ``linear`` and
        ``leaky_relu`` every metric is NaN with reason "not applicable: ... output has no flat
        region"; for any other kind (``silu``, ``gelu`` ... of third-party networks) NaN with
        reason "not available: ...".
    saturated_counts : array-like of shape (C,), optional
        Per channel, the number of points at the upper flat region (ReLU6: y = 6).
    threshold : int, optional
        Invertibility threshold T in active channels, the block's C_in (= C / t).
    rare_rate : float in (0, 1), default 0.01
        A channel active on fewer than ``rare_rate * n_points`` points is rare.
    weight, bias, inputs : array-like, optional
        BN-folded expansion weights (hidden, in), bias (hidden,) and reservoir block inputs
        (n, in) for ``lemma2_invertible_fraction``; NaN with a reason when not given.
    lemma2_rtol : float, optional
        Passed to :func:`lemma2_invertible` as ``rtol``.
    point : str, optional
        Capture-point name for warnings.

    Returns
    -------
    metrics : dict of str to MetricValue
        Keys :data:`ACTIVITY_METRICS`.
    """
    if isinstance(rare_rate, bool) or not isinstance(rare_rate, numbers.Real) or not 0 < rare_rate < 1:
        raise ValueError(
            f"The 'rare_rate' parameter of activity_metrics must be a float in (0, 1). "
            f"Got {rare_rate!r} instead."
        )
    a = np.asarray(active_counts, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(
            "The 'active_counts' parameter of activity_metrics must be a 1-D array of shape (C,) "
            f"with C >= 1. Got an array of shape {a.shape} instead."
        )
    C = a.size
    hist = _count_vector(histogram, "histogram", (C + 1,))
    sat = None if saturated_counts is None else _count_vector(saturated_counts, "saturated_counts", (C,))
    if threshold is not None and (
        isinstance(threshold, bool) or not isinstance(threshold, numbers.Integral) or threshold < 0
    ):
        raise ValueError(
            f"The 'threshold' parameter of activity_metrics must be a non-negative int "
            f"(the block's C_in). Got {threshold!r} instead."
        )
    if activation in _NO_FLAT_REGION:
        return undefined(ACTIVITY_METRICS, _not_applicable(activation))
    if activation not in ACTIVATIONS:
        return undefined(ACTIVITY_METRICS, _unsupported(activation))
    if n_points < 1:
        return undefined(ACTIVITY_METRICS, f"too few points: {n_points}")
    for name, arr in (("active counts", a), ("histogram", hist), ("saturated counts", sat)):
        if arr is not None:
            reason = check_finite(arr, name=name, family="activity", point=point)
            if reason is not None:
                return undefined(ACTIVITY_METRICS, reason)
    if np.any(a < 0) or np.any(a > n_points):
        raise ValueError(
            f"The 'active_counts' parameter of activity_metrics must lie in [0, n_points={n_points}]. "
            f"Got values in [{a.min():g}, {a.max():g}] instead."
        )
    if np.any(hist < 0) or not np.isclose(hist.sum(), n_points):
        raise ValueError(
            f"The 'histogram' parameter of activity_metrics must be non-negative and sum to "
            f"n_points={n_points}. Got a sum of {hist.sum():g} instead."
        )

    ks = np.arange(C + 1)
    occupied = np.flatnonzero(hist > 0)
    out: dict[str, MetricValue] = {
        "dead_fraction": MetricValue(float(np.mean(a == 0))),
        "rare_fraction": MetricValue(float(np.mean(a < rare_rate * n_points))),
    }
    if activation != "relu6":
        out["saturated_fraction"] = MetricValue(
            math.nan, f"not applicable: {activation} has no upper saturation"
        )
    elif sat is None:
        out["saturated_fraction"] = MetricValue(math.nan, "not available: no saturated counts given")
    else:
        out["saturated_fraction"] = MetricValue(float(sat.sum() / (n_points * C)))
    out["positive_min"] = MetricValue(float(occupied[0]))
    out["positive_mean"] = MetricValue(float(np.dot(ks, hist) / hist.sum()))
    out["positive_max"] = MetricValue(float(occupied[-1]))
    if threshold is None:
        out["above_threshold_fraction"] = MetricValue(
            math.nan, "not available: no invertibility threshold (block C_in) given"
        )
    else:
        out["above_threshold_fraction"] = MetricValue(float(hist[threshold:].sum() / hist.sum()))
    if weight is None or inputs is None:
        out["lemma2_invertible_fraction"] = MetricValue(math.nan, LEMMA2_NOT_GIVEN)
    else:
        out["lemma2_invertible_fraction"] = lemma2_invertible_fraction(
            weight, bias, inputs, activation=activation, rtol=lemma2_rtol, point=point
        )
    return {name: out[name] for name in ACTIVITY_METRICS}
