"""The zoo's MobileNetV2 block and network match the paper (Sandler et al. 2018, Tables 1-2)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from probes.zoo import (
    ACTIVATIONS,
    PAPER_STAGES,
    InvertedResidual,
    MobileNetV2,
    ZooConfig,
    build_model,
    make_activation,
    resolve_schedule,
    stage_config,
)

N_BLOCKS = 17
# Width 1.0, paper Table 2 expanded to one entry per block.
PAPER_OUT = [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]
PAPER_IN = [32] + PAPER_OUT[:-1]
PAPER_T = [1] + [6] * 16
STRIDES_224 = [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
STRIDES_32 = [1, 1, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
# stride 1 and C_in == C_out: 24, 32 x2, 64 x3, 96 x2, 160 x2
RESIDUAL_BLOCKS = [2, 4, 5, 7, 8, 9, 11, 12, 14, 15]
ACT_TYPES = {"relu6": nn.ReLU6, "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "hswish": nn.Hardswish}



def small(**kw) -> ZooConfig:
    base = dict(input_size=32, num_classes=10, width_mult=0.35, head_channels=64, in_channels=1)
    return ZooConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def paper_model() -> MobileNetV2:
    torch.manual_seed(0)
    return build_model(ZooConfig()).eval()


@pytest.fixture(scope="module")
def cifar_model() -> MobileNetV2:
    torch.manual_seed(0)
    return build_model(ZooConfig(input_size=32, num_classes=10)).eval()


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    # Non-trivial BN statistics so that a block is not close to an identity map.
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


# ---------------------------------------------------------------- block layer types


def test_block_count_and_channels_width_1(paper_model):
    blocks = list(paper_model.blocks)
    assert len(blocks) == N_BLOCKS
    assert paper_model.stem.conv.out_channels == 32
    assert [b.in_channels for b in blocks] == PAPER_IN
    assert [b.out_channels for b in blocks] == PAPER_OUT
    assert [b.expand_ratio for b in blocks] == PAPER_T
    assert [b.hidden_channels for b in blocks] == [t * c for t, c in zip(PAPER_T, PAPER_IN)]
    assert paper_model.head.conv.out_channels == 1280
    assert paper_model.classifier.out_features == 1000


def test_block_layer_types(paper_model):
    for i, b in enumerate(paper_model.blocks):
        if b.expand_ratio == 1:
            assert isinstance(b.expand, nn.Identity), i
        else:
            ec = b.expand.conv
            assert isinstance(ec, nn.Conv2d)
            assert (ec.kernel_size, ec.groups, ec.stride) == ((1, 1), 1, (1, 1))
            assert (ec.in_channels, ec.out_channels) == (b.in_channels, b.hidden_channels)
            assert isinstance(b.expand.bn, nn.BatchNorm2d) and b.expand.bn.num_features == b.hidden_channels
            assert type(b.expand.act) is nn.ReLU6
        dc = b.depthwise.conv
        assert dc.kernel_size == (3, 3) and dc.padding == (1, 1)
        assert dc.groups == dc.in_channels == dc.out_channels == b.hidden_channels
        assert isinstance(b.depthwise.bn, nn.BatchNorm2d) and b.depthwise.bn.num_features == b.hidden_channels
        assert type(b.depthwise.act) is nn.ReLU6
        pc = b.project.conv
        assert (pc.kernel_size, pc.groups) == ((1, 1), 1)
        assert (pc.in_channels, pc.out_channels) == (b.hidden_channels, b.out_channels)
        assert isinstance(b.project.bn, nn.BatchNorm2d) and b.project.bn.num_features == b.out_channels
        for conv in (dc, pc):
            assert conv.bias is None  # BN follows every conv


def test_first_block_has_no_expansion(paper_model):
    b0 = paper_model.blocks[0]
    assert b0.expand_ratio == 1 and isinstance(b0.expand, nn.Identity)
    assert b0.depthwise.conv.in_channels == 32 == b0.hidden_channels
    assert all(not isinstance(b.expand, nn.Identity) for b in list(paper_model.blocks)[1:])


def test_linear_bottleneck_has_identity_after_projection(paper_model):
    for b in paper_model.blocks:
        assert type(b.project.act) is nn.Identity
        assert b.bottleneck_act == "linear"


@pytest.mark.parametrize("act", ["relu6", "relu", "leaky_relu", "hswish"])
def test_chosen_bottleneck_activation(act):
    m = build_model(small(bottleneck_act=act))
    for b in m.blocks:
        assert type(b.project.act) is ACT_TYPES[act]
        # the expansion and depthwise activations stay ReLU6 whatever the bottleneck
        assert type(b.depthwise.act) is nn.ReLU6


def test_make_activation_values():
    x = torch.tensor([-2.0, -0.5, 0.5, 7.0])
    torch.testing.assert_close(make_activation("linear")(x.clone()), x)
    torch.testing.assert_close(make_activation("relu6")(x.clone()), torch.tensor([0.0, 0.0, 0.5, 6.0]))
    torch.testing.assert_close(make_activation("relu")(x.clone()), torch.tensor([0.0, 0.0, 0.5, 7.0]))
    torch.testing.assert_close(make_activation("leaky_relu")(x.clone()), torch.tensor([-0.2, -0.05, 0.5, 7.0]))
    # hard-swish: x * relu6(x + 3) / 6
    torch.testing.assert_close(
        make_activation("hswish")(x.clone()), torch.tensor([-2 * 1 / 6, -0.5 * 2.5 / 6, 0.5 * 3.5 / 6, 7.0])
    )


# ---------------------------------------------------------------- strides


def test_strides_224_match_paper(paper_model):
    assert [b.stride for b in paper_model.blocks] == STRIDES_224
    assert [b.depthwise.conv.stride for b in paper_model.blocks] == [(s, s) for s in STRIDES_224]
    assert paper_model.stem.conv.stride == (2, 2)
    assert [s for *_, s in stage_config(ZooConfig())] == [s for *_, s in PAPER_STAGES]


def test_small_input_strides(cifar_model):
    assert [b.stride for b in cifar_model.blocks] == STRIDES_32
    assert [s for *_, s in stage_config(ZooConfig(input_size=64))] == [1, 1, 2, 2, 1, 2, 1]
    assert [s for *_, s in stage_config(ZooConfig(input_size=65))] == [1, 2, 2, 2, 1, 2, 1]
    # channels per block do not depend on the input size
    assert [b.out_channels for b in cifar_model.blocks] == PAPER_OUT


def test_output_shapes_224(paper_model):
    with torch.no_grad():
        assert paper_model.features(torch.zeros(1, 3, 224, 224)).shape == (1, 1280, 7, 7)
        assert paper_model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


def test_output_shapes_32():
    m = build_model(small()).eval()
    x = torch.zeros(2, 1, 32, 32)
    sizes = []
    with torch.no_grad():
        h = m.stem(x)
        sizes.append(h.shape[-1])
        for b in m.blocks:
            h = b(h)
            sizes.append(h.shape[-1])
        assert m(x).shape == (2, 10)
    # 32 -> 16 (stem) -> 16 -> 16 -> 8 -> 4 -> 4 -> 2 -> 2 (module docstring)
    assert sizes == [16] + [16] * 3 + [8] * 3 + [4] * 7 + [2] * 4
    assert m.features(x).shape == (2, 64, 2, 2)


# ---------------------------------------------------------------- residual rule


def test_residual_rule_by_count(paper_model, cifar_model):
    for m in (paper_model, cifar_model):
        res = [i for i, b in enumerate(m.blocks) if b.use_residual]
        assert res == RESIDUAL_BLOCKS
        for b in m.blocks:
            assert b.use_residual == (b.stride == 1 and b.in_channels == b.out_channels)
            assert not b.use_expansion_residual


def test_residual_forward_is_project_plus_input():
    m = build_model(small()).eval()
    _randomise_bn(m)
    g = torch.Generator().manual_seed(1)
    checked = 0
    with torch.no_grad():
        for b in m.blocks:
            x = torch.randn(2, b.in_channels, 8, 8, generator=g)
            branch = b.project(b.depthwise(b.expand(x.clone())))
            out = b(x.clone())
            if b.use_residual:
                torch.testing.assert_close(out, branch + x)
                assert (out - branch).abs().max() > 0.1
                checked += 1
            else:
                torch.testing.assert_close(out, branch)
    # width 0.35 rounds stages 1 and 2 to 8 channels, so block 1 (stride 1 at 32 px) is residual too
    assert [i for i, b in enumerate(m.blocks) if b.use_residual] == [1] + RESIDUAL_BLOCKS
    assert checked == len(RESIDUAL_BLOCKS) + 1


def test_expansion_shortcut_is_around_depthwise():
    m = build_model(small(shortcut="expansion")).eval()
    _randomise_bn(m)
    g = torch.Generator().manual_seed(2)
    flags = [b.use_expansion_residual for b in m.blocks]
    assert flags == [s == 1 and t > 1 for s, t in zip(STRIDES_32, PAPER_T)]
    with torch.no_grad():
        for b in m.blocks:
            assert not b.use_residual
            x = torch.randn(2, b.in_channels, 8, 8, generator=g)
            h = b.expand(x.clone())
            plain = b.project(b.depthwise(h.clone()))
            out = b(x.clone())
            if b.use_expansion_residual:
                torch.testing.assert_close(out, b.project(b.depthwise(h.clone()) + h))
                assert (out - plain).abs().max() > 0.1
            else:
                torch.testing.assert_close(out, plain)


def test_no_shortcut():
    m = build_model(small(shortcut="none")).eval()
    _randomise_bn(m)
    assert not any(b.use_residual or b.use_expansion_residual for b in m.blocks)
    b = m.blocks[RESIDUAL_BLOCKS[0]]
    x = torch.randn(2, b.in_channels, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(b(x.clone()), b.project(b.depthwise(b.expand(x.clone()))))


# ---------------------------------------------------------------- schedules


def test_partial_schedule():
    m = build_model(small(bottleneck_act="partial"))
    kinds = [type(b.project.act) for b in m.blocks]
    assert kinds == [nn.ReLU6] * (N_BLOCKS - 1) + [nn.Identity]
    assert resolve_schedule("partial", n_blocks=3) == ["relu6", "relu6", "linear"]


def test_partial_reverse_schedule():
    m = build_model(small(bottleneck_act="partial_reverse"))
    kinds = [type(b.project.act) for b in m.blocks]
    assert kinds == [nn.Identity] * (N_BLOCKS - 1) + [nn.ReLU6]


def test_per_block_list():
    acts = [ACTIVATIONS[i % len(ACTIVATIONS)] for i in range(N_BLOCKS)]
    cfg = small(bottleneck_act=acts)
    assert cfg.bottleneck_act == tuple(acts)  # lists are frozen to tuples
    m = build_model(cfg)
    assert [b.bottleneck_act for b in m.blocks] == acts
    for a, b in zip(acts, m.blocks):
        assert type(b.project.act) is (nn.Identity if a == "linear" else ACT_TYPES[a])


@pytest.mark.parametrize("n", [0, 16, 18])
def test_per_block_list_wrong_length(n):
    with pytest.raises(ValueError, match=rf"one entry per block \(17\)\. Got {n} entries instead"):
        small(bottleneck_act=["linear"] * n)


# ---------------------------------------------------------------- invalid options


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"bottleneck_act": "gelu"}, r"The 'bottleneck_act' parameter must be one of .*Got 'gelu' instead"),
        ({"bottleneck_act": ["linear"] * 16 + ["tanh"]}, r"'bottleneck_act' .*Got 'tanh' instead"),
        ({"shortcut": "dense"}, r"The 'shortcut' parameter must be one of \['bottleneck', 'expansion', 'none'\]\. Got 'dense' instead"),
        ({"expand_ratio": 0}, r"The 'expand_ratio' parameter must be an int >= 1\. Got 0 instead"),
        ({"expand_ratio": 2.5}, r"The 'expand_ratio' parameter must be an int >= 1\. Got 2\.5 instead"),
        ({"width_mult": 0.0}, r"The 'width_mult' parameter must be a float > 0\. Got 0\.0 instead"),
        ({"input_size": 4}, r"The 'input_size' parameter must be >= 8\. Got 4 instead"),
    ],
)
def test_invalid_options(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        small(**kw)


def test_invalid_stride():
    with pytest.raises(ValueError, match=r"The 'stride' parameter must be 1 or 2\. Got 3 instead"):
        InvertedResidual(8, 8, stride=3, expand_ratio=6)


def test_build_model_overrides_are_validated():
    with pytest.raises(ValueError, match="'shortcut'"):
        build_model(small(), shortcut="both")


# ---------------------------------------------------------------- config round trip


@pytest.mark.parametrize(
    "cfg",
    [
        ZooConfig(),
        small(bottleneck_act="partial", shortcut="expansion", expand_ratio=4),
        small(bottleneck_act=["relu6"] * 8 + ["linear"] * 9),
    ],
)
def test_config_round_trip(cfg):
    d = cfg.to_dict()
    assert isinstance(d["bottleneck_act"], str | list)
    import json

    again = ZooConfig.from_dict(json.loads(json.dumps(d)))
    assert again == cfg
    assert ZooConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert set(d) == {f.name for f in dataclasses.fields(ZooConfig)}


def test_from_dict_unknown_keys():
    d = {**small().to_dict(), "depth": 3, "act": "relu"}
    with pytest.raises(ValueError, match=r"Unknown zoo config keys \['act', 'depth'\]; allowed keys are"):
        ZooConfig.from_dict(d)
    with pytest.raises(ValueError, match="Unknown zoo config keys"):
        build_model({"depth": 3})


def test_build_model_from_dict_equals_object():
    torch.manual_seed(0)
    a = build_model(small().to_dict())
    torch.manual_seed(0)
    b = build_model(small())
    assert a.config == b.config
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


# ---------------------------------------------------------------- sizes


def test_parameter_count_matches_torchvision(paper_model):
    # torchvision.models.mobilenet_v2() (width 1.0, 1000 classes) has 3,504,872 parameters.
    assert sum(p.numel() for p in paper_model.parameters()) == 3_504_872


def test_parameter_count_matches_torchvision_live():
    import torchvision as tv
    ours = build_model(ZooConfig(width_mult=0.5, num_classes=10))
    theirs = tv.models.mobilenet_v2(width_mult=0.5, num_classes=10)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_width_mult_channels():
    cfg = ZooConfig(width_mult=0.35)
    # torchvision's make_divisible(c * 0.35, 8)
    assert [c for _, c, _, _ in stage_config(cfg)] == [8, 8, 16, 24, 32, 56, 112]
    assert [t for t, *_ in stage_config(dataclasses.replace(cfg, expand_ratio=4))] == [1, 4, 4, 4, 4, 4, 4]
