"""Point clouds probed live at one capture point, and their 2-D embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.embeddings import embed_points, point_cloud, point_names
from analysis.keeps import capture_tensors
from analysis.study import load_inputs
from probes.blocks import find_blocks
from probes.catalogue import list_checkpoints
from probes.loading import load_checkpoint
from probes.preprocess import prepare

NAME = "digits-relu6-s0"


@pytest.fixture(scope="module")
def loaded():
    if NAME not in {c["name"] for c in list_checkpoints()}:
        pytest.fail(f"shipped checkpoint {NAME} is missing: checkpoints/{NAME}.safetensors and .json")
    return load_checkpoint(NAME)


def test_point_names_are_the_discovered_points_in_order(loaded) -> None:
    names = point_names(loaded)
    x = prepare(load_inputs("digits", n_images=1).x, loaded.input_spec)  # real image: same structure
    assert names == [p.name for b in find_blocks(loaded.model, x) for p in b.points]
    assert len(names) == 134 and names[:3] == ["blocks.0.input", "blocks.0.depthwise.pre", "blocks.0.depthwise"]


def test_point_cloud_rows_are_the_activations_at_their_sample_ids(loaded) -> None:
    point = "blocks.3.expand"
    labels, values = point_cloud(loaded, "digits", point, n_images=6, reservoir_size=50, seed=1)
    ds = load_inputs("digits", n_images=6)
    # second route: the whole tensor from our own forward hooks
    full = capture_tensors(loaded.model, prepare(ds.x, loaded.input_spec), [point])[point]
    assert values.shape == (50, full.shape[1])
    want = full[labels["image"], :, labels["y"], labels["x"]]
    np.testing.assert_allclose(values, want, rtol=1e-5, atol=1e-6)
    assert list(labels["class"]) == [str(int(c)) for c in ds.y[labels["image"]]]
    assert len(set(zip(labels["image"], labels["y"], labels["x"]))) == 50  # without replacement


def test_point_cloud_per_image_is_the_pooled_vector(loaded) -> None:
    point = "blocks.5.project"
    labels, values = point_cloud(loaded, "digits", point, n_images=5, reservoir_size=100, sample_unit="image")
    ds = load_inputs("digits", n_images=5)
    full = capture_tensors(loaded.model, prepare(ds.x, loaded.input_spec), [point])[point]
    assert sorted(labels["image"]) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(values, full.mean(axis=(2, 3))[labels["image"]], rtol=1e-5, atol=1e-6)


def test_point_cloud_refuses_a_glob_and_an_unknown_point(loaded) -> None:
    with pytest.raises(ValueError, match=r"The 'point' parameter of point_cloud must be one capture-point "
                                         r"name such as 'blocks\.6\.project' \(no glob\)\. Got 'blocks\.\*' instead"):
        point_cloud(loaded, "digits", "blocks.*", n_images=2)
    with pytest.raises(ValueError, match=r"The 'points' pattern 'blocks\.99\.input' matches no capture point"):
        point_cloud(loaded, "digits", "blocks.99.input", n_images=2)


def test_pca_is_the_projection_on_the_first_two_singular_vectors() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 5)) * np.array([5.0, 2.0, 1.0, 0.5, 0.1])
    xy, x_title, y_title = embed_points(x, "PCA")
    c = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(c, full_matrices=False)
    ref = c @ vt[:2].T
    np.testing.assert_allclose(np.abs(xy), np.abs(ref), rtol=1e-8, atol=1e-10)  # axes up to sign
    share = s**2 / np.sum(s**2)
    assert (x_title, y_title) == (f"PC 1 ({100 * share[0]:.0f} % var.)", f"PC 2 ({100 * share[1]:.0f} % var.)")


@pytest.mark.slow  # umap-learn compiles its numba kernels on first use
def test_umap_is_deterministic_for_a_seed() -> None:
    x = np.random.default_rng(1).normal(size=(40, 4))
    a, *titles = embed_points(x, "UMAP", seed=3, n_neighbors=5)
    b = embed_points(x, "UMAP", seed=3, n_neighbors=5)[0]
    assert a.shape == (40, 2) and titles == ["UMAP 1", "UMAP 2"]
    np.testing.assert_array_equal(a, b)


def test_embed_points_names_its_methods() -> None:
    with pytest.raises(ValueError, match=r"The 'method' parameter of embed_points must be one of \['UMAP', 'PCA'\]\. "
                                         r"Got 'tsne' instead\."):
        embed_points(np.zeros((3, 2)), "tsne")
