import math
import numpy as np
import pytest

from analysis.reconstruction import (
    active_set_inverse,
    r2_score_flat,
    reconstruction_metrics,
    relative_error,
)
from analysis.spectrum import NonFiniteWarning
from analysis.spiral import activate


def test_relative_error_and_r2_formulas():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    x_hat = np.array([[3.0, 1.0], [0.0, 0.0]])
    # mean (1.5, 2); sum ||x - mean||^2 = 2 * (1.5^2 + 2^2) = 12.5; sum ||x_hat - x||^2 = 9
    assert relative_error(x_hat, x) == pytest.approx(math.sqrt(9 / 12.5))
    assert r2_score_flat(x_hat, x) == pytest.approx(1 - 9 / 12.5)
    assert math.isnan(relative_error(x, np.zeros((2, 2))))
    assert math.isnan(relative_error(x, np.full((2, 2), 3.0)))  # constant target


@pytest.mark.parametrize("offset", [0.0, 5.0, -40.0])
def test_mean_predictor_scores_error_one_and_r2_zero_whatever_the_offset(offset):
    # the uncentred ||x|| made a mean predictor look good on targets far from 0
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 4)) + offset
    mean = np.broadcast_to(x.mean(axis=0), x.shape)
    assert relative_error(mean, x) == pytest.approx(1.0)
    assert r2_score_flat(mean, x) == pytest.approx(0.0, abs=1e-12)
    x_hat = x + rng.normal(scale=0.3, size=x.shape)
    assert relative_error(x_hat, x) == pytest.approx(math.sqrt(1 - r2_score_flat(x_hat, x)))


def test_relative_error_matches_plain_numpy():
    rng = np.random.default_rng(4)
    x, x_hat = rng.normal(size=(30, 3)) ** 2, rng.normal(size=(30, 3))
    want = np.linalg.norm(x_hat - x) / np.linalg.norm(x - x.mean(axis=0, keepdims=True))
    assert relative_error(x_hat, x) == pytest.approx(want, rel=1e-12)


def test_invertible_linear_map_has_zero_error():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 8))
    A = rng.normal(size=(8, 8)) + 3 * np.eye(8)
    m = reconstruction_metrics(X @ A.T, X, decoders=("linear",))
    assert m["recon_error_linear"].value < 1e-3
    assert m["recon_r2_linear"].value > 0.999999


def _brute_force_ridge_error(P, X, seed=0):
    """Second route for recon_error_linear: standardise on the train split, then for each alpha
    refit a ridge with an unpenalised intercept without each train point in turn (plain numpy),
    keep the alpha of least mean squared leave-one-out error, refit, score the held-out split."""
    from analysis.reconstruction import _ALPHAS, split_indices

    train, test = split_indices(P.shape[0], seed=seed)
    mu, sd = P[train].mean(axis=0), P[train].std(axis=0)
    Z = (P - mu) / np.where(sd > 0, sd, 1.0)

    def fit(Zt, Xt, alpha):
        zm, xm = Zt.mean(axis=0), Xt.mean(axis=0)
        Zc = Zt - zm
        w = np.linalg.solve(Zc.T @ Zc + alpha * np.eye(Zt.shape[1]), Zc.T @ (Xt - xm))
        return lambda Zq: (Zq - zm) @ w + xm

    def loo(alpha):
        err = 0.0
        for i in range(train.size):
            rest = np.delete(train, i)
            err += np.sum((fit(Z[rest], X[rest], alpha)(Z[train[i : i + 1]]) - X[train[i]]) ** 2)
        return err

    best = min(_ALPHAS, key=loo)  # first of equal scores, as RidgeCV
    return relative_error(fit(Z[train], X[train], best)(Z[test]), X[test])


@pytest.mark.parametrize("n_features", [5, 60])  # fewer features than train points (SVD) / more
def test_linear_decoder_equals_brute_force_leave_one_out_ridge(n_features):
    rng = np.random.default_rng(6)
    X = rng.normal(size=(50, 3))
    P = np.tanh(X @ rng.normal(size=(3, n_features))) + 0.3 * rng.normal(size=(50, n_features))
    got = reconstruction_metrics(P, X, decoders=("linear",))["recon_error_linear"].value
    assert got == pytest.approx(_brute_force_ridge_error(P, X), rel=1e-9)


