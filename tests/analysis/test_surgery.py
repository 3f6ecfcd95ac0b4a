import altair as alt
import numpy as np
import pytest
import torch
from torch import nn

from analysis.surgery import SURGERY_COLUMNS, accuracy, replace_bottleneck, surgery_figure, surgery_table
from probes.blocks import find_blocks
from probes.datasets import ImageDataset
from probes.zoo import ZooConfig, build_model


def _model(act):
    torch.manual_seed(0)
    m = build_model(ZooConfig(input_size=32, num_classes=3, width_mult=0.35, head_channels=32, in_channels=1,
                              bottleneck_act=act)).eval()
    g = torch.Generator().manual_seed(1)
    for mod in m.modules():  # BN statistics that leave a fair share of units active and saturated
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.2)
            mod.weight.data.copy_(1 + 3 * torch.rand(mod.num_features, generator=g))
    return m


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 32, 32)).astype(np.float32)
    y = (x[:, 0, :16].mean(axis=(1, 2)) > x[:, 0, 16:].mean(axis=(1, 2))).astype(int)
    return ImageDataset(name="rand", x=x, y=y)


@pytest.fixture(scope="module")
def data():
    return _data(60, 0), _data(30, 1)


def test_swapping_an_activation_for_itself_changes_nothing(data):
    train, test = data
    df = surgery_table(_model("relu6"), train, test, act="relu6", blocks=[1, 3], n_boot=20, device="cpu",
                       progress=False)
    assert list(df.columns) == list(SURGERY_COLUMNS)
    assert set(df["variant"]) == {"none", "block 1", "block 3", "all blocks"}
    changed = df[df["variant"] != "none"]
    assert np.all(changed["delta"].to_numpy() == 0.0)  # identical, not merely close
    assert changed[changed.metric == "input_decode_r2"]["value"].notna().all()


def test_removing_relu6_matches_a_hand_modified_network(data):
    train, test = data
    model = _model("relu6")
    df = surgery_table(model, train, test, blocks=[2], n_boot=20, device="cpu", progress=False)
    assert set(df.loc[df.variant != "none", "act_to"]) == {"identity"}
    hand = _model("relu6")
    hand.blocks[2].project.act = nn.Identity()
    acc = df[(df.metric == "test_accuracy") & (df.variant == "block 2")]["value"].item()
    assert acc == accuracy(hand, test)
    # the original is untouched and the change is real: the block's output differs
    assert isinstance(model.blocks[2].project.act, nn.ReLU6)
    x = torch.from_numpy(test.x[:4])
    with torch.no_grad():
        assert not torch.equal(model(x), hand(x))


def test_inserting_relu6_into_a_linear_network(data):
    model = _model("linear")
    blocks = find_blocks(model, torch.zeros(1, 1, 32, 32))
    new = replace_bottleneck(model, blocks, [b.index for b in blocks], "relu6")
    assert sum(isinstance(m, nn.ReLU6) for m in new.modules()) - sum(
        isinstance(m, nn.ReLU6) for m in model.modules()) == len(blocks)
    assert {b.bottleneck_act for b in find_blocks(new, torch.zeros(1, 1, 32, 32))} == {"relu6"}
    with torch.no_grad():
        out = new.blocks[0](torch.randn(2, new.blocks[0].in_channels, 16, 16))
    assert out.min() >= 0 and out.max() <= 6
    with pytest.raises(ValueError, match=r"'act' parameter of replace_bottleneck must be one of .* Got 'tanh'"):
        replace_bottleneck(model, blocks, [0], "tanh")


def test_figure(data):
    train, test = data
    df = surgery_table(_model("relu6"), train, test, blocks=[0, 1], n_boot=20, device="cpu", progress=False)
    chart = surgery_figure(df)
    assert isinstance(chart, alt.VConcatChart)
    spec = chart.to_dict()
    assert "identity" in spec["title"]["text"]
