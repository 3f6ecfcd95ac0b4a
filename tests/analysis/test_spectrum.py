import math

import numpy as np
import pytest

from analysis.spectrum import (
    SPECTRUM_METRICS,
    MetricValue,
    NonFiniteWarning,
    covariance_spectrum,
    effective_rank,
    numerical_rank,
    participation_ratio,
    pca_dims,
    spectrum_metrics,
    spectrum_metrics_from_points,
    stable_rank,
    to_records,
)


def planted(k: int, c: int, n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, k)) @ rng.normal(size=(k, c)) + 3.0  # offset: centring matters


@pytest.mark.parametrize("k", [1, 3, 7])
def test_planted_rank_k_cloud_has_rank_k(k):
    m = spectrum_metrics_from_points(planted(k, 12))
    assert m["rank"] == MetricValue(float(k))
    assert m["rank_frac"].value == pytest.approx(k / 12)
    assert m["pca_dims_99"].value <= k
    assert 1 <= m["effective_rank"].value <= k + 1e-9


def test_isotropic_gaussian_has_effective_rank_close_to_c():
    X = np.random.default_rng(1).normal(size=(5000, 10))
    m = spectrum_metrics_from_points(X)
    assert m["rank"].value == 10
    assert m["effective_rank"].value == pytest.approx(10, rel=0.02)
    assert m["effective_rank_frac"].value == pytest.approx(1.0, rel=0.02)
    assert m["participation_ratio"].value == pytest.approx(10, rel=0.05)
    assert m["pca_dims_99"].value == 10


def test_known_spectrum_gives_the_formulas():
    # lambda = (4, 1, 0): sigma = (2, 1), p = (2/3, 1/3).
    m = spectrum_metrics(np.diag([1.0, 0.0, 4.0]))
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert m["effective_rank"].value == pytest.approx(math.exp(h))
    assert m["participation_ratio"].value == pytest.approx(25 / 17)
    assert m["stable_rank"].value == pytest.approx(5 / 4)
    assert m["pca_dims_90"].value == 2  # 4/5 = 80 % < 90 %
    assert m["pca_dims_95"].value == 2
    assert m["rank"].value == 2
    assert m["stable_rank_frac"].value == pytest.approx(5 / 12)
    assert list(m) == list(SPECTRUM_METRICS)
    assert all(v.reason is None for v in m.values())


def test_pca_dims_counts_exactly_q_of_the_variance():
    assert pca_dims(np.ones(10), 0.9) == 9
    assert pca_dims(np.ones(10), 0.91) == 10


def test_rtol_sets_the_numerical_rank():
    lam = [1.0, 1e-3, 1e-8]
    assert numerical_rank(lam) == 2
    assert numerical_rank(lam, rtol=1e-2) == 1
    assert numerical_rank(lam, rtol=1e-9) == 3


def test_functions_agree_with_metric_dict():
    lam = covariance_spectrum(np.cov(planted(4, 6), rowvar=False))
    m = spectrum_metrics(np.cov(planted(4, 6), rowvar=False))
    assert m["effective_rank"].value == pytest.approx(effective_rank(lam))
    assert m["participation_ratio"].value == pytest.approx(participation_ratio(lam))
    assert m["stable_rank"].value == pytest.approx(stable_rank(lam))


def test_from_points_equals_from_covariance():
    X = planted(3, 5)
    a = spectrum_metrics_from_points(X)
    b = spectrum_metrics(np.cov(X, rowvar=False), n_points=len(X))
    for name in SPECTRUM_METRICS:
        assert a[name].value == pytest.approx(b[name].value)


def test_zero_covariance_all_points_equal():
    m = spectrum_metrics_from_points(np.full((50, 4), 2.5))
    assert m["rank"] == MetricValue(0.0)
    assert m["rank_frac"] == MetricValue(0.0)
    for name in ("effective_rank", "participation_ratio", "stable_rank", "pca_dims_90", "stable_rank_frac"):
        assert math.isnan(m[name].value)
        assert "zero total variance" in m[name].reason


def test_single_channel():
    m = spectrum_metrics_from_points(np.random.default_rng(0).normal(size=(30, 1)))
    assert m["rank"].value == 1
    assert m["effective_rank"].value == pytest.approx(1.0)
    assert m["participation_ratio_frac"].value == pytest.approx(1.0)


def test_too_few_points_is_nan_with_reason():
    m = spectrum_metrics_from_points(np.ones((1, 3)))
    assert all(math.isnan(v.value) for v in m.values())
    assert m["rank"].reason.startswith("too few points: 1")
    assert math.isnan(spectrum_metrics(np.eye(3), n_points=1)["rank"].value)


def test_non_finite_points_warn_with_the_point_name():
    X = planted(2, 4)
    X[3, 1] = np.nan
    with pytest.warns(NonFiniteWarning, match="'blocks.3.project'.*1 non-finite"):
        m = spectrum_metrics_from_points(X, point="blocks.3.project")
    assert math.isnan(m["rank"].value)
    assert "non-finite" in m["rank"].reason


def test_bad_rtol_message():
    with pytest.raises(
        ValueError,
        match=r"The 'rtol' parameter of spectrum_metrics must be a float in \(0, 1\)\. Got -1 instead\.",
    ):
        spectrum_metrics(np.eye(2), rtol=-1)


def test_bad_shape_message():
    with pytest.raises(ValueError, match=r"square \(C, C\) matrix.*Got an array of shape \(2, 3\)"):
        spectrum_metrics(np.ones((2, 3)))


def test_to_records_rows():
    rows = to_records({"rank": MetricValue(2.0), "stable_rank": MetricValue(math.nan, "why")})
    assert rows == [
        {"metric": "rank", "value": 2.0, "reason": None},
        {"metric": "stable_rank", "value": rows[1]["value"], "reason": "why"},
    ]
    assert math.isnan(rows[1]["value"])


def test_fewer_points_than_channels_flags_every_value_as_a_lower_bound():
    X = np.random.default_rng(0).normal(size=(5, 8))
    cov = np.cov(X, rowvar=False)
    m = spectrum_metrics(cov, n_points=5)
    assert m["rank"].value == 4
    assert m["rank"].reason.startswith("lower bound: 5 points < 8 channels, so at most 4 directions")
    assert m["effective_rank_frac"].reason == m["rank"].reason
    assert spectrum_metrics(cov, n_points=9)["rank"].reason is None
