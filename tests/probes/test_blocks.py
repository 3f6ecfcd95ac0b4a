"""Discovery of inverted-residual blocks and their capture points in any network.

Expected block tables are written out from the architecture definitions (paper Table 2,
torchvision's / timm's configs and source), never from what ``find_blocks`` prints.
"""

from __future__ import annotations

import fnmatch
import warnings

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models._utils import _make_divisible
from torchvision.models.efficientnet import _efficientnet_conf
from torchvision.models.mobilenetv3 import _mobilenet_v3_conf

from probes.blocks import (
    POINT_SUFFIXES,
    BlockInfo,
    CapturePoint,
    activation_kind,
    capture_points,
    find_blocks,
    fold_bn,
)
from probes.zoo import PAPER_STAGES, ZooConfig, build_model, stage_config

ACT_FN = {
    "linear": lambda x: x, "relu": F.relu, "relu6": F.relu6, "hswish": F.hardswish,
    "silu": F.silu, "gelu": F.gelu,
}



# -- expected tables ------------------------------------------------------------------------

def ir_table(stem: int, stages, first_hidden_rule=lambda c_in, t: c_in * t):
    """(t, c, n, s) stages -> one (in, hidden, out, stride) row per block."""
    rows, c_in = [], stem
    for t, c, n, s in stages:
        for j in range(n):
            rows.append((c_in, first_hidden_rule(c_in, t), c, s if j == 0 else 1))
            c_in = c
    return rows


def residual_of(rows):
    return [s == 1 and i == o for i, _, o, s in rows]


def shape_rows(blocks: list[BlockInfo]):
    return [(b.in_channels, b.hidden_channels, b.out_channels, b.stride) for b in blocks]


# MobileNetV2 paper Table 2 (also torchvision's and timm's mobilenetv2_100), 224 px strides.
MNV2_ROWS = ir_table(32, PAPER_STAGES)

# MNASNet 1.0 (torchvision mnasnet.py): depthwise-separable stem 32 -> 16 (dw + 1x1, no skip),
# then _stack(in, out, k, s, expansion, repeats).
MNAS_STACKS = [(16, 24, 3, 2, 3, 3), (24, 40, 5, 2, 3, 3), (40, 80, 5, 2, 6, 3),
               (80, 96, 3, 1, 6, 2), (96, 192, 5, 2, 6, 4), (192, 320, 3, 1, 6, 1)]
MNAS_ROWS = [(32, 32, 16, 1)] + ir_table(16, [(e, o, r, s) for _, o, _, s, e, r in MNAS_STACKS])
MNAS_KERNELS = [3] + [k for _, _, k, _, _, r in MNAS_STACKS for _ in range(r)]

# ShuffleNetV2 x1.0 (torchvision shufflenetv2.py): stage outputs 116, 232, 464 after a 24-ch
# stem; repeats 4, 8, 4. A stride-2 unit has branch1 (dw -> 1x1, no expansion) and branch2
# (1x1 -> dw -> 1x1); a stride-1 unit has branch2 only, on half the channels.
def shufflenet_rows():
    rows, branch1, c_in = [], [], 24
    for out, reps in zip((116, 232, 464), (4, 8, 4)):
        half = out // 2
        rows.append((c_in, c_in, half, 2))  # branch1
        rows.append((c_in, half, half, 2))  # branch2 of the stride-2 unit
        rows += [(half, half, half, 1)] * (reps - 1)
        branch1 += [True] + [False] * reps
        c_in = out
    return rows, branch1


SHUFFLE_ROWS, SHUFFLE_BRANCH1 = shufflenet_rows()

# timm mobilenetv3_large_100 arch_def (mobilenetv3.py _gen_mobilenet_v3), per block:
# (exp, out, stride, kernel, se, act). Stem 16; 'ds' first block keeps 16 channels.
TIMM_MNV3L = [
    (1, 16, 1, 3, False, "relu"),
    (4, 24, 2, 3, False, "relu"), (3, 24, 1, 3, False, "relu"),
    (3, 40, 2, 5, True, "relu"), (3, 40, 1, 5, True, "relu"), (3, 40, 1, 5, True, "relu"),
    (6, 80, 2, 3, False, "hswish"), (2.5, 80, 1, 3, False, "hswish"),
    (2.3, 80, 1, 3, False, "hswish"), (2.3, 80, 1, 3, False, "hswish"),
    (6, 112, 1, 3, True, "hswish"), (6, 112, 1, 3, True, "hswish"),
    (6, 160, 2, 5, True, "hswish"), (6, 160, 1, 5, True, "hswish"),
    (6, 160, 1, 5, True, "hswish"),
]

# timm mobilevit_s (mobilevit.py model_cfgs): stem 16; bottle_in blocks with br=4 (hidden =
# 4 * in, depthwise, linear out): 1 x 32 s1, 3 x 64 s2, then one 96/128/160 s2 block in front
# of each MobileViT transformer block (whose own convs are regular, not depthwise).
MOBILEVIT_ROWS = [(16, 64, 32, 1), (32, 128, 64, 2), (64, 256, 64, 1), (64, 256, 64, 1),
                  (64, 256, 96, 2), (96, 384, 128, 2), (128, 512, 160, 2)]


