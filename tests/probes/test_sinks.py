import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.sinks import ABS_HIST_EDGES, Activity, Extent, Moments, Reservoir, abs_hist_bins, merge, position_hash


def _split(x: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    return np.split(x, sorted(set(min(c, len(x)) for c in cuts)))


# -- Moments -------------------------------------------------------------------------------

def test_moments_large_offset_matches_float64_numpy():
    rng = np.random.default_rng(0)
    x = 1e4 + rng.standard_normal((5000, 6)) @ rng.standard_normal((6, 6))
    m = Moments(6)
    for part in _split(x, [1, 700, 701, 3000]):
        m.update(part)
    ref = np.cov(x, rowvar=False)
    np.testing.assert_allclose(m.covariance(), ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())
    np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-12)
    assert m.count == 5000


def test_moments_known_answer_and_ddof():
    m = Moments(2)
    m.update(np.array([[1.0, 0.0], [3.0, 2.0]]))
    assert m.covariance().tolist() == [[2.0, 2.0], [2.0, 2.0]]
    assert m.covariance(ddof=0).tolist() == [[1.0, 1.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match=r"more than ddof=2 points. Got 2 points"):
        m.covariance(ddof=2)


def test_moments_accepts_torch_and_rejects_bad_shapes():
    import torch
    m = Moments(3)
    m.update(torch.ones(4, 3))
    assert m.count == 4 and m.mean.tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match=r"must have 3 channels \(columns\). Got 2 instead"):
        m.update(np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"shape \(n_points, n_channels\). Got shape \(4,\)"):
        m.update(np.zeros(4))
    with pytest.raises(ValueError, match=r"The 'n_channels' parameter of Moments must be an int >= 1. Got 0"):
        Moments(0)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 60), c=st.integers(1, 5), cuts=st.lists(st.integers(0, 60), max_size=4),
       seed=st.integers(0, 2**16))
def test_moments_merge_equals_one_pass(n, c, cuts, seed):
    x = np.random.default_rng(seed).normal(3.0, 2.0, (n, c))
    whole = Moments(c)
    whole.update(x)
    parts = []
    for part in _split(x, cuts):
        s = Moments(c)
        s.update(part)
        parts.append(s)
    merged = parts[0]
    for s in parts[1:]:
        merged = merge(merged, s)
    assert merged.count == whole.count
    np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-9, atol=1e-9)


def test_moments_state_dict_round_trip_and_merge_mismatch():
    m = Moments(3)
    m.update(np.arange(12.0).reshape(4, 3))
    back = Moments.from_state_dict({k: np.asarray(v) for k, v in m.state_dict().items()})
    assert back.count == 4
    np.testing.assert_array_equal(back.m2, m.m2)
    with pytest.raises(ValueError, match="different 'n_channels': 3 and 2"):
        m.merge(Moments(2))


# -- Activity ------------------------------------------------------------------------------

def test_activity_counts_planted_relu6():
    y = np.array([[0.0, 1.0, 7.0, 6.0],
                  [2.0, 3.0, -1.0, 5.9],
                  [0.0, 0.0, 0.0, 0.0]])
    a = Activity(4, "relu6")
    a.update(y)
    assert a.active.tolist() == [1, 2, 0, 1]
    assert a.saturated.tolist() == [0, 0, 1, 1]
    assert a.histogram.tolist() == [1, 1, 0, 1, 0]    # rows have 1, 3 and 0 active channels
    assert (a.positive_min, a.positive_max, a.positive_mean) == (0, 3, pytest.approx(4 / 3))
    assert a.n_points == 3


def test_activity_relu_and_hswish_pre_post():
    x = np.array([[-4.0, -3.0, -1.0, 0.0, 2.0]])
    relu = Activity(5, "relu")
    relu.update(x)
    assert relu.active.tolist() == [0, 0, 0, 0, 1] and relu.saturated.sum() == 0
    pre = Activity(5, "hswish", pre=True)
    pre.update(x)
    assert pre.active.tolist() == [0, 0, 1, 1, 1]
    post = Activity(5, "hswish")
    post.update(x * np.clip(x + 3, 0, 6) / 6)            # hard-swish of x
    assert post.active.tolist() == [0, 0, 1, 0, 1]      # exact zeros are flat too


