"""The device accumulators of a capture: exact-mode Gram moments, chunked activity counts and
|x| histogram, and the shared workspace."""

import numpy as np
import pytest
import torch

from probes.capture import accumulate
from probes.capture.accumulate import _REFOLD, _Gram, _Sampled, _Workspace
from probes.sinks import ABS_HIST_BINS, abs_hist_bins, active_mask


def _rows(n, c, *, offset=0.0, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g) * scale + offset


def _exact(c, *, syrk, workspace=None, kind=None, hist=False, moments=True):
    return _Sampled(c, moments=moments, activity_kind=kind, pre=False, syrk=syrk, hist=hist,
                    exact=True, workspace=workspace)


def _read(acc):
    """The moments, after the buffered rows are reduced (as ``Capture.stats()`` does)."""
    acc.flush()
    return acc.moments()


def _reference_moments(batches):
    x = np.concatenate([b.double().numpy() for b in batches])
    mean = x.mean(0)
    xc = x - mean
    return x.shape[0], mean, xc.T @ xc


def _assert_moments_close(m, batches, rtol=1e-12):
    n, mean, m2 = _reference_moments(batches)
    assert m.count == n
    sd = np.sqrt(np.diag(m2) / n)
    assert np.all(np.abs(m.mean - mean) <= rtol * (np.abs(mean) + sd))
    scale = np.sqrt(np.outer(np.diag(m2), np.diag(m2)))
    assert np.all(np.abs(m.m2 - m2) <= rtol * scale)
    assert np.array_equal(m.m2, m.m2.T)   # mirrored: symmetric bit for bit


@pytest.mark.parametrize("syrk", [True, False])
def test_gram_moments_equal_numpy_covariance_with_a_large_offset(syrk):
    # Offset 1e4 standard deviations: a Gram matrix about 0 would lose 8 digits to cancellation.
    offsets = torch.linspace(-1e4, 3e4, 9)
    batches = [_rows(300 + 17 * i, 9, offset=offsets, scale=torch.linspace(0.5, 2, 9), seed=i)
               for i in range(4)]
    acc = _exact(9, syrk=syrk)
    for b in batches:
        acc.push(b, None)
    acc.flush()
    _assert_moments_close(_read(acc), batches)


def test_gram_moments_equal_the_per_batch_route_of_sampled_mode():
    # moments="sampled" at rate 1 reduces the same rows with per-batch centring (Chan's update).
    batches = [_rows(200, 6, offset=5.0, seed=i) for i in range(3)]
    gram, plain = _exact(6, syrk=True), _Sampled(6, moments=True, activity_kind=None, pre=False,
                                                 syrk=True, hist=False)
    for b in batches:
        gram.push(b, None)
        plain.push(b, None)
    a, b = _read(gram), _read(plain)
    assert a.count == b.count == 600
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-13, atol=0)
    np.testing.assert_allclose(a.m2, b.m2, rtol=1e-12, atol=1e-12 * np.abs(b.m2).max())


@pytest.mark.parametrize("syrk", [True, False])
def test_refold_when_the_mean_drifts_far_from_the_shift(syrk, monkeypatch):
    calls = []
    real_fold = _Gram.fold
    monkeypatch.setattr(_Gram, "fold", lambda self: (calls.append(self.n), real_fold(self))[1])
    # The first batch fixes the shift near 0; the second lies 1000 standard deviations away and
    # is 40 times larger, so that the sum's G_ii / M2_ii (about 40) passes the bound: the
    # spread between the batches no longer covers the offset from the shift.
    batches = [_rows(100, 5, seed=1), _rows(4000, 5, offset=1000.0, seed=2),
               _rows(50, 5, offset=999.0, seed=3)]
    acc = _exact(5, syrk=syrk)
    acc.push(batches[0], None)
    acc.flush()
    shift0 = acc.gram.shift.clone()
    acc.push(batches[1], None)
    acc.flush()
    # The Gram matrix of batch 0 was folded away, and batch 1 (far from the old shift) recomputed
    # about its own mean, which became the shift (rounded to float32).
    assert calls == [100]
    assert torch.all(acc.gram.shift > 990) and torch.all(shift0.abs() < 1)
    assert torch.equal(acc.gram.shift, acc.gram.shift.float().double())
    acc.push(batches[2], None)
    acc.flush()
    assert calls == [100]           # close to the new shift: added to the running matrix
    _assert_moments_close(_read(acc), batches)
    assert calls == [100, 4050]      # read-out folds the rest