def tv_mnv3_expected(arch: str):
    confs, _ = _mobilenet_v3_conf(arch)
    rows = [(c.input_channels, c.expanded_channels, c.out_channels, c.stride) for c in confs]
    acts = ["hswish" if c.use_hs else "relu" for c in confs]
    return rows, acts, [c.use_se for c in confs], [c.kernel for c in confs]


def tv_effnet_expected():
    confs, _ = _efficientnet_conf("efficientnet_b0", width_mult=1.0, depth_mult=1.0)
    rows, kernels = [], []
    for c in confs:
        for j in range(c.num_layers):
            c_in = c.input_channels if j == 0 else c.out_channels
            rows.append((c_in, _make_divisible(c_in * c.expand_ratio, 8), c.out_channels,
                         c.stride if j == 0 else 1))
            kernels.append(c.kernel)
    return rows, kernels


# -- helpers --------------------------------------------------------------------------------

def capture_values(model: nn.Module, points, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Hook every point as its metadata says (cloning inside the hook) and run ``x``."""
    values: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}
    handles = []

    def make(p: CapturePoint):
        def grab(t):  # clone at hook time, before an in-place activation rewrites it
            k = calls.get(p.name, 0)
            calls[p.name] = k + 1
            if k == p.call_index:
                values[p.name] = t.detach().clone()
        return grab

    for p in points:
        module = model.get_submodule(p.module_path)
        grab = make(p)
        if p.hook == "input":
            handles.append(module.register_forward_pre_hook(lambda m, a, g=grab: g(a[0])))
        else:
            handles.append(module.register_forward_hook(lambda m, a, o, g=grab: g(o)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return values


def check_point_values(model: nn.Module, blocks: list[BlockInfo], x: torch.Tensor,
                       *, folded: bool = True) -> int:
    """Values at the points obey the block's algebra; returns the number of checks made."""
    points = [p for b in blocks for p in b.points]
    v = capture_values(model, points, x)
    assert set(v) == {p.name for p in points}
    n = 0
    for b in blocks:
        names = {p.name.split(".", 2)[2]: p for p in b.points}
        for stage in ("expand", "depthwise", "project"):
            if stage not in names:
                continue
            pre, post = v[names[f"{stage}.pre"].name], v[names[stage].name]
            kind = names[stage].act
            torch.testing.assert_close(post, ACT_FN[kind](pre), rtol=1e-5, atol=1e-5)
            n += 1
        for p in b.points:
            if p.alias_of is not None:
                torch.testing.assert_close(v[p.name], v[p.alias_of])
                n += 1
            assert v[p.name].shape[1] == p.channels
        if b.has_residual:
            pre = names["project"].name
            torch.testing.assert_close(v[names["output"].name],
                                       v[pre] + v[names["input"].name], rtol=1e-5, atol=1e-5)
            n += 1
        if folded and b.expand_conv is not None:
            conv = model.get_submodule(b.expand_conv)
            w, c = fold_bn(conv, model.get_submodule(b.expand_bn))
            x_in = v[names["input"].name].double()
            expected = torch.einsum("oi,bihw->bohw", torch.from_numpy(w), x_in)
            expected = expected + torch.from_numpy(c)[None, :, None, None]
            torch.testing.assert_close(v[names["expand.pre"].name].double(), expected,
                                       rtol=1e-4, atol=1e-4)
            n += 1
    return n


# -- our zoo --------------------------------------------------------------------------------

def small(**kw) -> ZooConfig:
    base = dict(input_size=32, num_classes=10, width_mult=0.35, head_channels=64, in_channels=1)
    return ZooConfig(**{**base, **kw})


def zoo_rows(config: ZooConfig):
    stem = _make_divisible(32 * config.width_mult, 8)
    return ir_table(stem, stage_config(config))


@pytest.fixture(scope="module")
def zoo_linear():
    torch.manual_seed(0)
    model = build_model(small()).eval()
    return model, find_blocks(model)


@pytest.fixture(scope="module")
def zoo_relu6():
    torch.manual_seed(0)
    model = build_model(small(bottleneck_act="relu6")).eval()
    return model, find_blocks(model)


def test_zoo_paper_config_blocks_and_channels():
    torch.manual_seed(0)
    config = ZooConfig(input_size=64, num_classes=10)
    blocks = find_blocks(build_model(config))
    rows = ir_table(32, stage_config(config))
    assert len(blocks) == 17
    assert shape_rows(blocks) == rows
    assert [b.has_residual for b in blocks] == residual_of(rows)
    assert [b.module_path for b in blocks] == [f"blocks.{i}" for i in range(17)]


def test_zoo_small_blocks_match_stage_config(zoo_linear):
    _, blocks = zoo_linear
    rows = zoo_rows(small())
    assert shape_rows(blocks) == rows
    assert [b.has_residual for b in blocks] == residual_of(rows)
    assert [b.expand_ratio for b in blocks] == [1.0] + [6.0] * 16


def test_zoo_t1_block_has_no_expand_points(zoo_linear):
    _, blocks = zoo_linear
    b0 = blocks[0]
    assert [p.name for p in b0.points] == [
        f"blocks.0.{s}" for s in POINT_SUFFIXES if not s.startswith("expand")]
    assert (b0.expand_conv, b0.expand_bn, b0.expand_act) == (None, None, None)
    assert [p.name.split(".", 2)[2] for p in blocks[1].points] == list(POINT_SUFFIXES)


def test_zoo_part_paths(zoo_linear):
    _, blocks = zoo_linear
    b = blocks[3]
    assert (b.expand_conv, b.expand_bn, b.expand_act) == (
        "blocks.3.expand.conv", "blocks.3.expand.bn", "blocks.3.expand.act")
    assert (b.dw_conv, b.dw_bn, b.dw_act) == (
        "blocks.3.depthwise.conv", "blocks.3.depthwise.bn", "blocks.3.depthwise.act")
    # Linear bottleneck: the nn.Identity in the act slot is not an activation.
    assert (b.project_conv, b.project_bn, b.project_act) == (
        "blocks.3.project.conv", "blocks.3.project.bn", None)
    assert b.se is None and b.se_convs == ()


def test_zoo_linear_bottleneck_points(zoo_linear):
    _, blocks = zoo_linear
    b = blocks[2]  # residual block
    assert b.has_residual and b.bottleneck_act == "linear"
    project, pre = b.point("project"), b.point("project.pre")
    assert (pre.module_path, pre.hook, pre.pre, pre.act) == ("blocks.2.project.bn", "output", True, "linear")
    assert project.alias_of == "blocks.2.project.pre" and project.act == "linear"
    out = b.point("output")
    assert (out.module_path, out.hook, out.alias_of, out.act) == ("blocks.2", "output", None, "linear")
    inp = b.point("input")
    assert (inp.module_path, inp.hook) == ("blocks.2", "input")
    # A block without residual: the output is the projection itself.
    assert blocks[3].point("output").alias_of == "blocks.3.project.pre"


def test_zoo_relu6_bottleneck_points(zoo_relu6):
    _, blocks = zoo_relu6
    assert [b.bottleneck_act for b in blocks] == ["relu6"] * 17
    b = blocks[3]
    assert b.project_act == "blocks.3.project.act"
    assert b.point("project.pre").act == "relu6" and b.point("project.pre").pre
    assert b.point("project").alias_of is None
    assert (b.point("project").module_path, b.point("project").hook) == ("blocks.3.project.act", "output")
    assert b.point("output").alias_of == "blocks.3.project"
    # Residual output: a sum, no longer in an activation's range.
    assert blocks[2].point("output").act == "linear"


def test_zoo_point_metadata(zoo_linear):
    _, blocks = zoo_linear
    b = blocks[6]
    by = {p.name.split(".", 2)[2]: p for p in b.points}
    assert [by[s].channels for s in POINT_SUFFIXES] == [b.in_channels] + [b.hidden_channels] * 4 + [b.out_channels] * 3
    assert [by[s].act for s in POINT_SUFFIXES] == ["linear"] + ["relu6"] * 4 + ["linear"] * 3
    assert all((p.block, p.stride, p.block_in, p.block_hidden, p.block_out, p.has_residual)
               == (6, b.stride, b.in_channels, b.hidden_channels, b.out_channels, b.has_residual)
               for p in b.points)
    assert [by[s].stage for s in POINT_SUFFIXES] == [s.split(".")[0] for s in POINT_SUFFIXES]
    assert blocks[0].point("input").act == "relu6"  # the stem's ReLU6


@pytest.mark.parametrize("act", ["leaky_relu", "hswish", "relu"])
def test_zoo_other_bottleneck_acts(act):
    torch.manual_seed(0)
    blocks = find_blocks(build_model(small(bottleneck_act=act)))
    assert {b.bottleneck_act for b in blocks} == {act}


def test_zoo_schedule_partial():
    torch.manual_seed(0)
    blocks = find_blocks(build_model(small(bottleneck_act="partial")))
    assert [b.bottleneck_act for b in blocks] == ["relu6"] * 16 + ["linear"]


@pytest.mark.parametrize("shortcut", ["none", "expansion"])
def test_zoo_shortcut_modes_have_no_block_residual(shortcut):
    torch.manual_seed(0)
    blocks = find_blocks(build_model(small(shortcut=shortcut)))
    assert shape_rows(blocks) == zoo_rows(small())
    assert not any(b.has_residual for b in blocks)
    assert all(b.point("output").alias_of == f"blocks.{b.index}.project.pre" for b in blocks)


def test_zoo_point_values(zoo_relu6, zoo_linear):
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    for model, blocks in (zoo_linear, zoo_relu6):
        assert check_point_values(model, blocks, x) > 17 * 3


def test_capture_points_flattens_blocks(zoo_linear):
    model, blocks = zoo_linear
    points = capture_points(model)
    assert points == [p for b in blocks for p in b.points]
    assert len(points) == 6 + 16 * 8
    assert len({p.name for p in points}) == len(points)


# -- discovery does not depend on names ------------------------------------------------------

class Passthrough(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.payload = inner

    def forward(self, x):
        return self.payload(x)


class Clamp6(nn.Module):
    """A home-made ReLU6 that no name table knows."""

    def forward(self, x):
        return x.clamp(0.0, 6.0)


class Odd(nn.Module):
    """An inverted residual with arbitrary names, positional parts and a functional add."""

    def __init__(self, c_in: int, t: int, c_out: int, stride: int) -> None:
        super().__init__()
        h = c_in * t
        self.alpha = nn.Conv2d(c_in, h, 1, bias=False)
        self.beta = nn.BatchNorm2d(h)
        self.gamma = Clamp6()
        self.delta = nn.Sequential(nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False),
                                   nn.BatchNorm2d(h), Clamp6())
        self.omega = nn.ModuleList([nn.Conv2d(h, c_out, 1, bias=False), nn.BatchNorm2d(c_out)])
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.delta(self.gamma(self.beta(self.alpha(x))))
        y = self.omega[1](self.omega[0](y))
        return torch.add(x, y) if self.skip else y


def test_renamed_wrappers_around_zoo_blocks(zoo_linear):
    model, blocks = zoo_linear
    wrapped = nn.Sequential()
    wrapped.add_module("front", model.stem)
    wrapped.add_module("body", nn.Sequential(*[Passthrough(b) for b in model.blocks]))
    found = find_blocks(wrapped, torch.randn(1, 1, 32, 32))
    assert shape_rows(found) == shape_rows(blocks)
    assert [b.has_residual for b in found] == [b.has_residual for b in blocks]
    # The outermost module holding exactly the block is the renamed wrapper.
    assert [b.module_path for b in found] == [f"body.{i}" for i in range(17)]


def test_unknown_block_class_and_activation():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), Clamp6(),
        Odd(8, 4, 8, 1), Odd(8, 3, 16, 2), Odd(16, 2, 16, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    ).eval()
    blocks = find_blocks(net)
    assert shape_rows(blocks) == [(8, 32, 8, 1), (8, 24, 16, 2), (16, 32, 16, 1)]
    assert [b.has_residual for b in blocks] == [True, False, True]
    assert [b.module_path for b in blocks] == ["3", "4", "5"]
    b = blocks[0]
    assert (b.expand_conv, b.expand_bn, b.expand_act) == ("3.alpha", "3.beta", "3.gamma")
    assert (b.project_conv, b.project_bn) == ("3.omega.0", "3.omega.1")
    assert [p.act for p in b.points] == ["relu6"] * 5 + ["linear"] * 3
    check_point_values(net, blocks, torch.randn(2, 3, 32, 32))


