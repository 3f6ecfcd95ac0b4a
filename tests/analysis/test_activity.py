import math

import numpy as np
import pytest
from scipy.optimize import linprog

from analysis.activity import (
    ACTIVITY_METRICS,
    active_mask,
    active_set_solve,
    activity_metrics,
    fold_bn,
    lemma2_invertible,
    lemma2_invertible_fraction,
)
from analysis.spectrum import NonFiniteWarning


def sink_arrays(pre: np.ndarray, activation: str):
    """What the Activity sink accumulates, computed directly from pre-activations."""
    act = active_mask(pre, activation)
    counts = act.sum(axis=0)
    hist = np.bincount(act.sum(axis=1), minlength=pre.shape[1] + 1)
    saturated = (pre >= 6).sum(axis=0)
    return counts, hist, saturated


def test_planted_dead_and_rare_channels():
    rng = np.random.default_rng(0)
    n, c = 1000, 16
    pre = rng.normal(size=(n, c))
    pre[:, :4] = -1.0 - np.abs(pre[:, :4])  # 4 dead channels
    pre[:, 4:6] = -1.0
    pre[:5, 4:6] = 1.0  # 2 channels active on 0.5 % of the points: rare, not dead
    counts, hist, _ = sink_arrays(pre, "relu")
    m = activity_metrics(counts, n_points=n, histogram=hist, activation="relu", threshold=4)
    assert m["dead_fraction"].value == 4 / 16
    assert m["rare_fraction"].value == 6 / 16
    per_point = (pre > 0).sum(axis=1)
    assert m["positive_min"].value == per_point.min()
    assert m["positive_max"].value == per_point.max()
    assert m["positive_mean"].value == pytest.approx(per_point.mean())
    assert m["above_threshold_fraction"].value == pytest.approx(np.mean(per_point >= 4))
    assert math.isnan(m["saturated_fraction"].value)
    assert "relu has no upper saturation" in m["saturated_fraction"].reason
    assert list(m) == list(ACTIVITY_METRICS)


def test_relu6_active_region_excludes_zero_and_saturation():
    z = np.array([[-1.0, 0.0, 3.0, 6.0, 7.0]])
    assert active_mask(z, "relu6").tolist() == [[False, False, True, False, False]]
    assert active_mask(z, "relu").tolist() == [[False, False, True, True, True]]
    assert active_mask(np.array([[-3.0, -2.9]]), "hswish").tolist() == [[False, True]]


def test_relu6_saturated_fraction():
    rng = np.random.default_rng(1)
    pre = rng.uniform(-2, 10, size=(500, 8))
    counts, hist, sat = sink_arrays(pre, "relu6")
    m = activity_metrics(counts, n_points=500, histogram=hist, activation="relu6", saturated_counts=sat)
    assert m["saturated_fraction"].value == pytest.approx(np.mean(pre >= 6))  # ~ 4/12
    assert m["positive_mean"].value == pytest.approx(np.mean(((pre > 0) & (pre < 6)).sum(axis=1)))
    no_sat = activity_metrics(counts, n_points=500, histogram=hist, activation="relu6")
    assert "no saturated counts" in no_sat["saturated_fraction"].reason


@pytest.mark.parametrize(("act", "word"), [("linear", "linear"), ("leaky_relu", "leaky ReLU")])
def test_no_flat_region_is_not_applicable(act, word):
    counts, hist, _ = sink_arrays(np.ones((10, 3)), "relu")
    m = activity_metrics(counts, n_points=10, histogram=hist, activation=act)
    assert all(math.isnan(v.value) for v in m.values())
    assert m["dead_fraction"].reason == f"not applicable: {word} output has no flat region"


def test_histogram_must_sum_to_n_points():
    with pytest.raises(ValueError, match=r"'histogram' parameter .* sum to n_points=5\. Got a sum of 4"):
        activity_metrics(np.ones(2), n_points=5, histogram=[1, 1, 2], activation="relu")


def test_non_finite_counts_warn_and_give_nan():
    with pytest.warns(NonFiniteWarning, match="'blocks.2.expand'"):
        m = activity_metrics(
            [np.nan, 1.0], n_points=2, histogram=[0, 2, 0], activation="relu", point="blocks.2.expand"
        )
    assert math.isnan(m["dead_fraction"].value)


