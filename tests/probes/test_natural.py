"""The ``natural`` dataset: seeded crops of bundled photographs (probes/natural.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from probes.natural import GRAY_PHOTOS, PHOTOS, load_natural, load_photo


@pytest.fixture(scope="module")
def small():
    return load_natural(40, size=24, seed=5)


def test_shape_range_and_provenance(small) -> None:
    assert small.x.shape == (40, 3, 24, 24) and small.x.dtype == np.float32
    assert 0.0 <= small.x.min() and small.x.max() <= 1.0
    assert small.meta["photos"] == small.class_names == list(PHOTOS)
    assert small.meta["grayscale"] == "skipped"
    assert set(small.meta["photos"]).isdisjoint(GRAY_PHOTOS)
    assert small.meta["photo_sizes"]["chelsea"] == [300, 451]
    assert np.array_equal(small.y, small.factors["photo"])
    assert sorted(small.factors) == ["flip", "left", "photo", "scale", "side", "top"]


def test_deterministic_from_seed(small) -> None:
    again = load_natural(40, size=24, seed=5)
    other = load_natural(40, size=24, seed=6)
    assert np.array_equal(small.x, again.x)
    assert all(np.array_equal(small.factors[k], again.factors[k]) for k in small.factors)
    assert not np.array_equal(small.x, other.x)


def test_factors_reproduce_each_image(small) -> None:
    # The recorded photo, crop box and flip rebuild every image exactly.
    for i in (0, 7, 23):
        f = {k: int(v[i]) for k, v in small.factors.items() if k != "scale"}
        photo = load_photo(small.meta["photos"][f["photo"]])
        box = (f["left"], f["top"], f["left"] + f["side"], f["top"] + f["side"])
        assert box[2] <= photo.size[0] and box[3] <= photo.size[1]
        img = np.asarray(photo.resize((24, 24), Image.Resampling.BILINEAR, box=box), np.float32) / 255
        img = img.transpose(2, 0, 1)
        assert np.array_equal(small.x[i], img[:, :, ::-1] if f["flip"] else img)


def test_scales_and_flips_cover_their_range() -> None:
    ds = load_natural(400, size=4, seed=0, min_scale=0.3, max_scale=0.6)
    short = np.array([min(load_photo(p).size) for p in ds.meta["photos"]])[ds.factors["photo"]]
    assert np.all(ds.factors["scale"] >= 0.3 - 0.5 / short)
    assert np.all(ds.factors["scale"] <= 0.6 + 0.5 / short)
    # log-uniform: the median scale is the geometric mean of the range
    assert np.median(ds.factors["scale"]) == pytest.approx(np.sqrt(0.3 * 0.6), rel=0.05)
    assert 0.4 < ds.factors["flip"].mean() < 0.6
    assert set(ds.factors["photo"]) == set(range(len(PHOTOS)))


def test_include_gray_converts_by_repeating_the_channel() -> None:
    ds = load_natural(60, size=8, seed=0, include_gray=True)
    assert ds.meta["photos"] == list(PHOTOS) + list(GRAY_PHOTOS)
    gray = ds.factors["photo"] >= len(PHOTOS)
    assert gray.any()
    x = ds.x[gray]
    assert np.array_equal(x[:, 0], x[:, 1]) and np.array_equal(x[:, 1], x[:, 2])


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, r"The 'n' parameter of load_natural must be an int >= 1\. Got 0 instead\."),
    ({"size": 0}, r"The 'size' parameter of load_natural must be an int >= 1"),
    ({"min_scale": 0.0}, r"The 'min_scale' parameter of load_natural must be a float in \(0, 1\]"),
    ({"min_scale": 0.5, "max_scale": 0.4}, r"The 'max_scale' parameter .* \[min_scale=0\.5, 1\]\. Got 0\.4"),
])
def test_bad_parameters(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        load_natural(**{"n": 2, "size": 8, **kwargs})


def test_unknown_photo() -> None:
    with pytest.raises(ValueError, match=r"Unknown photograph 'lena'; available photographs are \["):
        load_photo("lena")
