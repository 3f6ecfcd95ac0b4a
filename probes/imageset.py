"""The in-memory image set that every built-in loader returns (a leaf module: no project imports).

:mod:`probes.datasets` re-exports :class:`ImageDataset`; :mod:`probes.natural` imports it from
here, so that ``datasets`` can dispatch to ``natural`` without an import cycle.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["ImageDataset"]


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
