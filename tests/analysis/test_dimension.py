"""Intrinsic dimension against clouds of known dimension."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.dimension import intrinsic_dimension, mle_dimension, twonn_dimension
from tests.manifolds import make_manifold


def _subspace_cloud(d: int, n: int = 2000, ambient: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(ambient, d)))
    return rng.normal(size=(n, d)) @ q.T


def _flat_torus(d: int, n: int = 2000, seed: int = 0) -> np.ndarray:
    # (cos t_1, sin t_1, ..., cos t_d, sin t_d): a flat d-torus in R^(2d), no boundary
    theta = np.random.default_rng(seed).uniform(0, 2 * np.pi, size=(n, d))
    return np.concatenate([np.cos(theta), np.sin(theta)], axis=1)


@pytest.mark.parametrize("d", [2, 5])
def test_linear_subspace_gives_its_dimension_within_10_percent(d):
    metrics, reasons = intrinsic_dimension(_subspace_cloud(d))
    assert reasons == {}
    assert metrics["twonn_id"] == pytest.approx(d, rel=0.1)
    assert metrics["mle_id"] == pytest.approx(d, rel=0.1)


@pytest.mark.parametrize("d", [2, 3])
def test_flat_torus_gives_its_dimension_within_10_percent(d):
    metrics, _ = intrinsic_dimension(_flat_torus(d))
    assert metrics["twonn_id"] == pytest.approx(d, rel=0.1)
    assert metrics["mle_id"] == pytest.approx(d, rel=0.1)


@pytest.mark.parametrize(("name", "d"), [("circle", 1), ("torus", 2), ("swiss_roll", 2)])
def test_manifolds_embedded_in_64_dims(name, d):
    x = make_manifold(name, 1500, seed=1, ambient_dim=64)
    assert twonn_dimension(x) == pytest.approx(d, rel=0.1)
    assert mle_dimension(x) == pytest.approx(d, rel=0.1)


def test_single_function_results_equal_the_combined_ones():
    x = _subspace_cloud(3, n=500)
    metrics, _ = intrinsic_dimension(x, k=10, discard_fraction=0.2)
    assert metrics["twonn_id"] == twonn_dimension(x, discard_fraction=0.2)
    assert metrics["mle_id"] == mle_dimension(x, k=10)


def test_invariant_to_scale_rotation_and_translation():
    x = _subspace_cloud(3, n=500)
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(20, 20)))
    y = 7.0 * x @ q + 3.0
    a, _ = intrinsic_dimension(x)
    b, _ = intrinsic_dimension(y)
    assert b["twonn_id"] == pytest.approx(a["twonn_id"], rel=1e-9)
    assert b["mle_id"] == pytest.approx(a["mle_id"], rel=1e-9)


def test_duplicate_points_are_counted_once():
    x = _subspace_cloud(2, n=400)
    with_dups = np.concatenate([x, x[:150], x[:10]])
    assert intrinsic_dimension(with_dups) == intrinsic_dimension(x)


def test_known_ratios_give_the_closed_form_slope():
    # Points 0, 1, 3, 7 on a line: (r1, r2) = (1, 3), (1, 2), (2, 3), (4, 6), so mu = 3, 2,
    # 1.5, 1.5. The largest ratio has F = 4/4 (infinite y), so discard a quarter, as the
    # reference's convention F_i = i / N requires.
    x = np.array([[0.0], [1.0], [3.0], [7.0]])
    mu = np.sort([3.0, 2.0, 1.5, 1.5])
    lx, ly = np.log(mu[:3]), -np.log(1 - np.arange(1, 4) / 4)
    expected = (lx @ ly) / (lx @ lx)
    assert twonn_dimension(x, discard_fraction=0.25) == pytest.approx(expected)
    # MLE with k = 2: (k-1) N / sum log(T_2 / T_1)
    assert mle_dimension(x, k=2) == pytest.approx(4 / np.sum(np.log(mu)))


@pytest.fixture(scope="module")
def shapes():
    from probes.datasets import make_shapes

    return make_shapes(3000, seed=0)


def _shape_class(ds, name: str, blur: float = 0.0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    x = ds.x[ds.y == ds.class_names.index(name)][:, 0]
    if blur:
        x = gaussian_filter(x, sigma=(0, blur, blur))
    return x.reshape(len(x), -1)


def test_shapes_inputs_give_about_their_number_of_factors(shapes):
    # Squares have 5 continuous factors (x, y, scale, rotation, intensity), circles 4 (no
    # rotation). The raw images have hard, 4x4-supersampled edges: beyond a pixel, shifting an
    # edge by delta moves the image by ~sqrt(delta) in L2, so the image manifold is rough at the
    # nearest-neighbour scale of ~1,000 images and both estimators read high (measured TwoNN
    # 6.2 / 4.5, MLE(k=10) 7.2 / 4.7). Honest tolerances: TwoNN within +-1.5; MLE in
    # [n - 1, n + 2.5]; and the estimates order the classes by their number of factors.
    squares, _ = intrinsic_dimension(_shape_class(shapes, "square"), k=10)
    circles, _ = intrinsic_dimension(_shape_class(shapes, "circle"), k=10)
    assert squares["twonn_id"] == pytest.approx(5, abs=1.5)
    assert circles["twonn_id"] == pytest.approx(4, abs=1.5)
    assert 4 <= squares["mle_id"] <= 7.5
    assert 3 <= circles["mle_id"] <= 6.5
    assert circles["twonn_id"] < squares["twonn_id"] and circles["mle_id"] < squares["mle_id"]


def test_smoothed_shapes_give_their_number_of_factors(shapes):
    # A 1-pixel Gaussian blur makes the image manifold smooth at the neighbour scale; then both
    # estimators are within 0.75 of the factor count (measured 5.4 / 5.2 and 3.9 / 3.9).
    squares, _ = intrinsic_dimension(_shape_class(shapes, "square", blur=1.0), k=10)
    circles, _ = intrinsic_dimension(_shape_class(shapes, "circle", blur=1.0), k=10)
    for value in (squares["twonn_id"], squares["mle_id"]):
        assert value == pytest.approx(5, abs=0.75)
    for value in (circles["twonn_id"], circles["mle_id"]):
        assert value == pytest.approx(4, abs=0.75)


# --- undefined and bad input --------------------------------------------------------------


def test_all_equal_points_are_nan_with_reasons():
    metrics, reasons = intrinsic_dimension(np.ones((50, 4)))
    assert np.isnan(metrics["twonn_id"]) and np.isnan(metrics["mle_id"])
    assert reasons == {
        "twonn_id": "needs at least 3 distinct points; got 1",
        "mle_id": "needs at least k + 1 = 21 distinct points; got 1",
    }
    assert np.isnan(twonn_dimension(np.ones((50, 4))))
    assert np.isnan(mle_dimension(np.ones((50, 4))))


def test_too_few_points_for_the_mle_only():
    metrics, reasons = intrinsic_dimension(_subspace_cloud(2, n=15), k=20)
    assert np.isfinite(metrics["twonn_id"])
    assert np.isnan(metrics["mle_id"])
    assert list(reasons) == ["mle_id"]


def test_lattice_with_equal_neighbour_distances_is_nan_with_reason():
    # evenly spaced points on a line: r1 = r2 (mu = 1) everywhere except at the two ends
    x = np.arange(40, dtype=float)[:, None]
    metrics, reasons = intrinsic_dimension(x, k=2, discard_fraction=0.1)
    assert np.isnan(metrics["twonn_id"])
    assert "equidistant" in reasons["twonn_id"]


def test_one_channel_cloud_is_one_dimensional():
    x = np.random.default_rng(0).uniform(size=(1000, 1))
    metrics, _ = intrinsic_dimension(x)
    assert metrics["twonn_id"] == pytest.approx(1, rel=0.1)
    assert metrics["mle_id"] == pytest.approx(1, rel=0.1)


def test_rejects_non_finite_points():
    x = _subspace_cloud(2, n=30)
    x[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"'points' parameter of intrinsic_dimension must be finite. Got 1 point"):
        intrinsic_dimension(x)


@pytest.mark.parametrize(
    ("func", "kwargs", "match"),
    [
        (mle_dimension, {"k": 1}, r"'k' parameter of mle_dimension must be an int >= 2. Got 1"),
        (intrinsic_dimension, {"k": 2.5}, r"'k' parameter of intrinsic_dimension must be an int >= 2. Got 2.5"),
        (twonn_dimension, {"discard_fraction": 1.0}, r"'discard_fraction' .* float in \[0, 1\). Got 1.0"),
        (twonn_dimension, {"discard_fraction": -0.1}, r"'discard_fraction' .* Got -0.1"),
    ],
)
def test_rejects_bad_parameters(func, kwargs, match):
    with pytest.raises(ValueError, match=match):
        func(_subspace_cloud(2, n=30), **kwargs)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"shape \(n_points, n_channels\)"):
        twonn_dimension(np.zeros(10))


def test_redraw_interval_half_sample_spread_matches_the_sampling_error_of_the_mean():
    # delete-half jackknife: the spread of half-sample means estimates sd(full mean) = 1 / sqrt(n)
    from scipy import stats

    from analysis.dimension import redraw_interval

    n = 400
    x = np.random.default_rng(0).normal(size=(n, 1))
    centre = float(x.mean())
    lo, hi = redraw_interval(x, lambda c: {"m": c.mean()}, {"m": centre}, n_halves=400, seed=1)["m"]
    assert (hi - lo) / 2 == pytest.approx(stats.t.ppf(0.975, 399) / np.sqrt(n), rel=0.15)
    assert lo < centre < hi
    # a plain-numpy route for the default 4 halves
    rng = np.random.default_rng(3)
    halves = [x[np.sort(rng.choice(n, n // 2, replace=False))].mean() for _ in range(4)]
    want = stats.t.ppf(0.975, 3) * np.std(halves, ddof=1)
    got = redraw_interval(x, lambda c: {"m": c.mean()}, {"m": centre}, seed=3)["m"]
    assert got == pytest.approx((centre - want, centre + want), rel=1e-12)
    with pytest.raises(ValueError, match=r"'n_halves' parameter of redraw_interval must be an int >= 2\. Got 1"):
        redraw_interval(x, lambda c: {"m": c.mean()}, {"m": centre}, n_halves=1)


# --- routes: distance matrix, shared matrix, scikit-learn neighbours ------------------------


def _cloud_with_duplicates_and_signed_zeros() -> np.ndarray:
    x = np.maximum(_subspace_cloud(4, n=600, ambient=30, seed=2), 0.0)
    x = np.concatenate([x, x[:40], x[5:7]])
    neg = x[10].copy()
    neg[neg == 0.0] = -0.0  # equal to x[10] for np.unique, not bytewise
    return np.concatenate([x, neg[None]])


def test_distinct_rows_are_those_of_np_unique():
    from analysis.dimension import _distinct_rows

    x = _cloud_with_duplicates_and_signed_zeros()
    keep = _distinct_rows(x)
    assert len(keep) == len(np.unique(x, axis=0)) == 600
    np.testing.assert_array_equal(np.unique(x[keep], axis=0), np.unique(x, axis=0))


def test_distance_matrix_route_equals_scikit_learns_neighbours(monkeypatch):
    import analysis.dimension as dim

    x = _cloud_with_duplicates_and_signed_zeros()
    dense = dim.intrinsic_dimension(x, k=10)
    monkeypatch.setattr(dim, "DENSE_MAX", 0)
    knn = dim.intrinsic_dimension(x, k=10)
    assert dense[1] == knn[1] == {}
    for name in ("twonn_id", "mle_id"):
        assert dense[0][name] == pytest.approx(knn[0][name], rel=1e-12)


def test_a_shared_distance_matrix_and_its_sub_matrices_give_the_same_intervals():
    from analysis.dimension import redraw_interval
    from analysis.topology import distance_matrix

    x = _cloud_with_duplicates_and_signed_zeros()
    dm = distance_matrix(x)
    plain, _ = intrinsic_dimension(x)
    shared, _ = intrinsic_dimension(x, distances=dm)
    assert shared == pytest.approx(plain, rel=1e-12)
    rows_route = redraw_interval(x, lambda c: intrinsic_dimension(c)[0], plain, seed=4)
    index_route = redraw_interval(
        x, lambda rows: intrinsic_dimension(x[rows], distances=dm[np.ix_(rows, rows)])[0], plain, seed=4,
        on_indices=True)
    for name in ("twonn_id", "mle_id"):
        assert index_route[name] == pytest.approx(rows_route[name], rel=1e-12)
    with pytest.raises(ValueError, match=r"'distances' parameter of intrinsic_dimension must be the cloud's "
                                         r"distance matrix of shape \(643, 643\). Got shape \(643, 642\)"):
        intrinsic_dimension(x, distances=dm[:, 1:])


def _plain_numpy_dimensions(x: np.ndarray, k: int, discard_fraction: float) -> tuple[float, float]:
    # second route: direct-difference distances (scipy's pdist), full sort, the two formulas
    from scipy.spatial.distance import pdist, squareform

    d = squareform(pdist(x))
    np.fill_diagonal(d, np.inf)
    t = np.sort(d, axis=1)[:, :k]
    n = len(x)
    m = int(n * (1 - discard_fraction))
    lx = np.log(np.sort(t[:, 1] / t[:, 0])[:m])
    ly = -np.log(1 - np.arange(1, m + 1) / n)
    return float(lx @ ly / (lx @ lx)), float((k - 1) * n / np.sum(np.log(t[:, -1:] / t[:, :-1])))


@pytest.mark.parametrize("dense_max", [0, 10_000])
def test_neighbour_distances_stay_exact_far_from_the_origin(monkeypatch, dense_max):
    # A 3-d cloud of spread 1 at 1e5 from the origin in 20 dims: sqrt(|x|^2 + |y|^2 - 2 x.y)
    # has a relative error of about eps |x|^2 / d^2 ~ 1e-3 at its neighbour distances; both
    # routes (distance matrix, scikit-learn) must recompute those rows from differences.
    import analysis.dimension as dim

    monkeypatch.setattr(dim, "DENSE_MAX", dense_max)
    x = _subspace_cloud(3, n=500) + 1e5
    metrics, _ = dim.intrinsic_dimension(x, k=10)
    twonn, mle = _plain_numpy_dimensions(x, 10, 0.1)
    assert metrics["twonn_id"] == pytest.approx(twonn, rel=1e-12)
    assert metrics["mle_id"] == pytest.approx(mle, rel=1e-12)


def test_plain_numpy_route_agrees_on_a_cloud_near_the_origin():
    x = _cloud_with_duplicates_and_signed_zeros()
    metrics, _ = intrinsic_dimension(x, k=10)
    twonn, mle = _plain_numpy_dimensions(np.unique(x, axis=0), 10, 0.1)
    assert metrics["twonn_id"] == pytest.approx(twonn, rel=1e-12)
    assert metrics["mle_id"] == pytest.approx(mle, rel=1e-12)


def _clouds_for_the_duplicate_search() -> list[np.ndarray]:
    rng = np.random.default_rng(8)
    base = _cloud_with_duplicates_and_signed_zeros()
    far = rng.standard_normal((300, 12)) * 1e-4 + 1e3  # every point close to its neighbours
    far = np.concatenate([far, far[[3, 3, 250]]])
    zeros = np.maximum(rng.standard_normal((200, 6)) - 1.5, 0.0)  # many all-zero rows
    tiny = np.concatenate([rng.standard_normal((50, 4)), np.full((2, 4), 1e-170)])  # squares underflow
    return [base, far, zeros, tiny, rng.standard_normal((100, 5))]


def test_duplicates_found_from_the_distance_matrix_are_those_of_hashing_every_row():
    from analysis.dimension import _distinct_by_neighbours, _distinct_rows
    from analysis.topology import distance_matrix

    for x in _clouds_for_the_duplicate_search():
        d = distance_matrix(x)
        np.fill_diagonal(d, np.inf)
        np.testing.assert_array_equal(_distinct_by_neighbours(x, d), _distinct_rows(x))


def test_intrinsic_dimension_equals_the_estimate_on_the_distinct_points():
    # the duplicate search folded into the neighbour search gives the same values, bit for
    # bit, as removing the duplicates first (the previous order)
    from analysis.dimension import _distinct_rows
    from analysis.topology import distance_matrix

    for x in _clouds_for_the_duplicate_search():
        keep = _distinct_rows(x)
        dm = distance_matrix(x)
        assert intrinsic_dimension(x, k=5) == intrinsic_dimension(x[keep], k=5)
        assert intrinsic_dimension(x, k=5, distances=dm) == intrinsic_dimension(
            x[keep], k=5, distances=dm[np.ix_(keep, keep)])
