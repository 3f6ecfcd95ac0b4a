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
    a circle does not depend on it) and ``intensity`` (in [0.4, 1.0]). ``x`` runs along
    columns, ``y`` along rows (downwards). With r = scale: the circle has radius r, the square
    half-side 0.8 r, the triangle is equilateral, inscribed in the circle of radius r, apex up
    at rotation 0; every shape lies wholly inside the image and its centroid is (x, y). Pixel
    value = intensity x covered fraction (4x4 supersampling). Deterministic from ``seed``; the
    test split uses a different seed stream.

User data
---------
:func:`load_npz`
    An ``.npz`` file (``np.savez``) with ``x`` of shape (N, C, H, W), C = 1 (gray) or 3 (RGB),
    either ``uint8`` in 0..255 (divided by 255) or float in [0, 1]; optional ``y`` of shape
    (N,) with integer labels >= 0 and optional ``class_names`` (strings, one per class). Float
    pixels outside [0, 1] are an error, not a warning: they usually mean the images are
    already normalised or still in 0..255, and silently clipping them would hide that.
    Images keep their resolution unless ``size`` is given; :func:`probes.preprocess.prepare`
    resizes for the model anyway. Never unpickles (``allow_pickle=False``).
:func:`load_image_folder`
    A folder with one subfolder per class (``root/cat/001.png``, ``root/dog/a.jpg`` ...),
    class names = sorted subfolder names; every image is resized to ``size`` x ``size``
    (aspect ratio not kept) with PIL.

:func:`load_dataset` takes a built-in name, a path ending in ``.npz`` or an existing folder.
User data has no split: ``split`` is checked but ignored and ``meta["split"]`` is ``"all"``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BUILTIN",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "load_digits32",
    "load_dataset",
    "load_image_folder",
    "load_npz",
    "make_shapes",
]

#: Names that :func:`load_dataset` understands without a path.
BUILTIN: tuple[str, ...] = ("digits", "shapes", "natural")

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
            inside = (v <= 0.5) & (np.sqrt(3) * u - v <= 1.0) & (-np.sqrt(3) * u - v <= 1.0)
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


NPZ_LAYOUT = (
    "an .npz with 'x' of shape (N, C, H, W), C = 1 or 3, uint8 in 0..255 or float in [0, 1], "
    "and optional 'y' of shape (N,) with integer labels"
)
FOLDER_LAYOUT = "a folder with one subfolder per class, each holding image files (root/<class>/<image>.png)"

#: File suffixes that :func:`load_image_folder` reads (case-insensitive); other files are skipped.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm",
)
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def _npz_error(path: Path, problem: str, fix: str = "") -> ValueError:
    fix = f" {fix}" if fix else ""
    return ValueError(f"{path}: {problem}.{fix} Expected {NPZ_LAYOUT}.")


def _npz_images(path: Path, x: np.ndarray) -> np.ndarray:
    """Check the layout, dtype and range of ``x`` from ``path``; return float32 in [0, 1]."""
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        raise _npz_error(
            path, f"'x' has shape {x.shape}, which looks channels-last (N, H, W, C)",
            "Save it channels-first: np.savez(..., x=x.transpose(0, 3, 1, 2)).",
        )
    if x.ndim == 3:
        raise _npz_error(
            path, f"'x' has shape {x.shape} (3 axes)",
            "For gray images (N, H, W) add a channel axis: np.savez(..., x=x[:, None]).",
        )
    if x.ndim != 4:
        raise _npz_error(path, f"'x' has shape {x.shape} ({x.ndim} axes)")
    if x.shape[1] not in (1, 3):
        raise _npz_error(path, f"'x' has shape {x.shape}: {x.shape[1]} channels, not 1 or 3")
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise _npz_error(path, f"'x' is empty (shape {x.shape})")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    if x.dtype == np.bool_:
        return x.astype(np.float32)
    if not np.issubdtype(x.dtype, np.floating):
        raise _npz_error(
            path, f"'x' has dtype {x.dtype}",
            "Convert it to uint8 (0..255) or to float32 scaled to [0, 1].",
        )
    x = x.astype(np.float32)
    n_bad = int((~np.isfinite(x)).sum())
    if n_bad:
        raise _npz_error(path, f"'x' has {n_bad} NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        hint = (
            "It looks like 0..255 values: divide by 255 or save as uint8."
            if lo >= 0.0 and hi <= 255.0
            else "Save the raw images in [0, 1]; normalisation (mean, std) is applied later for each model."
        )
        raise _npz_error(path, f"float 'x' has values in [{lo:g}, {hi:g}], outside [0, 1]", hint)
    return x