def test_shared_activation_module_gets_call_index():
    torch.manual_seed(0)

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, 1, 1)
            self.pw = nn.Conv2d(8, 32, 1)
            self.dw = nn.Conv2d(32, 32, 3, 1, 1, groups=32)
            self.pwl = nn.Conv2d(32, 8, 1)
            self.act = nn.ReLU6()

        def forward(self, x):
            x = self.stem(x)
            return x + self.pwl(self.act(self.dw(self.act(self.pw(x)))))

    net = Shared().eval()
    (b,) = find_blocks(net)
    assert (b.point("expand").module_path, b.point("expand").call_index) == ("act", 0)
    assert (b.point("depthwise").module_path, b.point("depthwise").call_index) == ("act", 1)
    # No norm: the .pre points are the conv outputs.
    assert b.point("expand.pre").module_path == "pw" and b.expand_bn is None
    assert b.has_residual and b.module_path is None
    check_point_values(net, [b], torch.randn(1, 3, 16, 16), folded=False)


def test_flat_block_with_add_in_parent_forward():
    torch.manual_seed(0)

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.l0 = nn.Conv2d(3, 8, 3, 1, 1)
            self.l1, self.l2, self.l3 = nn.Conv2d(8, 24, 1), nn.BatchNorm2d(24), nn.ReLU6()
            self.l4, self.l5, self.l6 = nn.Conv2d(24, 24, 3, 1, 1, groups=24), nn.BatchNorm2d(24), nn.ReLU6()
            self.l7, self.l8 = nn.Conv2d(24, 8, 1), nn.BatchNorm2d(8)
            self.l9 = nn.Conv2d(8, 4, 1)

        def forward(self, x):
            x = self.l0(x)
            y = self.l8(self.l7(self.l6(self.l5(self.l4(self.l3(self.l2(self.l1(x))))))))
            return self.l9(x + y)

    net = Flat().eval()
    (b,) = find_blocks(net)
    assert b.module_path is None and b.has_residual
    assert (b.point("input").module_path, b.point("input").hook) == ("l1", "input")
    # The sum is only seen as the next layer's input.
    assert (b.point("output").module_path, b.point("output").hook) == ("l9", "input")
    check_point_values(net, [b], torch.randn(1, 3, 16, 16))


