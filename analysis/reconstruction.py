"""Reconstruction metrics: can the block input be recovered from a capture point?

Decoders map paired points ``X_point`` (n, C_p) back to ``X_input`` (n, C_in). The pairs are
split once into a train and a held-out set (seeded, default 70 / 30); decoders are fitted on
the train split and scored on the held-out split:

``linear``  ``RidgeCV`` on standardised features (alphas 1e-6 .. 1e3, chosen by efficient
            leave-one-out on the train split). The leave-one-out errors of every alpha come
            from one decomposition: the SVD of the train features when they are fewer than
            the train points (``gcv_mode="svd"``; scikit-learn's default there inverts a
            p x p matrix per alpha), else the eigendecomposition of the Gram matrix.
``knn``     ``KNeighborsRegressor`` (k = 5, distance-weighted) in the point's own Euclidean
            geometry (features not rescaled: the representation's metric is what is measured).
``mlp``     ``MLPRegressor`` (one hidden layer of 64, ReLU, Adam, 50 epochs of batches of
            128, fixed seed) on standardised features and targets; opt-in, slower (about
            1 s for 2,000 points x 100 channels).
``exact``   The active-set inverse (no training): given the folded map z = W' x + b' from the
            block input to this point's pre-activation and y = act(z), invert the activation
            on the units where it is injective (``relu``/``relu6``/``hswish``: y > 0, and
            y < 6 for ``relu6``; ``leaky_relu``/``linear``: every unit) and solve
            W'[A] x = z[A] - b'[A] by least squares. Defined on the points where W'[A] has full
            column rank (Lemma 2); its error is taken over those held-out points and
            ``recon_exact_fraction`` is the fraction of held-out points where it is defined.

Scores, over the held-out set (x_hat the decoder's output, x the true input, sums over points
and channels):

- ``recon_error_<decoder>`` = sqrt(sum ||x_hat - x||^2 / sum ||x - mean(x)||^2), the centred
  relative error ||x_hat - x|| / ||x - mean(x)|| with Frobenius norms over the whole held-out
  set (not a mean of per-point ratios; the mean is the held-out mean). Predicting the mean
  scores 1 whatever the offset of the target, so a two-sided block input (linear network) and
  a non-negative one (ReLU6 network) are on the same scale; error = sqrt(1 - R^2). (An uncentred
  denominator ||x|| credits a decoder for the target's mean: predicting the mean scored 0.99
  on two-sided inputs but 0.75 on non-negative ones.)
- ``recon_r2_<decoder>`` = 1 - sum ||x_hat - x||^2 / sum ||x - mean(x)||^2
  (scikit-learn's variance-weighted R^2; the mean is the held-out mean).

Return values follow the metric convention of :mod:`analysis.spectrum`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.compose import TransformedTargetRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsRegressor
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from analysis.activity import ACTIVATIONS, active_set_solve
from analysis.spectrum import MetricValue, check_finite, undefined
from probes.activations import invert

__all__ = [
    "DECODERS",
    "MIN_POINTS",
    "active_set_inverse",
    "make_decoder",
    "r2_score_flat",
    "reconstruction_metrics",
    "relative_error",
    "split_indices",
]

#: Decoders understood by :func:`reconstruction_metrics` (besides the weight-based ``exact``).
DECODERS: tuple[str, ...] = ("linear", "knn", "mlp")
#: Fewer paired points than this: every reconstruction metric is NaN.
MIN_POINTS = 10
_ALPHAS = tuple(np.logspace(-6, 3, 10))


def relative_error(x_hat: ArrayLike, x: ArrayLike) -> float:
    """Centred relative error sqrt(sum ||x_hat - x||^2 / sum ||x - mean(x)||^2).

    Sums run over all points and channels; ``mean(x)`` is the per-channel mean over the points
    of ``x``, so a predictor of that mean scores exactly 1 (and error^2 = 1 - R^2).

    Parameters
    ----------
    x_hat, x : array-like of shape (n_points, n_channels)

    Returns
    -------
    float
        NaN when sum ||x - mean(x)||^2 = 0 (the targets are constant).

    Examples
    --------
    >>> x = np.array([[1.0, 5.0], [3.0, 7.0]])
    >>> relative_error(np.full_like(x, 1.0) * x.mean(axis=0), x)
    1.0
    """
    x_hat = np.asarray(x_hat, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    den = float(np.sum((x - x.mean(axis=0)) ** 2))
    if den == 0:
        return math.nan
    return float(np.sqrt(np.sum((x_hat - x) ** 2) / den))


def r2_score_flat(x_hat: ArrayLike, x: ArrayLike) -> float:
    """1 - sum ||x_hat - x||^2 / sum ||x - mean(x)||^2 (variance-weighted R^2).

    Returns NaN when the targets have zero variance.
    """
    x_hat = np.asarray(x_hat, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    den = float(np.sum((x - x.mean(axis=0)) ** 2))
    if den == 0:
        return math.nan
    return float(1.0 - np.sum((x_hat - x) ** 2) / den)


def split_indices(
    n: int, *, test_size: float = 0.3, seed: int = 0
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Seeded train / held-out split of ``range(n)`` (scikit-learn ``train_test_split``)."""
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real) or not 0 < test_size < 1:
        raise ValueError(
            f"The 'test_size' parameter of split_indices must be a float in (0, 1). "
            f"Got {test_size!r} instead."
        )
    train, test = train_test_split(np.arange(n), test_size=test_size, random_state=seed)
    return np.sort(train), np.sort(test)


