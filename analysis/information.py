"""Design-independent information: what can be decoded from a capture point?

The block input is a different target in each design (two-sided in a linear network,
non-negative after a ReLU6 bottleneck), so decoding it does not compare designs on equal
terms. The targets here are the same for every network: the network's input image, the label
and, for ``shapes``, the generating factors.

Features
--------
One feature vector per image and capture point: the **global average pool** over spatial
positions ([B, C, H, W] -> [B, C]; ``probes.capture.probe`` with ``sample_unit="image"`` and a
reservoir as large as the split, so every image is kept with its image id). Global pooling
discards where things are: an early point with few channels cannot give back a 32x32 image
however much its full tensor holds, so ``input_decode_r2`` is a lower bound on the information
at a point and is meant for comparing designs at the *same* point, not points with each other.

Decoders (fitted on the TRAIN split, scored on the held-out TEST split)
-----------------------------------------------------------------------
``linear``  Ridge regression on standardised features (train mean / std) with an intercept;
            the penalty alpha is chosen from :data:`ALPHAS` by exact leave-one-out
            cross-validation on the train split (the efficient hat-matrix formula of
            scikit-learn's ``RidgeCV``): one alpha for all pixels of the image, one for the
            one-hot label (a least-squares linear classifier, prediction = argmax, as
            ``RidgeClassifierCV``), one per factor.
``knn``     k-nearest neighbours (k = 5, uniform weights) in the point's own Euclidean
            geometry (features not rescaled): the mean of the neighbours' targets, the
            majority label (ties: smallest label).

Scores (over the n test images; x_hat the decoded target, x the true one)
-------------------------------------------------------------------------
- ``input_decode_r2[_knn]`` = 1 - sum ||x_hat - x||^2 / sum ||x - mean(x)||^2 over images and
  pixels (centred, variance-weighted R^2; the mean is the test mean): a decoder that predicts
  the mean scores 0, a perfect one 1. The target is the dataset's image as stored (float in
  [0, 1], before the model's resize / normalisation).
- ``label_decode_acc[_knn]``: fraction of test images whose label is decoded correctly.
- ``factor_decode_r2_<name>[_knn]`` (``shapes``: x, y, scale, rotation, intensity): R^2 of each
  factor. ``rotation`` is partly undecodable by construction (a circle has none; a square
  looks the same at 0 and pi/2).

Uncertainty: a bootstrap over test images (:data:`N_BOOT` resamples with replacement, seeded,
the same resamples for every point and decoder) gives ``<metric>_ci_low`` / ``<metric>_ci_high``
rows, the 2.5 % and 97.5 % percentiles of the score. It covers the choice of test images,
not retraining or the network's seed (paired comparisons over seeds do that).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import hashlib
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from analysis.spectrum import MetricValue

__all__ = [
    "ALPHAS",
    "DECODERS",
    "INFO_POINTS",
    "N_BOOT",
    "DecodeResult",
    "bootstrap_counts",
    "decode",
    "decode_input",
    "decode_input_at",
    "extract_features",
    "information_metrics",
    "information_rows",
    "metric_names",
    "ridge_loo",
    "target_basis",
]

#: Ridge penalties tried by leave-one-out (features standardised, so alpha is in units of
#: train images: alpha = n_train weighs the penalty like one more image per coefficient).
ALPHAS: NDArray[np.float64] = np.logspace(-4, 5, 10)
#: Decoders, in column order (``linear`` has no suffix, the others ``_<name>``).
DECODERS: tuple[str, ...] = ("linear", "knn")
#: Bootstrap resamples of the test images.
N_BOOT = 200
#: Capture points the information family decodes from by default (fnmatch patterns):
#: every stage after its activation, the projection before it, and the block output.
INFO_POINTS: tuple[str, ...] = ("blocks.*.input", "blocks.*.expand", "blocks.*.depthwise",
                                "blocks.*.project.pre", "blocks.*.project", "blocks.*.output")
#: Fraction of the train images' variance kept when choosing the image decoder's penalty.
TARGET_VARIANCE = 0.999
_K = 5


@dataclasses.dataclass
class DecodeResult:
    """One decoder's predictions and score on the test split.

    Attributes
    ----------
    predicted : ndarray of shape (n_test, ...)
        Decoded targets (images keep their (C, H, W) shape; labels are ints).
    score : float
        R^2 (regression) or accuracy (labels).
    ci_low, ci_high : float
        Bootstrap percentile interval (2.5 %, 97.5 %) of the score over test images.
    alpha : float or None
        The ridge penalty chosen by leave-one-out (``linear`` only).
    """

    predicted: NDArray[Any]
    score: float
    ci_low: float
    ci_high: float
    alpha: float | None = None


@functools.lru_cache(maxsize=4)
def _dataset_basis(dataset: str, size: int | None) -> NDArray[np.float64]:
    from probes.datasets import load_dataset

    train = load_dataset(dataset, split="train", size=size)
    with threadpool_limits(1):
        return target_basis(train.x.reshape(len(train), -1))


def target_basis(Y: ArrayLike, *, keep: float = TARGET_VARIANCE) -> NDArray[np.float64]:
    """Orthonormal basis (t, r) of the leading principal components of centred train targets.

    The fewest components that hold a fraction ``keep`` of the variance (all non-zero ones
    when ``keep`` is 1). Ridge fits on these coordinates are the ridge fits of the full
    targets projected onto them (a rotation does not change ridge or its leave-one-out error).
    """
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y.reshape(Y.shape[0], -1)
    Yc = Y - Y.mean(axis=0)
    if Yc.shape[0] < Yc.shape[1]:
        # fewer images than pixels: the n x n kernel has the same non-zero spectrum
        var, U = np.linalg.eigh(Yc @ Yc.T)
        var, U = np.clip(var[::-1], 0, None), U[:, ::-1]
        nz = var > var.max(initial=0.0) * 1e-20
        V = np.zeros((Yc.shape[1], 1))
        if nz.any():
            var, V = var[nz], (Yc.T @ U[:, nz]) / np.sqrt(var[nz])
    else:
        var, V = np.linalg.eigh(Yc.T @ Yc)
        var, V = np.clip(var[::-1], 0, None), V[:, ::-1]
    if var.sum() == 0:
        return V[:, :1]
    frac = np.cumsum(var) / var.sum()
    r = int(np.searchsorted(frac, keep - 1e-12) + 1) if keep < 1 else int(np.sum(var > var[0] * 1e-20))
    return V[:, : max(r, 1)]


def ridge_loo(
    X: ArrayLike, targets: Sequence[ArrayLike], *, alphas: ArrayLike = ALPHAS
) -> list[tuple[NDArray[np.float64], NDArray[np.float64], float]]:
    """Ridge fits with an intercept, one penalty per target group chosen by leave-one-out.

    For centred X (n, p) = U S V^T and a centred target block Y (n, t), the ridge fit is
    Y_hat = U diag(s^2 / (s^2 + alpha)) U^T Y, the hat diagonal h_i = 1/n + sum_j U_ij^2
    s_j^2 / (s_j^2 + alpha) (1/n: the unpenalised intercept) and the leave-one-out residual
    e_i = (y_i - y_hat_i) / (1 - h_i) (exact for linear smoothers). For each group the alpha
    with the least sum of e_i^2 over its images and columns is kept.

    Parameters
    ----------
    X : array-like of shape (n, p)
        Features (already scaled as wanted; centred here).
    targets : sequence of array-like of shape (n,) or (n, t)
        Target groups.
    alphas : array-like of positive floats

    Returns
    -------
    fits : list of (coef, intercept, alpha)
        Per group: coef of shape (p, t), intercept of shape (t,), prediction
        ``X_new @ coef + intercept``.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    mu = X.mean(axis=0)
    Xc = X - mu
    # eigh of the p x p Gram (p <= a few hundred here) is cheaper than an SVD of X
    lam, V = np.linalg.eigh(Xc.T @ Xc)
    keep = lam > max(float(lam.max(initial=0.0)), 1e-300) * 1e-12
    lam, V = lam[keep], V[:, keep]
    s = np.sqrt(lam)
    U = (Xc @ V) / s
    UU = U * U
    alphas = np.asarray(alphas, dtype=np.float64)
    fits = []
    for Y in targets:
        Y = np.asarray(Y, dtype=np.float64)
        Y = Y[:, None] if Y.ndim == 1 else Y
        ym = Y.mean(axis=0)
        Yc = Y - ym
        Z = U.T @ Yc                        # (r, t)
        best = (math.inf, alphas[0])
        for a in alphas:
            d = lam / (lam + a)
            resid = Yc - U @ (d[:, None] * Z)
            h = 1.0 / n + UU @ d
            loo = float(np.sum(np.einsum("ij,ij->i", resid, resid) / np.maximum(1 - h, 1e-12) ** 2))
            if loo < best[0]:
                best = (loo, a)
        a = best[1]
        coef = V @ ((s / (lam + a))[:, None] * Z)
        fits.append((coef, ym - mu @ coef, float(a)))
    return fits


