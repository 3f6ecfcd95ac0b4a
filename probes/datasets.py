"""Inputs to run through the networks: built-in datasets and user data.

Every loader returns an :class:`ImageDataset`: float32 images of shape (N, C, H, W) in
[0, 1] (before any model-specific normalisation), optional integer labels, optional
continuous generating factors, and a ``meta`` dict for provenance.

Built-in datasets
-----------------
``digits``
    scikit-learn's handwritten digits (1,797 8x8 images, ships with the package), scaled to
    [0, 1] and resized bilinearly to 32x32; one channel. Fixed stratified split (seed 0):
    1,437 train / 360 test.
``shapes``
    Procedural 32x32 one-channel images of a circle, square or triangle with five continuous
    factors drawn uniformly: ``x``, ``y`` (centre, in [-0.3, 0.3] of the half-width),
    ``scale`` (radius in [0.25, 0.5] of the half-width), ``rotation`` (radians in [0, pi/2);
    a circle does not depend on it) and ``intensity`` (in [0.4, 1.0]). Anti-aliased by 4x4
    supersampling. Deterministic from ``seed``; the test split uses a different seed stream.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = [
    "BUILTIN",
    "ImageDataset",
    "load_digits32",
    "load_dataset",
    "make_shapes",
]

#: Names that :func:`load_dataset` understands without a path.
BUILTIN: tuple[str, ...] = ("digits", "shapes")

SPLITS = ("train", "test", "all")


@dataclasses.dataclass
class ImageDataset:
    """A set of images with optional labels and generating factors.

    Attributes
    ----------
    name : str
    x : ndarray of shape (n_images, n_channels, height, width), float32 in [0, 1]
    y : ndarray of shape (n_images,), int64, or None
    factors : dict of str to ndarray of shape (n_images,), or None
        Continuous generating factors (``shapes``), for colouring embeddings and checking
        intrinsic dimension.
    class_names : list of str
    meta : dict
        Provenance: source, split, seed, sizes.
    """

    name: str
    x: np.ndarray
    y: np.ndarray | None = None
    factors: dict[str, np.ndarray] | None = None
    class_names: list[str] = dataclasses.field(default_factory=list)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def subset(self, index: np.ndarray) -> "ImageDataset":
        """The images at ``index`` (labels and factors follow)."""
        index = np.asarray(index)
        return dataclasses.replace(
            self,
            x=self.x[index],
            y=None if self.y is None else self.y[index],
            factors=None if self.factors is None else {k: v[index] for k, v in self.factors.items()},
            meta={**self.meta, "n_images": int(len(index))},
        )

    def head(self, n: int) -> "ImageDataset":
        """The first ``n`` images."""
        return self.subset(np.arange(min(n, len(self))))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"The 'split' parameter must be one of {list(SPLITS)}. Got {split!r} instead.")


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    t = F.interpolate(torch.from_numpy(x), size=(size, size), mode="bilinear", align_corners=False)
    return t.clamp_(0.0, 1.0).numpy()


def load_digits32(split: str = "test", *, size: int = 32) -> ImageDataset:
    """scikit-learn's digits resized to ``size`` x ``size`` (see module docstring)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    _check_split(split)
    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    y = bunch.target.astype(np.int64)
    idx = np.arange(len(y))
    train_idx, test_idx = train_test_split(idx, test_size=0.2, random_state=0, stratify=y)
    pick = {"train": np.sort(train_idx), "test": np.sort(test_idx), "all": idx}[split]
    return ImageDataset(
        name="digits",
        x=np.ascontiguousarray(_resize(x[pick], size)),
        y=y[pick],
        class_names=[str(i) for i in range(10)],
        meta={"source": "sklearn.datasets.load_digits", "split": split, "split_seed": 0,
              "n_images": int(len(pick)), "size": size},
    )


SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle")
SHAPE_FACTORS: dict[str, tuple[float, float]] = {
    "x": (-0.3, 0.3),
    "y": (-0.3, 0.3),
    "scale": (0.25, 0.5),
    "rotation": (0.0, float(np.pi / 2)),
    "intensity": (0.4, 1.0),
}


def _render_shapes(kind: np.ndarray, f: dict[str, np.ndarray], size: int, supersample: int = 4) -> np.ndarray:
    n = len(kind)
    s = size * supersample
    # pixel centres in [-1, 1]
    g = (np.arange(s) + 0.5) / s * 2 - 1
    gy, gx = np.meshgrid(g, g, indexing="ij")
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        # into the shape's frame: translate, rotate by -rotation, scale
        px, py = gx - f["x"][i], gy - f["y"][i]
        c, si = np.cos(f["rotation"][i]), np.sin(f["rotation"][i])
        u = (c * px + si * py) / f["scale"][i]
        v = (-si * px + c * py) / f["scale"][i]
        if kind[i] == 0:
            inside = u * u + v * v <= 1.0
        elif kind[i] == 1:
            inside = (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
        else:
            # equilateral triangle inscribed in the unit circle, apex up
            inside = (v >= -0.5) & (np.sqrt(3) * u - v <= 1.0) & (-np.sqrt(3) * u - v <= 1.0)
        img = inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))
        out[i] = img * f["intensity"][i]
    return out


def make_shapes(n: int = 3000, *, seed: int = 0, size: int = 32) -> ImageDataset:
    """``n`` procedural shape images with their factors (see module docstring).

    Examples
    --------
    >>> ds = make_shapes(6, seed=1)
    >>> ds.x.shape, sorted(ds.factors)
    ((6, 1, 32, 32), ['intensity', 'rotation', 'scale', 'x', 'y'])
    """
    if n < 1:
        raise ValueError(f"The 'n' parameter of make_shapes must be an int >= 1. Got {n!r} instead.")
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(SHAPE_NAMES), size=n)
    factors = {k: rng.uniform(lo, hi, size=n) for k, (lo, hi) in SHAPE_FACTORS.items()}
    x = _render_shapes(kind, factors, size)[:, None]
    return ImageDataset(
        name="shapes",
        x=x,
        y=kind.astype(np.int64),
        factors=factors,
        class_names=list(SHAPE_NAMES),
        meta={"source": "procedural", "seed": seed, "n_images": n, "size": size,
              "factor_ranges": {k: list(v) for k, v in SHAPE_FACTORS.items()}},
    )


def _load_shapes(split: str, size: int) -> ImageDataset:
    # Disjoint seed streams for train and test; 2,400 train / 600 test images.
    _check_split(split)
    if split == "all":
        train, test = _load_shapes("train", size), _load_shapes("test", size)
        return ImageDataset(
            name="shapes",
            x=np.concatenate([train.x, test.x]),
            y=np.concatenate([train.y, test.y]),
            factors={k: np.concatenate([train.factors[k], test.factors[k]]) for k in train.factors},
            class_names=train.class_names,
            meta={**train.meta, "split": "all", "n_images": len(train) + len(test)},
        )
    ds = make_shapes(2400 if split == "train" else 600, seed=1000 if split == "train" else 2000, size=size)
    ds.meta["split"] = split
    return ds


def load_dataset(name: str, *, split: str = "test", size: int = 32) -> ImageDataset:
    """Load a built-in dataset by name (one of :data:`BUILTIN`).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the available ones.
    """
    if name == "digits":
        return load_digits32(split, size=size)
    if name == "shapes":
        return _load_shapes(split, size)
    raise ValueError(f"Unknown dataset {name!r}; available datasets are {list(BUILTIN)}.")
