"""Built-in datasets (digits, shapes) and user-data loaders (.npz, image folders)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from probes.datasets import (
    NpzImages,
    image_files,
    BUILTIN,
    ImageDataset,
    load_dataset,
    load_digits32,
    load_image_folder,
    load_npz,
    make_shapes,
)

SHAPE_RANGES = {
    "x": (-0.3, 0.3),
    "y": (-0.3, 0.3),
    "scale": (0.25, 0.5),
    "rotation": (0.0, np.pi / 2),
    "intensity": (0.4, 1.0),
}


def _rows(x: np.ndarray) -> list[bytes]:
    return sorted(r.tobytes() for r in x.reshape(len(x), -1))


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> dict[str, ImageDataset]:
    return {s: load_digits32(s) for s in ("train", "test", "all")}


def test_digits_shapes_and_range(digits):
    for split, n in (("train", 1437), ("test", 360), ("all", 1797)):
        ds = digits[split]
        assert ds.x.shape == (n, 1, 32, 32) and len(ds) == n
        assert ds.x.dtype == np.float32 and ds.y.dtype == np.int64
        assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
        assert ds.x.max() > 0.99  # the 8x8 originals reach 16/16
        assert ds.y.shape == (n,) and set(ds.y.tolist()) == set(range(10))
        assert ds.class_names == [str(i) for i in range(10)]
        assert ds.meta["split"] == split and ds.shape == (1, 32, 32)


def test_digits_deterministic(digits):
    again = load_digits32("train")
    np.testing.assert_array_equal(again.x, digits["train"].x)
    np.testing.assert_array_equal(again.y, digits["train"].y)


def test_digits_split_disjoint_and_complete(digits):
    # train and test together are exactly the full set (as multisets of images)
    both = np.concatenate([digits["train"].x, digits["test"].x])
    assert _rows(both) == _rows(digits["all"].x)
    labels = np.concatenate([digits["train"].y, digits["test"].y])
    np.testing.assert_array_equal(np.bincount(labels), np.bincount(digits["all"].y))


def test_digits_split_stratified(digits):
    frac_all = np.bincount(digits["all"].y) / 1797
    frac_test = np.bincount(digits["test"].y) / 360
    np.testing.assert_allclose(frac_test, frac_all, atol=1.5 / 360)


def test_digits_size_option():
    ds = load_digits32("test", size=16)
    assert ds.x.shape == (360, 1, 16, 16)
    assert load_digits32("test", size=8).x.max() == 1.0  # native size: no resampling


def test_load_dataset_builtin_names(digits):
    assert BUILTIN == ("digits", "shapes", "natural")
    np.testing.assert_array_equal(load_dataset("digits", split="test").x, digits["test"].x)
    assert load_dataset("digits", split="train", size=16).x.shape == (1437, 1, 16, 16)
    natural = load_dataset("natural", n=3, size=48, seed=1)
    assert natural.name == "natural" and natural.x.shape == (3, 3, 48, 48)
    np.testing.assert_array_equal(natural.x, load_dataset("natural", n=3, size=48, seed=1).x)


def test_load_dataset_unknown_name_lists_available():
    with pytest.raises(ValueError, match=r"Unknown dataset 'mnist'; available datasets are \['digits', 'shapes', 'natural'\]"):
        load_dataset("mnist")


def test_bad_split():
    with pytest.raises(ValueError, match=r"The 'split' parameter must be one of \['train', 'test', 'all'\]\. Got 'val' instead"):
        load_dataset("digits", split="val")
    with pytest.raises(ValueError, match="'split'"):
        load_digits32("validation")


# ---------------------------------------------------------------- shapes


@pytest.fixture(scope="module")
def shapes() -> ImageDataset:
    return make_shapes(600, seed=0)


def test_shapes_layout(shapes):
    assert shapes.x.shape == (600, 1, 32, 32) and shapes.x.dtype == np.float32
    assert shapes.x.min() >= 0.0 and shapes.x.max() <= 1.0
    assert shapes.class_names == ["circle", "square", "triangle"]
    assert shapes.y.dtype == np.int64 and set(shapes.y.tolist()) == {0, 1, 2}
    assert sorted(shapes.factors) == sorted(SHAPE_RANGES)
    for v in shapes.factors.values():
        assert v.shape == (600,)


def test_shapes_factor_ranges(shapes):
    for k, (lo, hi) in SHAPE_RANGES.items():
        v = shapes.factors[k]
        assert v.min() >= lo and v.max() <= hi, k
        # uniform: the sample fills the range
        assert v.min() < lo + 0.05 * (hi - lo) and v.max() > hi - 0.05 * (hi - lo), k
        assert shapes.meta["factor_ranges"][k] == pytest.approx([lo, hi])


def test_shapes_labels_balanced(shapes):
    counts = np.bincount(shapes.y, minlength=3)
    assert counts.min() >= 0.8 * 200 and counts.max() <= 1.2 * 200


def test_shapes_deterministic_and_seeded(shapes):
    again = make_shapes(600, seed=0)
    np.testing.assert_array_equal(again.x, shapes.x)
    np.testing.assert_array_equal(again.y, shapes.y)
    for k in shapes.factors:
        np.testing.assert_array_equal(again.factors[k], shapes.factors[k])
    other = make_shapes(600, seed=1)
    assert not np.array_equal(other.x, shapes.x)
    assert not np.array_equal(other.factors["x"], shapes.factors["x"])


def test_shapes_area_matches_factors(shapes):
    # Pixel coordinates span [-1, 1], so a length L in factor units is L * 32 / 2 pixels.
    r = shapes.factors["scale"] * 16
    expected = np.select(
        [shapes.y == 0, shapes.y == 1, shapes.y == 2],
        [np.pi * r**2, (1.6 * r) ** 2, 3 * np.sqrt(3) / 4 * r**2],  # circle, square (half-side 0.8 r), triangle
    )
    area = shapes.x.sum(axis=(1, 2, 3)) / shapes.factors["intensity"]
    np.testing.assert_allclose(area, expected, rtol=0.10)
    # anti-aliased supersampling is much better than 10 % on average
    assert np.mean(np.abs(area / expected - 1)) < 0.02


def test_shapes_centroid_and_intensity_match_factors(shapes):
    # All three shapes have their centroid at (x, y): x along columns, y along rows.
    g = (np.arange(32) + 0.5) / 32 * 2 - 1
    img = shapes.x[:, 0]
    mass = img.sum(axis=(1, 2))
    cx = (img.sum(axis=1) * g).sum(axis=1) / mass
    cy = (img.sum(axis=2) * g).sum(axis=1) / mass
    np.testing.assert_allclose(cx, shapes.factors["x"], atol=0.02)
    np.testing.assert_allclose(cy, shapes.factors["y"], atol=0.02)
    # the smallest shape still covers whole pixels, whose value is the intensity
    np.testing.assert_allclose(img.max(axis=(1, 2)), shapes.factors["intensity"], rtol=1e-6)


def test_square_extent_follows_rotation():
    a = make_shapes(300, seed=5)
    square = np.flatnonzero(a.y == 1)
    # a square's axis-aligned extent grows with rotation: |cos| + |sin| (max at pi/4)
    rot = a.factors["rotation"][square]
    row_extent = (a.x[square, 0].max(axis=1) > 0.5 * a.factors["intensity"][square, None]).sum(axis=1)
    predicted = 1.6 * a.factors["scale"][square] * 16 * (np.abs(np.cos(rot)) + np.abs(np.sin(rot)))
    np.testing.assert_allclose(row_extent, predicted, atol=1.5)


def test_shapes_lie_inside_the_image(shapes):
    border = np.concatenate([shapes.x[:, 0, [0, -1], :], shapes.x[:, 0, :, [0, -1]].transpose(1, 0, 2)], axis=1)
    assert border.max() == 0.0


def test_triangle_apex_up():
    ds = make_shapes(600, seed=7)
    pick = np.flatnonzero((ds.y == 2) & (ds.factors["rotation"] < 0.15))
    assert len(pick) >= 10
    g = (np.arange(32) + 0.5) / 32 * 2 - 1
    for i in pick:
        rows = np.flatnonzero(ds.x[i, 0].max(axis=1) > 0.5 * ds.factors["intensity"][i])
        r, cy = ds.factors["scale"][i], ds.factors["y"][i]
        # apex at distance r above the centre (smaller row), base at r / 2 below
        assert cy - g[rows[0]] == pytest.approx(r, abs=2 / 16)
        assert g[rows[-1]] - cy == pytest.approx(r / 2, abs=2 / 16)


def test_shapes_splits_use_disjoint_seeds():
    train, test = load_dataset("shapes", split="train"), load_dataset("shapes", split="test")
    assert (len(train), len(test)) == (2400, 600)
    assert train.meta["seed"] != test.meta["seed"]
    assert not set(_rows(train.x)) & set(_rows(test.x))
    every = load_dataset("shapes", split="all")
    assert len(every) == 3000 and every.meta["split"] == "all"
    np.testing.assert_array_equal(every.x[:2400], train.x)
    np.testing.assert_array_equal(every.factors["scale"][2400:], test.factors["scale"])


def test_make_shapes_bad_n():
    with pytest.raises(ValueError, match=r"The 'n' parameter of make_shapes must be an int >= 1\. Got 0 instead"):
        make_shapes(0)


def test_subset_and_head(shapes):
    sub = shapes.subset(np.array([3, 1]))
    np.testing.assert_array_equal(sub.x, shapes.x[[3, 1]])
    np.testing.assert_array_equal(sub.factors["x"], shapes.factors["x"][[3, 1]])
    assert len(shapes.head(5)) == 5 and sub.meta["n_images"] == 2


# ---------------------------------------------------------------- user data: .npz


def _npz(tmp_path: Path, name: str = "mine.npz", **arrays) -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _match(path: Path, text: str) -> str:
    return re.escape(str(path)) + ".*" + text


def test_npz_uint8_is_scaled(tmp_path):
    x = np.arange(2 * 3 * 4 * 5, dtype=np.uint8).reshape(2, 3, 4, 5)
    path = _npz(tmp_path, x=x, y=np.array([1, 0]))
    ds = load_npz(path)
    assert ds.x.dtype == np.float32 and ds.x.shape == (2, 3, 4, 5)
    np.testing.assert_allclose(ds.x, x / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y, [1, 0])
    assert ds.y.dtype == np.int64
    assert ds.class_names == ["0", "1"] and ds.name == "mine"
    assert ds.meta["split"] == "all" and ds.meta["source"] == str(path)


def test_npz_float_unchanged_and_optional_y(tmp_path):
    x = np.random.default_rng(0).uniform(0, 1, (3, 1, 8, 8))
    ds = load_npz(_npz(tmp_path, x=x))
    np.testing.assert_allclose(ds.x, x.astype(np.float32))
    assert ds.y is None and ds.class_names == []


def test_npz_class_names_and_resize(tmp_path):
    x = np.full((2, 1, 8, 8), 0.5, np.float32)
    path = _npz(tmp_path, x=x, y=np.array([0, 2]), class_names=np.array(["cat", "dog", "eel"]))
    ds = load_npz(path, size=32)
    assert ds.class_names == ["cat", "dog", "eel"]
    assert ds.x.shape == (2, 1, 32, 32)
    np.testing.assert_allclose(ds.x, 0.5)


def test_npz_through_load_dataset(tmp_path):
    path = _npz(tmp_path, x=np.zeros((4, 3, 10, 10), np.uint8), y=np.arange(4))
    ds = load_dataset(str(path), split="train")  # split is ignored for user data
    assert ds.x.shape == (4, 3, 10, 10) and ds.meta["split"] == "all"
    assert load_dataset(path, size=16).x.shape == (4, 3, 16, 16)


def test_npz_channels_last(tmp_path):
    path = _npz(tmp_path, x=np.zeros((5, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=_match(path, r"channels-last \(N, H, W, C\).*transpose\(0, 3, 1, 2\).*\(N, C, H, W\)")):
        load_npz(path)


def test_npz_missing_channel_axis(tmp_path):
    path = _npz(tmp_path, x=np.zeros((5, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=_match(path, r"3 axes.*x\[:, None\]")):
        load_npz(path)


@pytest.mark.parametrize(
    ("x", "text"),
    [
        (np.zeros((2, 5, 8, 8), np.float32), r"5 channels, not 1 or 3"),
        (np.zeros((8, 8), np.float32), r"2 axes"),
        (np.zeros((0, 1, 8, 8), np.float32), r"'x' is empty"),
        (np.zeros((2, 1, 8, 8), np.int64), r"dtype int64.*uint8"),
        (np.zeros((2, 1, 8, 8), np.complex64), r"dtype complex64"),
        (np.full((2, 1, 8, 8), 200.0), r"values in \[200, 200\], outside \[0, 1\].*divide by 255"),
        (np.full((2, 1, 8, 8), -0.5), r"outside \[0, 1\].*normalisation"),
        (np.array([np.nan, 0.5]).repeat(32).reshape(2, 1, 4, 8), r"32 NaN or infinite values"),
    ],
)
def test_npz_bad_x(tmp_path, x, text):
    path = _npz(tmp_path, x=x)
    with pytest.raises(ValueError, match=_match(path, text + r".*Expected an \.npz with 'x' of shape \(N, C, H, W\)")):
        load_npz(path)


@pytest.mark.parametrize(
    ("y", "text"),
    [
        (np.array([0, 1, 2]), r"'y' has shape \(3,\) but 'x' has 4 images; 'y' needs shape \(4,\)"),
        (np.zeros((4, 1), np.int64), r"'y' has shape \(4, 1\)"),
        (np.array([0.0, 0.5, 1.0, 2.0]), r"'y' has dtype float64; labels must be integers"),
        (np.array(["a", "b", "a", "b"]), r"'y' has dtype <U1"),
        (np.array([0, -1, 1, 2]), r"negative labels"),
    ],
)
def test_npz_bad_y(tmp_path, y, text):
    path = _npz(tmp_path, x=np.zeros((4, 1, 8, 8), np.uint8), y=y)
    with pytest.raises(ValueError, match=_match(path, text)):
        load_npz(path)


def test_npz_integral_float_labels_accepted(tmp_path):
    ds = load_npz(_npz(tmp_path, x=np.zeros((3, 1, 4, 4), np.uint8), y=np.array([2.0, 0.0, 1.0])))
    np.testing.assert_array_equal(ds.y, [2, 0, 1])
    assert ds.y.dtype == np.int64


def test_npz_too_few_class_names(tmp_path):
    path = _npz(tmp_path, x=np.zeros((2, 1, 4, 4), np.uint8), y=np.array([0, 2]), class_names=np.array(["a", "b"]))
    with pytest.raises(ValueError, match=_match(path, r"'class_names' has 2 entries but 'y' has labels up to 2")):
        load_npz(path)


def test_npz_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=_match(path, r"no such file.*\(N, C, H, W\)")):
        load_npz(path)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_dataset(str(path))


def test_npz_missing_x_key(tmp_path):
    path = _npz(tmp_path, images=np.zeros((2, 1, 4, 4)), labels=np.zeros(2))
    with pytest.raises(ValueError, match=_match(path, r"has no 'x' array \(keys: \['images', 'labels'\]\)")):
        load_npz(path)


def test_npz_never_unpickles(tmp_path):
    path = _npz(tmp_path, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ValueError, match=_match(path, r"object \(pickled\) arrays, which are never loaded")):
        load_npz(path)


def test_npz_not_an_archive(tmp_path):
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros((2, 1, 4, 4)))
    with pytest.raises(ValueError, match=_match(npy, r"single \.npy array, not an \.npz archive.*np\.savez")):
        load_npz(npy)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not numpy")
    with pytest.raises(ValueError, match=_match(junk, r"cannot be read as \.npz")):
        load_npz(junk)


# ---------------------------------------------------------------- user data: image folders


def _png(path: Path, value, *, mode: str = "L", size=(10, 20)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "pets"
    _png(root / "dog" / "b.png", 255)
    _png(root / "dog" / "a.png", 0)
    _png(root / "cat" / "x.png", 51)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / ".DS_Store").write_bytes(b"\0")
    return root


def test_folder_loads_sorted_classes(folder):
    ds = load_image_folder(folder)
    assert ds.class_names == ["cat", "dog"] and ds.name == "pets"
    assert ds.x.shape == (3, 1, 32, 32) and ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.y, [0, 1, 1])
    assert ds.meta["files"] == ["cat/x.png", "dog/a.png", "dog/b.png"]
    np.testing.assert_allclose(ds.x[:, 0, 0, 0], [0.2, 0.0, 1.0], atol=1e-6)
    assert ds.meta["split"] == "all" and ds.meta["channels"] == 1


def test_folder_size_and_channels(folder):
    assert load_image_folder(folder, size=8).x.shape == (3, 1, 8, 8)
    rgb = load_image_folder(folder, channels=3)
    assert rgb.x.shape == (3, 3, 32, 32)
    np.testing.assert_allclose(rgb.x[:, 0], rgb.x[:, 2])


def test_folder_infers_rgb(folder):
    _png(folder / "eel" / "c.jpg", (255, 0, 0), mode="RGB")
    ds = load_image_folder(folder)
    assert ds.x.shape == (4, 3, 32, 32) and ds.class_names == ["cat", "dog", "eel"]
    np.testing.assert_allclose(ds.x[3, :, 16, 16], [1.0, 0.0, 0.0], atol=0.02)  # jpeg is lossy
    gray = load_image_folder(folder, channels=1)
    assert gray.x.shape == (4, 1, 32, 32)


def test_folder_through_load_dataset(folder):
    ds = load_dataset(str(folder), split="test", size=16)
    assert ds.x.shape == (3, 1, 16, 16) and ds.class_names == ["cat", "dog"]
    assert load_dataset(folder).x.shape == (3, 1, 32, 32)


def test_folder_without_subfolders(tmp_path):
    _png(tmp_path / "flat" / "a.png", 0)
    root = tmp_path / "flat"
    with pytest.raises(ValueError, match=_match(root, r"found 1 image files directly in it but no subfolders.*one subfolder per class")):
        load_image_folder(root)
    (root / "a.png").unlink()
    with pytest.raises(ValueError, match=_match(root, "found no subfolders")):
        load_image_folder(root)


def test_folder_empty_class(folder):
    (folder / "fish").mkdir()
    (folder / "fish" / "readme.md").write_text("x")
    with pytest.raises(ValueError, match=_match(folder / "fish", r"class folder has no image files.*one subfolder per class")):
        load_image_folder(folder)


def test_folder_unreadable_image(folder):
    bad = folder / "dog" / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=rf"^Cannot read image file {re.escape(str(bad))}: cannot identify"):
        load_image_folder(folder)


def test_folder_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=_match(tmp_path / "none", "no such folder")):
        load_image_folder(tmp_path / "none")


def test_load_dataset_missing_path_is_unknown(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown dataset .*available datasets are \['digits', 'shapes', 'natural'\], or a path"):
        load_dataset(str(tmp_path / "none"))


@pytest.mark.parametrize(
    ("kw", "text"),
    [
        ({"size": 0}, r"The 'size' parameter of load_image_folder must be an int >= 1\. Got 0 instead"),
        ({"channels": 2}, r"The 'channels' parameter of load_image_folder must be 1, 3 or None\. Got 2 instead"),
    ],
)
def test_folder_bad_parameters(folder, kw, text):
    with pytest.raises(ValueError, match=text):
        load_image_folder(folder, **kw)


# --- streaming, the shared predict transform, decompression bombs ----------------------------


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header declares width x height gray pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_decompression_bomb_is_one_line_naming_the_file_in_folder_and_predict(tmp_path):
    from probes.loading import load_images
    from probes.preprocess import InputSpec, open_image

    (tmp_path / "cls").mkdir()
    bomb = _png_declaring(tmp_path / "cls" / "bomb.png", 30000, 30000)
    assert bomb.stat().st_size < 1000
    msg = rf"^Image file {re.escape(str(bomb))} declares too many pixels \(a decompression bomb\?\): .*900000000"
    with pytest.raises(ValueError, match=msg):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match=msg):
        load_images([bomb], InputSpec(size=32))
    with pytest.raises(ValueError, match=msg):
        image_files(tmp_path).prepared(InputSpec(size=32))[0]
    # below PIL's own refusal, our limit (the pixel count of the header) applies
    small = _png_declaring(tmp_path / "big.png", 200, 100)
    with pytest.raises(ValueError, match=r"big\.png declares 200 x 100 = 20,000 pixels, more than the limit of 10,000"):
        open_image(small, "L", max_pixels=10_000)


def test_streamed_folder_equals_predict_preprocessing(tmp_path):
    from PIL import Image

    from probes.loading import load_images
    from probes.preprocess import InputSpec

    rng = np.random.default_rng(0)
    files = []
    for k, (w, h) in enumerate([(50, 30), (24, 60), (40, 40)]):
        (tmp_path / f"c{k}").mkdir()
        f = tmp_path / f"c{k}" / "a.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(f)
        files.append(f)
    spec = InputSpec(size=16, interpolation="bicubic", mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25))
    stream = image_files(tmp_path).prepared(spec, resize_size=20)
    want = load_images(files, spec, resize_size=20)
    got = np.stack([stream[i].numpy() for i in range(len(stream))])
    np.testing.assert_array_equal(got, want.numpy())
    assert stream.labels.tolist() == [0, 1, 2] and stream.class_names == ["c0", "c1", "c2"]


def test_folder_keeps_aspect_ratio_by_centre_crop(tmp_path):
    from PIL import Image

    # 40 x 20: left quarter black, middle half white, right quarter black; the centre 20 x 20
    # square is all white (squashing to a square would keep the black stripes)
    a = np.zeros((20, 40), np.uint8)
    a[:, 10:30] = 255
    (tmp_path / "c").mkdir()
    Image.fromarray(a).save(tmp_path / "c" / "x.png")
    ds = load_image_folder(tmp_path, size=20)
    np.testing.assert_allclose(ds.x[0, 0], 1.0)


def test_npz_is_memory_mapped_and_streams_the_images_of_load_npz(tmp_path):
    from probes.preprocess import InputSpec, prepare

    x = np.random.default_rng(1).integers(0, 256, (6, 3, 12, 12), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(6))
    stream = NpzImages(tmp_path / "a.npz")
    assert isinstance(stream.x, np.memmap) and stream.meta["memory_mapped"]
    spec = InputSpec(size=12, mean=(0.5,) * 3, std=(0.25,) * 3)
    want = prepare(load_npz(tmp_path / "a.npz").x, spec)
    got = np.stack([stream.prepared(spec)[i].numpy() for i in range(6)])
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-6)
    np.savez_compressed(tmp_path / "b.npz", x=x)
    assert not NpzImages(tmp_path / "b.npz").meta["memory_mapped"]
    assert NpzImages(tmp_path / "a.npz").shard(2, 5)[0].shape == (3, 12, 12)


def test_npz_stream_refuses_out_of_range_float_image(tmp_path):
    x = np.zeros((3, 1, 4, 4), np.float32)
    x[2, 0, 0, 0] = 3.0
    np.savez(tmp_path / "f.npz", x=x)
    stream = NpzImages(tmp_path / "f.npz")
    stream[0]
    with pytest.raises(ValueError, match=r"f\.npz: float image 2 of 'x' has values outside \[0, 1\]"):
        stream[2]
