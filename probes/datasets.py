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
    class names = sorted subfolder names; every image's shorter side is resized to ``size`` and
    the centre square cut out (aspect ratio kept). :func:`image_files` streams the same folder.

:func:`load_dataset` takes a built-in name, a path ending in ``.npz`` or an existing folder.
User data has no split: ``split`` is checked but ignored and ``meta["split"]`` is ``"all"``.
"""

from __future__ import annotations

import copy
import os
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from probes.imageset import ImageDataset

__all__ = [
    "BUILTIN",
    "IMAGE_EXTENSIONS",
    "ArrayImages",
    "ImageDataset",
    "ImageFiles",
    "NpzImages",
    "StreamingImages",
    "image_files",
    "open_streaming",
    "load_digits32",
    "load_dataset",
    "load_image_folder",
    "load_npz",
    "make_shapes",
]

#: Names that :func:`load_dataset` understands without a path.
BUILTIN: tuple[str, ...] = ("digits", "shapes", "natural")

SPLITS = ("train", "test", "all")


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
        Every image's shorter side is resized (bilinear, antialiased) to ``size`` and the centre
        ``size`` x ``size`` square is cut out (aspect ratio kept, as ``predict`` does).
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
        be read or declares more pixels than :data:`probes.preprocess.MAX_IMAGE_PIXELS` (a
        decompression bomb); the message names the file.

    See Also
    --------
    image_files : the same folder streamed, for folders too large for memory.
    """
    from probes.preprocess import InputSpec, open_image

    root = Path(path)
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"The 'size' parameter of load_image_folder must be an int >= 1. Got {size!r} instead.")
    if channels not in (None, 1, 3):
        raise ValueError(
            f"The 'channels' parameter of load_image_folder must be 1, 3 or None. Got {channels!r} instead."
        )
    files, labels, classes = _folder_files(root)
    if channels is None:
        channels = 1 if all(open_image(f, None) in _GRAY_MODES for f in files) else 3
    spec = InputSpec(size=size, channels=channels, mean=(0.0,) * channels, std=(1.0,) * channels,
                     interpolation="bilinear", source="identity (load_image_folder)")
    stream = ImageFiles(files, name=root.name).prepared(spec)
    x = np.empty((len(files), channels, size, size), dtype=np.float32)
    for i in range(len(files)):
        x[i] = stream[i].numpy()
    return ImageDataset(
        name=root.name,
        x=x,
        y=np.asarray(labels, dtype=np.int64),
        class_names=classes,
        meta={"source": str(root), "format": "image_folder", "split": "all", "n_images": len(files),
              "size": size, "channels": channels,
              "files": [str(f.relative_to(root)) for f in files]},
    )


