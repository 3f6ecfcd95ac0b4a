"""Topology metrics against manifolds with known Betti numbers.

Noise levels are stated per test as the standard deviation of Gaussian noise per native
coordinate, relative to the manifold's radius (unit circles and sphere; the torus has tube
radius 1 and ring radius 2).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from analysis.topology import (
    TopologyResult,
    betti_numbers,
    cloud_scale,
    diagram_distances,
    greedy_permutation,
    persistence_entropy,
    persistent_homology,
    total_persistence,
)
from tests.manifolds import MANIFOLD_FACTS, MANIFOLDS, make_manifold


def _betti(res: TopologyResult) -> tuple[int, ...]:
    return tuple(int(res.metrics[f"betti{k}"]) for k in range(len(res.diagrams)))


# --- known answers -------------------------------------------------------------------------


def test_circle_has_one_loop():
    # noise 0.05 (5 % of the radius)
    res = persistent_homology(make_manifold("circle", 200, noise=0.05, seed=0))
    assert _betti(res) == (1, 1)
    # the loop of a unit circle dies when an inscribed equilateral triangle fills in (sqrt 3)
    h1 = res.diagrams[1]
    longest = h1[np.argmax(h1[:, 1] - h1[:, 0])]
    assert longest[1] == pytest.approx(np.sqrt(3), rel=0.1)


def test_two_circles_have_two_components_and_two_loops():
    # noise 0.05
    res = persistent_homology(make_manifold("two_circles", 400, noise=0.05, seed=0))
    assert _betti(res) == (2, 2)


def test_sphere_has_one_void():
    # noise 0.05; greedy subsample of 150 points keeps H2 affordable
    res = persistent_homology(make_manifold("sphere", 1000, noise=0.05, seed=0), maxdim=2, n_perm=150)
    assert _betti(res) == MANIFOLD_FACTS["sphere"]["betti"] == (1, 0, 1)


@pytest.mark.slow
def test_torus_has_two_loops_and_one_void():
    # noise 0.05 (5 % of the tube radius); ~5 s on two busy cores
    res = persistent_homology(make_manifold("torus", 2000, noise=0.05, seed=0), maxdim=2, n_perm=300)
    assert _betti(res) == MANIFOLD_FACTS["torus"]["betti"] == (1, 2, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_circle_betti_numbers_survive_noise_of_a_tenth_of_the_radius(seed):
    # noise 0.10: noise bars stay below the 0.25 threshold, the loop stays far above it
    res = persistent_homology(make_manifold("circle", 300, noise=0.1, seed=seed))
    assert _betti(res) == (1, 1)
    bars = np.sort(res.diagrams[1][:, 1] - res.diagrams[1][:, 0])
    assert bars[-1] > 1.0 > 0.25 > bars[-2]


def test_noise_moves_the_diagram_no_more_than_stability_allows():
    # Rips stability: d_B <= 2 d_GH <= 2 max_i ||noise_i|| for paired points (noise 0.05)
    clean = make_manifold("circle", 200, seed=3)
    noisy = make_manifold("circle", 200, noise=0.05, seed=3)
    bound = 2 * np.max(np.linalg.norm(noisy - clean, axis=1))
    ref = persistent_homology(clean, normalize=None)
    res = persistent_homology(noisy, normalize=None, reference=ref)
    assert 0 < res.metrics["bottleneck_to_input_h1"] <= bound


def test_orthogonal_embedding_and_scaling_leave_normalised_diagrams_unchanged():
    flat = make_manifold("circle", 150, noise=0.05, seed=4)
    high = 3.0 * make_manifold("circle", 150, noise=0.05, seed=4, ambient_dim=64)
    a = persistent_homology(flat)
    b = persistent_homology(high, reference=a)
    assert b.scale == pytest.approx(3 * a.scale)
    assert b.metrics["bottleneck_to_input_h1"] < 1e-5
    for da, db in zip(a.diagrams, b.diagrams):
        np.testing.assert_allclose(np.sort(db, axis=0), np.sort(da, axis=0), rtol=1e-5, atol=1e-6)


def test_different_topology_is_far_from_the_reference():
    ref = persistent_homology(make_manifold("circle", 200, noise=0.05))
    same = persistent_homology(make_manifold("circle", 200, noise=0.05, seed=1), reference=ref)
    other = persistent_homology(make_manifold("spiral", 200, noise=0.01), reference=ref)
    assert same.metrics["bottleneck_to_input_h1"] < 0.1
    # the circle's loop (length ~1.7) has to go to the diagonal: at least half of it
    assert other.metrics["bottleneck_to_input_h1"] > 0.7
    assert other.metrics["wasserstein_to_input_h1"] > same.metrics["wasserstein_to_input_h1"]


# --- subsampling, scale and the threshold -------------------------------------------------


def test_greedy_subsample_stays_within_twice_the_cover_radius():
    x = make_manifold("circle", 250, noise=0.05, seed=5)
    full = persistent_homology(x)
    sub = persistent_homology(x, n_perm=60, reference=full)
    assert len(sub.idx_perm) == 60 and len(np.unique(sub.idx_perm)) == 60
    assert sub.cover_radius > 0
    assert sub.threshold == pytest.approx(max(0.25, 2 * sub.cover_radius))
    assert sub.metrics["bottleneck_to_input_h1"] <= 2 * sub.cover_radius
    assert _betti(sub) == (1, 1)


def test_n_perm_at_least_n_points_uses_every_point():
    x = make_manifold("circle", 50, seed=6)
    res = persistent_homology(x, n_perm=80)
    np.testing.assert_array_equal(res.idx_perm, np.arange(50))
    assert res.cover_radius == 0.0


def test_scales_of_a_unit_circle():
    x = make_manifold("circle", 2000, seed=7)
    # rms distance to the centroid is the radius; the median chord subtends pi/2: sqrt 2
    assert persistent_homology(x[:200]).scale == pytest.approx(1.0, rel=0.02)
    assert cloud_scale(x) == pytest.approx(1.0, rel=0.01)
    assert persistent_homology(x[:200], normalize="median").scale == pytest.approx(np.sqrt(2), rel=0.05)
    assert persistent_homology(x[:200], normalize=None).scale == 1.0


def test_infinite_h0_bar_is_counted_but_not_summed():
    res = persistent_homology(make_manifold("circle", 100, noise=0.05, seed=8))
    assert np.sum(np.isinf(res.diagrams[0][:, 1])) == 1
    assert np.all(np.isfinite(res.diagrams[1]))
    assert res.metrics["betti0"] == 1.0


def test_degenerate_cloud_is_a_single_point():
    res = persistent_homology(np.ones((20, 5)))
    assert res.scale == 0.0
    assert _betti(res) == (1, 0)
    assert res.metrics["total_persistence_h1"] == 0.0
    assert np.isnan(res.metrics["persistence_entropy_h1"])
    assert res.reasons == {"persistence_entropy_h1": "no H1 bar with positive persistence"}


def test_single_point_and_few_points_in_many_channels():
    assert _betti(persistent_homology(np.zeros((1, 3)))) == (1, 0)
    res = persistent_homology(np.random.default_rng(0).normal(size=(10, 64)), maxdim=2)
    assert len(res.diagrams) == 3 and "betti2" in res.metrics


def test_results_are_deterministic():
    x = make_manifold("two_circles", 300, noise=0.05, seed=9)
    a, b = persistent_homology(x, n_perm=100), persistent_homology(x, n_perm=100)
    assert a.metrics == b.metrics
    np.testing.assert_array_equal(a.idx_perm, b.idx_perm)


# --- the small functions ------------------------------------------------------------------


def test_betti_numbers_count_bars_above_threshold_including_infinite_ones():
    dgms = [np.array([[0.0, np.inf], [0.0, 0.3], [0.0, 0.1]]), np.array([[0.2, 0.5], [0.4, 0.5]])]
    assert betti_numbers(dgms, 0.25) == [2, 1]
    assert betti_numbers(dgms, 0.0) == [3, 2]


def test_total_persistence_and_entropy_of_known_diagrams():
    dgm = np.array([[0.0, 1.0], [0.5, 0.75], [0.0, np.inf]])
    assert total_persistence(dgm) == 1.25
    # p = (0.8, 0.2)
    assert persistence_entropy(dgm) == pytest.approx(-(0.8 * np.log(0.8) + 0.2 * np.log(0.2)))
    assert persistence_entropy(np.tile([[0.0, 2.0]], (4, 1))) == pytest.approx(np.log(4))
    assert np.isnan(persistence_entropy(np.zeros((0, 2))))
    assert total_persistence(np.zeros((0, 2))) == 0.0


def test_diagram_distances_of_known_diagrams():
    a = np.array([[0.0, 1.0]])
    b = np.array([[0.0, 1.2]])
    d = diagram_distances(a, b)
    assert d["bottleneck"] == pytest.approx(0.2)
    assert d["wasserstein"] == pytest.approx(0.2)
    empty = diagram_distances(a, np.zeros((0, 2)))
    assert empty["bottleneck"] == pytest.approx(0.5)
    assert empty["wasserstein"] == pytest.approx(1 / np.sqrt(2))
    # infinite bars are ignored
    assert diagram_distances(np.array([[0.0, np.inf], [0.0, 1.0]]), a)["bottleneck"] == pytest.approx(0.0, abs=1e-12)


# --- bad input ----------------------------------------------------------------------------


def test_rejects_non_finite_points():
    x = make_manifold("circle", 10)
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"'points' parameter of persistent_homology must be finite. Got 1 point"):
        persistent_homology(x)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"maxdim": 0}, r"'maxdim' parameter of persistent_homology must be an int >= 1. Got 0"),
        ({"n_perm": 0}, r"'n_perm' parameter of persistent_homology must be an int >= 1. Got 0"),
        ({"normalize": "max"}, r"'normalize' parameter .* 'rms', 'median' or None. Got 'max'"),
        ({"min_persistence": -1.0}, r"'min_persistence' parameter .* float >= 0. Got -1.0"),
        ({"reference": np.zeros((3, 3))}, r"'reference' parameter .* shape \(n_bars, 2\). Got shape \(3, 3\)"),
    ],
)
def test_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        persistent_homology(make_manifold("circle", 10), **kwargs)


@pytest.mark.parametrize("points", [np.zeros(5), np.zeros((0, 3)), np.zeros((4, 0))])
def test_rejects_bad_shapes(points):
    with pytest.raises(ValueError, match=r"shape \(n_points, n_channels\)"):
        persistent_homology(points)


# --- the manifold generators --------------------------------------------------------------


@pytest.mark.parametrize("name", MANIFOLDS)
def test_make_manifold_shapes_and_determinism(name):
    x = make_manifold(name, 50, noise=0.01, seed=1)
    assert x.shape == (50, MANIFOLD_FACTS[name]["native_dim"])
    np.testing.assert_array_equal(x, make_manifold(name, 50, noise=0.01, seed=1))
    assert not np.array_equal(x, make_manifold(name, 50, noise=0.01, seed=2))


@pytest.mark.parametrize("name", ["circle", "torus"])
def test_make_manifold_embedding_is_an_isometry(name):
    flat = make_manifold(name, 40, noise=0.02, seed=3)
    high = make_manifold(name, 40, noise=0.02, seed=3, ambient_dim=32)
    assert high.shape == (40, 32)
    np.testing.assert_allclose(pdist(high), pdist(flat), rtol=1e-10)


def test_make_manifold_points_lie_on_the_manifold():
    np.testing.assert_allclose(np.linalg.norm(make_manifold("sphere", 30), axis=1), 1.0)
    t = make_manifold("torus", 30)
    ring = np.hypot(t[:, 0], t[:, 1])
    np.testing.assert_allclose((ring - 2.0) ** 2 + t[:, 2] ** 2, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "klein"}, r"'name' parameter of make_manifold must be one of \['circle'"),
        ({"n": 0}, r"'n' parameter of make_manifold must be an int >= 1. Got 0"),
        ({"noise": -0.1}, r"'noise' parameter .* >= 0. Got -0.1"),
        ({"ambient_dim": 1}, r"'ambient_dim' parameter .* int >= 2 \(the native dimension of 'circle'\). Got 1"),
    ],
)
def test_make_manifold_rejects_bad_parameters(kwargs, match):
    args = {"name": "circle", "n": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_manifold(args.pop("name"), args.pop("n"), **args)


# --- own greedy permutation and distances against ripser's and persim's ----------------------


@pytest.mark.parametrize("dense_max", [0, 10_000])
@pytest.mark.parametrize(("n", "dim"), [(400, 3), (300, 96)])
def test_greedy_permutation_picks_ripsers_points(monkeypatch, dense_max, n, dim):
    # both code paths (row by row, whole matrix) against ripser's n_perm option
    from ripser import ripser

    import analysis.topology as topo

    monkeypatch.setattr(topo, "DENSE_GREEDY_MAX", dense_max)
    x = np.random.default_rng(n + dim).standard_normal((n, dim)) * np.linspace(0.2, 2.0, dim)
    ref = ripser(x, maxdim=1, n_perm=80)
    idx, dperm2all, r_cover = topo.greedy_permutation(x, 80)
    np.testing.assert_array_equal(idx, ref["idx_perm"])
    np.testing.assert_allclose(dperm2all, ref["dperm2all"], rtol=0, atol=1e-12)
    assert r_cover == pytest.approx(ref["r_cover"], rel=1e-12)
    res = persistent_homology(x, n_perm=80, normalize=None)
    for ours, theirs in zip(res.diagrams, ref["dgms"]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6)
    assert res.cover_radius == pytest.approx(ref["r_cover"], rel=1e-12)


def test_greedy_permutation_rejects_more_points_than_the_cloud():
    with pytest.raises(ValueError, match=r"'n_perm' parameter of greedy_permutation must be an int <= n_points \(3\)"):
        greedy_permutation(np.zeros((3, 2)), 4)


def _greedy_clouds() -> list[np.ndarray]:
    rng = np.random.default_rng(31)
    return [
        rng.standard_normal((300, 50)) * np.linspace(0.1, 3.0, 50),
        # duplicated points: exact ties in every row, the first maximiser must win
        np.repeat(rng.standard_normal((60, 7)), 5, axis=0)[rng.permutation(300)],
        # small integers: every distance exact, many equal ones
        rng.integers(0, 3, (250, 4)).astype(np.float64),
    ]


@pytest.mark.parametrize("cloud", range(3))
def test_greedy_rows_equal_the_whole_matrix_bit_for_bit(cloud):
    # without a shared matrix only the picked rows' distances are computed (one Gram matrix,
    # then the operations of distance_matrix per row); with one, they are read from it. Same
    # points, same distances, same cover radius, to the last bit, also where points tie
    from analysis.topology import distance_matrix

    x = _greedy_clouds()[cloud]
    dm = distance_matrix(x)
    for n_perm in (1, 2, 40, 120):
        rows = greedy_permutation(x, n_perm)
        full = greedy_permutation(x, n_perm, distances=dm)
        np.testing.assert_array_equal(rows[0], full[0])
        np.testing.assert_array_equal(rows[1], full[1])
        np.testing.assert_array_equal(rows[1], dm[full[0]])
        assert rows[2] == full[2]
    res = persistent_homology(x, n_perm=120)
    shared = persistent_homology(x, n_perm=120, distances=dm)
    for ours, theirs in zip(res.diagrams, shared.diagrams):
        np.testing.assert_array_equal(ours, theirs)
    assert res.metrics == shared.metrics and res.cover_radius == shared.cover_radius


@pytest.mark.parametrize("dense_max", [0, 10_000])
@pytest.mark.parametrize("shared", [False, True])
def test_greedy_permutation_takes_the_first_maximiser_on_ties(monkeypatch, dense_max, shared):
    # 0 first; 2 and -2 tie at distance 2 (index 3 first), then -2; 1 and -1 tie at 1
    import analysis.topology as topo

    monkeypatch.setattr(topo, "DENSE_GREEDY_MAX", dense_max)
    x = np.array([[0.0], [1.0], [-1.0], [2.0], [-2.0]])
    dm = topo.distance_matrix(x) if shared else None
    idx, dperm2all, r_cover = topo.greedy_permutation(x, 4, distances=dm)
    assert idx.tolist() == [0, 3, 4, 1]
    assert r_cover == 1.0
    np.testing.assert_array_equal(dperm2all, np.abs(x[idx] - x.T))


def test_diagram_distances_agree_with_persim():
    from persim import bottleneck, wasserstein

    rng = np.random.default_rng(7)
    for m, n in [(30, 20), (1, 12), (0, 5), (40, 40)]:
        a = np.column_stack([b := rng.random(m), b + rng.random(m) * 0.5 + 1e-3])
        c = np.column_stack([b := rng.random(n), b + rng.random(n) * 0.5 + 1e-3])
        d = diagram_distances(a, c)
        assert d["bottleneck"] == pytest.approx(bottleneck(a, c), rel=1e-12, abs=1e-12)
        assert d["wasserstein"] == pytest.approx(wasserstein(a, c), rel=1e-9, abs=1e-12)


def test_persistence_entropy_agrees_with_persim():
    from persim.persistent_entropy import persistent_entropy

    d = np.column_stack([b := np.random.default_rng(3).random(25), b + np.linspace(0.01, 1, 25)])
    assert persistence_entropy(d) == pytest.approx(persistent_entropy(d)[0], rel=1e-12)


def _random_diagram(rng: np.random.Generator, n: int, grid: bool = False) -> np.ndarray:
    birth = rng.random(n)
    life = rng.random(n) * 0.5 + 1e-3
    if grid:
        # coordinates on a coarse grid: many equal costs, the ties a bisection must get right
        birth, life = np.round(birth * 8) / 8, np.round(life * 8) / 8 + 0.125
    return np.column_stack([birth, birth + life])


@pytest.mark.parametrize("grid", [False, True])
def test_diagram_distances_equal_heras_bottleneck_and_pots_wasserstein(grid):
    # second, independent routes: hera's exact bottleneck (delta=0) and POT's network simplex
    from gudhi.hera import bottleneck_distance
    from gudhi.wasserstein import wasserstein_distance

    rng = np.random.default_rng(11 + grid)
    for m, n in [(1, 1), (3, 40), (60, 25), (120, 120), (7, 300)]:
        a, c = _random_diagram(rng, m, grid), _random_diagram(rng, n, grid)
        d = diagram_distances(a, c)
        assert d["bottleneck"] == pytest.approx(bottleneck_distance(a, c, delta=0.0), rel=1e-12, abs=1e-15)
        assert d["wasserstein"] == pytest.approx(wasserstein_distance(a, c, order=1, internal_p=2), rel=1e-12)


def test_diagram_distances_of_noisy_rips_diagrams_equal_the_reference_routes():
    # diagrams of the kind the study compares: hundreds of short H1 bars of high-dimensional
    # clouds, most pairs of which save cost over the diagonal (a dense assignment)
    from gudhi.hera import bottleneck_distance
    from gudhi.wasserstein import wasserstein_distance

    rng = np.random.default_rng(5)
    x = rng.standard_normal((150, 48))
    y = np.maximum(x @ rng.standard_normal((48, 96)), 0.0)
    a, c = persistent_homology(x).diagrams[1], persistent_homology(y).diagrams[1]
    assert min(len(a), len(c)) > 100
    a, c = a[a[:, 1] > a[:, 0]], c[c[:, 1] > c[:, 0]]
    d = diagram_distances(a, c)
    assert d["bottleneck"] == pytest.approx(bottleneck_distance(a, c, delta=0.0), rel=1e-12)
    assert d["wasserstein"] == pytest.approx(wasserstein_distance(a, c, order=1, internal_p=2), rel=1e-12)


def test_bottleneck_needs_the_matching_not_the_nearest_partner():
    # both points of `a` are nearest to c0; the optimal matching pairs a0-c1 and a1-c0
    a = np.array([[0.0, 4.0], [1.0, 5.0]])
    c = np.array([[0.5, 4.5], [-1.0, 3.0]])
    # a0-c1 costs 1, a1-c0 costs 0.5 (the other way: a0-c0 0.5, a1-c1 2); diagonals cost 2+
    assert diagram_distances(a, c)["bottleneck"] == pytest.approx(1.0)
    assert diagram_distances(a, c)["wasserstein"] == pytest.approx(np.sqrt(2) + np.sqrt(0.5))


def test_a_shared_distance_matrix_gives_the_same_result():
    from analysis.topology import distance_matrix

    x = np.random.default_rng(2).standard_normal((300, 12))
    dm = distance_matrix(x)
    np.testing.assert_allclose(dm, _pdist_square(x), rtol=0, atol=1e-12)
    for n_perm in (None, 80):
        plain = persistent_homology(x, n_perm=n_perm)
        shared = persistent_homology(x, n_perm=n_perm, distances=dm)
        for ours, theirs in zip(shared.diagrams, plain.diagrams):
            np.testing.assert_array_equal(ours, theirs)
        assert shared.metrics == plain.metrics
    with pytest.raises(ValueError, match=r"'distances' parameter of persistent_homology must be the cloud's distance "
                                         r"matrix of shape \(300, 300\). Got shape \(299, 299\)"):
        persistent_homology(x, distances=dm[1:, 1:])


def _pdist_square(x: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import squareform

    return squareform(pdist(x))


# --- the distances against the previous implementations (kept here as references) ----------


def _l2_costs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    # the references' diagonal costs (L_2) and pair distances (None if a diagram is empty)
    da = (a[:, 1] - a[:, 0]) / np.sqrt(2.0)
    db = (b[:, 1] - b[:, 0]) / np.sqrt(2.0)
    if len(a) == 0 or len(b) == 0:
        return da, db, None
    return da, db, np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])


def _wasserstein_sparse_assignment(a: np.ndarray, b: np.ndarray) -> float:
    # the previous route: minimum-cost perfect matching (LAPJVsp) on the augmented graph of
    # points and diagonal copies, pruned to the pairs with ||p - q|| < delta(p) + delta(q)
    from scipy import sparse
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    n, m = len(a), len(b)
    da, db, dist = _l2_costs(a, b)
    if dist is None:
        return float(da.sum() + db.sum())
    i, j = np.nonzero(dist < da[:, None] + db[None, :])
    rows = np.concatenate([i, np.arange(n), n + np.arange(m), n + j])
    cols = np.concatenate([j, m + np.arange(n), np.arange(m), m + i])
    weight = np.concatenate([dist[i, j], da, db, np.zeros(len(i))])
    graph = sparse.csr_matrix((weight + 1.0 + weight.max(), (rows, cols)), shape=(n + m, n + m))
    r, c = min_weight_full_bipartite_matching(graph)
    pair = (r < n) & (c < m)
    return float(dist[r[pair], c[pair]].sum() + da[r[(r < n) & (c >= m)]].sum() + db[c[(r >= n) & (c < m)]].sum())


def _bottleneck_by_full_bisection(a: np.ndarray, b: np.ndarray) -> float:
    # the previous route: bisection over every candidate cost, one Hopcroft-Karp matching per
    # side at each step, without the lower-bound shortcut
    from scipy import sparse
    from scipy.sparse.csgraph import maximum_bipartite_matching

    da, db = (a[:, 1] - a[:, 0]) / 2.0, (b[:, 1] - b[:, 0]) / 2.0
    cost = np.maximum(np.abs(a[:, None, 0] - b[None, :, 0]), np.abs(a[:, None, 1] - b[None, :, 1]))

    def covers(adj: np.ndarray) -> bool:
        if adj.shape[0] == 0:
            return True
        return bool(np.all(maximum_bipartite_matching(sparse.csr_matrix(adj), perm_type="column") >= 0))

    cand = np.unique(np.concatenate([cost.ravel(), da, db]))
    lo, hi = 0, len(cand) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        r = cand[mid]
        if covers(cost[da > r] <= r) and covers((cost[:, db > r] <= r).T):
            hi = mid
        else:
            lo = mid + 1
    return float(cand[lo])


@pytest.mark.parametrize("grid", [False, True])
def test_diagram_distances_equal_the_previous_implementations(grid):
    # exact equality: the same optimum, summed in the same order (continuous random diagrams
    # have a unique optimal matching; on the grid, ties leave the value equal to rounding)
    rng = np.random.default_rng(23 + grid)
    for m, n in [(1, 1), (2, 9), (40, 15), (150, 130), (300, 5)]:
        a, c = _random_diagram(rng, m, grid), _random_diagram(rng, n, grid)
        d = diagram_distances(a, c)
        assert d["bottleneck"] == _bottleneck_by_full_bisection(a, c)
        if grid:
            assert d["wasserstein"] == pytest.approx(_wasserstein_sparse_assignment(a, c), rel=1e-13)
        else:
            assert d["wasserstein"] == _wasserstein_sparse_assignment(a, c)


def _wasserstein_dense_assignment(a: np.ndarray, b: np.ndarray) -> float:
    # the previous route: the L2 cost and the saving of every pair, one assignment of the
    # clipped savings (maximize=True); the present one computes the L2 cost only of pairs
    # whose L_inf cost is below the summed diagonal costs and writes the negated savings itself
    from scipy.optimize import linear_sum_assignment

    n, m = len(a), len(b)
    da, db, dist = _l2_costs(a, b)
    if dist is None:
        return float(da.sum() + db.sum())
    saving = da[:, None] + db[None, :] - dist
    positive = saving > 0
    rows, cols = np.flatnonzero(positive.any(axis=1)), np.flatnonzero(positive.any(axis=0))
    sub = np.maximum(saving[np.ix_(rows, cols)], 0.0)
    r, c = linear_sum_assignment(sub, maximize=True)
    keep = sub[r, c] > 0
    i, j = rows[r[keep]], cols[c[keep]]
    free_a, free_b = np.ones(n, dtype=bool), np.ones(m, dtype=bool)
    free_a[i], free_b[j] = False, False
    return float(dist[i, j].sum() + da[free_a].sum() + db[free_b].sum())


@pytest.mark.parametrize("kind", ["random", "grid", "rips"])
def test_wasserstein_equals_the_dense_assignment_bit_for_bit(kind):
    rng = np.random.default_rng(41)
    if kind == "rips":
        x = rng.standard_normal((150, 48))
        pairs = [(persistent_homology(x).diagrams[1],
                  persistent_homology(np.maximum(x @ rng.standard_normal((48, 96)), 0.0)).diagrams[1])]
    else:
        pairs = [(_random_diagram(rng, m, kind == "grid"), _random_diagram(rng, n, kind == "grid"))
                 for m, n in [(1, 1), (5, 30), (80, 60), (200, 190), (250, 3)]]
    for a, c in pairs:
        a, c = a[a[:, 1] > a[:, 0]], c[c[:, 1] > c[:, 0]]
        assert diagram_distances(a, c)["wasserstein"] == _wasserstein_dense_assignment(a, c)
        assert diagram_distances(c, a)["wasserstein"] == _wasserstein_dense_assignment(c, a)


def test_wasserstein_pair_whose_linf_cost_equals_the_diagonal_costs():
    # c's point is 2 delta away in both coordinates: its L_inf cost equals the summed diagonal
    # costs, its L2 cost is sqrt 2 times that, so matching it saves nothing
    a = np.array([[0.0, 2.0], [5.0, 5.5]])
    delta = 2.0 / np.sqrt(2.0)
    c = np.array([[2 * delta, 2 * delta + 2.0], [5.1, 5.5]])
    assert np.max(np.abs(a[0] - c[0])) == 2 * delta
    d = diagram_distances(a, c)
    assert d["wasserstein"] == _wasserstein_dense_assignment(a, c)
    assert d["wasserstein"] == pytest.approx(2 * delta + np.hypot(0.1, 0.0))


def test_bottleneck_beyond_the_lower_bound():
    # both points of `a` are 0.05 from c0 (the lower bound); only one can take it, so the other
    # goes to the diagonal at half its persistence, 2.0 (Hall's condition rejects 0.05 at once)
    a = np.array([[0.0, 4.0], [0.1, 4.1]])
    c = np.array([[0.05, 4.05]])
    d = diagram_distances(a, c)
    assert d["bottleneck"] == pytest.approx(2.0)
    # one pair (0.05 * sqrt 2 in L2) and one point to the diagonal (4 / sqrt 2)
    assert d["wasserstein"] == pytest.approx(np.sqrt(2 * 0.05**2) + 4.0 / np.sqrt(2))
    assert diagram_distances(c, a) == d
