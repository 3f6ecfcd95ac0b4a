import altair as alt
import numpy as np
import pytest

from analysis.activity import lemma2_invertible
from analysis.figures import spiral_figure
from analysis.spiral import (
    expected_invertible_fraction,
    make_spiral,
    run_spiral,
)


@pytest.fixture(scope="module")
def relu_run():
    return run_spiral(dims=(2, 3, 15, 30), seeds=(0, 1, 2), n_points=600)


def errors(table, method, n):
    sel = table[(table.method == method) & (table.n == n)]
    assert len(sel) == 3
    return sel.recon_error.to_numpy()


def test_table_schema(relu_run):
    table, _ = relu_run
    assert list(table.columns) == [
        "n", "seed", "activation", "method", "recon_error", "procrustes_disparity",
        "procrustes_scale", "invertible_fraction", "expected_invertible_fraction", "n_points",
    ]
    assert len(table) == 4 * 3 * 3
    assert set(table.activation) == {"relu"} and set(table.n_points) == {600}


def test_small_n_collapses_the_spiral(relu_run):
    table, _ = relu_run
    for n in (2, 3):
        for method in ("pinv", "active_set", "learned"):
            assert errors(table, method, n).min() > 0.2, (method, n)
        assert table[table.n == n].invertible_fraction.max() < 0.8


def test_large_n_active_set_inverse_recovers_the_spiral(relu_run):
    table, _ = relu_run
    for n in (15, 30):
        assert errors(table, "active_set", n).max() < 1e-10
        assert errors(table, "learned", n).max() < 0.05
        assert table[table.n == n].invertible_fraction.min() > 0.99


def test_pseudo_inverse_keeps_the_shape_at_half_the_size_at_large_n(relu_run):
    # pinv(T) ReLU(Tx) = x/2 + pinv(T)|Tx|/2: error near 0.5 although the shape survives
    table, _ = relu_run
    for n in (15, 30):
        assert errors(table, "pinv", n).min() > 0.3
        sel = table[(table.method == "pinv") & (table.n == n)]
        assert sel.procrustes_scale.between(0.4, 0.6).all()
        assert sel.procrustes_disparity.mean() < 0.1


def test_procrustes_disparity_high_at_small_n_and_near_zero_at_large_n(relu_run):
    table, _ = relu_run
    for method in ("pinv", "active_set", "learned"):
        sel = table[table.method == method].groupby("n").procrustes_disparity.mean()
        assert sel[2] > 0.2 and sel[3] > 0.1, method
        assert sel[15] < sel[3] / 2 and sel[30] < sel[3] / 2, method
    exact = table[(table.method != "pinv") & table.n.isin([15, 30])]
    assert exact.procrustes_disparity.max() < 1e-3
    assert exact[exact.method == "active_set"].procrustes_scale.to_numpy() == pytest.approx(1.0)


def test_procrustes_fit_known_answers():
    from analysis.spiral import procrustes_fit

    X, _ = make_spiral(200)
    c, s = np.cos(0.7), np.sin(0.7)
    moved = 0.3 * X @ np.array([[c, -s], [s, c]]) + 5.0
    disparity, scale = procrustes_fit(moved, X)
    assert disparity == pytest.approx(0.0, abs=1e-12) and scale == pytest.approx(0.3)
    disparity, scale = procrustes_fit(np.ones_like(X), X)
    assert np.isnan(disparity) and scale == 0.0
    # a plain-numpy route: disparity = 1 - (sum of singular values of normalised x_c^T x_hat_c)^2
    noisy = X + np.random.default_rng(0).normal(scale=0.2, size=X.shape)
    xc, hc = X - X.mean(0), noisy - noisy.mean(0)
    sv = np.linalg.svd((xc / np.linalg.norm(xc)).T @ (hc / np.linalg.norm(hc)), compute_uv=False)
    assert procrustes_fit(noisy, X)[0] == pytest.approx(1 - sv.sum() ** 2, rel=1e-9)


def test_reconstructions_dict(relu_run):
    _, recon = relu_run
    X = recon["input"]
    assert X.shape == (600, 2) and recon["s"].shape == (600,)
    entry = recon[(30, 1)]
    np.testing.assert_allclose(entry["active_set"], X, atol=1e-10)
    assert entry["invertible"].dtype == bool and entry["invertible"].all()


def test_theorem1_expected_invertible_fraction():
    assert expected_invertible_fraction(2) == 0.25
    assert expected_invertible_fraction(3) == 0.5
    assert expected_invertible_fraction(5) == 26 / 32
    X, _ = make_spiral(400)
    for m in (3, 5):
        fr = [
            lemma2_invertible(np.random.default_rng(s).normal(size=(m, 2)), None, X).mean()
            for s in range(200)
        ]
        assert np.mean(fr) == pytest.approx(expected_invertible_fraction(m), abs=0.05)


def test_linear_activation_is_recovered_by_every_inverse():
    table, _ = run_spiral(dims=(2, 5), activation="linear", seeds=(0,), n_points=200)
    assert table[table.method != "learned"].recon_error.max() < 1e-10
    assert table.expected_invertible_fraction.isna().all()


def test_deterministic():
    a, _ = run_spiral(dims=(3,), seeds=(4,), n_points=100)
    b, _ = run_spiral(dims=(3,), seeds=(4,), n_points=100)
    assert a.equals(b)


def test_bad_parameters():
    with pytest.raises(ValueError, match=r"The 'dims' parameter of run_spiral must be a non-empty list of ints >= 1\. Got \[0, 3\] instead\."):
        run_spiral(dims=(0, 3))
    with pytest.raises(ValueError, match=r"'activation' parameter of run_spiral .* Got 'tanh'"):
        run_spiral(activation="tanh")


def test_figure_spec(relu_run):
    _, recon = relu_run
    chart = spiral_figure(recon, max_points=100)
    assert isinstance(chart, alt.Chart)
    spec = chart.to_dict()
    enc = spec["encoding"]
    assert enc["color"]["scale"]["scheme"] == "viridis"
    assert enc["column"]["sort"] == ["input", "n = 2", "n = 3", "n = 15", "n = 30"]
    assert enc["row"]["sort"] == ["pinv(T) act(Tx)", "active-set inverse", "learned (k-NN)"]
    assert len(spec["data"]["values"]) == 3 * 5 * 100
    with pytest.raises(ValueError, match="'seed' parameter of spiral_figure"):
        spiral_figure(recon, seed=9)


@pytest.mark.slow
def test_figure_renders_to_png(relu_run):
    import vl_convert
    png = vl_convert.vegalite_to_png(spiral_figure(relu_run[1], max_points=150).to_json())
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