# -- no blocks: clear errors -----------------------------------------------------------------

def test_mlp_raises():
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match="has no nn.Conv2d"):
        find_blocks(mlp)


def test_plain_cnn_raises():
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=r"No inverted-residual block found in Sequential: .* "
                                         r"2 Conv2d calls, 0 of them depthwise"):
        find_blocks(cnn)


def test_depthwise_without_projection_is_not_a_block():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1))
    with pytest.raises(ValueError, match="1 of them depthwise"):
        find_blocks(net)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="The 'model' parameter of find_blocks must be"):
        find_blocks("mobilenet_v2")
    model = build_model(small())
    with pytest.raises(ValueError, match="'example_input' parameter of find_blocks must be a torch.Tensor"):
        find_blocks(model, np.zeros((1, 1, 32, 32)))
    with pytest.raises(ValueError, match=r"forward pass of MobileNetV2 failed on 'example_input' of shape \(1, 3, 32, 32\)"):
        find_blocks(model, torch.zeros(1, 3, 32, 32))


def test_model_state_restored_and_no_hooks_left():
    model = build_model(small()).train()
    model.blocks[2].eval()
    find_blocks(model)
    assert model.training and not model.blocks[2].training and model.blocks[3].training
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


# -- torchvision -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tv_mobilenet_v2():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    return model, find_blocks(model)