def test_no_refold_below_the_bound():
    # Drift of 2 standard deviations: G_ii / M2_ii stays well under the bound.
    assert _REFOLD == 16.0
    acc = _exact(4, syrk=True)
    acc.push(_rows(500, 4, seed=4), None)
    acc.flush()
    acc.push(_rows(500, 4, offset=2.0, seed=5), None)
    acc.flush()
    assert acc.gram.count == 0 and acc.gram.n == 1000


@pytest.mark.parametrize("syrk", [True, False])
def test_gram_chunks_give_the_same_moments_at_every_boundary(syrk, monkeypatch):
    batches = [_rows(n, 7, offset=3.0, seed=n) for n in (1, 15, 16, 17, 40)]
    whole = _exact(7, syrk=syrk)
    for b in batches:
        whole.push(b, None)
    ref = _read(whole)
    monkeypatch.setattr(accumulate, "_GRAM_ENTRIES", 8 * 16)   # 16 rows of [x - shift, 1] per chunk
    chunked = _exact(7, syrk=syrk)
    for b in batches:
        chunked.push(b, None)
        chunked.flush()
    got = _read(chunked)
    assert got.count == ref.count == 89
    _assert_moments_close(got, batches)
    np.testing.assert_allclose(got.m2, ref.m2, rtol=1e-13, atol=1e-13 * np.abs(ref.m2).max())


@pytest.mark.parametrize("kind", ["relu", "relu6", "hswish"])
@pytest.mark.parametrize("entries", [1 << 20, 30, 7])
def test_chunked_activity_and_histogram_equal_the_direct_counts(kind, entries, monkeypatch):
    monkeypatch.setattr(accumulate, "_ACT_ENTRIES", entries)
    g = torch.Generator().manual_seed(6)
    x = torch.randint(-8, 9, (53, 6), generator=g).float() * 0.75   # hits -3, 0 and 6 exactly
    x[:, 5] = torch.randn(53, generator=g) * 1e3
    for pre in (False, True):
        acc = _Sampled(6, moments=False, activity_kind=kind, pre=pre, syrk=True, hist=True)
        acc.push(x[:20], None)
        acc.push(x[20:], None)
        acc.flush()
        mask = active_mask(x, kind, pre=pre)
        assert acc.n_points == 53
        assert torch.equal(acc.active, mask.sum(0))
        assert torch.equal(acc.hist, torch.bincount(mask.sum(1), minlength=7))
        sat = (x >= 6).sum(0) if kind == "relu6" else torch.zeros(6, dtype=torch.int64)
        assert torch.equal(acc.saturated, sat)
        assert torch.equal(acc.abs_hist, torch.bincount(abs_hist_bins(x).reshape(-1),
                                                        minlength=ABS_HIST_BINS))
        assert acc.hist_points == 53


def test_histogram_of_float64_rows_equals_the_float32_bins():
    x = torch.randn(40, 3, dtype=torch.float64) * 100
    acc = _Sampled(3, moments=False, activity_kind=None, pre=False, syrk=True, hist=True)
    acc.push(x, None)
    acc.flush()
    assert torch.equal(acc.abs_hist, torch.bincount(abs_hist_bins(x).reshape(-1), minlength=ABS_HIST_BINS))


def test_a_shared_workspace_gives_the_same_results_as_separate_ones():
    shared = _Workspace()
    batches = {c: [_rows(300, c, offset=2.0, seed=c + i) for i in range(3)] for c in (3, 11, 40)}
    one = {c: _exact(c, syrk=True, workspace=shared, kind="relu6", hist=True) for c in batches}
    own = {c: _exact(c, syrk=True, workspace=_Workspace(), kind="relu6", hist=True) for c in batches}
    for i in range(3):   # interleaved: each accumulator finds the buffers as another one left them
        for c in batches:
            one[c].push(batches[c][i], None)
            own[c].push(batches[c][i], None)
    for c in batches:
        a, b = _read(one[c]), _read(own[c])
        assert a.count == b.count and np.array_equal(a.mean, b.mean) and np.array_equal(a.m2, b.m2)
        for f in ("active", "saturated", "hist", "abs_hist"):
            assert torch.equal(getattr(one[c], f), getattr(own[c], f))
        _assert_moments_close(a, batches[c])
    # Allocated once, at the size of the largest request: a second pass allocates nothing.
    before = {k: v.data_ptr() for k, v in shared.buffers.items()}
    for c in batches:
        one[c].push(batches[c][0], None)
    assert {k: v.data_ptr() for k, v in shared.buffers.items()} == before