def test_activity_direct_count_random():
    rng = np.random.default_rng(1)
    y = np.clip(rng.normal(1, 3, (500, 7)), 0, 6)
    a = Activity(7, "relu6")
    for part in _split(y, [13, 250]):
        a.update(part)
    act = (y > 0) & (y < 6)
    np.testing.assert_array_equal(a.active, act.sum(0))
    np.testing.assert_array_equal(a.saturated, (y >= 6).sum(0))
    np.testing.assert_array_equal(a.histogram, np.bincount(act.sum(1), minlength=8))


def test_activity_rejects_linear_kind():
    with pytest.raises(ValueError, match=r"must be one of \['relu', 'relu6', 'hswish'\]. Got 'linear'"):
        Activity(3, "linear")


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 50), cuts=st.lists(st.integers(0, 50), max_size=4), seed=st.integers(0, 2**16),
       kind=st.sampled_from(["relu", "relu6", "hswish"]))
def test_activity_merge_equals_one_pass(n, cuts, seed, kind):
    y = np.random.default_rng(seed).normal(1, 4, (n, 4)).round(1)
    whole = Activity(4, kind)
    whole.update(y)
    merged = None
    for part in _split(y, cuts):
        a = Activity(4, kind)
        a.update(part)
        merged = a if merged is None else merge(merged, a)
    for key, value in whole.state_dict().items():
        np.testing.assert_array_equal(merged.state_dict()[key], value)


# -- Extent --------------------------------------------------------------------------------

def test_extent_known_answer_and_quantile():
    e = Extent(3, "relu6")
    e.update(np.array([[0.0, 1.0, 7.0], [2.0, 3.0, -1.0], [6.0, 0.5, 0.25]]))
    assert e.n_points == 3 and e.hist_points == 3
    assert e.ch_min.tolist() == [0.0, 0.5, -1.0] and e.ch_max.tolist() == [6.0, 3.0, 7.0]
    assert e.active.tolist() == [1, 3, 1] and e.saturated.tolist() == [1, 0, 1]
    assert e.abs_quantile(1.0) == 7.0                       # capped at the true max |x|
    # 9 values; the 5th smallest |x| is 1.0, whose bin is [1, 1.125).
    assert e.abs_quantile(5 / 9) == 1.125
    assert Extent(2).active is None and np.isnan(Extent(2).abs_quantile(0.5))
    with pytest.raises(ValueError, match=r"'q' parameter of Extent.abs_quantile must be in \[0, 1\]. Got 2"):
        e.abs_quantile(2)
    with pytest.raises(ValueError, match="'kind' parameter of Extent must be None or one of"):
        Extent(2, "linear")


def test_abs_hist_bins_are_eighth_octaves():
    x = np.array([0.0, 1.0, 1.1, 1.13, 2.0, -3.0, np.inf, 1e-30])
    k = abs_hist_bins(x)
    assert np.all(ABS_HIST_EDGES[k] <= np.abs(x)) and np.all(np.abs(x[:-2]) < ABS_HIST_EDGES[k + 1][:-2])
    assert k[1] == k[2] != k[3] and k[4] == k[1] + 8
    assert ABS_HIST_EDGES[k[6]] == np.inf


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 50), cuts=st.lists(st.integers(0, 50), max_size=4), seed=st.integers(0, 2**16),
       kind=st.sampled_from([None, "relu", "relu6", "hswish"]))
def test_extent_merge_equals_one_pass(n, cuts, seed, kind):
    y = np.random.default_rng(seed).normal(1, 4, (n, 4)).round(1)
    whole = Extent(4, kind)
    whole.update(y)
    merged = None
    for part in _split(y, cuts):
        e = Extent(4, kind)
        e.update(part)
        merged = e if merged is None else merge(merged, e)
    for key, value in whole.state_dict().items():
        np.testing.assert_array_equal(merged.state_dict()[key], value)
    back = Extent.from_state_dict(whole.state_dict())
    for key, value in whole.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value)


# -- Reservoir -----------------------------------------------------------------------------