def unique_by_lp(B, b, x, activation):
    """Brute force: is x the only solution of act(B x' + b) = act(B x + b)?

    The solution set is a polyhedron: equalities on the active units, inequalities on the
    flat ones. It is a single point iff every coordinate has min == max over it (LP).
    """
    z = B @ x + b
    act = active_mask(z[None], activation)[0]
    a_ub, b_ub = [B[z <= 0]], [-b[z <= 0]]  # B x' + b <= 0 on the zero region
    if activation == "relu6":
        high = z >= 6
        a_ub.append(-B[high])  # B x' + b >= 6
        b_ub.append(b[high] - 6)
    kw = dict(
        A_ub=np.vstack(a_ub),
        b_ub=np.concatenate(b_ub),
        A_eq=B[act] if act.any() else None,
        b_eq=(z - b)[act] if act.any() else None,
        bounds=[(None, None)] * B.shape[1],
        method="highs",
    )
    for j in range(B.shape[1]):
        for sign in (1.0, -1.0):
            c = np.zeros(B.shape[1])
            c[j] = sign
            res = linprog(c, **kw)
            if res.status == 3:  # unbounded: a whole ray of solutions
                return False
            assert res.status == 0
            if abs(res.x[j] - x[j]) > 1e-6:
                return False
    return True


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_lemma2_matches_brute_force_uniqueness(activation):
    rng = np.random.default_rng(2)
    results = []
    for trial in range(12):
        d = 2 + trial % 2
        B = rng.normal(size=(5, d))
        B[1] = -2.5 * B[0]  # parallel rows: >= d active rows that do not span
        B[2] = 0.7 * B[0]
        b = rng.normal(size=5)
        scale = 4.0 if activation == "relu6" else 1.0
        for x in rng.normal(scale=scale, size=(6, d)):
            expected = unique_by_lp(B, b, x, activation)
            got = lemma2_invertible(B, b, x[None], activation=activation)[0]
            assert got == expected, (trial, x)
            results.append(expected)
    assert 0.2 < np.mean(results) < 0.8  # both cases are exercised


def test_lemma2_counts_active_rows_and_their_rank():
    W = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    X = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])
    # x1: all rows active (rank 2); x2: rows 1, 2 (parallel, rank 1); x3: row 3 only.
    assert lemma2_invertible(W, None, X).tolist() == [True, False, False]
    frac = lemma2_invertible_fraction(W, None, X)
    assert frac.value == pytest.approx(1 / 3) and frac.reason is None
    assert "not applicable" in lemma2_invertible_fraction(W, None, X, activation="linear").reason


def test_active_set_solve_matches_lstsq_and_matrix_rank():
    rng = np.random.default_rng(3)
    W = rng.normal(size=(6, 3))
    W[4] = W[0] + W[1]
    mask = rng.random((40, 6)) < 0.5
    rhs = rng.normal(size=(40, 6))
    rank, sol = active_set_solve(W, mask, rhs)
    for i in range(40):
        A = W[mask[i]]
        if A.shape[0] == 0:
            assert rank[i] == 0 and np.all(sol[i] == 0)
            continue
        assert rank[i] == np.linalg.matrix_rank(A)
        np.testing.assert_allclose(sol[i], np.linalg.lstsq(A, rhs[i, mask[i]], rcond=None)[0], atol=1e-10)


@pytest.mark.parametrize("chunk", [None, 7])
def test_stacked_active_set_solve_equals_one_set_at_a_time(monkeypatch, chunk):
    """The stacked route (masked Gram GEMM, stacked Cholesky test, stacked solves) against
    matrix_rank and lstsq point by point, with blocks of units and of sets when chunk is small."""
    import analysis.activity as activity

    if chunk is not None:
        monkeypatch.setattr(activity, "_CHUNK_ENTRIES", chunk)  # 1 unit, 1 set per block
    rng = np.random.default_rng(4)
    W = rng.normal(size=(24, 5)) * rng.uniform(0.1, 10.0, size=(24, 1))
    W[3] = 2.0 * W[1]  # a parallel pair: sets of 5 rows holding both are singular
    mask = rng.random((60, 24)) < 0.35
    mask[10:20] = mask[10]  # one active set shared by ten points
    mask[20] = False  # no active row
    mask[21] = False
    mask[21, [1, 3, 5, 7, 9]] = True  # 5 rows, rank 4: the Cholesky test fails, SVD decides
    rhs = rng.normal(size=(60, 24))
    rank, sol = active_set_solve(W, mask, rhs)
    assert 5 in rank and (rank < 5).sum() >= 2  # both routes are exercised
    for i in range(60):
        A = W[mask[i]]
        if A.shape[0] == 0:
            assert rank[i] == 0 and np.all(sol[i] == 0)
            continue
        assert rank[i] == np.linalg.matrix_rank(A)
        expected = np.linalg.lstsq(A, rhs[i, mask[i]], rcond=None)[0]
        np.testing.assert_allclose(sol[i], expected, rtol=0, atol=1e-12 * max(1.0, np.abs(expected).max()))
    rank_only, none = active_set_solve(W, mask)
    assert none is None and np.array_equal(rank_only, rank)


