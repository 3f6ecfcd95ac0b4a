"""Input specs: how a model expects its images (size, channels, mean, std, interpolation).

Every loaded model carries an :class:`InputSpec`; datasets produce images in [0, 1] and
:func:`prepare` turns a batch of them into what the model was trained on. Image files go through
:func:`open_image` (a pixel limit against decompression bombs, one-line errors naming the file)
and :func:`transform_image`, the evaluation transform that ``bnprobe predict`` and the streamed
image folders share: resize the shorter side to the preset's ``resize_size`` with
``spec.interpolation`` (antialiased), centre-crop ``spec.size``, scale to [0, 1], normalise
with ``spec.mean`` / ``spec.std`` (torchvision's ``weights.transforms()``, timm's evaluation
transform).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MAX_IMAGE_PIXELS", "InputSpec", "open_image", "prepare",
           "transform_image"]

#: Most pixels (width x height) an image file may declare; larger ones are refused before they
#: are decoded (a 100 KB PNG can declare 30000 x 30000 pixels, 2.7 GB once decoded). PIL's own
#: limit, above which it only warns.
MAX_IMAGE_PIXELS: int = 89_478_485

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


def open_image(path: str | os.PathLike[str], mode: str | None, *, max_pixels: int = MAX_IMAGE_PIXELS) -> "Any":
    """Decode an image file into a PIL image of ``mode`` ("RGB" or "L"), with a pixel limit.

    Parameters
    ----------
    path : path
    mode : {"RGB", "L"} or None
        None reads only the header and returns the file's own mode as a string (nothing is
        decoded).
    max_pixels : int
        Files declaring more than ``max_pixels`` pixels are refused before decoding.

    Returns
    -------
    PIL.Image.Image, fully loaded (the file is closed), or str for ``mode=None``.

    Raises
    ------
    ValueError
        One line naming the file: missing, not an image PIL reads, truncated, or larger than
        ``max_pixels`` (a decompression bomb).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ValueError(
                        f"Image file {path} declares {w} x {h} = {w * h:,} pixels, more than the limit "
                        f"of {max_pixels:,} (a decompression bomb?). Shrink the image, or remove it."
                    )
                return img.mode if mode is None else img.convert(mode)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ValueError(f"Image file {path} does not exist.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # PIL refuses at open when the header declares more than twice its own limit
        raise ValueError(f"Image file {path} declares too many pixels (a decompression bomb?): {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"Cannot read image file {path}: {e}. Expected a PNG, JPEG or other "
                         f"image format that PIL reads.") from None


def transform_image(img: "Any", spec: InputSpec, *, resize_size: int | None = None) -> torch.Tensor:
    """The evaluation transform of one image (PIL image, or tensor of shape (C, H, W) in [0, 1]).

    Shorter side resized to ``resize_size`` (default ``spec.size``) with ``spec.interpolation``
    (antialiased), centre crop of ``spec.size`` x ``spec.size``, values in [0, 1] normalised:
    (x - mean) / std.

    Returns
    -------
    Tensor of shape (spec.channels, spec.size, spec.size), float32.
    """
    from probes._lazy import import_torchvision

    import_torchvision()  # without torch's compiler stack
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    target = resize_size or spec.size
    mode = InterpolationMode(spec.interpolation)
    if isinstance(img, torch.Tensor):
        # float in [0, 1]: resized in float (no rounding to 8 bits)
        t = img.to(torch.float32)
        if min(t.shape[-2:]) != target:
            t = TF.resize(t, target, interpolation=mode, antialias=True)
        t = TF.center_crop(t, [spec.size, spec.size])
    else:
        # PIL resizes 8-bit images itself, as torchvision's weights.transforms() does
        if min(img.size) != target:
            img = TF.resize(img, target, interpolation=mode, antialias=True)
        t = TF.to_tensor(TF.center_crop(img, [spec.size, spec.size]))
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
    return (t - mean) / std