def _grid_ids(n_images: int, h: int, w: int, offset: int = 0) -> np.ndarray:
    i, y, x = np.meshgrid(np.arange(offset, offset + n_images), np.arange(h), np.arange(w), indexing="ij")
    return np.stack([i.ravel(), y.ravel(), x.ravel()], axis=1)


def test_position_hash_is_uniform_and_deterministic():
    u = position_hash(0, np.arange(20000), 0, 0) / 2.0**64
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.std() - 12 ** -0.5) < 0.01
    assert position_hash(3, 5, 1, 2) == position_hash(3, 5, 1, 2)
    assert position_hash(3, 5, 1, 2) != position_hash(4, 5, 1, 2)
    assert position_hash(3, 5, 1, 2, salt=1) != position_hash(3, 5, 1, 2)


def test_reservoir_keeps_the_k_smallest_priorities():
    ids = _grid_ids(6, 4, 4)
    vals = np.arange(len(ids) * 2, dtype=float).reshape(-1, 2)
    r = Reservoir(2, 10, seed=7)
    for part_v, part_i in zip(np.array_split(vals, 5), np.array_split(ids, 5)):
        r.update(part_v, part_i)
    prio = position_hash(7, ids[:, 0], ids[:, 1], ids[:, 2], salt=Reservoir.SALT)
    order = np.argsort(prio)[:10]
    np.testing.assert_array_equal(r.ids, ids[order])
    np.testing.assert_array_equal(r.values, vals[order].astype(np.float32))
    assert r.n_seen == len(ids) and len(r) == 10


def test_reservoir_stride_pairs_with_block_frame():
    # A point before a stride-2 conv sees positions (2y, 2x) of the block's output frame (y, x).
    out_ids = _grid_ids(3, 2, 2)
    pre_ids = out_ids * np.array([1, 2, 2])
    a, b = Reservoir(1, 5, seed=1), Reservoir(1, 5, seed=1, stride=2)
    a.update(np.zeros((len(out_ids), 1)), out_ids)
    b.update(np.zeros((len(pre_ids), 1)), pre_ids)
    np.testing.assert_array_equal(a.ids, b.block_ids())
    np.testing.assert_array_equal(b.ids[:, 1:] % 2, 0)


@settings(max_examples=40, deadline=None)
@given(n_images=st.integers(1, 12), k=st.integers(0, 30), cuts=st.lists(st.integers(0, 12), max_size=3),
       seed=st.integers(0, 2**16), reverse=st.booleans())
def test_reservoir_merge_equals_one_pass(n_images, k, cuts, seed, reverse):
    ids = _grid_ids(n_images, 3, 2)
    vals = np.random.default_rng(seed).normal(size=(len(ids), 3))
    whole = Reservoir(3, k, seed=seed)
    whole.update(vals, ids)
    shards = []
    for lo, hi in zip([0, *sorted(set(cuts))], [*sorted(set(cuts)), n_images]):
        sel = (ids[:, 0] >= lo) & (ids[:, 0] < hi)
        r = Reservoir(3, k, seed=seed)
        r.update(vals[sel], ids[sel])
        shards.append(r)
    if reverse:
        shards = shards[::-1]
    merged = shards[0]
    for r in shards[1:]:
        merged = merge(merged, r)
    for key, value in whole.state_dict().items():
        np.testing.assert_array_equal(merged.state_dict()[key], value)


def test_reservoir_state_dict_round_trip_and_errors():
    r = Reservoir(2, 4, seed=3, stride=2)
    r.update(np.ones((6, 2)), _grid_ids(1, 2, 3))
    back = Reservoir.from_state_dict({k: np.asarray(v) for k, v in r.state_dict().items()})
    for key, value in r.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[key], value)
    with pytest.raises(ValueError, match="different 'seed': 3 and 4"):
        r.merge(Reservoir(2, 4, seed=4, stride=2))
    with pytest.raises(ValueError, match=r"'ids' parameter of Reservoir.update must have shape \(6, 3\)"):
        r.update(np.ones((6, 2)), np.zeros((6, 2)))
    with pytest.raises(ValueError, match="The 'k' parameter of Reservoir must be an int >= 0. Got -1"):
        Reservoir(2, -1)
