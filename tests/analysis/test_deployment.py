"""Known answers for BN folding, fusion patterns and activation memory (analysis.deployment)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis.deployment import block_memory, fold_batchnorm, fold_error, fusion_patterns, peak_activation_bytes
from probes.zoo import build_model


def _bn(c: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=g))
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.1)
    return bn


@pytest.mark.parametrize("act", [nn.Identity(), nn.ReLU6()])
def test_folding_bn_gives_the_same_outputs(act: nn.Module) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 1, bias=False), _bn(6, 1), act,
                          nn.Conv2d(6, 6, 3, padding=1, groups=6, bias=True), _bn(6, 2)).eval()
    x = torch.randn(5, 3, 7, 7)
    folded, pairs = fold_batchnorm(model, x[:1])
    assert pairs == [("0", "1"), ("3", "4")]
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[4], nn.Identity)
    assert isinstance(model[1], nn.BatchNorm2d)  # the original is untouched
    err = fold_error(model, folded, [x[:2], x[2:]])
    assert err["n_images"] == 5
    # float32 rounding of W * s and of the shifted bias: well under 1e-5 at outputs of order 1
    assert err["max_abs_error"] < 1e-5
    assert err["max_abs_output"] > 0.5


def test_a_bn_that_does_not_read_the_conv_output_is_not_folded() -> None:
    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 1), _bn(2, 0)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) + self.bn(x)

    model = Skip().eval()
    folded, pairs = fold_batchnorm(model, torch.randn(1, 2, 3, 3))
    assert pairs == []
    assert isinstance(folded.bn, nn.BatchNorm2d)


def test_fold_refuses_training_mode() -> None:
    with pytest.raises(ValueError, match="must be in eval mode"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)).train(), torch.zeros(1, 1, 2, 2))


def test_fusion_patterns_ask_torch_which_activations_fuse() -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 1), _bn(4, 0), nn.ReLU(),
                          nn.Conv2d(4, 4, 1), _bn(4, 1), nn.ReLU6(),
                          nn.Conv2d(4, 4, 1), _bn(4, 2),
                          nn.Conv2d(4, 4, 1), _bn(4, 3), nn.ReLU6()).eval()
    table = fusion_patterns(model, torch.randn(1, 2, 3, 3)).set_index("pattern")
    assert table.loc["Conv2d(1x1)+BN+ReLU", "torch_fuses"]
    assert table.loc["Conv2d(1x1)+BN+ReLU", "fused_into"] == "ConvReLU2d"
    assert table.loc["Conv2d(1x1)+BN+linear", "torch_fuses"]
    assert not table.loc["Conv2d(1x1)+BN+ReLU6", "torch_fuses"]
    assert table.loc["Conv2d(1x1)+BN+ReLU6", "count"] == 2


def test_peak_activation_memory_of_a_two_conv_chain() -> None:
    model = nn.Sequential(nn.Conv2d(1, 8, 1), nn.Conv2d(8, 4, 1)).eval()
    got = peak_activation_bytes(model, torch.randn(1, 1, 4, 4))
    # both outputs live at once (8*16 + 4*16 float32); nothing else is allocated by 1x1 convs
    assert got["peak_bytes"] == (8 * 16 + 4 * 16) * 4
    assert got["allocated_bytes"] == got["peak_bytes"]


def test_peak_is_below_the_sum_when_a_chain_frees_its_intermediates() -> None:
    model = nn.Sequential(*[nn.Conv2d(4, 4, 1) for _ in range(6)]).eval()
    got = peak_activation_bytes(model, torch.randn(1, 4, 8, 8))
    one = 4 * 64 * 4
    assert got["allocated_bytes"] == 6 * one
    assert got["peak_bytes"] == 2 * one


def test_block_memory_matches_the_shapes_of_the_zoo_blocks() -> None:
    model = build_model(input_size=32, in_channels=1, num_classes=10, width_mult=0.35, head_channels=64).eval()
    # block discovery follows values through the network: a constant input would make every
    # channel alike, so use random images
    table = block_memory(model, torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert len(table) == len(model.blocks)
    b1 = model.blocks[1]
    h = w = 16  # after the stride-2 stem; block 1 keeps the side (stride 1 in this zoo)
    row = table.set_index("block").loc[1]
    assert row["input_bytes"] == 2 * b1.in_channels * h * w * 4
    assert row["expand_bytes"] == 2 * b1.hidden_channels * h * w * 4
    assert row["depthwise_bytes"] == 2 * b1.hidden_channels * (h // b1.stride) * (w // b1.stride) * 4
    assert table.set_index("block").loc[0, "expand_bytes"] == 0  # t = 1: no expansion