def test_subset_certificate_proves_only_full_rank_sets():
    import analysis.activity as activity

    rng = np.random.default_rng(6)
    W = rng.normal(size=(40, 4))
    W[30:] = W[0]  # ten copies of one row, rarely active
    mask = rng.random((400, 40)) < 0.6
    mask[:, 30:] = False
    mask[:8] = False
    mask[:8, 30:] = True  # rank 1 with ten rows
    mask[8:16] = False
    mask[8:16, 25:] = True  # full rank through rows outside the certificate's subset
    proven = activity._subset_certificate(W, mask, 1e-8)
    assert 300 < proven.sum() < 400 and not proven[:16].any()
    for i in np.flatnonzero(proven):
        assert np.linalg.matrix_rank(W[mask[i]]) == 4
    rank, _ = active_set_solve(W, mask)
    assert rank.tolist() == [np.linalg.matrix_rank(W[m]) if m.any() else 0 for m in mask]
    assert (rank[:8] == 1).all() and (rank[8:16] == 4).all()


def test_active_set_solve_rejects_non_finite_weights():
    W = np.ones((4, 2))
    W[1, 0] = np.nan
    with pytest.raises(ValueError, match="The 'weight' parameter of active_set_solve must be finite"):
        active_set_solve(W, np.ones((3, 4), dtype=bool))


def test_masked_grams_equal_the_products_of_the_active_rows(monkeypatch):
    import analysis.activity as activity

    rng = np.random.default_rng(5)
    W = rng.normal(size=(13, 4))
    masks = rng.random((9, 13)) < 0.5
    expected = np.stack([W[m].T @ W[m] for m in masks])
    np.testing.assert_allclose(activity._masked_grams(W, masks.astype(float)), expected, rtol=0, atol=1e-12)
    monkeypatch.setattr(activity, "_CHUNK_ENTRIES", 3)
    np.testing.assert_allclose(activity._masked_grams(W, masks.astype(float)), expected, rtol=0, atol=1e-12)


def test_fold_bn_equals_the_module_output():
    import torch
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 8, 1, bias=True)
    bn = torch.nn.BatchNorm2d(8, eps=1e-3)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.normal_()
    bn.bias.data.normal_()
    bn.eval()
    x = torch.randn(5, 4, 3, 3)
    with torch.no_grad():
        expected = bn(conv(x)).permute(0, 2, 3, 1).reshape(-1, 8).double().numpy()
    W, b = fold_bn(
        conv.weight.detach().numpy(),
        conv.bias.detach().numpy(),
        bn.running_mean.numpy(),
        bn.running_var.numpy(),
        bn.weight.detach().numpy(),
        bn.bias.detach().numpy(),
        eps=bn.eps,
    )
    assert W.shape == (8, 4, 1, 1)
    pts = x.permute(0, 2, 3, 1).reshape(-1, 4).double().numpy()
    np.testing.assert_allclose(pts @ W[:, :, 0, 0].T + b, expected, atol=1e-5)


def test_activity_metrics_include_lemma2_with_weights():
    rng = np.random.default_rng(4)
    W, b = rng.normal(size=(24, 4)), rng.normal(size=24)
    X = rng.normal(size=(200, 4))
    counts, hist, _ = sink_arrays(X @ W.T + b, "relu")
    m = activity_metrics(
        counts, n_points=200, histogram=hist, activation="relu", weight=W, bias=b, inputs=X, threshold=4
    )
    assert m["lemma2_invertible_fraction"].value == pytest.approx(lemma2_invertible(W, b, X).mean())
    # Generic weights: Lemma 2 holds exactly when at least C_in = 4 units are active.
    assert m["lemma2_invertible_fraction"].value == pytest.approx(m["above_threshold_fraction"].value)
    without = activity_metrics(counts, n_points=200, histogram=hist, activation="relu")
    assert "not available" in without["lemma2_invertible_fraction"].reason


def test_bad_activation_message():
    with pytest.raises(ValueError, match=r"The 'activation' parameter of active_mask must be one of .*Got 'gelu'"):
        active_mask(np.zeros((1, 1)), "gelu")


def test_other_activation_kinds_are_not_available_not_an_error():
    counts, hist, _ = sink_arrays(np.ones((10, 3)), "relu")
    m = activity_metrics(counts, n_points=10, histogram=hist, activation="silu")
    assert all(math.isnan(v.value) for v in m.values())
    assert "this point's activation is 'silu'" in m["dead_fraction"].reason