def bootstrap_counts(n: int, *, n_boot: int = N_BOOT, seed: int = 0) -> NDArray[np.float64]:
    """How often each of n test images is drawn in each of ``n_boot`` resamples, (n_boot, n)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)
    return counts


def _r2_boot(err: NDArray[np.float64], Y: NDArray[np.float64], counts: NDArray[np.float64]) -> NDArray[np.float64]:
    """R^2 on each resample: 1 - sum_b err / sum_b ||y - mean_b(y)||^2."""
    n = Y.shape[0]
    q = np.einsum("ij,ij->i", Y, Y)
    mean_b = counts @ Y / n
    den = counts @ q - n * np.einsum("ij,ij->i", mean_b, mean_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 1.0 - (counts @ err) / den


def _interval(boot: NDArray[np.float64]) -> tuple[float, float]:
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return float(lo), float(hi)


def _r2(err: NDArray[np.float64], Y: NDArray[np.float64]) -> float:
    den = float(np.sum((Y - Y.mean(axis=0)) ** 2))
    return math.nan if den == 0 else float(1.0 - err.sum() / den)


def _check_pair(train_features: ArrayLike, test_features: ArrayLike, n_train: int, n_test: int,
                func: str) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    Ftr = np.asarray(train_features, dtype=np.float64)
    Fte = np.asarray(test_features, dtype=np.float64)
    if Ftr.ndim != 2 or Fte.ndim != 2 or Ftr.shape[1] != Fte.shape[1]:
        raise ValueError(
            f"The 'train_features' and 'test_features' parameters of {func} must be 2-D arrays with "
            f"the same number of columns. Got shapes {Ftr.shape} and {Fte.shape} instead."
        )
    if Ftr.shape[0] != n_train or Fte.shape[0] != n_test:
        raise ValueError(
            f"The features of {func} must have one row per image: {n_train} train and {n_test} test "
            f"images. Got {Ftr.shape[0]} and {Fte.shape[0]} rows instead."
        )
    if Ftr.shape[0] <= _K:
        raise ValueError(f"{func} needs more than {_K} train images. Got {Ftr.shape[0]} instead.")
    return Ftr, Fte


def _standardise(Ftr: NDArray[np.float64], Fte: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    sd = Ftr.std(axis=0)
    sd[sd == 0] = 1.0  # a constant feature carries nothing; leave it at 0 after centring
    mu = Ftr.mean(axis=0)
    return (Ftr - mu) / sd, (Fte - mu) / sd


def _one_blas_thread(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``func`` with BLAS on one thread: the matrices are small, and on a shared machine a
    second BLAS thread beside torch's made eigh 30x slower in our measurements."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with threadpool_limits(1):
            return func(*args, **kwargs)

    return wrapper


@_one_blas_thread
def decode(
    train_features: ArrayLike,
    test_features: ArrayLike,
    *,
    regression: Mapping[str, tuple[ArrayLike, ArrayLike]] | None = None,
    labels: tuple[ArrayLike, ArrayLike] | None = None,
    decoders: Sequence[str] = DECODERS,
    n_boot: int = N_BOOT,
    seed: int = 0,
    counts: NDArray[np.float64] | None = None,
    bases: Mapping[str, NDArray[np.float64]] | None = None,
) -> dict[str, dict[str, DecodeResult]]:
    """Fit every decoder on the train features, score it on the test features.

    Parameters
    ----------
    train_features : array-like of shape (n_train, p)
    test_features : array-like of shape (n_test, p)
    regression : dict of name -> (train targets, test targets), optional
        Each target of shape (n, ...) (flattened per image for the fit); scored by R^2.
    labels : (train labels, test labels), optional
        Integer labels of shapes (n_train,), (n_test,); scored by accuracy.
    decoders : sequence of {"linear", "knn"}
    n_boot : int
        Bootstrap resamples of the test images (ignored when ``counts`` is given).
    seed : int
        Seed of the bootstrap.
    counts : ndarray of shape (n_boot, n_test), optional
        Precomputed :func:`bootstrap_counts` (to share resamples across points).
    bases : dict of name -> ndarray of shape (t, r), optional
        Precomputed :func:`target_basis` of multi-column regression targets (computed here
        when missing): the ridge decoder of such a target is fitted on its leading principal
        components (:data:`TARGET_VARIANCE` of the train variance) and mapped back.

    Returns
    -------
    dict
        ``{decoder: {target name (``"label"`` for labels): DecodeResult}}``.
    """
    for d in decoders:
        if d not in DECODERS:
            raise ValueError(
                f"The 'decoders' parameter of decode must contain only {list(DECODERS)}. Got {d!r} instead."
            )
    regression = dict(regression or {})
    first = next(iter(regression.values()), None)
    if first is not None:
        n_train, n_test = len(first[0]), len(first[1])
    elif labels is not None:
        n_train, n_test = len(labels[0]), len(labels[1])
    else:
        raise ValueError("decode needs at least one target: pass 'regression' or 'labels'.")
    Ftr, Fte = _check_pair(train_features, test_features, n_train, n_test, "decode")
    if counts is None:
        counts = bootstrap_counts(n_test, n_boot=n_boot, seed=seed)
    shapes = {k: np.asarray(v[1]).shape[1:] for k, v in regression.items()}
    ytr = {k: np.asarray(v[0], dtype=np.float64).reshape(n_train, -1) for k, v in regression.items()}
    yte = {k: np.asarray(v[1], dtype=np.float64).reshape(n_test, -1) for k, v in regression.items()}
    if labels is not None:
        ltr = np.asarray(labels[0]).astype(np.int64)
        lte = np.asarray(labels[1]).astype(np.int64)
        classes = np.unique(ltr)
    out: dict[str, dict[str, DecodeResult]] = {}
    for d in decoders:
        preds: dict[str, NDArray[Any]] = {}
        alphas: dict[str, float | None] = {}
        if d == "linear":
            Str, Ste = _standardise(Ftr, Fte)
            names = list(ytr)
            basis = {k: (bases or {}).get(k) for k in names}
            for k in names:
                if basis[k] is None and ytr[k].shape[1] > 1:
                    basis[k] = target_basis(ytr[k])
            groups = [ytr[k] if basis[k] is None else ytr[k] @ basis[k] for k in names]
            if labels is not None:
                names.append("label")
                groups.append((ltr[:, None] == classes[None, :]).astype(np.float64))
            for name, (coef, icpt, a) in zip(names, ridge_loo(Str, groups)):
                p = Ste @ coef + icpt
                if name == "label":
                    p = classes[np.argmax(p, axis=1)]
                elif basis[name] is not None:
                    # ridge on the components; the part of y outside them is predicted by its mean
                    ym = ytr[name].mean(axis=0)
                    p = (p - ym @ basis[name]) @ basis[name].T + ym
                preds[name] = p
                alphas[name] = a
        else:
            k = min(_K, n_train)
            idx = NearestNeighbors(n_neighbors=k).fit(Ftr).kneighbors(Fte, return_distance=False)
            for name in ytr:
                preds[name] = ytr[name][idx].mean(axis=1)
                alphas[name] = None
            if labels is not None:
                votes = np.zeros((n_test, classes.size))
                pos = np.searchsorted(classes, ltr[idx])
                np.add.at(votes, (np.arange(n_test)[:, None], pos), 1.0)
                preds["label"] = classes[np.argmax(votes, axis=1)]
                alphas["label"] = None
        res: dict[str, DecodeResult] = {}
        for name, p in preds.items():
            if name == "label":
                correct = (p == lte).astype(np.float64)
                lo, hi = _interval(counts @ correct / n_test)
                res[name] = DecodeResult(p, float(correct.mean()), lo, hi, alphas[name])
            else:
                err = np.einsum("ij,ij->i", p - yte[name], p - yte[name])
                lo, hi = _interval(_r2_boot(err, yte[name], counts))
                res[name] = DecodeResult(p.reshape((n_test,) + shapes[name]), _r2(err, yte[name]), lo, hi,
                                         alphas[name])
        out[d] = res
    return out


def decode_input(
    train_features: ArrayLike,
    train_images: ArrayLike,
    test_features: ArrayLike,
    test_images: ArrayLike,
    *,
    decoder: str = "linear",
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> DecodeResult:
    """Decode the input images of the test split from per-image features.

    Parameters
    ----------
    train_features : array-like of shape (n_train, p)
    train_images : array-like of shape (n_train, C, H, W)
    test_features : array-like of shape (n_test, p)
    test_images : array-like of shape (n_test, C, H, W)
    decoder : {"linear", "knn"}
    n_boot, seed
        Bootstrap of the R^2 over test images.

    Returns
    -------
    DecodeResult
        ``predicted`` of shape (n_test, C, H, W): the decoded test images; ``score``: the
        centred R^2 (module docstring).

    Examples
    --------
    >>> from analysis.information import decode_input, extract_features  # doctest: +SKIP
    >>> tr = extract_features(model, train, input_spec=spec)["blocks.3.output"]  # doctest: +SKIP
    >>> te = extract_features(model, test, input_spec=spec)["blocks.3.output"]  # doctest: +SKIP
    >>> decode_input(tr, train.x, te, test.x).predicted.shape  # doctest: +SKIP
    (360, 1, 32, 32)
    """
    res = decode(train_features, test_features, regression={"input": (train_images, test_images)},
                 decoders=(decoder,), n_boot=n_boot, seed=seed)
    return res[decoder]["input"]


def decode_input_at(
    model: Any,
    dataset: str,
    point: str,
    *,
    input_spec: Any = None,
    decoder: str = "linear",
    seed: int = 0,
    device: str | None = None,
) -> tuple[DecodeResult, Any]:
    """Decode the test images of a built-in dataset from one capture point of ``model``.

    Parameters
    ----------
    model : nn.Module
    dataset : {"digits", "shapes"}
    point : str
        Capture-point name, e.g. ``"blocks.3.project"``.
    input_spec, device
        See :func:`extract_features`.
    decoder : {"linear", "knn"}
    seed : int
        Seed of the bootstrap.

    Returns
    -------
    result : DecodeResult
        ``predicted`` of shape (n_test, C, H, W): the decoded test images.
    test : probes.datasets.ImageDataset
        The test split (``test.x`` are the true images, same order).
    """
    from probes.datasets import load_dataset

    if dataset not in ("digits", "shapes"):
        raise ValueError(
            f"The 'dataset' parameter of decode_input_at must be 'digits' or 'shapes'. Got {dataset!r} instead."
        )
    train = load_dataset(dataset, split="train")
    test = load_dataset(dataset, split="test")
    ftr = extract_features(model, train, input_spec=input_spec, points=point, device=device)
    if point not in ftr:
        raise ValueError(
            f"The 'point' parameter of decode_input_at must name a capture point of the model, e.g. "
            f"'blocks.0.project'. Got {point!r} instead."
        )
    fte = extract_features(model, test, input_spec=input_spec, points=point, device=device)
    res = decode(ftr[point], fte[point], regression={"input": (train.x, test.x)}, decoders=(decoder,), seed=seed,
                 bases={"input": _dataset_basis(dataset, None)})
    return res[decoder]["input"], test


def _suffix(decoder: str) -> str:
    return "" if decoder == "linear" else f"_{decoder}"


def metric_names(factors: Sequence[str] = (), *, labels: bool = True,
                 decoders: Sequence[str] = DECODERS) -> list[str]:
    """Metric ids of the family, in row order (each followed by its ``_ci_low`` / ``_ci_high``)."""
    base = ["input_decode_r2"] + (["label_decode_acc"] if labels else []) + [
        f"factor_decode_r2_{f}" for f in factors]
    names = []
    for b in base:
        for d in decoders:
            m = b + _suffix(d)
            names += [m, f"{m}_ci_low", f"{m}_ci_high"]
    return names


def information_metrics(
    train_features: ArrayLike,
    test_features: ArrayLike,
    train_data: Any,
    test_data: Any,
    *,
    decoders: Sequence[str] = DECODERS,
    counts: NDArray[np.float64] | None = None,
    bases: Mapping[str, NDArray[np.float64]] | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    point: str | None = None,
) -> dict[str, MetricValue]:
    """Every information metric of one capture point.

    Parameters
    ----------
    train_features, test_features : array-like of shape (n, p)
        Per-image features of the train and test images, rows in dataset order.
    train_data, test_data : probes.datasets.ImageDataset
        The images (targets ``x``), labels ``y`` and factors.
    decoders, counts, bases, n_boot, seed
        See :func:`decode` (``bases`` keys: ``"input"``).
    point : str, optional
        Capture-point name for messages.

    Returns
    -------
    dict of str to MetricValue
        Names from :func:`metric_names`; NaN with a reason where a target is missing or the
        features are not finite.
    """
    factors = sorted(test_data.factors) if test_data.factors and train_data.factors else []
    has_labels = train_data.y is not None and test_data.y is not None
    names = metric_names(factors, labels=True, decoders=decoders)
    Ftr = np.asarray(train_features, dtype=np.float64)
    Fte = np.asarray(test_features, dtype=np.float64)
    if not (np.all(np.isfinite(Ftr)) and np.all(np.isfinite(Fte))):
        where = f" at {point}" if point else ""
        return {n: MetricValue(math.nan, f"non-finite activations{where}") for n in names}
    regression = {"input": (train_data.x, test_data.x)}
    regression |= {f"factor_{f}": (train_data.factors[f], test_data.factors[f]) for f in factors}
    res = decode(Ftr, Fte, regression=regression,
                 labels=(train_data.y, test_data.y) if has_labels else None,
                 decoders=decoders, counts=counts, bases=bases, n_boot=n_boot, seed=seed)
    out: dict[str, MetricValue] = {}
    for d in decoders:
        sfx = _suffix(d)
        pairs = [("input_decode_r2", "input"), ("label_decode_acc", "label")] + [
            (f"factor_decode_r2_{f}", f"factor_{f}") for f in factors]
        for metric, key in pairs:
            m = metric + sfx
            r = res[d].get(key)
            if r is None:
                reason = "not available: the dataset has no labels"
                out |= {m: MetricValue(math.nan, reason), f"{m}_ci_low": MetricValue(math.nan, reason),
                        f"{m}_ci_high": MetricValue(math.nan, reason)}
                continue
            reason = None if math.isfinite(r.score) else "not defined: the test targets have zero variance"
            out[m] = MetricValue(r.score, reason)
            out[f"{m}_ci_low"] = MetricValue(r.ci_low, reason)
            out[f"{m}_ci_high"] = MetricValue(r.ci_high, reason)
    return {n: out[n] for n in names}


def extract_features(
    model: Any,
    data: Any,
    *,
    input_spec: Any = None,
    points: str | Sequence[str] | None = INFO_POINTS,
    batch_size: int = 256,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, NDArray[np.float64]]:
    """Globally pooled features of every image at every capture point, rows in dataset order.

    Runs :func:`probes.capture.probe` with ``sample_unit="image"``, only the reservoir sink and
    a reservoir as large as the dataset, so every image is kept; rows are put back in dataset
    order by their image ids.

    Parameters
    ----------
    model : nn.Module
    data : probes.datasets.ImageDataset
    input_spec : probes.preprocess.InputSpec, optional
    points : str, list of str or None
        Capture points (names or fnmatch patterns); None = all.
    batch_size, device, progress
        As in :func:`probes.capture.probe`.

    Returns
    -------
    dict of str to ndarray of shape (n_images, C)
    """
    from probes.capture import probe

    n = len(data)
    pr = probe(model, data, input_spec=input_spec, points=_point_filter(points), batch_size=batch_size,
               device=device, sample_unit="image", reservoir_size=max(n, 10), sinks=("reservoir",),
               progress=progress)
    out = {}
    for name, st in pr.stats.items():
        res = st.reservoir
        ids = np.asarray(res.ids)[:, 0]
        if ids.size != n or not np.array_equal(np.sort(ids), np.arange(n)):
            raise RuntimeError(f"extract_features: the reservoir of {name} did not keep every image once.")
        feats = np.empty((n, res.values.shape[1]), dtype=np.float64)
        feats[ids] = res.values
        out[name] = feats
    return out


def _point_filter(points: str | Sequence[str] | None) -> Any:
    if points is None or isinstance(points, str):
        return points
    pats = tuple(points)
    return lambda p: any(fnmatch.fnmatchcase(p.name, pat) for pat in pats)


def information_rows(
    model: Any,
    dataset: str,
    *,
    input_spec: Any = None,
    points: str | Sequence[str] | None = INFO_POINTS,
    data_size: int | None = 32,
    gray_to_rgb: bool = False,
    decoders: Sequence[str] = DECODERS,
    n_boot: int = N_BOOT,
    seed: int = 0,
    device: str | None = None,
    progress: bool = False,
) -> tuple[dict[str, dict[str, MetricValue]], dict[str, Any]]:
    """Information metrics of every selected point of ``model`` on a built-in dataset.

    Loads the train and test splits, extracts the pooled features of both and decodes.

    Parameters
    ----------
    model : nn.Module
    dataset : str
        A dataset with a train / test split (``digits``, ``shapes``).
    input_spec, points, device, progress
        See :func:`extract_features`.
    data_size : int or None
        Native size the images are made at.
    gray_to_rgb : bool
        Repeat a one-channel dataset for an RGB model (the target stays the stored image).
    decoders, n_boot, seed
        See :func:`decode`.

    Returns
    -------
    metrics : dict
        ``{point name: {metric: MetricValue}}``.
    info : dict
        ``n_train``, ``n_test``, ``points`` (the CapturePoint objects by name).
    """
    from probes.datasets import load_dataset

    if dataset not in ("digits", "shapes"):
        raise ValueError(
            f"The 'dataset' parameter of information_rows must be a built-in dataset with a train / "
            f"test split ('digits' or 'shapes'). Got {dataset!r} instead."
        )
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 10:
        raise ValueError(f"The 'n_boot' parameter of information_rows must be an int >= 10. Got {n_boot!r} instead.")
    train = load_dataset(dataset, split="train", size=data_size)
    test = load_dataset(dataset, split="test", size=data_size)

    def model_input(ds: Any) -> Any:
        return dataclasses.replace(ds, x=np.repeat(ds.x, 3, axis=1)) if gray_to_rgb and ds.x.shape[1] == 1 else ds

    ftr = extract_features(model, model_input(train), input_spec=input_spec, points=points, device=device,
                           progress=progress)
    fte = extract_features(model, model_input(test), input_spec=input_spec, points=points, device=device,
                           progress=progress)
    counts = bootstrap_counts(len(test), n_boot=n_boot, seed=seed)
    bases = {"input": _dataset_basis(dataset, data_size)}
    metrics: dict[str, dict[str, MetricValue]] = {}
    done: dict[bytes, dict[str, MetricValue]] = {}
    for name in fte:
        # a linear projection is its project.pre, block i's output is block i+1's input:
        # identical features decode identically, so decode them once
        key = hashlib.sha256(ftr[name].tobytes() + fte[name].tobytes()).digest()
        if key not in done:
            done[key] = information_metrics(ftr[name], fte[name], train, test, decoders=decoders,
                                            counts=counts, bases=bases, point=name)
        metrics[name] = done[key]
    return metrics, {"n_train": len(train), "n_test": len(test)}