def test_torchvision_mobilenet_v2(tv_mobilenet_v2):
    _, blocks = tv_mobilenet_v2
    assert len(blocks) == 17
    assert shape_rows(blocks) == MNV2_ROWS
    assert [b.has_residual for b in blocks] == residual_of(MNV2_ROWS)
    assert [b.module_path for b in blocks] == [f"features.{i}" for i in range(1, 18)]
    assert {b.bottleneck_act for b in blocks} == {"linear"}
    # t = 1 shifts the positional names; discovery follows structure instead.
    assert blocks[0].dw_conv == "features.1.conv.0.0" and blocks[0].project_conv == "features.1.conv.1"
    assert blocks[1].dw_conv == "features.2.conv.1.0" and blocks[1].project_conv == "features.2.conv.2"
    assert blocks[1].point("expand").act == "relu6"


def test_torchvision_mobilenet_v2_point_values_with_inplace_relu6(tv_mobilenet_v2):
    model, blocks = tv_mobilenet_v2
    assert model.features[2].conv[0][2].inplace
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert check_point_values(model, blocks, x) >= 17 * 3


@pytest.mark.parametrize("arch,n", [("mobilenet_v3_small", 11), ("mobilenet_v3_large", 15)])
def test_torchvision_mobilenet_v3(arch, n):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None)
    blocks = find_blocks(model)
    rows, acts, se, kernels = tv_mnv3_expected(arch)
    assert len(blocks) == n == len(rows)
    assert shape_rows(blocks) == rows
    assert [b.kernel_size for b in blocks] == kernels
    assert [b.has_residual for b in blocks] == residual_of(rows)
    assert [b.point("depthwise").act for b in blocks] == acts
    assert [bool(b.se_convs) for b in blocks] == se
    # torchvision's SqueezeExcitation sits after the depthwise Conv2dNormActivation.
    assert all(len(b.se_convs) == 2 and b.se == f"{b.module_path}.block.{2 if b.expand_conv else 1}"
               for b in blocks if b.se_convs)
    assert [b.expand_conv is not None for b in blocks] == [i != h for i, h, _, _ in rows]


def test_torchvision_mobilenet_v3_large_on_tiny_input_with_1x1_maps():
    # At 32 px the last stages run on 1x1 maps, where SE convs and projections look alike.
    torch.manual_seed(0)
    blocks = find_blocks(torchvision.models.mobilenet_v3_large(weights=None),
                         torch.randn(1, 3, 32, 32))
    rows, _, se, _ = tv_mnv3_expected("mobilenet_v3_large")
    assert shape_rows(blocks) == rows
    assert [bool(b.se_convs) for b in blocks] == se


def test_torchvision_efficientnet_b0():
    torch.manual_seed(0)
    model = torchvision.models.efficientnet_b0(weights=None).eval()
    blocks = find_blocks(model)
    rows, kernels = tv_effnet_expected()
    assert len(blocks) == 16
    assert shape_rows(blocks) == rows
    assert [b.kernel_size for b in blocks] == kernels
    assert [b.has_residual for b in blocks] == residual_of(rows)
    assert all(b.se is not None and len(b.se_convs) == 2 for b in blocks)
    assert {b.point("depthwise").act for b in blocks} == {"silu"}
    # Single-block stages: the block is the MBConv, not its one-child Sequential stage.
    assert blocks[0].module_path == "features.1.0" and blocks[-1].module_path == "features.7.0"
    check_point_values(model, blocks, torch.randn(1, 3, 64, 64))