def test_readout_midway_then_more_rows():
    # Capture.stats() may be read before the capture ends: the state goes on from there.
    batches = [_rows(100, 4, offset=7.0, seed=i) for i in range(3)]
    acc = _exact(4, syrk=True)
    acc.push(batches[0], None)
    first = _read(acc)
    _assert_moments_close(first, batches[:1])
    m2_first = first.m2.copy()
    acc.push(batches[1], None)
    acc.push(batches[2], None)
    _assert_moments_close(_read(acc), batches)
    assert np.array_equal(first.m2, m2_first)   # the sink handed out is not changed later


def _positions(b, c, p, *, offset=0.0, seed=0):
    """(B, C, P) channel-major positions with per-channel offsets and scales, and their rows."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.linspace(0.5, 3.0, c).view(1, c, 1)
    shift = (torch.linspace(-1.0, 1.0, c) * offset).view(1, c, 1)
    x = (torch.randn(b, c, p, generator=g) * scale + shift).contiguous()
    return x, x.transpose(1, 2).reshape(-1, c)


@pytest.mark.parametrize("syrk", [True, False])
@pytest.mark.parametrize("c", [1, 2, 7, 33])
@pytest.mark.parametrize("gram_entries", [1 << 22, 8 * 5, 3])
def test_positions_equal_the_rows_route_and_numpy(syrk, c, gram_entries, monkeypatch):
    # gram_entries: whole batches per chunk, runs of images, and slices of one image's positions.
    monkeypatch.setattr(accumulate, "_GRAM_ENTRIES", gram_entries)
    monkeypatch.setattr(accumulate, "_ACT_ENTRIES", max(1, gram_entries // 2))
    batches = [_positions(b, c, p, offset=1e3, seed=b) for b, p in ((3, 11), (1, 1), (5, 4))]
    pos = _exact(c, syrk=syrk, kind="relu6", hist=True)
    rows = _exact(c, syrk=syrk, kind="relu6", hist=True)
    for x, r in batches:
        pos.push_positions(x)
        rows.push(r, None)
    a, b = _read(pos), _read(rows)
    _assert_moments_close(a, [r for _, r in batches], rtol=1e-13)
    assert a.count == b.count == 3 * 11 + 1 + 5 * 4
    for f in ("active", "saturated", "hist", "abs_hist", "n_points", "hist_points"):
        assert torch.equal(torch.as_tensor(getattr(pos, f)), torch.as_tensor(getattr(rows, f))), f


def test_positions_against_a_known_covariance():
    # 200,000 positions drawn with a known covariance: the sample covariance of the rows (numpy,
    # float64) to 1e-13, and both near the known one to sampling accuracy.
    g = np.random.default_rng(3)
    c = 5
    a = g.normal(size=(c, c))
    cov = a @ a.T + np.eye(c)
    z = g.normal(size=(200_000, c)) @ np.linalg.cholesky(cov).T + 50.0
    x = torch.from_numpy(z.astype(np.float32)).view(40, 5000, c).transpose(1, 2).contiguous()
    acc = _exact(c, syrk=True)
    acc.push_positions(x)
    m = _read(acc)
    rows = x.transpose(1, 2).reshape(-1, c)
    _assert_moments_close(m, [rows], rtol=1e-13)
    np.testing.assert_allclose(m.m2 / (m.count - 1), cov, rtol=0.05, atol=0.05 * np.abs(cov).max())


@pytest.mark.parametrize("workers", [2, 3])
def test_a_gram_chunk_split_between_threads_equals_one_call(workers, monkeypatch):
    monkeypatch.setattr(accumulate, "_SPLIT_MADDS", 1)   # every chunk split
    x, r = _positions(4, 13, 25, offset=10.0, seed=9)
    one = _Sampled(13, moments=True, activity_kind=None, pre=False, syrk=True, hist=False,
                   exact=True, gram_threads=1)
    split = _Sampled(13, moments=True, activity_kind=None, pre=False, syrk=True, hist=False,
                     exact=True, gram_threads=workers)
    assert split.gram.workers == workers and split.gram.syrk
    one.push_positions(x)
    split.push_positions(x)
    a, b = _read(one), _read(split)
    _assert_moments_close(b, [r], rtol=1e-13)
    np.testing.assert_allclose(b.m2, a.m2, rtol=1e-13, atol=1e-13 * np.abs(a.m2).max())


@pytest.mark.parametrize("kind", ["relu6", "relu"])
def test_counts_split_between_threads_equal_one_piece_and_numpy(kind, monkeypatch):
    # Every value's counts split over the positions between 2 threads: the same integers as in
    # one piece, and as numpy's, for a float32 and a float16 value.
    monkeypatch.setattr(accumulate, "_SPLIT_COUNTS", 1)
    g = torch.Generator().manual_seed(11)
    for dtype in (torch.float32, torch.float16):
        x = (torch.randn(3, 7, 37, generator=g) * 4).to(dtype)
        x[0, 2, :5] = 6.0   # on the relu6 threshold
        accs = [_Sampled(7, moments=False, activity_kind=kind, pre=True, syrk=True, hist=True,
                         exact=True, gram_threads=w) for w in (1, 2)]
        for acc in accs:
            acc.push_positions(x)
        one, split = accs
        for f in ("active", "saturated", "hist", "abs_hist"):
            assert torch.equal(getattr(one, f), getattr(split, f)), f
        assert one.n_points == split.n_points == one.hist_points == split.hist_points == 3 * 37
        xn = x.float().numpy()
        active = (xn > 0) & (xn < 6) if kind == "relu6" else xn > 0
        np.testing.assert_array_equal(split.active.numpy(), active.sum(axis=(0, 2)))
        np.testing.assert_array_equal(split.hist.numpy(), np.bincount(active.sum(1).ravel(), minlength=8))
        if kind == "relu6":
            np.testing.assert_array_equal(split.saturated.numpy(), (xn >= 6).sum(axis=(0, 2)))
        bins = np.abs(xn).view(np.int32).ravel() >> 20
        np.testing.assert_array_equal(split.abs_hist.numpy(), np.bincount(bins, minlength=len(split.abs_hist)))


def test_positions_of_a_non_contiguous_view_are_reduced_as_its_rows():
    # A channels-last activation's (B, C, H*W) view is not contiguous: its rows are the view.
    t = torch.randn(3, 6, 4, 5).to(memory_format=torch.channels_last)
    flat = t.reshape(3, 6, -1)
    assert not flat.is_contiguous()
    acc, ref = _exact(6, syrk=True, kind="relu", hist=True), _exact(6, syrk=True, kind="relu", hist=True)
    acc.push_positions(flat)
    ref.push_positions(flat.contiguous())
    a, b = _read(acc), _read(ref)
    np.testing.assert_allclose(a.m2, b.m2, rtol=1e-13, atol=1e-13 * np.abs(b.m2).max())
    for f in ("active", "hist", "abs_hist"):
        assert torch.equal(getattr(acc, f), getattr(ref, f))


def test_push_positions_is_for_exact_accumulators_only():
    acc = _Sampled(3, moments=True, activity_kind=None, pre=False, syrk=True, hist=False)
    with pytest.raises(RuntimeError, match="exact"):
        acc.push_positions(torch.zeros(1, 3, 2))


def _sampled_reference(chunks, *, syrk):
    """Sampled-mode moments the plain way: per buffer, mean, centred Gram (dsyrk upper triangle
    into fresh zeros, or torch's product), then probes.sinks.chan_update into new arrays."""
    from probes.sinks import chan_update

    count, mean, m2 = 0, None, None
    for rows in chunks:
        if syrk:
            r = rows.to(torch.float64, copy=True).numpy()
            mb = r.mean(0)
            r -= mb
            m2b = np.zeros((r.shape[1], r.shape[1]), order="F")
            accumulate._syrk(r, m2b)
        else:
            r = rows.to(torch.float64)
            mb = r.mean(0)
            r = r - mb
            m2b = r.T @ r
        count, mean, m2 = chan_update(count, mean, m2, rows.shape[0], mb, m2b)
    return count, mean, m2


@pytest.mark.parametrize("syrk", [True, False])
def test_sampled_moments_updated_in_place_equal_chan_update_bit_for_bit(syrk, monkeypatch):
    # Buffers of 7 rows (flushed at 7), drifting means: the in-place update (workspace rows, the
    # previous m2 reused as the next buffer, delta delta^T in a workspace array) gives the bits
    # of the plain route, also when a snapshot is read midway (its m2 is not reused or changed).
    monkeypatch.setattr(accumulate, "_FLUSH_ROWS", 7)
    monkeypatch.setattr(accumulate, "_FLUSH_ELEMENTS", 0)
    chunks = [_rows(7, 5, offset=3.0 * i, scale=1 + i, seed=i) for i in range(9)]
    acc = _Sampled(5, moments=True, activity_kind=None, pre=False, syrk=syrk, hist=False)
    for i, rows in enumerate(chunks):
        acc.push(rows, None)
        if i == 4:
            snap = acc.moments()
            snap_m2 = snap.m2.copy()
            count, mean, m2 = _sampled_reference(chunks[:5], syrk=syrk)
            m2 = np.asarray(m2)
            if syrk:
                m2 = np.triu(m2) + np.triu(m2, 1).T
            assert snap.count == count == 35
            assert snap.mean.tobytes() == np.asarray(mean).tobytes()
            assert snap.m2.tobytes() == np.ascontiguousarray(m2).tobytes()
    got = acc.moments()
    count, mean, m2 = _sampled_reference(chunks, syrk=syrk)
    m2 = np.asarray(m2)
    if syrk:   # dsyrk fills the upper triangle; the readout mirrors it
        m2 = np.triu(m2) + np.triu(m2, 1).T
    assert got.count == count == 63
    assert got.mean.tobytes() == np.asarray(mean).tobytes()
    assert got.m2.tobytes() == np.ascontiguousarray(m2).tobytes()
    assert snap.m2.tobytes() == snap_m2.tobytes()   # the snapshot was not reused by later flushes
    assert got.m2 is not snap.m2


def _bins(v: np.ndarray) -> np.ndarray:
    return np.bincount(np.abs(v.astype(np.float32)).view(np.int32).ravel() >> 20, minlength=ABS_HIST_BINS)


def test_signed_histogram_folds_to_the_abs_histogram_and_gives_the_clamps_exactly():
    from probes.capture.accumulate import _clamped_hist, _fold_sign, _signed_hist, _Workspace

    g = np.random.default_rng(5)
    v = np.concatenate([g.normal(0, 4, 3000), [0.0, -0.0, 6.0, -6.0, 5.999999, 6.0000005, 6.5, 1e30,
                                                -1e30, 1e-40, -1e-40, 3.0, -3.0]]).astype(np.float32)
    x = torch.from_numpy(v).view(1, 1, -1)
    h = _signed_hist(x, _Workspace())
    assert h.shape == (2 * ABS_HIST_BINS,) and int(h.sum()) == v.size
    np.testing.assert_array_equal(h[:ABS_HIST_BINS].numpy(), _bins(v[~np.signbit(v)]))
    np.testing.assert_array_equal(h[ABS_HIST_BINS:].numpy(), _bins(v[np.signbit(v)]))
    np.testing.assert_array_equal(_fold_sign(h).numpy(), _bins(v))
    t = torch.from_numpy(v)
    np.testing.assert_array_equal(_clamped_hist(h, "relu").numpy(), _bins(torch.relu(t).numpy()))
    np.testing.assert_array_equal(_clamped_hist(h, "relu6").numpy(), _bins(torch.nn.functional.relu6(t).numpy()))
    # inf and NaN share bin 2040, and only inf is clamped: no histogram from the signed one
    for bad in (np.inf, -np.inf, np.nan, -np.nan):
        hb = _signed_hist(torch.from_numpy(np.append(v, np.float32(bad))).view(1, 1, -1), _Workspace())
        assert _clamped_hist(hb, "relu6") is None and _clamped_hist(hb, "relu") is None
        assert int(_fold_sign(hb).sum()) == v.size + 1
    with pytest.raises(ValueError, match="relu"):
        _clamped_hist(h, "hswish")


def test_push_positions_without_its_histogram_returns_none_and_bins_nothing():
    x, _ = _positions(2, 3, 5, offset=0.0, seed=4)
    acc = _exact(3, syrk=True, kind="relu", hist=True)
    assert acc.push_positions(x, hist=False) is None
    assert acc.abs_hist is None and acc.hist_points == 0 and acc.n_points == 10
    made = acc.push_positions(x)
    assert made.shape == (2 * ABS_HIST_BINS,) and acc.hist_points == 10
    assert torch.equal(acc.abs_hist, made[:ABS_HIST_BINS] + made[ABS_HIST_BINS:])
