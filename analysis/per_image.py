"""Per-image effective rank of the bottleneck: does the compression adapt to the input?

The notes (section 10) speak of a "dynamic linear bottleneck" whose compression rate adapts
to the input. A fixed bottleneck cannot change its width, but the dimension that one image
actually occupies in it can vary. This module measures that, per image:

- :func:`per_image_effective_rank`: for each image, the effective rank of the covariance of
  its channel vectors over its own spatial positions at a capture point,
  ``erank = exp(-sum p_i log p_i)``, ``p_i = sigma_i / sum sigma`` with ``sigma_i`` the
  singular values of the centred (positions x channels) matrix (Roy & Vetterli 2007; the
  definition of :func:`analysis.spectrum.effective_rank`). One image has only ``H*W``
  positions, so its rank is at most ``min(C, H*W - 1)``: that bound, ``rank_cap``, is reported
  with every value and ``erank_frac = erank / rank_cap``.
- :func:`per_image_study`: the per-image rank at each block's projection and the model's
  per-image cross-entropy loss, one row per (image, block).
- :func:`rank_loss_summary`: per block, the distribution of the per-image rank (quartiles),
  the Spearman correlation between rank and loss, and the mean rank of easy (loss below the
  median) vs hard images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = ["PER_IMAGE_COLUMNS", "per_image_effective_rank", "per_image_study", "rank_loss_summary"]

#: Columns of :func:`per_image_study`.
PER_IMAGE_COLUMNS = ("image", "block", "point", "channels", "positions", "rank_cap", "erank", "erank_frac",
                     "loss", "correct")


def per_image_effective_rank(acts: torch.Tensor | np.ndarray) -> np.ndarray:
    """Effective rank of each image's channel vectors over its spatial positions.

    Parameters
    ----------
    acts : array of shape (n_images, channels, height, width)

    Returns
    -------
    ndarray of shape (n_images,)
        ``exp(-sum p_i log p_i)``, ``p_i = sigma_i / sum_j sigma_j``, ``sigma`` the singular
        values of the centred ``(height*width, channels)`` matrix of one image (float64).
        NaN for an image whose positions are all equal (no spread, no rank).

    Examples
    --------
    >>> x = torch.zeros(1, 3, 2, 2); x[0, 0, 0, 0] = 1.0
    >>> per_image_effective_rank(x)
    array([1.])
    """
    t = torch.as_tensor(acts)
    if t.ndim != 4:
        raise ValueError(f"The 'acts' parameter of per_image_effective_rank must have shape "
                         f"(n_images, channels, height, width). Got shape {tuple(t.shape)} instead.")
    x = t.detach().to("cpu", torch.float64).flatten(2).transpose(1, 2)  # (n, positions, channels)
    x = x - x.mean(dim=1, keepdim=True)
    s = torch.linalg.svdvals(x)
    total = s.sum(dim=1, keepdim=True)
    p = s / total.where(total > 0, torch.ones_like(total))
    ent = -(p * torch.log(p.where(p > 0, torch.ones_like(p)))).sum(dim=1)
    out = torch.exp(ent).numpy()
    out[(total[:, 0] <= 0).numpy()] = np.nan
    return out


@torch.no_grad()
def per_image_study(model: nn.Module, x: torch.Tensor, y: np.ndarray | torch.Tensor, *,
                    points: Sequence[str] = ("project",), batch_size: int = 128) -> pd.DataFrame:
    """Per-image effective rank at each block's capture point(s), with the per-image loss.

    Parameters
    ----------
    model : nn.Module
        In eval mode; its blocks are found by :func:`probes.blocks.find_blocks`.
    x : Tensor of shape (n_images, channels, height, width)
        Normalised model input.
    y : array of shape (n_images,)
        Labels; ``loss`` is the per-image cross-entropy of the model's logits.
    points : sequence of str
        Point suffixes (``"project"``, ``"project.pre"``, ``"expand"``, ...); blocks that lack
        one are skipped.

    Returns
    -------
    DataFrame with columns :data:`PER_IMAGE_COLUMNS`
        ``rank_cap = min(channels, positions - 1)``: what one image could reach at most.
    """
    from probes.blocks import find_blocks

    y_t = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if y_t.shape != (x.shape[0],):
        raise ValueError(f"The 'y' parameter of per_image_study must have shape ({x.shape[0]},) (one label per "
                         f"image). Got shape {tuple(y_t.shape)} instead.")
    blocks = find_blocks(model, x[:2])
    modules = dict(model.named_modules())
    targets: list[tuple[int, str, Any]] = []
    for b in blocks:
        for suffix in points:
            try:
                p = b.point(suffix)
            except KeyError:
                continue
            targets.append((b.index, p.name, next(q for q in b.points if q.name == p.alias_of) if p.alias_of else p))
    got: dict[str, torch.Tensor] = {}

    def make_hook(name: str, is_input: bool) -> Any:
        def hook(mod: nn.Module, args: Any, out: Any = None) -> None:
            # clone: an in-place activation after this module would overwrite the tensor
            got.setdefault(name, (args[0] if is_input else out).detach().clone())
        return hook

    handles = []
    for _, name, src in targets:
        m = modules[src.module_path]
        handles.append(m.register_forward_pre_hook(make_hook(name, True)) if src.hook == "input"
                       else m.register_forward_hook(make_hook(name, False)))
    frames = []
    try:
        for start in range(0, x.shape[0], batch_size):
            got.clear()
            xb, yb = x[start:start + batch_size], y_t[start:start + batch_size]
            logits = model(xb)
            loss = torch.nn.functional.cross_entropy(logits, yb, reduction="none").numpy()
            correct = (logits.argmax(1) == yb).numpy()
            idx = np.arange(start, start + xb.shape[0])
            for block, name, _ in targets:
                t = got[name]
                c, hw = t.shape[1], t.shape[2] * t.shape[3]
                cap = max(min(c, hw - 1), 0)
                er = per_image_effective_rank(t)
                frames.append(pd.DataFrame({"image": idx, "block": block, "point": name, "channels": c,
                                            "positions": hw, "rank_cap": cap, "erank": er,
                                            "erank_frac": er / cap if cap else np.nan,
                                            "loss": loss, "correct": correct}))
    finally:
        for h in handles:
            h.remove()
    return pd.concat(frames, ignore_index=True)[list(PER_IMAGE_COLUMNS)]


def rank_loss_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per capture point: distribution of the per-image rank and its relation to the loss.

    Returns
    -------
    DataFrame with one row per (block, point): channels, positions, rank_cap, erank quartiles
    (``erank_q25``, ``erank_median``, ``erank_q75``), ``erank_iqr_frac`` = IQR / rank_cap
    (how much the occupied dimension varies between images), ``spearman_loss`` = Spearman rho
    between per-image erank and loss (NaN when either is constant), ``erank_easy`` and
    ``erank_hard`` = mean erank of images with loss below / at or above the median loss.
    """
    from scipy import stats

    rows = []
    for (block, point), g in table.groupby(["block", "point"], sort=True):
        g = g[np.isfinite(g["erank"])]
        if g.empty:
            continue
        q25, med, q75 = np.quantile(g["erank"], [0.25, 0.5, 0.75])
        if g["erank"].nunique() > 1 and g["loss"].nunique() > 1:
            rho = float(stats.spearmanr(g["erank"], g["loss"]).statistic)
        else:
            rho = float("nan")
        hard = g["loss"] >= g["loss"].median()
        cap = int(g["rank_cap"].iloc[0])
        rows.append({"block": int(block), "point": point, "channels": int(g["channels"].iloc[0]),
                     "positions": int(g["positions"].iloc[0]), "rank_cap": cap, "erank_q25": q25,
                     "erank_median": med, "erank_q75": q75, "erank_iqr_frac": (q75 - q25) / cap if cap else np.nan,
                     "spearman_loss": rho, "erank_easy": float(g.loc[~hard, "erank"].mean()),
                     "erank_hard": float(g.loc[hard, "erank"].mean()), "n_images": int(len(g))})
    return pd.DataFrame(rows)