def _npz_labels(path: Path, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1 or len(y) != n:
        raise _npz_error(path, f"'y' has shape {y.shape} but 'x' has {n} images; 'y' needs shape ({n},)")
    if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise _npz_error(path, f"'y' has dtype {y.dtype}; labels must be integers")
    if n and y.min() < 0:
        raise _npz_error(path, f"'y' has negative labels (min {int(y.min())}); labels must be >= 0")
    return y.astype(np.int64)


def load_npz(path: str | os.PathLike[str], *, size: int | None = None) -> ImageDataset:
    """Load user images (and labels) from an ``.npz`` file.

    Parameters
    ----------
    path : path
        File written by ``np.savez(path, x=x, y=y)``, with ``x`` : ndarray of shape
        (n_images, n_channels, height, width), ``n_channels`` 1 or 3, ``uint8`` in 0..255 or
        float in [0, 1]; optional ``y`` : ndarray of shape (n_images,) of integers >= 0;
        optional ``class_names`` : ndarray of str. Other keys are ignored.
    size : int, optional
        Resize to ``size`` x ``size`` (bilinear). Default: keep the file's resolution.

    Returns
    -------
    ImageDataset
        ``x`` float32 in [0, 1]; ``name`` is the file's stem; ``meta["split"]`` is ``"all"``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        For a file that is not an .npz, pickled (object) arrays, a missing ``x``, a wrong
        shape (channels-last says how to transpose), dtype or range, NaN, empty data, or labels
        that do not match; the message names the file and the expected layout.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "mine.npz"
    >>> np.savez(f, x=np.zeros((4, 1, 28, 28), np.uint8), y=np.array([0, 1, 0, 1]))
    >>> ds = load_npz(f)
    >>> ds.x.shape, ds.x.dtype, ds.class_names
    ((4, 1, 28, 28), dtype('float32'), ['0', '1'])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file. Expected {NPZ_LAYOUT}.")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        # numpy's message for bytes that are not an array advises loading them unsafely: not passed on
        why = "not a zip archive of .npy arrays" if "pickle" in str(exc) else str(exc)
        raise _npz_error(path, f"cannot be read as .npz ({why})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _npz_error(path, "is a single .npy array, not an .npz archive",
                         "Save it with np.savez(path, x=x).")
    with archive:
        keys = sorted(archive.files)
        if "x" not in keys:
            raise _npz_error(path, f"has no 'x' array (keys: {keys})")
        try:
            raw = {k: archive[k] for k in ("x", "y", "class_names") if k in keys}
        except ValueError:
            raise _npz_error(path, "holds object (pickled) arrays, which are never loaded") from None
    x = _npz_images(path, raw["x"])
    y = _npz_labels(path, raw["y"], len(x)) if "y" in raw else None
    n_classes = 0 if y is None else int(y.max()) + 1
    if "class_names" in raw:
        names = [str(c) for c in np.asarray(raw["class_names"]).ravel()]
        if y is not None and len(names) < n_classes:
            raise _npz_error(
                path, f"'class_names' has {len(names)} entries but 'y' has labels up to {n_classes - 1}"
            )
    else:
        names = [str(i) for i in range(n_classes)]
    if size is not None:
        x = _resize(x, size)
    return ImageDataset(
        name=path.stem,
        x=np.ascontiguousarray(x),
        y=y,
        class_names=names,
        meta={"source": str(path), "format": "npz", "split": "all", "n_images": int(len(x)),
              "size": None if size is None else size, "keys": keys},
    )


def _class_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def load_image_folder(path: str | os.PathLike[str], *, size: int = 32,
                      channels: int | None = None) -> ImageDataset:
    """Load a folder of images with one subfolder per class.

    Parameters
    ----------
    path : path
        ``path/<class name>/<image file>``; files with a suffix in :data:`IMAGE_EXTENSIONS`
        are read (PIL), other files and hidden entries are skipped. Class names are the sorted
        subfolder names; label ``i`` is the i-th name.
    size : int
        Every image is resized (bilinear, aspect ratio not kept) to ``size`` x ``size``.
    channels : {1, 3} or None
        Convert to gray (1) or RGB (3). ``None``: 1 if every image is gray, else 3.

    Returns
    -------
    ImageDataset
        ``x`` : ndarray of shape (n_images, channels, size, size), float32 in [0, 1], images
        ordered by class then file name; ``y`` the class index; ``meta["files"]`` the paths
        relative to ``path``.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not an existing folder.
    ValueError
        If there are no class subfolders, a class folder holds no images, or an image cannot
        be read (the message names the file).
    """
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"The 'size' parameter of load_image_folder must be an int >= 1. Got {size!r} instead.")
    if channels not in (None, 1, 3):
        raise ValueError(
            f"The 'channels' parameter of load_image_folder must be 1, 3 or None. Got {channels!r} instead."
        )
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder. Expected {FOLDER_LAYOUT}.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = len(_class_images(root))
        found = f"found {loose} image files directly in it but no subfolders" if loose else "found no subfolders"
        raise ValueError(f"{root}: {found}. Expected {FOLDER_LAYOUT}.")
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        images = _class_images(root / name)
        if not images:
            raise ValueError(
                f"{root / name}: class folder has no image files (suffixes {list(IMAGE_EXTENSIONS)}). "
                f"Expected {FOLDER_LAYOUT}."
            )
        files += [(f, label) for f in images]
    pictures = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im.load()
                pictures.append(im.copy())
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ValueError(f"{f}: cannot read this image ({exc}). Expected {FOLDER_LAYOUT}.") from None
    if channels is None:
        channels = 1 if all(im.mode in _GRAY_MODES for im in pictures) else 3
    x = np.empty((len(files), channels, size, size), dtype=np.float32)
    for i, im in enumerate(pictures):
        im = im.convert("L" if channels == 1 else "RGB").resize((size, size), Image.Resampling.BILINEAR)
        a = np.asarray(im, dtype=np.float32) / np.float32(255.0)
        x[i] = a[None] if channels == 1 else a.transpose(2, 0, 1)
    return ImageDataset(
        name=root.name,
        x=x,
        y=np.array([label for _, label in files], dtype=np.int64),
        class_names=classes,
        meta={"source": str(root), "format": "image_folder", "split": "all", "n_images": len(files),
              "size": size, "channels": channels,
              "files": [str(f.relative_to(root)) for f, _ in files]},
    )


def load_dataset(name: str | os.PathLike[str], *, split: str = "test",
                 size: int | None = None, n: int | None = None, seed: int = 0) -> ImageDataset:
    """Load a built-in dataset by name (one of :data:`BUILTIN`) or user data by path.

    Parameters
    ----------
    name : str or path
        A built-in name, a path ending in ``.npz`` (:func:`load_npz`) or an existing folder
        of class subfolders (:func:`load_image_folder`). Built-in names win over a folder of
        the same name in the working directory.
    split : {"train", "test", "all"}
        Split of a built-in dataset. User data has no split: it is ignored (``meta["split"]``
        is ``"all"``).
    size : int, optional
        Image side. Default: 32 for built-ins and image folders, 224 for ``natural``; an .npz
        keeps its resolution.
    n : int, optional
        Number of ``natural`` crops (default 1,000; each 224 px RGB crop takes 0.6 MB).
    seed : int
        Seed of the ``natural`` crops (``natural`` has no split: ``split`` is ignored).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the available ones. Errors of the user-data
        loaders name the file and the expected layout.
    """
    _check_split(split)
    if isinstance(name, str) and name in BUILTIN:
        if name == "digits":
            return load_digits32(split, size=32 if size is None else size)
        if name == "natural":
            from probes.natural import load_natural

            return load_natural(1000 if n is None else n, size=224 if size is None else size, seed=seed)
        return _load_shapes(split, 32 if size is None else size)
    path = Path(name)
    if path.suffix.lower() == ".npz":
        return load_npz(path, size=size)
    if path.is_dir():
        return load_image_folder(path, size=32 if size is None else size)
    raise ValueError(
        f"Unknown dataset {str(name)!r}; available datasets are {list(BUILTIN)}, "
        f"or a path to {NPZ_LAYOUT}, or {FOLDER_LAYOUT}."
    )
