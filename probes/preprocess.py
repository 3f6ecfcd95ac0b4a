"""Input specs: how a model expects its images (size, channels, mean, std, interpolation).

Every loaded model carries an :class:`InputSpec`; datasets produce images in [0, 1] and
:func:`prepare` turns a batch of them into what the model was trained on.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "InputSpec", "prepare"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What a model expects as input.

    Parameters
    ----------
    size : int
        Side of the square input in pixels.
    channels : int
        Number of input channels (1 or 3).
    mean, std : sequence of float
        Per-channel normalisation applied after resizing: ``(x - mean) / std``.
    interpolation : str
        Resize method: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
    source : str
        Where the spec came from (checkpoint card, torchvision weights, timm config, flags).
    """

    size: int = 224
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    source: str = "default (ImageNet)"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.size < 1:
            raise ValueError(f"The 'size' parameter of InputSpec must be an int >= 1. Got {self.size!r} instead.")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"InputSpec needs one mean and one std per channel ({self.channels}). "
                f"Got mean={list(self.mean)} and std={list(self.std)} instead."
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"The 'std' parameter of InputSpec must be > 0. Got {list(self.std)} instead.")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"The 'interpolation' parameter of InputSpec must be one of {list(INTERPOLATIONS)}. "
                f"Got {self.interpolation!r} instead."
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str | None = None) -> "InputSpec":
        keys = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in keys}
        if source is not None:
            kwargs["source"] = source
        return cls(**kwargs)


def prepare(x: np.ndarray | torch.Tensor, spec: InputSpec, *, gray_to_rgb: bool = False,
            name: str = "dataset") -> torch.Tensor:
    """Resize and normalise a batch of [0, 1] images for a model with input ``spec``.

    Parameters
    ----------
    x : array of shape (n_images, n_channels, height, width)
        Images in [0, 1].
    spec : InputSpec
    gray_to_rgb : bool
        Repeat a single channel three times when the model wants RGB.
    name : str
        Dataset name used in error messages.

    Returns
    -------
    Tensor of shape (n_images, spec.channels, spec.size, spec.size), float32.
    """
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    if t.ndim != 4:
        raise ValueError(f"Images of {name} must have shape (N, C, H, W). Got shape {tuple(t.shape)} instead.")
    c = t.shape[1]
    if c != spec.channels:
        if c == 1 and spec.channels == 3 and gray_to_rgb:
            t = t.expand(-1, 3, -1, -1)
        elif c == 1 and spec.channels == 3:
            raise ValueError(
                f"{name} has 1 channel but the model expects 3 (RGB). Use an RGB dataset (e.g. "
                f"'natural'), or repeat the gray channel: gray_to_rgb=True (CLI: --gray-to-rgb)."
            )
        else:
            raise ValueError(
                f"{name} has {c} channels but the model expects {spec.channels}. "
                f"Use a dataset with {spec.channels}-channel images."
            )
    if t.shape[-2:] != (spec.size, spec.size):
        kw = {} if spec.interpolation == "nearest" else {"align_corners": False}
        if spec.interpolation == "bicubic":
            kw["antialias"] = True
        t = F.interpolate(t, size=(spec.size, spec.size), mode=spec.interpolation, **kw)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (t - mean) / std
