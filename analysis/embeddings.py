"""Point clouds of one capture point, and their 2-D embeddings for display.

:func:`point_cloud` probes a model live at one capture point (only that point is hooked and
only its reservoir is filled, :func:`probes.capture.probe`) and labels each sampled point with
its image's class and generating factors; :func:`embed_points` maps the cloud to 2-D with PCA
(scikit-learn) or UMAP (umap-learn). The dashboard's Embeddings page shows these side by side
for two checkpoints; because the reservoir keeps a point by a hash of its sample id and the
seed (docs/design.md "Sample unit and sampling guarantees"), two models with the same spatial
layout are sampled at the same images and positions.

The embeddings are pictures, not metrics: no number of the results schema comes from them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from probes.points import is_point_name

__all__ = ["EMBEDDING_METHODS", "embed_points", "point_cloud", "point_names"]

#: Methods of :func:`embed_points`.
EMBEDDING_METHODS: tuple[str, ...] = ("UMAP", "PCA")


def point_names(loaded: Any) -> list[str]:
    """Capture-point names of a model, in execution order: the points :func:`point_cloud` can read.

    Parameters
    ----------
    loaded : probes.loading.LoadedModel

    Returns
    -------
    names : list of str
        :func:`probes.blocks.capture_points` on one example input of the model's size drawn
        from a normal distribution seeded with 0 (discovery reads the structure, not the values).
    """
    import torch

    from probes.blocks import capture_points

    spec = loaded.input_spec
    example = torch.randn(1, spec.channels, spec.size, spec.size, generator=torch.Generator().manual_seed(0))
    return [p.name for p in capture_points(loaded.model, example)]


def point_cloud(loaded: Any, dataset: str, point: str, *, n_images: int = 200, reservoir_size: int = 1500,
                seed: int = 0, sample_unit: str = "position") -> tuple[pd.DataFrame, np.ndarray]:
    """Reservoir sample of one capture point, probed live on the first ``n_images`` test images.

    Parameters
    ----------
    loaded : probes.loading.LoadedModel
        The model and its input spec (:func:`probes.loading.load_checkpoint`).
    dataset : str
        A built-in dataset name or path (:func:`analysis.study.load_inputs`); its test split.
    point : str
        Capture-point name (``"blocks.6.project"``, :mod:`probes.points`).
    n_images : int
        Images probed: the first ``n_images`` of the split.
    reservoir_size : int
        K, the most points kept (a uniform sample without replacement of the rows seen).
    seed : int
        Reservoir seed; the sample depends only on it and the sample ids.
    sample_unit : {"position", "image"}
        ``"position"``: every spatial position of every image is a row (the paper's view of an
        h x w x d tensor as h*w points in R^d); ``"image"``: one globally average-pooled vector
        per image.

    Returns
    -------
    labels : DataFrame
        One row per sampled point: ``image, y, x`` (its sample id), ``class`` (class name,
        when the dataset has labels) and one column per generating factor (``shapes``).
    values : ndarray of shape (n_points, C)
        The activations, float64; ``n_points = min(K, rows seen)``.

    Raises
    ------
    ValueError
        If ``point`` is not a capture-point name, or the model has no such point (the message
        of :func:`probes.capture.points.select_points` shows what its names look like).
    """
    from analysis.study import load_inputs
    from probes.capture import probe

    if not is_point_name(point):
        raise ValueError("The 'point' parameter of point_cloud must be one capture-point name such as "
                         f"'blocks.6.project' (no glob). Got {point!r} instead.")
    ds = load_inputs(dataset, n_images=n_images, seed=seed)
    result = probe(loaded.model, ds, input_spec=loaded.input_spec, points=point, reservoir_size=reservoir_size,
                   seed=seed, sinks=("reservoir",), progress=False, device="cpu", sample_unit=sample_unit)
    res = result.stats[point].reservoir
    ids = np.asarray(res.ids)
    img = ids[:, 0]
    out = pd.DataFrame({"image": img, "y": ids[:, 1], "x": ids[:, 2]})
    if ds.y is not None:
        names = ds.class_names or [str(i) for i in range(int(ds.y.max()) + 1)]
        out["class"] = [names[int(c)] for c in ds.y[img]]
    for name, values in (ds.factors or {}).items():
        out[name] = np.asarray(values)[img]
    return out, np.asarray(res.values, dtype=np.float64)


def embed_points(values: np.ndarray, method: str, *, seed: int = 0,
                 n_neighbors: int = 15) -> tuple[np.ndarray, str, str]:
    """2-D embedding of a point cloud for display.

    Parameters
    ----------
    values : ndarray of shape (n_points, n_channels)
    method : {"UMAP", "PCA"}
        PCA (scikit-learn): the projection of the centred cloud on its first two principal
        axes, ``(X - mean X) V[:, :2]`` with ``X - mean X = U S V^T``; the axis titles give each
        axis's share of the variance ``s_k^2 / sum_j s_j^2``. UMAP (umap-learn,
        ``random_state=seed``, one thread: deterministic).
    seed : int
    n_neighbors : int
        UMAP neighbourhood size (at most ``n_points - 1``).

    Returns
    -------
    xy : ndarray of shape (n_points, 2)
    x_title, y_title : str
        Axis titles (``"PC 1 (34 % var.)"``, ``"UMAP 1"``).

    Raises
    ------
    ValueError
        If ``method`` is not one of :data:`EMBEDDING_METHODS`.

    Examples
    --------
    >>> xy, xt, yt = embed_points(np.array([[0.0, 0.0], [2.0, 0.1], [4.0, -0.1]]), "PCA")
    >>> xt, yt
    ('PC 1 (100 % var.)', 'PC 2 (0 % var.)')
    """
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"The 'method' parameter of embed_points must be one of {list(EMBEDDING_METHODS)}. "
                         f"Got {method!r} instead.")
    x = np.asarray(values, dtype=np.float64)
    if method == "PCA":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(x)
        ratio = pca.explained_variance_ratio_
        return (pca.transform(x), f"PC 1 ({100 * ratio[0]:.0f} % var.)",
                f"PC 2 ({100 * ratio[1]:.0f} % var.)")
    import torch

    # numba's OpenMP layer resets the process-wide OpenMP thread count, which is torch's
    # (seen as 1 -> 2): keep the caller's setting
    threads = torch.get_num_threads()
    try:
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(x) - 1), random_state=seed,
                            n_jobs=1)
        return reducer.fit_transform(x), "UMAP 1", "UMAP 2"
    finally:
        torch.set_num_threads(threads)
