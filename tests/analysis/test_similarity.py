"""Linear CKA: invariances and known values."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.similarity import linear_cka, similarity_metrics


def _cloud(n: int = 500, c: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, c))


def _orthogonal(c: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(c, c)))
    return q


def _song_unbiased_hsic(k: np.ndarray, l_: np.ndarray) -> float:
    # Song et al. 2012, eq. (5), written out on n x n Gram matrices
    n = k.shape[0]
    kt, lt = k.copy(), l_.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    one = np.ones(n)
    cross = (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    return (np.trace(kt @ lt) + cross - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_a_cloud_with_itself_is_one(debiased):
    x = _cloud()
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_to_orthogonal_maps_isotropic_scaling_and_translation(debiased):
    x = _cloud(seed=1)
    y = np.tanh(x @ np.random.default_rng(2).normal(size=(8, 12)))
    base = linear_cka(x, y, debiased=debiased)
    assert 0.1 < base < 0.99
    moved = 5.0 * x @ _orthogonal(8, 3) - 2.0
    assert linear_cka(moved, y, debiased=debiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x, 0.01 * y @ _orthogonal(12, 4) + 7.0, debiased=debiased) == pytest.approx(base, rel=1e-10)


def test_not_invariant_to_a_general_invertible_map():
    # For isotropic X (X^T X ~ n I) and A = diag(a): CKA(X, X A) ~ sum a^2 / (sqrt(C) sqrt(sum a^4))
    x = _cloud(n=20000, c=4, seed=5)
    a = np.array([1.0, 1.0, 1.0, 10.0])
    expected = np.sum(a**2) / (2 * np.sqrt(np.sum(a**4)))
    assert expected == pytest.approx(0.5149, abs=1e-4)
    assert linear_cka(x, x * a) == pytest.approx(expected, abs=0.01)


def test_one_dimensional_cka_is_squared_correlation():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 1))
    y = 2 * x + rng.normal(size=(300, 1))
    r = np.corrcoef(x[:, 0], y[:, 0])[0, 1]
    assert linear_cka(x, y) == pytest.approx(r**2, rel=1e-10)


def test_independent_clouds_have_low_cka():
    x, y = _cloud(n=2000, c=10, seed=7), _cloud(n=2000, c=10, seed=8)
    # the plain estimate is biased up by about sqrt(C1 C2) / n = 0.005; debiased is ~0
    assert linear_cka(x, y) < 0.02
    assert abs(linear_cka(x, y, debiased=True)) < 0.005
    assert linear_cka(x, y, debiased=True) < linear_cka(x, y)


def test_debiased_matches_the_unbiased_hsic_on_gram_matrices():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(30, 5))
    y = x @ rng.normal(size=(5, 3)) + rng.normal(size=(30, 3))
    # the unbiased estimator is translation-invariant, so uncentred Gram matrices work too
    k, l_ = (x + 3) @ (x + 3).T, y @ y.T
    expected = _song_unbiased_hsic(k, l_) / np.sqrt(_song_unbiased_hsic(k, k) * _song_unbiased_hsic(l_, l_))
    assert linear_cka(x, y, debiased=True) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("debiased", [False, True])
def test_gram_and_feature_space_paths_agree(debiased):
    # 40 points in 64 + 48 channels takes the Gram path; 40 points in 3 + 2 the feature path
    rng = np.random.default_rng(10)
    z = rng.normal(size=(40, 3))
    x_small, y_small = z, z[:, :2] + 0.5 * rng.normal(size=(40, 2))
    pad_x, pad_y = _orthogonal(64, 11)[:3], _orthogonal(48, 12)[:2]
    feature = linear_cka(x_small, y_small, debiased=debiased)
    gram = linear_cka(x_small @ pad_x, y_small @ pad_y, debiased=debiased)
    assert gram == pytest.approx(feature, rel=1e-10)


def test_similarity_metrics_names_the_metric():
    x = _cloud(seed=13)
    metrics, reasons = similarity_metrics(x, x @ _orthogonal(8, 14))
    assert metrics == {"cka_to_input": pytest.approx(1.0)}
    assert reasons == {}


@pytest.mark.parametrize(
    ("points", "input_points", "debiased", "reason"),
    [
        (np.ones((10, 3)), _cloud(10, 2), False, "points have zero variance (constant cloud)"),
        (_cloud(10, 2), np.zeros((10, 4)), False, "input points have zero variance (constant cloud)"),
        (_cloud(3, 2), _cloud(3, 2, seed=1), True, "debiased CKA needs at least 4 points; got 3"),
    ],
)
def test_undefined_cka_is_nan_with_a_reason(points, input_points, debiased, reason):
    metrics, reasons = similarity_metrics(points, input_points, debiased=debiased)
    assert np.isnan(metrics["cka_to_input"])
    assert reasons == {"cka_to_input": reason}
    assert np.isnan(linear_cka(points, input_points, debiased=debiased))


def test_rejects_unpaired_point_sets():
    match = r"'x' and 'y' parameters of linear_cka must have the same number of \(paired\) points. Got 10 and 9"
    with pytest.raises(ValueError, match=match):
        linear_cka(_cloud(10), _cloud(9))


def test_rejects_non_finite_points():
    y = _cloud(10)
    y[2, 2] = np.nan
    with pytest.raises(ValueError, match=r"'input_points' parameter of similarity_metrics must be finite"):
        similarity_metrics(_cloud(10), y)


def test_rejects_bad_shapes():
    match = r"'x' parameter of linear_cka must be an array of shape \(n_points, n_channels\)"
    with pytest.raises(ValueError, match=match):
        linear_cka(np.zeros(10), _cloud(10))