def test_torchvision_mnasnet1_0():
    torch.manual_seed(0)
    model = torchvision.models.mnasnet1_0(weights=None).eval()
    blocks = find_blocks(model)
    assert len(blocks) == 17
    assert shape_rows(blocks) == MNAS_ROWS
    assert [b.kernel_size for b in blocks] == MNAS_KERNELS
    assert [b.has_residual for b in blocks] == residual_of(MNAS_ROWS)
    # The depthwise-separable stem lies flat in `layers`: no module of its own.
    stem = blocks[0]
    assert stem.module_path is None
    assert (stem.dw_conv, stem.project_conv, stem.project_bn) == ("layers.3", "layers.6", "layers.7")
    assert (stem.point("input").module_path, stem.point("input").hook) == ("layers.3", "input")
    assert stem.point("output").alias_of == "blocks.0.project.pre"
    check_point_values(model, blocks, torch.randn(1, 3, 64, 64))


def test_torchvision_shufflenet_v2_relu_bottleneck():
    torch.manual_seed(0)
    model = torchvision.models.shufflenet_v2_x1_0(weights=None).eval()
    blocks = find_blocks(model)
    assert len(blocks) == 19 == len(SHUFFLE_ROWS)
    assert shape_rows(blocks) == SHUFFLE_ROWS
    assert not any(b.has_residual for b in blocks)  # concat + shuffle, no add
    assert {b.bottleneck_act for b in blocks} == {"relu"}
    assert all(b.dw_act is None and b.point("depthwise").alias_of for b in blocks)
    assert [b.expand_conv is None for b in blocks] == SHUFFLE_BRANCH1
    assert blocks[0].module_path == "stage2.0.branch1"
    assert blocks[2].module_path == "stage2.1.branch2"  # the unit itself sees both halves
    check_point_values(model, blocks, torch.randn(1, 3, 64, 64))


# -- timm ------------------------------------------------------------------------------------

def test_timm_mobilenetv2_100():
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv2_100", pretrained=False).eval()
    blocks = find_blocks(model)
    assert len(blocks) == 17
    assert shape_rows(blocks) == MNV2_ROWS
    assert [b.has_residual for b in blocks] == residual_of(MNV2_ROWS)
    b = blocks[1]
    # BatchNormAct2d: the activation lives inside the norm module.
    assert (b.expand_conv, b.expand_bn, b.expand_act) == ("blocks.1.0.conv_pw", "blocks.1.0.bn1", "blocks.1.0.bn1.act")
    assert (b.point("expand.pre").module_path, b.point("expand.pre").hook) == ("blocks.1.0.bn1.act", "input")
    assert b.project_act is None and b.bottleneck_act == "linear"
    check_point_values(model, blocks, torch.randn(1, 3, 64, 64))


def test_timm_efficientnet_b0():
    torch.manual_seed(0)
    blocks = find_blocks(timm.create_model("efficientnet_b0", pretrained=False))
    rows, kernels = tv_effnet_expected()  # same published architecture as torchvision's
    assert len(blocks) == 16
    assert shape_rows(blocks) == rows
    assert [b.kernel_size for b in blocks] == kernels
    assert [b.has_residual for b in blocks] == residual_of(rows)
    assert [b.se for b in blocks][:2] == ["blocks.0.0.se", "blocks.1.0.se"]
    assert {b.point("expand").act for b in blocks[1:]} == {"silu"}


def test_timm_mobilenetv3_large_100():
    torch.manual_seed(0)
    blocks = find_blocks(timm.create_model("mobilenetv3_large_100", pretrained=False))
    rows, c_in = [], 16
    for e, c, s, _, _, _ in TIMM_MNV3L:
        rows.append((c_in, _make_divisible(c_in * e, 8), c, s))
        c_in = c
    assert len(blocks) == 15
    assert shape_rows(blocks) == rows
    assert [b.kernel_size for b in blocks] == [k for *_, k, _, _ in TIMM_MNV3L]
    assert [bool(b.se_convs) for b in blocks] == [se for *_, se, _ in TIMM_MNV3L]
    assert [b.point("depthwise").act for b in blocks] == [a for *_, a in TIMM_MNV3L]
    assert [b.has_residual for b in blocks] == residual_of(rows)


def test_timm_mobilevit_s_transformer_parts_are_not_blocks():
    torch.manual_seed(0)
    model = timm.create_model("mobilevit_s", pretrained=False).eval()
    blocks = find_blocks(model)
    assert len(blocks) == 7
    assert shape_rows(blocks) == MOBILEVIT_ROWS
    assert [b.has_residual for b in blocks] == residual_of(MOBILEVIT_ROWS)
    assert [b.module_path for b in blocks] == [
        "stages.0.0", "stages.1.0", "stages.1.1", "stages.1.2", "stages.2.0", "stages.3.0",
        "stages.4.0"]
    assert not any(fnmatch.fnmatch(p, "*.1.*") for b in blocks[4:]
                   for p in (b.dw_conv, b.project_conv))