def make_decoder(name: str, *, seed: int = 0, n_neighbors: int = 5, n_samples: int | None = None,
                 n_features: int | None = None):
    """A fresh scikit-learn regressor for decoder ``name`` (see the module docstring).

    ``n_samples`` / ``n_features`` (of the training set) pick the leave-one-out route of
    ``linear``: one SVD when there are fewer features than samples, else scikit-learn's default.
    """
    if name == "linear":
        tall = n_samples is not None and n_features is not None and n_features < n_samples
        return make_pipeline(StandardScaler(), RidgeCV(alphas=_ALPHAS, gcv_mode="svd" if tall else None))
    if name == "knn":
        return KNeighborsRegressor(n_neighbors=n_neighbors, weights="distance")
    if name == "mlp":
        mlp = MLPRegressor(
            hidden_layer_sizes=(64,),
            batch_size=128,
            max_iter=50,
            learning_rate_init=3e-3,
            random_state=seed,
        )
        return TransformedTargetRegressor(
            regressor=make_pipeline(StandardScaler(), mlp), transformer=StandardScaler()
        )
    raise ValueError(
        f"The 'decoders' parameter of reconstruction_metrics must contain only {list(DECODERS)}. "
        f"Got {name!r} instead."
    )


def active_set_inverse(
    y: ArrayLike,
    weight: ArrayLike,
    bias: ArrayLike | None = None,
    *,
    activation: str = "relu",
    negative_slope: float = 0.1,
    rtol: float | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Invert y = act(W x + b) by least squares on the units where act is injective.

    The pre-activation is recovered on the usable units A (``relu``: y > 0; ``relu6``:
    0 < y < 6; ``hswish``: y > 0, inverting z (z + 3) / 6 below 3; ``leaky_relu`` (slope
    ``negative_slope``) and ``linear``: all units), then x_hat = pinv(W[A]) (z[A] - b[A]),
    the minimum-norm least-squares solution (0 if A is empty). It equals x exactly iff
    rank(W[A]) = in (Lemma 2), reported as ``invertible``; elsewhere the point collapses onto
    the row space of W[A].

    Parameters
    ----------
    y : array-like of shape (n_points, hidden)
        Activation outputs.
    weight : array-like of shape (hidden, in) or (hidden, in, 1, 1)
        Folded weights W' (see :func:`analysis.activity.fold_bn`).
    bias : array-like of shape (hidden,), optional
    activation : str, default "relu"
    negative_slope : float, default 0.1
        Slope of ``leaky_relu`` (the zoo's value).
    rtol : float, optional
        Rank tolerance (see :func:`analysis.activity.active_set_solve`).

    Returns
    -------
    x_hat : ndarray of shape (n_points, in)
    invertible : ndarray of bool, shape (n_points,)
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"The 'activation' parameter of active_set_inverse must be one of {list(ACTIVATIONS)}. "
            f"Got {activation!r} instead."
        )
    W = np.asarray(weight, dtype=np.float64)
    if W.ndim == 4 and W.shape[2:] == (1, 1):
        W = W[:, :, 0, 0]
    Y = np.asarray(y, dtype=np.float64)
    if W.ndim != 2 or Y.ndim != 2 or Y.shape[1] != W.shape[0]:
        raise ValueError(
            "The 'y' parameter of active_set_inverse must have shape (n_points, hidden) with "
            f"hidden = weight.shape[0]. Got y of shape {Y.shape} and weight of shape {W.shape} instead."
        )
    b = np.zeros(W.shape[0]) if bias is None else np.asarray(bias, dtype=np.float64)
    if b.shape != (W.shape[0],):
        raise ValueError(
            f"The 'bias' parameter of active_set_inverse must have shape ({W.shape[0]},). "
            f"Got an array of shape {b.shape} instead."
        )
    z, usable = invert(Y, activation, negative_slope)
    rank, x_hat = active_set_solve(W, usable, z - b, rtol=rtol)
    return x_hat, rank == W.shape[1]


def _metric_names(decoders: Sequence[str]) -> list[str]:
    names = []
    for d in decoders:
        names += [f"recon_error_{d}", f"recon_r2_{d}"]
    return names + ["recon_error_exact", "recon_r2_exact", "recon_exact_fraction"]


def _scores(x_hat: NDArray[np.float64], x: NDArray[np.float64], name: str) -> dict[str, MetricValue]:
    err, r2 = relative_error(x_hat, x), r2_score_flat(x_hat, x)
    return {
        f"recon_error_{name}": MetricValue(err, "not defined: held-out inputs have zero variance" if math.isnan(err) else None),
        f"recon_r2_{name}": MetricValue(r2, "not defined: held-out inputs have zero variance" if math.isnan(r2) else None),
    }


def reconstruction_metrics(
    X_point: ArrayLike,
    X_input: ArrayLike,
    *,
    decoders: Sequence[str] = ("linear", "knn"),
    test_size: float = 0.3,
    seed: int = 0,
    n_neighbors: int = 5,
    weight: ArrayLike | None = None,
    bias: ArrayLike | None = None,
    activation: str | None = None,
    point: str | None = None,
) -> dict[str, MetricValue]:
    """Decoders from a capture point back to the block input, scored on a held-out split.

    Parameters
    ----------
    X_point : array-like of shape (n_points, C_p)
        Points at the capture point (post-activation for ``exact``).
    X_input : array-like of shape (n_points, C_in)
        The paired block inputs.
    decoders : sequence of {"linear", "knn", "mlp"}, default ("linear", "knn")
    test_size : float in (0, 1), default 0.3
        Held-out fraction.
    seed : int, default 0
        Seed of the split and of the MLP.
    n_neighbors : int, default 5
    weight, bias : array-like, optional
        Folded map z = W' x + b' (W' of shape (C_p, C_in)) from the block input to this
        point's pre-activation; without them the ``exact`` metrics are NaN with a reason.
    activation : str, optional
        The activation giving ``X_point`` from z; required with ``weight``. Kinds without an
        exact inverse here (``silu``, ``gelu`` ...) give NaN ``exact`` metrics with a reason.
    point : str, optional
        Capture-point name for warnings.

    Returns
    -------
    metrics : dict of str to MetricValue
        ``recon_error_<d>``, ``recon_r2_<d>`` for each decoder d, then ``recon_error_exact``,
        ``recon_r2_exact`` and ``recon_exact_fraction`` (formulas in the module docstring).
    """
    for d in decoders:
        if d not in DECODERS:
            make_decoder(d)  # raises the documented ValueError
    Xp = np.asarray(X_point, dtype=np.float64)
    Xi = np.asarray(X_input, dtype=np.float64)
    if Xp.ndim != 2 or Xi.ndim != 2 or Xp.shape[0] != Xi.shape[0] or 0 in Xp.shape[1:] + Xi.shape[1:]:
        raise ValueError(
            "The 'X_point' and 'X_input' parameters of reconstruction_metrics must be 2-D arrays "
            f"with the same number of rows (paired points). Got shapes {Xp.shape} and {Xi.shape} instead."
        )
    if weight is not None and activation is None:
        raise ValueError(
            "The 'activation' parameter of reconstruction_metrics is required with 'weight' "
            f"(one of {list(ACTIVATIONS)}). Got None instead."
        )
    names = _metric_names(decoders)
    n = Xp.shape[0]
    if n < MIN_POINTS:
        return undefined(names, f"too few points: {n} (reconstruction needs >= {MIN_POINTS})")
    for name, arr in (("points", Xp), ("block inputs", Xi)):
        reason = check_finite(arr, name=name, family="reconstruction", point=point)
        if reason is not None:
            return undefined(names, reason)
    train, test = split_indices(n, test_size=test_size, seed=seed)
    out: dict[str, MetricValue] = {}
    for d in decoders:
        model = make_decoder(d, seed=seed, n_neighbors=min(n_neighbors, train.size), n_samples=train.size,
                             n_features=Xp.shape[1])
        if d == "mlp":  # 50 epochs do not converge, on purpose (linear and knn never
            with warnings.catch_warnings():  # raise it; entering this is slow and not thread-safe)
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(Xp[train], Xi[train])
        else:
            model.fit(Xp[train], Xi[train])
        x_hat = np.asarray(model.predict(Xp[test]), dtype=np.float64).reshape(test.size, -1)
        out |= _scores(x_hat, Xi[test], d)

    if weight is not None and activation not in ACTIVATIONS:
        out |= undefined(
            ["recon_error_exact", "recon_r2_exact", "recon_exact_fraction"],
            f"not available: no exact inverse for activation {activation!r} "
            f"(only {', '.join(ACTIVATIONS)})",
        )
    elif weight is None:
        out |= undefined(
            ["recon_error_exact", "recon_r2_exact", "recon_exact_fraction"],
            "not available: no folded weights of a map from the block input to this point",
        )
    else:
        x_hat, ok = active_set_inverse(Xp[test], weight, bias, activation=activation)
        out["recon_exact_fraction"] = MetricValue(float(ok.mean()))
        if ok.any():
            out |= _scores(x_hat[ok], Xi[test][ok], "exact")
        else:
            out |= undefined(
                ["recon_error_exact", "recon_r2_exact"],
                "not defined: no held-out point has full-rank active rows (Lemma 2)",
            )
    return {name: out[name] for name in names}
