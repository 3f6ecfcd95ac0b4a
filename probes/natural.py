"""``natural``: crops of the photographs that ship inside installed packages.

ImageNet-trained models only show meaningful activation manifolds on natural photographs. This
dataset builds them without any download, from the colour photographs bundled with
scikit-image (``skimage/data``, read directly from the package folder so that scikit-image's
``pooch`` fetcher is never involved) and scikit-learn (:func:`sklearn.datasets.load_sample_image`).

Photographs (:data:`PHOTOS`): astronaut, chelsea (a cat), coffee, rocket, motorcycle_left,
motorcycle_right, hubble_deep_field, ihc (immunohistochemistry microscopy), retina (fundus
photograph) from scikit-image; china and flower from scikit-learn.

**Grayscale photographs are skipped by default** (:data:`GRAY_PHOTOS`: camera, coins, moon,
brick, grass, gravel, text, clock_motion): ImageNet models are trained on colour images and a
gray crop has other channel statistics. ``include_gray=True`` adds them, converted to RGB by
repeating the single channel. Synthetic pictures (color wheel, logo, chessboard, phantom,
horse silhouette, scanned page) are never used.

Sampling (deterministic from ``seed``): for each image a photograph is drawn uniformly, a
square crop side ``scale * min(height, width)`` with ``scale`` log-uniform in
``[min_scale, max_scale]`` (so every octave of scale is equally represented), a uniform
position inside the photograph and a horizontal flip with probability 1/2. The crop is resized
to ``size`` x ``size`` with PIL's bilinear filter (antialiased when shrinking) in one step
(``Image.resize(..., box=crop)``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from probes.imageset import ImageDataset

__all__ = ["GRAY_PHOTOS", "PHOTOS", "load_natural", "load_photo"]

#: Colour photographs used by default: name -> (package, file name).
PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "astronaut.png"),
    "chelsea": ("skimage", "chelsea.png"),
    "coffee": ("skimage", "coffee.png"),
    "rocket": ("skimage", "rocket.jpg"),
    "motorcycle_left": ("skimage", "motorcycle_left.png"),
    "motorcycle_right": ("skimage", "motorcycle_right.png"),
    "hubble_deep_field": ("skimage", "hubble_deep_field.jpg"),
    "ihc": ("skimage", "ihc.png"),
    "retina": ("skimage", "retina.jpg"),
    "china": ("sklearn", "china.jpg"),
    "flower": ("sklearn", "flower.jpg"),
}

#: Grayscale photographs, used only with ``include_gray=True`` (channel repeated to RGB).
GRAY_PHOTOS: dict[str, tuple[str, str]] = {
    "camera": ("skimage", "camera.png"),
    "coins": ("skimage", "coins.png"),
    "moon": ("skimage", "moon.png"),
    "brick": ("skimage", "brick.png"),
    "grass": ("skimage", "grass.png"),
    "gravel": ("skimage", "gravel.png"),
    "text": ("skimage", "text.png"),
    "clock_motion": ("skimage", "clock_motion.png"),
}


def _photo_path(package: str, filename: str) -> Path:
    if package == "skimage":
        import skimage

        return Path(skimage.__file__).resolve().parent / "data" / filename
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).resolve().parent / "images" / filename


@functools.lru_cache(maxsize=None)
def load_photo(name: str) -> Image.Image:
    """The bundled photograph ``name`` as an RGB PIL image (cached; do not modify it).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones) or a file missing from the
        installed package.
    """
    table = {**PHOTOS, **GRAY_PHOTOS}
    if name not in table:
        raise ValueError(f"Unknown photograph {name!r}; available photographs are {sorted(table)}.")
    path = _photo_path(*table[name])
    if not path.is_file():
        raise ValueError(
            f"Photograph {name!r} is missing from the installed {table[name][0]} package "
            f"(expected {path})."
        )
    with Image.open(path) as img:
        return img.convert("RGB")


def _check(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"The {name!r} parameter of load_natural must be {expected}. Got {value!r} instead.")


def load_natural(
    n: int = 2000,
    *,
    size: int = 224,
    seed: int = 0,
    min_scale: float = 0.25,
    max_scale: float = 1.0,
    include_gray: bool = False,
) -> ImageDataset:
    """``n`` random square crops of bundled photographs (see module docstring).

    Parameters
    ----------
    n : int
        Number of crops.
    size : int
        Side of the output images in pixels.
    seed : int
        Seed of every random draw; the same seed gives the same images.
    min_scale, max_scale : float
        Range of the crop side as a fraction of the photograph's shorter side,
        ``0 < min_scale <= max_scale <= 1``; drawn log-uniformly.
    include_gray : bool
        Also use the grayscale photographs, repeated to three channels.

    Returns
    -------
    ImageDataset
        ``x`` of shape (n, 3, size, size), float32 in [0, 1]; ``y`` the index of the source
        photograph in ``class_names`` (= ``meta["photos"]``); ``factors`` per image:
        ``photo`` (index), ``left``, ``top``, ``side`` (crop box in the photograph's pixels),
        ``scale`` (side / shorter side) and ``flip`` (1 = mirrored horizontally).
        Memory is ``12 * n * size**2`` bytes (2,000 images at 224 px: 1.2 GB).

    Examples
    --------
    >>> ds = load_natural(4, size=32, seed=1)
    >>> ds.x.shape, ds.x.dtype
    ((4, 3, 32, 32), dtype('float32'))
    """
    _check("n", n, isinstance(n, (int, np.integer)) and n >= 1, "an int >= 1")
    _check("size", size, isinstance(size, (int, np.integer)) and size >= 1, "an int >= 1")
    _check("min_scale", min_scale, 0 < min_scale <= 1, "a float in (0, 1]")
    _check("max_scale", max_scale, min_scale <= max_scale <= 1, f"a float in [min_scale={min_scale}, 1]")

    names = list(PHOTOS) + (list(GRAY_PHOTOS) if include_gray else [])
    photos = [load_photo(p) for p in names]
    rng = np.random.default_rng(seed)
    photo = rng.integers(0, len(names), size=n)
    scale = np.exp(rng.uniform(np.log(min_scale), np.log(max_scale), size=n))
    u_left, u_top = rng.random(n), rng.random(n)
    flip = (rng.random(n) < 0.5).astype(np.int64)

    short = np.array([min(p.size) for p in photos])[photo]
    width = np.array([p.size[0] for p in photos])[photo]
    height = np.array([p.size[1] for p in photos])[photo]
    side = np.clip(np.round(scale * short).astype(np.int64), 1, short)
    left = np.floor(u_left * (width - side + 1)).astype(np.int64)
    top = np.floor(u_top * (height - side + 1)).astype(np.int64)

    x = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):
        box = (int(left[i]), int(top[i]), int(left[i] + side[i]), int(top[i] + side[i]))
        crop = photos[photo[i]].resize((size, size), resample=Image.Resampling.BILINEAR, box=box)
        arr = np.asarray(crop, dtype=np.float32).transpose(2, 0, 1) / 255.0
        x[i] = arr[:, :, ::-1] if flip[i] else arr

    table = {**PHOTOS, **GRAY_PHOTOS}
    return ImageDataset(
        name="natural",
        x=x,
        y=photo.astype(np.int64),
        factors={"photo": photo.astype(np.int64), "left": left, "top": top, "side": side,
                 "scale": side / short, "flip": flip},
        class_names=names,
        meta={
            "source": "photographs bundled with scikit-image (skimage/data) and scikit-learn "
                      "(sklearn/datasets/images); nothing downloaded",
            "photos": names,
            "photo_files": {p: f"{table[p][0]}:{table[p][1]}" for p in names},
            "photo_sizes": {p: [img.size[1], img.size[0]] for p, img in zip(names, photos)},
            "grayscale": ("converted to RGB by repeating the channel" if include_gray
                          else "skipped"),
            "crop": "square; side log-uniform in [min_scale, max_scale] x shorter side; "
                    "uniform position; horizontal flip with p = 0.5",
            "resize": "PIL bilinear (antialiased when shrinking)",
            "seed": seed, "n_images": int(n), "size": int(size),
            "min_scale": float(min_scale), "max_scale": float(max_scale),
        },
    )