# -- activation_kind ------------------------------------------------------------------------

@pytest.mark.parametrize("module,kind", [
    (nn.ReLU6(inplace=True), "relu6"), (nn.Hardtanh(0.0, 6.0), "relu6"), (nn.ReLU(), "relu"),
    (nn.Hardswish(), "hswish"), (nn.SiLU(), "silu"), (nn.GELU(), "gelu"),
    (nn.GELU(approximate="tanh"), "gelu"), (nn.LeakyReLU(0.2), "leaky_relu"),
    (nn.Sigmoid(), "sigmoid"), (nn.Hardsigmoid(), "hsigmoid"), (nn.Identity(), "linear"),
    (nn.Dropout(0.5).eval(), "linear"), (Clamp6(), "relu6"), (nn.ELU(alpha=0.5), "elu"),
    (nn.PReLU(), "prelu"), (nn.AdaptiveAvgPool2d(1), None), (nn.Softmax(dim=1), None),
    (nn.BatchNorm2d(8), None), (nn.Flatten(), None),
])
def test_activation_kind(module, kind):
    assert activation_kind(module) == kind


# -- fold_bn --------------------------------------------------------------------------------

def randomised_bn(c: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c, eps=1e-3)
    with torch.no_grad():
        bn.weight.copy_(torch.randn(c, generator=g))
        bn.bias.copy_(torch.randn(c, generator=g))
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return bn.eval()


@pytest.mark.parametrize("bias", [False, True])
def test_fold_bn_pointwise_equals_module(bias):
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(5, 7, 1, bias=bias), randomised_bn(7, 1)
    w, b = fold_bn(conv, bn)
    assert w.shape == (7, 5) and b.shape == (7,) and w.dtype == np.float64
    x = torch.randn(3, 5, 4, 4)
    with torch.no_grad():
        ref = bn(conv(x)).double()
    got = torch.einsum("oi,bihw->bohw", torch.from_numpy(w), x.double()) + torch.from_numpy(b)[:, None, None]
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_fold_bn_depthwise_equals_module():
    torch.manual_seed(0)
    conv, bn = nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6, bias=False), randomised_bn(6, 2)
    w, b = fold_bn(conv, bn)
    assert w.shape == (6, 9)
    x = torch.randn(2, 6, 8, 8)
    with torch.no_grad():
        ref = bn(conv(x)).double()
    got = F.conv2d(x.double(), torch.from_numpy(w).reshape(6, 1, 3, 3), torch.from_numpy(b),
                   stride=2, padding=1, groups=6)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_fold_bn_without_bn_is_the_conv():
    conv = nn.Conv2d(2, 3, 1)
    w, b = fold_bn(conv)
    np.testing.assert_array_equal(w, conv.weight.detach().double().numpy().reshape(3, 2))
    np.testing.assert_array_equal(b, conv.bias.detach().double().numpy())


def test_fold_bn_errors():
    with pytest.raises(ValueError, match="The 'conv' parameter of fold_bn must be a torch.nn.Conv2d. Got Linear"):
        fold_bn(nn.Linear(2, 3))
    with pytest.raises(ValueError, match="must be a torch.nn.BatchNorm2d or None. Got ReLU"):
        fold_bn(nn.Conv2d(2, 3, 1), nn.ReLU())
    with pytest.raises(ValueError, match="conv.out_channels = 3 features. Got 4 instead"):
        fold_bn(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="track running statistics"):
        fold_bn(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, track_running_stats=False))


# -- the activation vocabulary ---------------------------------------------------------------

@pytest.mark.parametrize(("func", "args", "kwargs", "kind"), [
    (F.relu6, (torch.zeros(3),), {}, "relu6"),
    (torch.clamp, (torch.zeros(3), 0, 6), {}, "relu6"),
    (torch.clamp, (torch.zeros(3),), {"min": 0}, "relu"),
    (torch.Tensor.relu_, (torch.zeros(3),), {}, "relu"),
    (F.hardtanh, (torch.zeros(3), 0.0, 6.0), {}, "relu6"),
    (F.hardswish, (torch.zeros(3),), {}, "hswish"),
    (F.leaky_relu, (torch.zeros(3), 0.2), {}, "leaky_relu"),
    (torch.Tensor.mul, (torch.zeros(3), 2.0), {}, None),
    (torch.Tensor.sum, (torch.zeros(3),), {}, None),
    (F.hardtanh, (torch.zeros(3),), {}, None),  # clamp to [-1, 1]: no kind of the vocabulary
])
def test_function_kind(func, args, kwargs, kind):
    from probes.activations import function_kind

    assert function_kind(func, args, kwargs) == kind