def _folder_files(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """Image files of a class-subfolder tree (sorted by class, then name), labels, class names."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder. Expected {FOLDER_LAYOUT}.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = len(_class_images(root))
        found = f"found {loose} image files directly in it but no subfolders" if loose else "found no subfolders"
        raise ValueError(f"{root}: {found}. Expected {FOLDER_LAYOUT}.")
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        images = _class_images(root / name)
        if not images:
            raise ValueError(
                f"{root / name}: class folder has no image files (suffixes {list(IMAGE_EXTENSIONS)}). "
                f"Expected {FOLDER_LAYOUT}."
            )
        files += images
        labels += [label] * len(images)
    return files, labels, classes


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


# --------------------------------------------------------------------------------------------
# streaming: images decoded one at a time, in DataLoader worker processes


class StreamingImages:
    """A map-style dataset (``torch.utils.data.Dataset`` protocol) of images decoded on demand.

    ``ds[i]`` is image ``i`` prepared for a model with :func:`probes.preprocess.transform_image`
    (shorter side resized to ``resize_size``, centre crop, mean/std), the transform that
    ``bnprobe predict`` applies, so probes and predictions see the same pixels. Nothing but
    the list of images is held in memory: peak memory does not grow with their number.
    Subclasses say how to read one raw image (:meth:`_raw`). Instances pickle (DataLoader
    workers, Dask workers).

    Attributes
    ----------
    name : str
    labels : ndarray of shape (n_images,), int64, or None
    class_names : list of str
    meta : dict
    spec : probes.preprocess.InputSpec or None
        Set by :meth:`prepared`; None gives the image in [0, 1] at its own size.
    resize_size : int or None
    gray_to_rgb : bool
    """

    def __init__(self, name: str, n: int, *, labels: np.ndarray | None = None,
                 class_names: Sequence[str] = (), meta: dict[str, Any] | None = None) -> None:
        self.name = name
        self.n = int(n)
        self.labels = labels
        self.class_names = list(class_names)
        self.meta = dict(meta or {})
        self.spec: Any = None
        self.resize_size: int | None = None
        self.gray_to_rgb = False
        self.start = 0

    def __len__(self) -> int:
        return self.n

    def _raw(self, i: int, channels: int) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepared(self, spec: Any, *, resize_size: int | None = None, gray_to_rgb: bool = False
                 ) -> "StreamingImages":
        """A copy whose items are prepared for a model with input ``spec``."""
        out = copy.copy(self)
        out.spec, out.resize_size, out.gray_to_rgb = spec, resize_size, gray_to_rgb
        return out

    def shard(self, start: int, stop: int) -> "StreamingImages":
        """The images [start, stop) (indices of this dataset) as a dataset of their own."""
        if not 0 <= start <= stop <= self.n:
            raise ValueError(f"The shard [{start}, {stop}) of {self.name!r} must lie in [0, {self.n}].")
        out = copy.copy(self)
        out.start, out.n = self.start + start, stop - start
        return out

    def __getitem__(self, i: int) -> Any:
        import torch

        from probes.preprocess import transform_image

        if not 0 <= i < self.n:
            raise IndexError(f"image {i} of {self.n}")
        channels = 3 if self.spec is None else self.spec.channels
        raw = self._raw(self.start + i, channels)
        if self.spec is None:
            return raw if isinstance(raw, torch.Tensor) else _pil_to_unit(raw)
        if isinstance(raw, torch.Tensor) and raw.shape[0] != channels:
            raw = _match_channels(raw, channels, self.gray_to_rgb, self.name)
        return transform_image(raw, self.spec, resize_size=self.resize_size)


def _pil_to_unit(img: Any) -> Any:
    from probes._lazy import import_torchvision

    import_torchvision()  # without torch's compiler stack
    import torchvision.transforms.functional as TF

    return TF.to_tensor(img)


def _match_channels(t: Any, channels: int, gray_to_rgb: bool, name: str) -> Any:
    if t.shape[0] == 1 and channels == 3 and gray_to_rgb:
        return t.expand(3, -1, -1)
    if t.shape[0] == 1 and channels == 3:
        raise ValueError(
            f"{name} has 1 channel but the model expects 3 (RGB). Use an RGB dataset (e.g. "
            f"'natural'), or repeat the gray channel: gray_to_rgb=True (CLI: --gray-to-rgb)."
        )
    raise ValueError(f"{name} has {t.shape[0]} channels but the model expects {channels}. "
                     f"Use a dataset with {channels}-channel images.")


class ImageFiles(StreamingImages):
    """Image files, decoded with :func:`probes.preprocess.open_image` (pixel limit) when read.

    Gray files are converted to RGB for an RGB model (channel repeated), as ``predict`` does.
    """

    def __init__(self, files: Sequence[str | os.PathLike[str]], *, name: str,
                 labels: np.ndarray | None = None, class_names: Sequence[str] = (),
                 meta: dict[str, Any] | None = None) -> None:
        super().__init__(name, len(files), labels=labels, class_names=class_names, meta=meta)
        self.files = [str(f) for f in files]

    def _raw(self, i: int, channels: int) -> Any:
        from probes.preprocess import open_image

        return open_image(self.files[i], "RGB" if channels == 3 else "L")


class ArrayImages(StreamingImages):
    """Images held in an array (or a memory map) of shape (n, C, H, W), uint8 or float in [0, 1]."""

    def __init__(self, x: np.ndarray, *, name: str, labels: np.ndarray | None = None,
                 class_names: Sequence[str] = (), meta: dict[str, Any] | None = None) -> None:
        super().__init__(name, x.shape[0], labels=labels, class_names=class_names, meta=meta)
        self.x = x

    def _raw(self, i: int, channels: int) -> Any:
        import torch

        a = np.asarray(self.x[i])
        a = a.astype(np.float32) / np.float32(255.0) if a.dtype == np.uint8 else a.astype(np.float32)
        return torch.from_numpy(a)


class NpzImages(ArrayImages):
    """An ``.npz`` whose ``x`` is memory-mapped (stored uncompressed by ``np.savez``): pages are
    read when an image is; compressed files (``np.savez_compressed``) cannot be mapped and are
    read whole. Checked as :func:`load_npz` checks (layout, dtype; the range of float pixels is
    checked image by image as they are read)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        small = load_npz_layout(path)
        super().__init__(small["x"], name=path.stem, labels=small["y"], class_names=small["class_names"],
                         meta={"source": str(path), "format": "npz", "split": "all",
                               "n_images": int(small["x"].shape[0]), "memory_mapped": small["mapped"]})
        self.path = path

    def __getstate__(self) -> dict[str, Any]:
        # a worker maps the file itself rather than receiving the pixels
        state = dict(self.__dict__)
        state["x"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.x = load_npz_layout(self.path)["x"]

    def _raw(self, i: int, channels: int) -> Any:
        t = super()._raw(i, channels)
        if self.x.dtype.kind == "f" and (not bool(t.isfinite().all()) or t.min() < 0 or t.max() > 1):
            raise _npz_error(self.path, f"float image {i} of 'x' has values outside [0, 1] or NaN")
        return t


def _mapped_member(path: Path, member: str) -> np.ndarray | None:
    """``member`` (an .npy inside the zip) as a read-only memory map, or None if compressed."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            header = f.tell()
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        local = raw.read(30)
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
    offset = info.header_offset + 30 + name_len + extra_len + header
    if dtype.hasobject:
        return None
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)


def load_npz_layout(path: Path) -> dict[str, Any]:
    """``x`` memory-mapped when possible (else loaded), ``y`` and ``class_names`` loaded and
    checked; the same errors as :func:`load_npz`."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file. Expected {NPZ_LAYOUT}.")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise _npz_error(path, f"cannot be read as .npz ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _npz_error(path, "is a single .npy array, not an .npz archive", "Save it with np.savez(path, x=x).")
    with archive:
        keys = sorted(archive.files)
        if "x" not in keys:
            raise _npz_error(path, f"has no 'x' array (keys: {keys})")
        try:
            small = {k: archive[k] for k in ("y", "class_names") if k in keys}
        except ValueError as exc:
            raise _npz_error(path, f"holds object (pickled) arrays, which are never loaded ({exc})") from None
        x = _mapped_member(path, "x.npy")
        mapped = x is not None
        if x is None:
            try:
                x = archive["x"]
            except ValueError as exc:
                raise _npz_error(path, f"holds object (pickled) arrays, which are never loaded ({exc})") from None
    _npz_images(path, x[:1])
    if x.dtype not in (np.uint8, np.bool_) and not np.issubdtype(x.dtype, np.floating):
        raise _npz_error(path, f"'x' has dtype {x.dtype}", "Convert it to uint8 (0..255) or to float32 scaled to [0, 1].")
    y = _npz_labels(path, small["y"], x.shape[0]) if "y" in small else None
    n_classes = 0 if y is None else int(y.max()) + 1
    names = ([str(c) for c in np.asarray(small["class_names"]).ravel()] if "class_names" in small
             else [str(i) for i in range(n_classes)])
    return {"x": x, "y": y, "class_names": names, "mapped": mapped}


def image_files(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> ImageFiles:
    """A folder of class subfolders (labels from the sorted subfolder names) or a list of image
    files (no labels), as an :class:`ImageFiles` stream; nothing is decoded yet."""
    if not isinstance(path, (str, os.PathLike)):
        files = [Path(f) for f in path]
        if not files:
            raise ValueError("The list of image files is empty.")
        return ImageFiles(files, name="files", meta={"source": "file list", "format": "image_files",
                                                     "split": "all", "n_images": len(files)})
    root = Path(path)
    files, labels, classes = _folder_files(root)
    return ImageFiles([f for f in files], name=root.name, labels=np.asarray(labels, dtype=np.int64),
                      class_names=classes,
                      meta={"source": str(root), "format": "image_folder", "split": "all",
                            "n_images": len(files), "files": [str(f.relative_to(root)) for f in files]})


def open_streaming(name: str | os.PathLike[str] | ImageDataset) -> StreamingImages:
    """A user path (``.npz`` memory-mapped, or an image folder) as a stream; an in-memory
    :class:`ImageDataset` wrapped as one (see :func:`load_dataset` for built-in names)."""
    if isinstance(name, ImageDataset):
        return ArrayImages(name.x, name=name.name, labels=name.y, class_names=name.class_names,
                           meta=dict(name.meta))
    path = Path(name)
    if path.suffix.lower() == ".npz":
        return NpzImages(path)
    if path.is_dir():
        return image_files(path)
    raise ValueError(f"Unknown dataset {str(name)!r}: expected a path to {NPZ_LAYOUT}, or {FOLDER_LAYOUT}.")
