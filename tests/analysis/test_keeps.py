"""Known answers for the edge-recovery scores (analysis.keeps)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from analysis.keeps import edge_scores, highpass, sobel_energy


def _images(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 12, 12))


def test_the_identity_decoder_recovers_all_edge_energy() -> None:
    x = _images()
    assert edge_scores(x.copy(), x) == {"edge_energy_ratio": 1.0, "highpass_r2": 1.0}


def test_a_mean_image_recovers_no_detail_in_place() -> None:
    x = _images(40)
    mean = np.broadcast_to(x.mean(axis=0, keepdims=True), x.shape)
    s = edge_scores(mean, x)
    # predicting the mean detail scores 0 by construction of the centred R^2
    assert s["highpass_r2"] == pytest.approx(0.0, abs=1e-12)
    assert s["edge_energy_ratio"] < 0.2


def test_blurring_loses_edges_but_keeps_the_coarse_image() -> None:
    x = _images()
    blurred = ndimage.gaussian_filter(x, sigma=(0, 0, 2, 2))
    s = edge_scores(blurred, x)
    assert s["edge_energy_ratio"] < 0.2 and s["highpass_r2"] < 0.2


def test_sobel_energy_of_a_ramp_by_hand() -> None:
    # x[i, j] = j: the x-derivative is (x[j+1] - x[j-1]) * (1 + 2 + 1) = 8 inside; the
    # y-derivative is 0; each image on its own (a second, different image changes nothing)
    ramp = np.tile(np.arange(6, dtype=float), (6, 1))
    g = ndimage.sobel(ramp, axis=1)
    assert g[2, 2] == 8.0
    pair = np.stack([ramp, np.zeros_like(ramp)])[:, None]
    assert sobel_energy(pair) == pytest.approx([float((g ** 2).sum()), 0.0])


def test_highpass_of_a_constant_is_zero() -> None:
    assert np.allclose(highpass(np.full((1, 1, 5, 5), 3.0)), 0.0)


def test_shape_mismatch_is_named() -> None:
    with pytest.raises(ValueError, match=r"'decoded' parameter of edge_scores must have the shape"):
        edge_scores(np.zeros((2, 1, 4, 4)), np.zeros((3, 1, 4, 4)))


def test_channel_grid_tiles_each_channel_scaled_to_its_range() -> None:
    from analysis.keeps import channel_grid

    acts = np.stack([np.arange(4.0).reshape(2, 2), np.full((2, 2), 5.0), -np.arange(4.0).reshape(2, 2)])
    grid = channel_grid(acts, gap=1)
    assert grid.shape == (2 * 3 - 1, 2 * 3 - 1)  # 3 channels -> 2 x 2 tiles of 2 x 2 px
    assert np.allclose(grid[:2, :2], [[0, 1 / 3], [2 / 3, 1]])
    assert np.allclose(grid[:2, 3:5], 0.0)  # a constant channel shows as 0
    assert np.allclose(grid[3:5, :2], [[1, 2 / 3], [1 / 3, 0]])
    assert np.allclose(grid[3:5, 3:5], 1.0) and np.allclose(grid[2, :], 1.0)  # empty tile and gaps white


def test_capture_tensors_match_the_block_computed_by_hand() -> None:
    import torch

    from analysis.keeps import capture_tensors
    from probes.zoo import build_model

    torch.manual_seed(0)
    model = build_model(input_size=32, in_channels=1, num_classes=10, width_mult=0.35, head_channels=64).eval()
    x = torch.randn(2, 1, 32, 32)
    got = capture_tensors(model, x, ["blocks.2.input", "blocks.2.expand", "blocks.2.project", "blocks.2.output"])
    with torch.no_grad():
        h = model.stem(x)
        for blk in model.blocks[:2]:
            h = blk(h)
        b = model.blocks[2]
        e = b.expand(h)
        p = b.project(b.depthwise(e))
        out = p + h if b.use_residual else p
    assert np.allclose(got["blocks.2.input"], h.numpy(), atol=1e-6)
    assert np.allclose(got["blocks.2.expand"], e.numpy(), atol=1e-6)
    assert np.allclose(got["blocks.2.project"], p.numpy(), atol=1e-6)
    assert np.allclose(got["blocks.2.output"], out.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match=r"'names' parameter of capture_tensors must name capture points"):
        capture_tensors(model, x, ["blocks.99.input"])