def test_apply_matches_each_kind_and_rejects_unknown():
    from probes.activations import ACTIVATIONS, KINDS, apply, make_activation

    x = torch.linspace(-8, 8, 33)
    for kind in ACTIVATIONS:
        torch.testing.assert_close(apply(kind, x), make_activation(kind)(x.clone()), rtol=0, atol=0)
        assert activation_kind(make_activation(kind)) == kind
    assert set(ACTIVATIONS) <= set(KINDS)
    with pytest.raises(ValueError, match=r"The 'kind' parameter of apply must be one of \['linear'"):
        apply("swish7", x)
    with pytest.raises(ValueError, match=r"The 'name' parameter of make_activation must be one of"):
        make_activation("gelu")


def test_tracer_fingerprints_once_per_tensor_version():
    """The tracer keeps a tensor's fingerprint until an in-place op changes the tensor: the
    same values as a fresh fingerprint every time, and never another tensor's."""
    from probes.blocks import _Fingerprint, _Tracer

    tracer = _Tracer(nn.Identity())
    fresh = _Fingerprint()
    t = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(0))
    first = tracer.fp(t)
    assert tracer.fp(t) is first                       # kept: the same object back
    np.testing.assert_array_equal(first[1], fresh(t)[1])
    t.mul_(2.0)                                        # in place: version bumped, recomputed
    second = tracer.fp(t)
    np.testing.assert_array_equal(second[1], fresh(t)[1])
    np.testing.assert_allclose(second[1], 2.0 * first[1], rtol=1e-12)
    # a new tensor with the same version (and possibly the freed one's id) is its own
    del t
    u = torch.zeros(2, 8, 5, 5)
    np.testing.assert_array_equal(tracer.fp(u)[1], fresh(u)[1])
    with torch.inference_mode():                       # no version counter: computed, not kept
        v = torch.ones(3, 4)
    np.testing.assert_array_equal(tracer.fp(v)[1], fresh(v)[1])
    assert tracer.fp(v) is not tracer.fp(v)


def test_discovery_fingerprints_each_tensor_version_once(monkeypatch):
    """torchvision's mobilenet_v2: 456 fingerprints asked for in the traced pass (a module's
    output is also the next module's input and its container's), 152 distinct tensor values
    computed (docs/design.md)."""
    from probes import blocks as B

    asked, computed = [0], [0]
    fp, call = B._Tracer.fp, B._Fingerprint.__call__

    def counted_fp(self, x):
        asked[0] += 1
        return fp(self, x)

    def counted_call(self, t):
        computed[0] += isinstance(t, torch.Tensor)
        return call(self, t)

    monkeypatch.setattr(B._Tracer, "fp", counted_fp)
    monkeypatch.setattr(B._Fingerprint, "__call__", counted_call)
    torch.manual_seed(0)
    blocks = find_blocks(torchvision.models.mobilenet_v2().eval(), torch.randn(1, 3, 64, 64))
    assert len(blocks) == 17
    assert (asked[0], computed[0]) == (456, 152)


def test_same_fingerprint_equals_allclose_with_relative_atol():
    """``_same`` (written out for finite fingerprints) answers as ``np.allclose(a, b, rtol=1e-9,
    atol=1e-12 * max|b|)`` did, with all-zero ``b`` never the same, on planted edge cases and
    random near-equal pairs."""
    from probes.blocks import _same

    def reference(a, b):
        return bool(np.any(b)) and bool(np.allclose(a, b, rtol=1e-9, atol=1e-12 * (np.abs(b).max() + 1e-300)))

    inf, nan = np.inf, np.nan
    cases = [([1.0, 2, 3, 4], [1.0, 2, 3, 4]), ([1.0, 2, 3, 4 + 1e-8], [1.0, 2, 3, 4]),
             ([1.0, 2, 3, 4 + 1e-10], [1.0, 2, 3, 4]), ([inf, 1, 2, 3], [inf, 1, 2, 3]),
             ([inf, 1, 2, 3], [-inf, 1, 2, 3]), ([nan, 1, 2, 3], [nan, 1, 2, 3]),
             ([0, 0, 0, 0], [0, 0, 0, 0]), ([0, 0, 0, 1e-300], [0, 0, 0, 1e-300]),
             ([1.0, 2, 3, 4], [1.0, 2, 3, inf]), ([1.0, 2, 3, inf], [1.0, 2, 3, 4])]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for a, b in cases:
            a, b = np.array(a, dtype=float), np.array(b, dtype=float)
            assert _same(a, b) == reference(a, b), (a, b)
    rng = np.random.default_rng(0)
    answers = set()
    for _ in range(5000):
        b = rng.standard_normal(4) * 10.0 ** rng.integers(-5, 5)
        a = b * (1 + rng.standard_normal(4) * 10.0 ** rng.integers(-14, -6))
        assert _same(a, b) == reference(a, b)
        answers.add(_same(a, b))
    assert answers == {True, False}