def test_zeroing_half_the_coordinates_loses_sqrt_half():
    # Isotropic zero-mean data; the decoder can only predict E[x_j] = 0 for the 4 lost
    # coordinates, so the error is sqrt(sum of half the variance / all of it) = sqrt(1/2).
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4000, 8))
    P = X.copy()
    P[:, 4:] = 0.0
    m = reconstruction_metrics(P, X)
    assert m["recon_error_linear"].value == pytest.approx(math.sqrt(0.5), abs=0.02)
    assert m["recon_r2_linear"].value == pytest.approx(0.5, abs=0.03)
    assert m["recon_error_knn"].value > 0.7  # k-NN cannot do better than the lost half


@pytest.mark.parametrize("activation", ["relu", "relu6", "hswish", "leaky_relu"])
def test_active_set_inverse_is_exact_on_a_wide_random_expansion(activation):
    rng = np.random.default_rng(2)
    W, b = rng.normal(size=(64, 4)), rng.normal(size=64)
    X = rng.normal(scale=2.0, size=(300, 4))
    Y = activate(X @ W.T + b, activation)
    x_hat, ok = active_set_inverse(Y, W, b, activation=activation)
    assert ok.all()
    np.testing.assert_allclose(x_hat, X, atol=1e-9)
    m = reconstruction_metrics(Y, X, weight=W, bias=b, activation=activation)
    assert m["recon_exact_fraction"].value == 1.0
    assert m["recon_error_exact"].value < 1e-10
    assert m["recon_r2_exact"].value == pytest.approx(1.0)


def test_exact_inverse_reports_where_it_is_defined():
    W = np.array([[1.0, 0.0], [0.0, 1.0]])
    X = np.random.default_rng(3).normal(size=(400, 2))
    m = reconstruction_metrics(np.maximum(X @ W.T, 0), X, weight=W, activation="relu", decoders=())
    assert m["recon_exact_fraction"].value == pytest.approx(0.25, abs=0.08)  # both coordinates > 0
    assert m["recon_error_exact"].value < 1e-12
    no_w = reconstruction_metrics(np.maximum(X, 0), X, decoders=())
    assert "no folded weights" in no_w["recon_error_exact"].reason


def test_knn_recovers_a_circle_through_a_wide_relu():
    theta = np.linspace(0, 2 * np.pi, 800, endpoint=False)
    X = np.column_stack([np.cos(theta), np.sin(theta)])
    W = np.random.default_rng(4).normal(size=(20, 2))
    m = reconstruction_metrics(np.maximum(X @ W.T, 0), X, decoders=("knn",))
    assert m["recon_error_knn"].value < 0.02


def test_mlp_decoder_learns_a_smooth_injective_map():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(2000, 10))
    P = np.tanh(X @ rng.normal(size=(10, 100)) / 3)
    m = reconstruction_metrics(P, X, decoders=("mlp",))
    assert m["recon_r2_mlp"].value > 0.9


def test_deterministic_for_a_seed():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(300, 3))
    P = np.maximum(X @ rng.normal(size=(3, 12)), 0)
    assert reconstruction_metrics(P, X, seed=3) == reconstruction_metrics(P, X, seed=3)


def test_too_few_points_and_non_finite():
    m = reconstruction_metrics(np.ones((5, 2)), np.ones((5, 2)))
    assert all(math.isnan(v.value) for v in m.values())
    assert m["recon_error_linear"].reason.startswith("too few points: 5")
    P = np.ones((20, 2))
    P[0, 0] = np.inf
    with pytest.warns(NonFiniteWarning, match="'blocks.1.project'"):
        m = reconstruction_metrics(P, np.ones((20, 2)), point="blocks.1.project")
    assert math.isnan(m["recon_error_knn"].value)


def test_degenerate_inputs():
    m = reconstruction_metrics(np.random.default_rng(7).normal(size=(50, 3)), np.zeros((50, 2)))
    assert "zero variance" in m["recon_error_linear"].reason
    assert "zero variance" in m["recon_r2_linear"].reason


def test_bad_parameters():
    with pytest.raises(ValueError, match=r"'decoders' parameter .* Got 'svm' instead"):
        reconstruction_metrics(np.ones((20, 2)), np.ones((20, 2)), decoders=("svm",))
    with pytest.raises(ValueError, match=r"same number of rows.*\(20, 2\) and \(19, 2\)"):
        reconstruction_metrics(np.ones((20, 2)), np.ones((19, 2)))
    with pytest.raises(ValueError, match=r"'activation' parameter .* required with 'weight'"):
        reconstruction_metrics(np.ones((20, 2)), np.ones((20, 2)), weight=np.eye(2))


def test_exact_inverse_not_available_for_other_activations():
    X = np.random.default_rng(8).normal(size=(50, 2))
    m = reconstruction_metrics(X, X, weight=np.eye(2), activation="silu", decoders=())
    assert "no exact inverse for activation 'silu'" in m["recon_error_exact"].reason
