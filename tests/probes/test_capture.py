import numpy as np
import pytest
import torch

from probes.blocks import capture_points
from probes.capture import ProbeResult, accumulate, capture, probe, select_points
from probes.capture.sampling import _MOMENT_SALT
from probes.datasets import ImageDataset
from probes.sinks import Reservoir, position_hash
from probes.zoo import ZooConfig, build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model(ZooConfig(input_size=32, num_classes=10, width_mult=0.35, head_channels=64,
                              in_channels=1, bottleneck_act="relu6")).eval()
    # Random BN statistics so that activations are neither all dead nor all saturated.
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.2)
            mod.weight.data.copy_(1 + torch.rand(mod.num_features, generator=g))
    return m


@pytest.fixture(scope="module")
def images():
    return torch.randn(12, 1, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.fixture(scope="module")
def points(model, images):
    return {p.name: p for p in capture_points(model, images[:1])}


def _reference(model, point, x):
    """The tensor at ``point`` for ``x``, cloned inside a hook (before in-place activations)."""
    out = []
    mod = model.get_submodule(point.module_path)
    if point.hook == "input":
        h = mod.register_forward_pre_hook(lambda _m, a: out.append(a[0].detach().clone()))
    else:
        h = mod.register_forward_hook(lambda _m, _a, o: out.append(o.detach().clone()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return out[point.call_index].double()


def _rows(t):
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1]).numpy()


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_select_points_by_name_glob_list_predicate(points):
    pts = list(points.values())
    assert [p.name for p in select_points(pts, "blocks.2.expand")] == ["blocks.2.expand"]
    assert [p.name for p in select_points(pts, "blocks.1.expand*")] == ["blocks.1.expand.pre", "blocks.1.expand"]
    assert [p.name for p in select_points(pts, ["blocks.3.output", "blocks.1.input"])] == [
        "blocks.1.input", "blocks.3.output"]
    proj = select_points(pts, lambda p: p.stage == "project" and not p.pre)
    assert len(proj) == 17 and all(p.name.endswith(".project") for p in proj)
    assert len(select_points(pts, None)) == len(pts)
    with pytest.raises(ValueError, match=r"The 'points' pattern 'blocks\.99\.\*' matches no capture point"):
        select_points(pts, "blocks.99.*")
    with pytest.raises(ValueError, match="selects no capture point"):
        select_points(pts, lambda p: False)


def test_hooks_removed_after_exception(model, images):
    before = _hook_count(model)
    with pytest.raises(RuntimeError, match="boom"):
        with capture(model, example_input=images[:1]):
            assert _hook_count(model) > before
            with torch.no_grad():
                model(images[:2])
            raise RuntimeError("boom")
    assert _hook_count(model) == before == 0


def test_hooks_removed_after_error_inside_a_hook(model, images):
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(B, 16, 16, 16\) as in example_input"):
        with capture(model, "blocks.0.input", example_input=images[:1]), torch.no_grad():
            model(torch.randn(2, 1, 64, 64))
    assert _hook_count(model) == 0


@pytest.mark.parametrize("threads", [1, 2])
def test_exact_moments_equal_numpy_on_the_same_rows(model, images, points, threads, monkeypatch):
    # threads=2: the Gram chunks are split between two threads (every chunk, whatever its size).
    monkeypatch.setattr(accumulate, "_SPLIT_MADDS", 1)
    names = ["blocks.1.expand.pre", "blocks.1.expand", "blocks.3.depthwise", "blocks.3.input"]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with capture(model, names, example_input=images[:1], moments="exact") as cap, torch.no_grad():
            model(images[:5])
            model(images[5:])
        stats = cap.stats()
    finally:
        torch.set_num_threads(before)
    assert cap.n_images == 12
    for name in names:
        ref = _rows(_reference(model, points[name], images))
        m = stats[name].moments
        assert m.count == len(ref)
        np.testing.assert_allclose(m.mean, ref.mean(0), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(m.covariance(), np.cov(ref, rowvar=False), rtol=1e-7, atol=1e-9)
        r64 = ref.astype(np.float64)
        xc = r64 - r64.mean(0)
        m2 = xc.T @ xc
        scale = np.sqrt(np.outer(np.diag(m2), np.diag(m2)))
        assert np.all(np.abs(m.m2 - m2) <= 1e-12 * scale)


def test_sampled_moments_use_the_documented_hash_rule(model, images, points):
    name = "blocks.1.expand.pre"
    with capture(model, name, example_input=images[:1], moment_positions=4, seed=3) as cap, torch.no_grad():
        model(images)
    m = cap.stats()[name].moments
    rate = cap.config["moment_rates"][name]
    assert rate == 4 / 256
    t = _reference(model, points[name], images)
    b, y, x = np.meshgrid(np.arange(12), np.arange(16), np.arange(16), indexing="ij")
    keep = position_hash(3, b, y, x, salt=_MOMENT_SALT) < np.uint64(rate * 2.0**64)
    ref = t.permute(0, 2, 3, 1).numpy()[keep]
    assert m.count == len(ref) > 0
    np.testing.assert_allclose(m.covariance(), np.cov(ref, rowvar=False), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("threads", [1, 2])
def test_activity_equals_direct_count(model, images, points, threads, monkeypatch):
    # threads=2: every value's counts (and Gram chunks) split between two threads.
    monkeypatch.setattr(accumulate, "_SPLIT_COUNTS", 1)
    monkeypatch.setattr(accumulate, "_SPLIT_MADDS", 1)
    names = ["blocks.2.depthwise.pre", "blocks.2.depthwise", "blocks.2.project"]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with capture(model, names, example_input=images[:1], moments="exact") as cap, torch.no_grad():
            model(images)
        stats = cap.stats()
    finally:
        torch.set_num_threads(before)
    y = _rows(_reference(model, points["blocks.2.depthwise"], images))
    act = (y > 0) & (y < 6)
    a = stats["blocks.2.depthwise"].activity
    assert a.kind == "relu6" and a.n_points == len(y)
    np.testing.assert_array_equal(a.active, act.sum(0))
    np.testing.assert_array_equal(a.saturated, (y >= 6).sum(0))
    np.testing.assert_array_equal(a.histogram, np.bincount(act.sum(1), minlength=y.shape[1] + 1))
    assert 0 < a.active.sum() < act.size
    pre = stats["blocks.2.depthwise.pre"].activity          # same counts, before the activation
    assert pre.pre and not a.pre
    np.testing.assert_array_equal(pre.active, a.active)
    yp = _rows(_reference(model, points["blocks.2.project"], images))
    np.testing.assert_array_equal(stats["blocks.2.project"].activity.active, ((yp > 0) & (yp < 6)).sum(0))


def test_linear_points_have_no_activity(model, images):
    with capture(model, "blocks.2.*.pre", example_input=images[:1]) as cap, torch.no_grad():
        model(images)
    stats = cap.stats()
    assert stats["blocks.2.project.pre"].activity is not None   # relu6 follows in this design
    lin = build_model(ZooConfig(input_size=32, num_classes=10, width_mult=0.35, head_channels=64,
                                in_channels=1)).eval()
    with capture(lin, "blocks.2.project", example_input=images[:1]) as cap, torch.no_grad():
        lin(images[:2])
    assert cap.stats()["blocks.2.project"].activity is None


def test_reservoir_ids_pair_across_a_strided_block(model, images, points):
    block = "blocks.3"   # stride 2: 16x16 -> 8x8
    assert points[f"{block}.depthwise"].stride == 2
    with capture(model, f"{block}.*", example_input=images[:1], reservoir_size=40, seed=5) as cap, \
            torch.no_grad():
        model(images[:7])
        model(images[7:])
    stats = cap.stats()
    ref_ids = stats[f"{block}.output"].reservoir.block_ids()
    assert len(ref_ids) == 40
    for name, s in stats.items():
        r = s.reservoir
        np.testing.assert_array_equal(r.block_ids(), ref_ids, err_msg=name)
        t = _reference(model, points[name], images)
        expected_stride = 2 if points[name].stage in ("input", "expand") else 1
        assert r.stride == expected_stride, name
        np.testing.assert_array_equal(r.values, t[r.ids[:, 0], :, r.ids[:, 1], r.ids[:, 2]].float().numpy())
    # Bottom-K over every position of the block's output frame.
    b, y, x = np.meshgrid(np.arange(12), np.arange(8), np.arange(8), indexing="ij")
    prio = position_hash(5, b, y, x, salt=Reservoir.SALT).ravel()
    expected = np.stack([b.ravel(), y.ravel(), x.ravel()], 1)[np.argsort(prio)[:40]]
    np.testing.assert_array_equal(ref_ids, expected)
    xa, xb, ids = cap.result().paired(f"{block}.input", f"{block}.project")
    assert xa.shape == (40, 8) and xb.shape == (40, 16) and ids.shape == (40, 3)


def test_probe_halves_merge_into_the_full_probe(model, images):
    kw = dict(points="blocks.[34].*", reservoir_size=30, moment_positions=3, activity_positions=5,
              batch_size=4, device="cpu", progress=False)
    full = probe(model, images, **kw)
    first = probe(model, images[:5], **kw)
    second = probe(model, images[5:], image_offset=5, **kw)
    merged = second.merge(first)
    assert merged.n_images == full.n_images == 12
    assert merged.config["image_ranges"] == [[0, 12]]
    for name, s in full.stats.items():
        t = merged.stats[name]
        np.testing.assert_allclose(t.moments.m2, s.moments.m2, rtol=1e-9, atol=1e-9)
        assert t.moments.count == s.moments.count
        if s.activity is not None:
            np.testing.assert_array_equal(t.activity.histogram, s.activity.histogram)
        for key, value in s.reservoir.state_dict().items():
            np.testing.assert_array_equal(t.reservoir.state_dict()[key], value)
        for key, value in s.extent.state_dict().items():
            np.testing.assert_array_equal(t.extent.state_dict()[key], value)
    with pytest.raises(ValueError, match=r"overlapping images: \[0, 5\) and \[0, 12\)"):
        first.merge(full)


def test_save_load_round_trip(model, images, tmp_path):
    res = probe(model, images, points="blocks.[01].*", reservoir_size=16, device="cpu", progress=False)
    assert res.points["blocks.0.output"].alias_of == "blocks.0.project"   # no residual: same tensor
    assert res.stats["blocks.0.output"] is res.stats["blocks.0.project"]
    path = tmp_path / "probe.npz"
    res.save(path)
    back = ProbeResult.load(path)
    assert back.stats["blocks.0.output"] is back.stats["blocks.0.project"]
    assert back.n_images == res.n_images and back.config == res.config
    assert back.points == res.points
    for name, s in res.stats.items():
        t = back.stats[name]
        for sink in ("moments", "activity", "reservoir", "extent"):
            a, b = getattr(s, sink), getattr(t, sink)
            assert (a is None) == (b is None)
            if a is not None:
                for key, value in a.state_dict().items():
                    np.testing.assert_array_equal(b.state_dict()[key], value)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(2))
    with pytest.raises(ValueError, match="is not a probe result: it has no '__meta__' entry"):
        ProbeResult.load(bad)


def test_image_sample_unit_pools_per_image(model, images, points):
    name = "blocks.4.expand"
    with capture(model, name, example_input=images[:1], sample_unit="image", reservoir_size=5) as cap, \
            torch.no_grad():
        model(images)
    s = cap.stats()[name]
    pooled = _reference(model, points[name], images).mean((2, 3)).numpy()
    np.testing.assert_allclose(s.moments.covariance(), np.cov(pooled, rowvar=False), rtol=1e-6, atol=1e-9)
    assert s.moments.count == 12 and s.activity.n_points == 12
    assert np.all(s.reservoir.ids[:, 1:] == 0) and len(s.reservoir) == 5
    np.testing.assert_allclose(s.reservoir.values, pooled[s.reservoir.ids[:, 0]], rtol=1e-6)


def test_probe_dataset_restores_mode_and_records_config(model, images):
    data = ImageDataset("tiny", images.numpy()[:6] * 0.1 + 0.5)
    model.train()
    try:
        res = probe(model, data, points="blocks.0.*", batch_size=4, device="cpu", progress=False)
        assert model.training
    finally:
        model.eval()
    assert res.n_images == 6
    assert res.config["input_spec"]["mean"] == [0.0] and res.config["sample_unit"] == "position"
    assert set(res.points) == {p for p in res.stats}
    with pytest.raises(ValueError, match=r"The 'sample_unit' parameter of capture must be one of"):
        probe(model, data, sample_unit="pixel", progress=False)
    with pytest.raises(ValueError, match=r"The 'data' parameter of probe must have shape"):
        probe(model, np.zeros((3, 32, 32)), progress=False)


def _expected_hooks(points):
    """One hook per distinct tensor: block 0's input, each stage's .pre tensor (its relu6 output
    is derived from it) and the sum of each residual block; block i+1's input is block i's output."""
    blocks = {p.block for p in points.values()}
    stages = sum(1 for p in points.values() if p.pre)
    residual = sum(1 for b in blocks if points[f"blocks.{b}.output"].has_residual)
    return 1 + stages + residual


def test_one_hook_per_distinct_tensor(model, images, points):
    with capture(model, example_input=images[:1], moments="exact", reservoir_size=30) as cap, \
            torch.no_grad():
        model(images)
    assert cap.n_hooks == _expected_hooks(points) < len(points)
    stats = cap.stats()
    # Block 3 reads block 2's output (the same tensor): same sums, but each point's reservoir
    # lives in its own block's frame (block 3 has stride 2).
    out, nxt = stats["blocks.2.output"], stats["blocks.3.input"]
    np.testing.assert_array_equal(out.moments.m2, nxt.moments.m2)
    assert (out.reservoir.stride, nxt.reservoir.stride) == (1, 2)
    ref = _reference(model, points["blocks.3.input"], images)
    r = nxt.reservoir
    np.testing.assert_array_equal(r.values, ref[r.ids[:, 0], :, r.ids[:, 1], r.ids[:, 2]].float().numpy())
    for name in ("blocks.2.expand", "blocks.2.project", "blocks.3.input"):   # derived from .pre rows
        rows = _rows(_reference(model, points[name], images))
        np.testing.assert_allclose(stats[name].moments.covariance(), np.cov(rows, rowvar=False),
                                   rtol=1e-7, atol=1e-9)


def test_channels_last_rows_are_read_before_the_inplace_activation(model, images, points):
    """A channels-last tensor reshapes to rows without a copy; the in-place ReLU6 after the .pre
    hook must not reach the buffered rows (exact mode, and sampled at rate 1 on small maps)."""
    cl = build_model(ZooConfig(input_size=32, num_classes=10, width_mult=0.35, head_channels=64,
                               in_channels=1, bottleneck_act="relu6")).eval()
    cl.load_state_dict(model.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    x = images.contiguous(memory_format=torch.channels_last)
    names = ["blocks.2.expand.pre", "blocks.2.depthwise.pre", "blocks.2.project.pre", "blocks.16.expand.pre"]
    for kw in ({"moments": "exact"}, {"moment_positions": 256}):   # 256 >= 16 x 16: rate 1
        with capture(cl, names, example_input=x[:1], **kw) as cap, torch.no_grad():
            cl(x[:5])
            cl(x[5:])
        stats = cap.stats()
        for name in names:
            rows = _rows(_reference(cl, points[name], x))
            assert stats[name].moments.count == len(rows), name
            np.testing.assert_allclose(stats[name].moments.mean, rows.mean(0), rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(stats[name].moments.covariance(), np.cov(rows, rowvar=False),
                                       rtol=1e-7, atol=1e-9)


class _AlmostReLU6(torch.nn.Module):
    """Passes for a ReLU6 (to 1e-4) but is not one bit for bit."""

    def forward(self, x):
        return torch.nn.functional.relu6(x) + 1e-6


def test_activation_that_is_not_exactly_relu6_gets_its_own_hook(model, images):
    odd = build_model(ZooConfig(input_size=32, num_classes=10, width_mult=0.35, head_channels=64,
                                in_channels=1, bottleneck_act="relu6")).eval()
    odd.load_state_dict(model.state_dict())
    odd.blocks[2].expand.act = _AlmostReLU6()
    pts = {p.name: p for p in capture_points(odd, images[:1])}
    assert pts["blocks.2.expand"].act == "relu6"
    with capture(odd, "blocks.2.expand*", example_input=images[:1], moments="exact") as cap, \
            torch.no_grad():
        odd(images)
    assert cap.n_hooks == 2
    rows = _rows(_reference(odd, pts["blocks.2.expand"], images))
    np.testing.assert_allclose(cap.stats()["blocks.2.expand"].moments.mean, rows.mean(0), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("act", [torch.nn.ReLU6, torch.nn.Hardswish])
def test_activation_module_called_twice_per_pass(act, images):
    """One activation instance after both the expansion and the depthwise conv: derived from the
    conv outputs (relu6), or hooked at its first and second call (hard-swish)."""
    torch.manual_seed(0)

    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(1, 8, 3, 1, 1)
            self.pw = torch.nn.Conv2d(8, 32, 1)
            self.dw = torch.nn.Conv2d(32, 32, 3, 1, 1, groups=32)
            self.pwl = torch.nn.Conv2d(32, 8, 1)
            self.act = act()

        def forward(self, x):
            x = self.stem(x)
            return x + self.pwl(self.act(self.dw(self.act(self.pw(x)))))

    net = Shared().eval()
    pts = {p.name: p for p in capture_points(net, images[:1])}
    with capture(net, example_input=images[:1], moments="exact") as cap, torch.no_grad():
        net(images)
    assert cap.n_hooks == (5 if act is torch.nn.ReLU6 else 7)   # input, 3 x .pre, output (+ 2 acts)
    stats = cap.stats()
    for name in ("blocks.0.expand", "blocks.0.depthwise"):
        rows = _rows(_reference(net, pts[name], images))
        np.testing.assert_allclose(stats[name].moments.mean, rows.mean(0), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(stats[name].moments.covariance(), np.cov(rows, rowvar=False),
                                   rtol=1e-7, atol=1e-9)


def test_activity_rate_records_the_rows_actually_counted(model, images):
    """The activity counts every row drawn for the tensor: with more moment positions than
    activity positions that is the moment sample, and the config says so."""
    name = "blocks.2.depthwise"   # 16 x 16
    with capture(model, name, example_input=images[:1], moment_positions=16, activity_positions=2) as cap, \
            torch.no_grad():
        model(images)
    s = cap.stats()[name]
    assert cap.config["moment_rates"][name] == cap.config["activity_rates"][name] == 16 / 256
    assert s.activity.n_points == s.moments.count > 0


def test_memory_guard_trims_only_after_growth(monkeypatch):
    import importlib

    pc = importlib.import_module("probes.capture.memory")   # probes.capture is the function

    mb = 1 << 20
    readings = iter(v * mb for v in [100, 104, 112, 130, 135, 140, 170, 120, 125])
    trims = []
    monkeypatch.setattr(pc, "_resident_bytes", lambda: next(readings))
    monkeypatch.setattr(pc, "_MALLOC_TRIM", lambda pad: trims.append(pad))
    monkeypatch.setattr(pc, "_HEAP_USED", None)   # the resident size alone (not glibc 2.33+)
    guard = pc._MemoryGuard()
    guard.check()                  # 100 MB: the baseline
    guard.check()                  # +4 %: below both limits
    guard.check()                  # +12 % but only 12 MB
    assert trims == []
    guard.check()                  # +30 %, 30 MB: trim
    assert trims == [0] and guard.trims == 1
    guard.check()                  # the pass after the trim (its working set back): new baseline
    assert trims == [0] and guard.base == 135 * mb
    guard.check()                  # +5 MB over it: a steady stream, no trim
    assert trims == [0]
    guard.check()                  # +35 MB, +26 %: creep, trim again
    assert trims == [0, 0] and guard.base is None
    guard.check()                  # lower after the trim: the baseline
    guard.check()                  # +5 MB
    assert trims == [0, 0] and guard.base == 120 * mb


def test_memory_guard_leaves_live_growth_alone(monkeypatch):
    """Where the allocated bytes are known, resident growth trims only if the resident memory
    that is not allocated grew too: live data filling up (the sinks' buffers) does not trim,
    freed memory that stays resident does."""
    import importlib

    pc = importlib.import_module("probes.capture.memory")

    mb = 1 << 20
    # (resident, allocated) after each pass, in MB
    readings = iter([(100, 50), (140, 85), (180, 120), (200, 120), (150, 110), (160, 90), (175, 100)])
    now = {}

    def resident() -> int:
        now["rss"], now["used"] = next(readings)
        return now["rss"] * mb

    trims = []
    monkeypatch.setattr(pc, "_resident_bytes", resident)
    reads = []

    def used() -> int:
        reads.append(now["rss"])
        return now["used"] * mb

    monkeypatch.setattr(pc, "_HEAP_USED", used)
    monkeypatch.setattr(pc, "_MALLOC_TRIM", lambda pad: trims.append(pad))
    guard = pc._MemoryGuard()
    guard.check()                  # baseline: 100 MB resident, 50 of them not allocated
    guard.check()                  # +40 MB resident, 35 of them allocated: 5 MB more not
    guard.check()                  # +80 % resident, all but 10 MB of it allocated
    assert trims == [] and guard.base == 100 * mb and guard.level == 50 * mb
    guard.check()                  # +100 MB, 30 MB of it not allocated: trim
    assert trims == [0] and guard.trims == 1 and guard.base is None
    guard.check()                  # the pass after the trim: the new baseline
    assert guard.base == 150 * mb and guard.level == 40 * mb
    guard.check()                  # 30 MB more not allocated, but +10 MB resident: below the limits
    guard.check()                  # +25 MB resident, 35 MB more not allocated: trim
    assert trims == [0, 0]
    # the allocated bytes (a walk of glibc's free lists) are read at each baseline and past the
    # resident thresholds only: not after the pass that grew by 10 MB
    assert reads == [100, 140, 180, 200, 150, 175]


def test_moments_with_two_torch_threads_use_torch_matmul_and_agree(model, images, points):
    """One torch thread: the moments go through BLAS dsyrk; more: torch's matrix product (no
    second thread pool). Both equal the reference."""
    name = "blocks.4.expand.pre"
    rows = _rows(_reference(model, points[name], images))
    threads = torch.get_num_threads()
    covs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with capture(model, name, example_input=images[:1], moments="exact") as cap, torch.no_grad():
                model(images)
            covs.append(cap.stats()[name].moments.covariance())
    finally:
        torch.set_num_threads(threads)
    for cov in covs:
        np.testing.assert_allclose(cov, np.cov(rows, rowvar=False), rtol=1e-7, atol=1e-9)


def test_extent_counts_every_position_in_the_sampled_mode(model, images, points):
    # Post points read off .pre (derived), their .pre points, a shared block input, hswish-free.
    names = ["blocks.2.expand.pre", "blocks.2.expand", "blocks.2.depthwise", "blocks.3.input",
             "blocks.3.project"]
    with capture(model, names, example_input=images[:1]) as cap, torch.no_grad():
        model(images[:7])
        model(images[7:])
    stats = cap.stats()
    for name in names:
        ref = _rows(_reference(model, points[name], images))
        e = stats[name].extent
        assert e.n_points == len(ref)
        np.testing.assert_array_equal(stats[name].ch_min, ref.min(0).astype(np.float64))
        np.testing.assert_array_equal(stats[name].ch_max, ref.max(0).astype(np.float64))
        kind = points[name].act
        if kind in ("relu", "relu6"):
            np.testing.assert_array_equal(e.active, ((ref > 0) & (ref < 6)).sum(0))
            np.testing.assert_array_equal(e.saturated, (ref >= 6).sum(0))
        else:
            assert e.active is None
        # The histogram holds the sampled rows: fewer than all, each with all its channels.
        assert 0 < e.hist_points < len(ref)
        assert e.abs_hist.sum() == e.hist_points * ref.shape[1]
        assert e.abs_quantile(1.0) <= np.abs(ref).max()


def test_extent_histogram_in_exact_mode_is_over_all_values(model, images, points):
    name = "blocks.4.depthwise"
    with capture(model, name, example_input=images[:1], moments="exact") as cap, torch.no_grad():
        model(images)
    e = cap.stats()[name].extent
    ref = _rows(_reference(model, points[name], images))
    assert e.hist_points == len(ref)
    q = e.abs_quantile(0.99)
    exact = np.quantile(np.abs(ref), 0.99)
    assert exact <= q <= exact * 1.125


def test_bfloat16_model_is_probed_with_float64_statistics(model, images):
    import copy

    half = copy.deepcopy(model).to(torch.bfloat16)
    kw = dict(points="blocks.3.*", moments="exact", device="cpu", progress=False)
    ref, res = probe(model, images, **kw), probe(half, images, **kw)
    assert next(half.parameters()).dtype == torch.bfloat16   # the model itself is left as it was
    for name, s in res.stats.items():
        assert s.moments.mean.dtype == np.float64 and s.moments.m2.dtype == np.float64
        assert s.moments.count == ref.stats[name].moments.count
        # bfloat16 keeps 8 bits of mantissa: the statistics agree to its rounding.
        scale = np.abs(ref.stats[name].ch_max).max()
        np.testing.assert_allclose(s.moments.mean, ref.stats[name].moments.mean, atol=0.02 * scale)
        np.testing.assert_allclose(s.ch_max, ref.stats[name].ch_max, atol=0.02 * scale)


@pytest.mark.parametrize("kind,pre", [("relu", False), ("relu6", False), ("relu6", True),
                                      ("hswish", False), ("hswish", True)])
def test_full_activity_counts_follow_the_one_active_rule(kind, pre):
    from probes.capture.accumulate import _active_counts, _Scratch
    from probes.sinks import active_mask

    g = torch.Generator().manual_seed(0)
    x = torch.randint(-8, 9, (3, 4, 10), generator=g).float() * 0.75   # hits -3, 0 and 6 exactly
    active, saturated = _active_counts(x, kind, pre, _Scratch())
    np.testing.assert_array_equal(active.numpy(), active_mask(x, kind, pre=pre).sum(dim=(0, 2)).numpy())
    want_sat = (x >= 6).sum(dim=(0, 2)) if kind == "relu6" else torch.zeros(4, dtype=torch.int64)
    np.testing.assert_array_equal(saturated.numpy(), want_sat.numpy())


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("kind,pre", [("relu6", True), ("hswish", False), ("hswish", True)])
def test_counts_settled_by_channel_extrema_equal_the_direct_count(kind, pre, layout, monkeypatch):
    # Channels wholly above 6, wholly below -3, wholly in (0, 6), one mixed, one NaN: the
    # extrema settle some comparisons without looking; the counts must not change.
    from probes.capture import accumulate
    from probes.capture.accumulate import _active_counts, _channel_extrema, _channel_view, _Scratch
    from probes.sinks import active_mask

    monkeypatch.setattr(accumulate, "_SETTLE_MIN", 0)   # settle even this small a tensor

    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 7, 4, 5, generator=g)
    x[:, 0] += 6.5
    x[:, 1] -= 9.0
    x[:, 2] = x[:, 2] * 5 + 0.5
    x[:, 3] = x[:, 3] * 16 - 8
    x[1, 4, 2, 3] = float("nan")
    x[:, 5] = 6.0                           # exactly on the relu6 threshold
    x[:, 6] = torch.where(x[:, 6] > 0.5, -3.0, 0.0)   # exactly on the hswish thresholds
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    flat = _channel_view(x)
    want = _active_counts(flat, kind, pre, _Scratch())
    got = _active_counts(flat, kind, pre, _Scratch(), _channel_extrema(flat))
    np.testing.assert_array_equal(got[0].numpy(), want[0].numpy())
    np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
    np.testing.assert_array_equal(got[0].numpy(), active_mask(x, kind, pre=pre).sum(dim=(0, 2, 3)).numpy())


@pytest.mark.parametrize("hw", [(2, 3), (16, 16)])
def test_channel_extrema_and_counts_of_short_and_long_maps_equal_numpy(hw):
    from probes.capture.accumulate import _channel_extrema, _count, _Scratch

    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 3, *hw, generator=g).reshape(5, 3, -1)
    lo, hi = _channel_extrema(x)
    xn = x.numpy()
    np.testing.assert_array_equal(lo.numpy(), xn.min(axis=(0, 2)))
    np.testing.assert_array_equal(hi.numpy(), xn.max(axis=(0, 2)))
    np.testing.assert_array_equal(_count(x, torch.gt, 0.25, _Scratch()).numpy(), (xn > 0.25).sum(axis=(0, 2)))


@pytest.mark.parametrize("channels", [3, 8, 24, 48, 144])
@pytest.mark.parametrize("rows", [1, 7, 64])
def test_channels_last_extrema_read_as_wide_rows_equal_numpy(channels, rows):
    # Rows of k*C values (k consecutive positions side by side) fill whole 128-byte lines; the
    # leftover rows (rows % k) are reduced on their own. Min / max must be those of every row.
    from probes.capture.accumulate import _channel_extrema, _wide_rows

    g = torch.Generator().manual_seed(channels * 100 + rows)
    x = torch.randn(rows, channels, generator=g)
    wide, k, rest = _wide_rows(x)
    assert (k * channels) % 32 == 0 or k == 1 and rows < 32 // np.gcd(channels, 32)
    assert wide.shape[0] * k + (0 if rest is None else rest.shape[0]) == rows
    lo, hi = _channel_extrema(x)
    np.testing.assert_array_equal(lo.numpy(), x.numpy().min(0))
    np.testing.assert_array_equal(hi.numpy(), x.numpy().max(0))


@pytest.mark.parametrize("exact_rows", [3, 1 << 23])
@pytest.mark.parametrize("channels", [3, 8, 24, 48])
@pytest.mark.parametrize("rows", [1, 7, 64, 100])
def test_channels_last_counts_read_as_wide_rows_equal_numpy(channels, rows, exact_rows, monkeypatch):
    # Counts down the wide rows, left partial ((k*C,) float32, or int64 over several float32
    # slices when the rows pass _EXACT_ROWS), leftover rows added at once: equal numpy's.
    from probes.capture import accumulate
    from probes.capture.accumulate import _finish, _partial_count, _Scratch, _wide_rows

    monkeypatch.setattr(accumulate, "_EXACT_ROWS", exact_rows)
    g = torch.Generator().manual_seed(channels * 100 + rows)
    x = torch.randint(-2, 3, (rows, channels), generator=g).float()   # hits the threshold 0
    _, k, rest = _wide_rows(x)
    n, fold = _partial_count(x, torch.ge, 0.0, _Scratch())
    if rest is None and k > 1:
        assert fold == ("cols", k) and n.shape == (k * channels,)
        assert n.dtype == (torch.float32 if rows // k <= exact_rows else torch.int64)
    else:
        assert fold is None and n.shape == (channels,)
    got = _finish(n.to(torch.int64), fold, torch.sum)
    np.testing.assert_array_equal(got.numpy(), (x.numpy() >= 0).sum(0))


def test_counts_of_several_passes_sum_ints_and_partials_of_any_layout():
    # Settled passes (ints), partial counts of one layout (stacked once) and of several layouts
    # (finished one by one): the same int64 totals.
    from probes.capture.accumulate import _sum_counts

    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])   # ("cols", 2) of C = 3: 5, 7, 9
    b = torch.tensor([[1.0, 1.0], [0.0, 2.0], [3.0, 0.0]])   # ("rows", 2): 2, 2, 3
    c = torch.tensor([7, 0, 1])
    assert _sum_counts([4, 0]) == 4
    np.testing.assert_array_equal(_sum_counts([(a, ("cols", 2)), 5, (a, ("cols", 2))]).numpy(), [15, 19, 23])
    got = _sum_counts([(a, ("cols", 2)), (b, ("rows", 2)), (c, None), 1])
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), [5 + 2 + 7 + 1, 7 + 2 + 0 + 1, 9 + 3 + 1 + 1])


@pytest.mark.parametrize("layouts", ["contiguous", "channels_last", "mixed"])
def test_extent_folded_every_few_passes_equals_numpy_over_all_positions(layouts, monkeypatch):
    # More passes than the fold interval, a post-activation point read off .pre (relu6 applied
    # to the folded .pre extrema): min, max and counts equal numpy over every position. Each
    # pass is held partial (wide rows of a channels-last view, (C, H*W) of a short contiguous
    # map, counts settled by the tensor's range as ints); "mixed" changes layout and size from
    # pass to pass, so the held passes disagree and are folded one by one.
    import torch.nn.functional as F

    from probes.capture import accumulate
    from probes.capture.accumulate import _channel_view, _Full, _partial_extrema, _Scratch, _term_counts

    monkeypatch.setattr(accumulate, "_FOLD_PASSES", 3)
    g = torch.Generator().manual_seed(3)
    passes = [torch.randn(2 + i % 3, 5, 4, 8, generator=g) * 4 for i in range(8)]
    passes[4] = passes[4].clamp(max=5.5)   # no x >= 6: that comparison is settled (0)
    if layouts == "mixed":
        passes[5] = torch.randn(3, 5, 3, 3, generator=g) * 4   # 27 rows: not wide (fold None)
    pre, post = _Full(5, "relu6", True, None), _Full(5, "relu6", False, F.relu6)
    scratch = _Scratch()
    folds = set()
    for i, t in enumerate(passes):
        if layouts == "channels_last" or layouts == "mixed" and i % 2:
            t = t.contiguous(memory_format=torch.channels_last)
        flat = _channel_view(t)
        lo, hi, fold = _partial_extrema(flat)
        counts = _term_counts(flat, pre.terms, scratch, (lo, hi, fold))
        folds.add(fold)
        for full in (pre, post):
            full.add(t.shape[0] * t.shape[2] * t.shape[3], lo, hi, counts, fold)
    assert len(pre.pending) == 8 % 3   # folded twice, two passes held
    assert folds == ({("rows", 32)} if layouts == "contiguous" else {("cols", 32)} if layouts == "channels_last"
                     else {("rows", 32), ("cols", 32), None})
    ref = torch.cat([t.permute(0, 2, 3, 1).reshape(-1, 5) for t in passes]).double().numpy()
    e_pre, e_post = pre.extent(None), post.extent(None)
    assert e_pre.n_points == e_post.n_points == len(ref)
    np.testing.assert_array_equal(e_pre.ch_min, ref.min(0))
    np.testing.assert_array_equal(e_pre.ch_max, ref.max(0))
    np.testing.assert_array_equal(e_post.ch_min, np.clip(ref, 0, 6).min(0))
    np.testing.assert_array_equal(e_post.ch_max, np.clip(ref, 0, 6).max(0))
    for e in (e_pre, e_post):
        np.testing.assert_array_equal(e.active, ((ref > 0) & (ref < 6)).sum(0))
        np.testing.assert_array_equal(e.saturated, (ref >= 6).sum(0))
        assert e.saturated.sum() > 0


@pytest.mark.parametrize("shift", [-0.5, -20.0, 20.0])
def test_counts_settled_by_the_tensor_range_skip_the_comparison(shift, monkeypatch):
    # A small tensor whose whole range lies below 6 (or below 0, or above 6): the decided
    # comparisons are not run, and the counts equal the plain counts.
    from probes.capture import accumulate
    from probes.capture.accumulate import _active_counts, _channel_extrema, _channel_view, _Scratch

    g = torch.Generator().manual_seed(4)
    x = (torch.rand(3, 6, 5, 5, generator=g) * 5.5 + shift).contiguous(memory_format=torch.channels_last)
    flat = _channel_view(x)
    want = _active_counts(flat, "relu6", False, _Scratch())
    compared = []
    real = accumulate._partial_count

    def spy(x, op, value, scratch, wide=None):
        compared.append(value)
        return real(x, op, value, scratch, wide)

    monkeypatch.setattr(accumulate, "_partial_count", spy)
    got = _active_counts(flat, "relu6", False, _Scratch(), _channel_extrema(flat))
    assert compared == ([0.0] if shift == -0.5 else [])   # x >= 6 (and x > 0 when shifted) settled
    for a, b in zip(got, want):
        assert a.dtype == torch.int64
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    xn = x.numpy()
    np.testing.assert_array_equal(got[0].numpy(), ((xn > 0) & (xn < 6)).sum(axis=(0, 2, 3)))
    np.testing.assert_array_equal(got[1].numpy(), (xn >= 6).sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("piece_bytes", [4 * 144, 4 * 144 * 4, 1 << 20])   # 1, 4, all rows
def test_extent_in_pieces_equals_the_whole_tensor_reductions(piece_bytes, monkeypatch):
    # Pieces of a few rows (also splitting an image's channels), channels wholly above 6 or below
    # -3 (settled per piece), values exactly on the thresholds, a NaN: same min, max and counts
    # as the whole-tensor functions and as numpy.
    from probes.capture import accumulate
    from probes.capture.accumulate import (
        _active_counts,
        _channel_extrema,
        _combine,
        _extent_pieces,
        _Scratch,
        _terms,
    )

    monkeypatch.setattr(accumulate, "_PIECE_BYTES", piece_bytes)
    g = torch.Generator().manual_seed(5)
    x = torch.randint(-16, 17, (3, 6, 12, 12), generator=g).float() * 0.5   # hits -3, 0 and 6
    x[:, 0] = x[:, 0].abs() + 7.0
    x[:, 1] = -x[:, 1].abs() - 4.0
    x[2, 3, 5, 5] = float("nan")
    flat = x.reshape(3, 6, -1)
    kinds = [("relu6", False), ("hswish", True), ("hswish", False), ("relu", False)]
    terms = [term for kind, pre in kinds for term in _terms(kind, pre)]
    lo, hi, sums = _extent_pieces(flat, terms, _Scratch())
    assert sorted(sums) == sorted(set(terms))
    want_lo, want_hi = _channel_extrema(flat)
    np.testing.assert_array_equal(lo.numpy(), want_lo.numpy())
    np.testing.assert_array_equal(hi.numpy(), want_hi.numpy())
    assert np.isnan(lo.numpy()[3]) and lo.numpy()[0] >= 7 and hi.numpy()[1] <= -4
    for kind, pre in kinds:
        want = _active_counts(flat, kind, pre, _Scratch())
        for a, b in zip(_combine(kind, pre, sums, 6, flat.device), want):
            assert a.dtype == torch.int64
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    xn = x.numpy()
    np.testing.assert_array_equal(sums["ge", 6.0].numpy(), (xn >= 6).sum(axis=(0, 2, 3)))
    np.testing.assert_array_equal(sums["lt", 0.0].numpy(), (xn < 0).sum(axis=(0, 2, 3)))


def test_pieces_only_for_large_contiguous_maps_on_one_thread():
    from probes.capture.accumulate import _channel_view, _use_pieces

    big = torch.zeros(8, 128, 64, 64)   # 16 MB
    assert _use_pieces(_channel_view(big)) == (torch.get_num_threads() == 1)
    assert not _use_pieces(_channel_view(big.contiguous(memory_format=torch.channels_last)))
    assert not _use_pieces(_channel_view(torch.zeros(2, 8, 16, 16)))


def test_channels_last_model_gives_extent_and_reservoir_of_its_tensors(model, images, points):
    # Channels-last tensors: extent over every position (wide rows, settled counts) and the
    # sampled rows gathered whole (index_select) equal the reference tensors.
    cl = build_model(ZooConfig(input_size=32, num_classes=10, width_mult=0.35, head_channels=64,
                               in_channels=1, bottleneck_act="relu6")).eval()
    cl.load_state_dict(model.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    x = images.contiguous(memory_format=torch.channels_last)
    names = ["blocks.2.expand.pre", "blocks.2.expand", "blocks.3.input", "blocks.16.expand"]
    res = probe(cl, x, points=names, batch_size=5, device="cpu", progress=False)
    for name in names:
        ref_t = _reference(cl, points[name], x)
        assert ref_t.shape[1] > 1
        ref = _rows(ref_t)
        s = res.stats[name]
        np.testing.assert_array_equal(s.ch_min, ref.min(0))
        np.testing.assert_array_equal(s.ch_max, ref.max(0))
        if points[name].act == "relu6":
            np.testing.assert_array_equal(s.extent.active, ((ref > 0) & (ref < 6)).sum(0))
            np.testing.assert_array_equal(s.extent.saturated, (ref >= 6).sum(0))
        r = s.reservoir
        assert r.values.shape[0] > 0
        b, y, xx = r.ids[:, 0], r.ids[:, 1], r.ids[:, 2]
        np.testing.assert_array_equal(r.values, ref_t.numpy()[b, :, y, xx].astype(np.float32))


def test_reservoir_state_stays_bounded_over_many_batches_and_stays_exact(model, images, points):
    """The reservoir rows of a point go into one buffer of 2k rows, which the block group keeps
    from overflowing by compacting in the stream: the state does not grow with the number of
    batches, a snapshot taken mid-run is not overwritten by later batches, and the result is
    the exact bottom-K of every position of the block's output frame."""
    block, k = "blocks.3", 5    # output frame 8 x 8: up to k candidates per image
    x = torch.cat([images] * 3)    # 36 images, one per forward pass: many compactions
    held, rows = [], []
    with capture(model, f"{block}.*", example_input=images[:1], reservoir_size=k, seed=3) as cap, \
            torch.no_grad():
        members = [ps.reservoir for ps in cap._sinks.values() if ps.reservoir is not None]
        for i in range(x.shape[0]):
            model(x[i:i + 1])
            held.append(max(g.held for g in cap._groups))
            rows.append(max(m.rows.shape[0] for m in members))
            if i == 10:
                snap = cap.result()
                snap_values = {n: s.reservoir.values.copy() for n, s in snap.stats.items()}
    assert max(held) == 2 * k and max(rows) == 2 * k      # filled up to the capacity, never past it
    stats = cap.stats()

    def bottom_k(n_images):
        b, y, xx = np.meshgrid(np.arange(n_images), np.arange(8), np.arange(8), indexing="ij")
        prio = position_hash(3, b, y, xx, salt=Reservoir.SALT).ravel()
        return np.stack([b.ravel(), y.ravel(), xx.ravel()], 1)[np.argsort(prio, kind="stable")[:k]]

    for n_images, st in ((36, stats), (11, snap.stats)):
        for name, s in st.items():
            r = s.reservoir
            np.testing.assert_array_equal(r.block_ids(), bottom_k(n_images), err_msg=name)
            t = _reference(model, points[name], x[:n_images])
            np.testing.assert_array_equal(r.values, t[r.ids[:, 0], :, r.ids[:, 1], r.ids[:, 2]].float().numpy())
    for name, s in snap.stats.items():
        np.testing.assert_array_equal(s.reservoir.values, snap_values[name], err_msg=name)


def test_exact_derived_values_in_runs_of_images_equal_one_run(model, images, monkeypatch):
    # A post-activation value derived from its .pre tensor is made and reduced run by run of
    # images: runs of 1 image (entries and shift rows patched small) give the same sinks.
    from probes.capture import hooks

    def run():
        with capture(model, "blocks.1.*", example_input=images[:1], moments="exact",
                     reservoir_size=20) as cap, torch.no_grad():
            model(images[:5])
            model(images[5:])
        return cap.stats()

    whole = run()
    monkeypatch.setattr(hooks, "_DERIVE_ENTRIES", 1)
    monkeypatch.setattr(hooks, "_SHIFT_ROWS", 1)
    runs = run()
    assert any(n.endswith("expand") for n in whole)
    for name, a in whole.items():
        b = runs[name]
        assert a.moments.count == b.moments.count
        scale = np.sqrt(np.outer(np.diag(a.moments.m2), np.diag(a.moments.m2)))
        assert np.all(np.abs(a.moments.m2 - b.moments.m2) <= 1e-13 * scale)
        np.testing.assert_array_equal(a.reservoir.values, b.reservoir.values)
        if a.activity is not None:
            for f, v in vars(a.activity).items():
                np.testing.assert_array_equal(v, vars(b.activity)[f])
        for f, v in vars(a.extent).items():
            np.testing.assert_array_equal(v, vars(b.extent)[f])


def test_allocated_bytes_reader_follows_allocations():
    """glibc's allocated bytes, as the guard reads them: a run of heap allocations adds that
    many bytes, and freeing them takes them off again."""
    import importlib

    pc = importlib.import_module("probes.capture.memory")
    if pc._HEAP_USED is None:
        pytest.skip("not glibc 2.33+: the guard uses the resident size alone")
    before = pc._HEAP_USED()
    blocks = [bytearray(64 << 10) for _ in range(400)]   # 25 MiB in 64 KiB blocks
    during = pc._HEAP_USED()
    del blocks
    after = pc._HEAP_USED()
    assert during - before >= 400 * (64 << 10)
    assert during - after >= 400 * (64 << 10) * 0.9


@pytest.mark.parametrize("blow_up", [False, True])
def test_exact_histograms_of_pre_post_and_shared_points_equal_numpy(model, images, points, blow_up):
    """Exact mode bins the hooked values once (a signed histogram) and reads the |x| histogram
    of a post-activation point off its .pre values through the clamp: the same counts as
    binning each point's own values. With an inf and a NaN channel planted at
    ``blocks.2.expand.pre`` (NaN from there on) the clamp cannot be read off the signed
    histogram, and the post values are binned."""
    import copy

    x = images
    model = copy.deepcopy(model)
    names = ["blocks.2.expand.pre", "blocks.2.expand", "blocks.2.depthwise.pre", "blocks.2.depthwise",
             "blocks.2.output", "blocks.3.input"]
    with capture(model, names, example_input=images[:1], moments="exact") as cap, torch.no_grad():
        if blow_up:   # after discovery, which reads the network on finite values
            bias = model.get_submodule("blocks.2.expand.bn").bias.data
            bias[0], bias[1] = float("inf"), float("nan")
        model(x[:5])
        model(x[5:])
    stats = cap.stats()
    saw_inf = False
    for name in names:
        ref = _rows(_reference(model, points[name], x)).astype(np.float32)
        saw_inf |= not bool(np.isfinite(ref).all())
        e = stats[name].extent
        assert e.hist_points == len(ref)
        bins = np.abs(ref).view(np.int32).ravel() >> 20
        np.testing.assert_array_equal(e.abs_hist, np.bincount(bins, minlength=len(e.abs_hist)), err_msg=name)
    assert saw_inf == blow_up
