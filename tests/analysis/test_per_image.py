"""Known answers for the per-image effective rank (analysis.per_image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.per_image import per_image_effective_rank, per_image_study, rank_loss_summary
from analysis.spectrum import covariance_spectrum, effective_rank
from probes.zoo import build_model


def _rank_k_image(k: int, channels: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """(channels, side, side) whose centred position matrix has k equal singular values."""
    hw = side * side
    u = rng.standard_normal((hw, k))
    u = np.linalg.qr(u - u.mean(axis=0))[0]  # orthonormal columns with zero mean over positions
    v = np.linalg.qr(rng.standard_normal((channels, k)))[0]
    x = (u @ v.T) * 3.0 + rng.standard_normal(channels)  # a constant offset is removed by centring
    return x.T.reshape(channels, side, side)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_rank_k_construction_has_per_image_rank_k(k: int) -> None:
    rng = np.random.default_rng(k)
    acts = np.stack([_rank_k_image(k, 12, 5, rng), _rank_k_image(2, 12, 5, rng)])
    got = per_image_effective_rank(acts)
    assert got == pytest.approx([k, 2], abs=1e-9)


def test_agrees_with_the_covariance_route_of_spectrum() -> None:
    rng = np.random.default_rng(0)
    acts = rng.standard_normal((4, 6, 3, 4)) * rng.uniform(0.1, 3, size=(1, 6, 1, 1))
    got = per_image_effective_rank(torch.from_numpy(acts))
    for i in range(4):
        pts = acts[i].reshape(6, -1).T
        want = effective_rank(covariance_spectrum(np.cov(pts, rowvar=False)))
        assert got[i] == pytest.approx(want, rel=1e-9)


def test_constant_image_has_no_rank() -> None:
    assert np.isnan(per_image_effective_rank(np.ones((1, 3, 2, 2)))[0])


def test_bad_shape_is_named() -> None:
    with pytest.raises(ValueError, match=r"must have shape \(n_images, channels, height, width\)\. Got shape \(3, 4\)"):
        per_image_effective_rank(np.zeros((3, 4)))


def test_study_rows_caps_and_losses() -> None:
    torch.manual_seed(0)
    model = build_model(input_size=32, in_channels=1, num_classes=10, width_mult=0.35, head_channels=64).eval()
    x = torch.randn(6, 1, 32, 32)
    y = np.array([0, 1, 2, 3, 4, 5])
    table = per_image_study(model, x, y, batch_size=4)
    n_blocks = len(model.blocks)
    assert len(table) == 6 * n_blocks
    with torch.no_grad():
        want = torch.nn.functional.cross_entropy(model(x), torch.as_tensor(y), reduction="none").numpy()
    first = table[table["block"] == 0].sort_values("image")
    assert first["loss"].to_numpy() == pytest.approx(want, rel=1e-5)
    last = table[table["block"] == n_blocks - 1].iloc[0]
    assert last["rank_cap"] == min(last["channels"], last["positions"] - 1)
    assert (table["erank"] <= table["rank_cap"] + 1e-9).all()
    summary = rank_loss_summary(table)
    assert len(summary) == n_blocks and summary["n_images"].eq(6).all()
