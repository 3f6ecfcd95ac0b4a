"""Cached data access for the dashboard pages.

Every number the pages show comes from ``analysis/`` (the study pipeline and its tidy results
schema, :mod:`analysis.embeddings` for the live point clouds) and every checkpoint from
:mod:`probes.catalogue`; this module only finds, loads and caches them (page layout is in
:mod:`dashboard.parts`):

- ``st.cache_resource`` for models (shared between sessions, never mutated);
- ``st.cache_data`` for tables and arrays (keyed by file path *and* modification time, so a
  recomputed result is picked up without restarting the app).

Where results come from
-----------------------
Precomputed studies ``<checkpoint>--<dataset>.parquet`` + ``.npz`` (written by
:meth:`analysis.study.StudyResult.save`) in :func:`results_dir`: ``$BNPROBE_RESULTS_DIR`` when
set (tests point it at a small fixture), else the shipped ``checkpoints/results/``. Without that
variable, studies computed from the dashboard ("Compute missing results") are saved to
:func:`computed_dir` and read from there too.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from analysis.study import SCHEMA_COLUMNS, StudyResult, read_table, shipped_results_dir, user_cache_dir

__all__ = [
    "DATASETS",
    "MAX_UPLOAD_MB",
    "RESULTS_ENV",
    "chart_spec",
    "checkpoint_cards",
    "compute_shipped",
    "computed_dir",
    "current_dataset",
    "dataset_cards",
    "dataset_metrics",
    "dataset_studies",
    "default_dataset",
    "embed_points",
    "fixed_size_spec",
    "load_report",
    "missing_checkpoints",
    "model_points",
    "point_cloud",
    "results_dir",
    "search_dirs",
    "shipped_model",
    "spiral_study",
    "study",
]

#: Environment variable naming a folder of precomputed ``<checkpoint>--<dataset>`` results.
RESULTS_ENV = "BNPROBE_RESULTS_DIR"

#: Built-in datasets offered by the sidebar picker.
DATASETS: tuple[str, ...] = ("digits", "shapes")

#: Largest checkpoint file the "Probe a checkpoint" page accepts (also ``.streamlit/config.toml``).
MAX_UPLOAD_MB = 200


def results_dir() -> Path:
    """Folder of precomputed results: ``$BNPROBE_RESULTS_DIR`` or ``checkpoints/results``."""
    env = os.environ.get(RESULTS_ENV)
    return Path(env) if env else shipped_results_dir()


def computed_dir() -> Path:
    """Where studies computed from the dashboard are saved (the user cache folder)."""
    return user_cache_dir() / "dashboard-results"


def search_dirs() -> list[Path]:
    """Folders searched for ``<checkpoint>--<dataset>`` results, in order of preference."""
    return [results_dir()] if os.environ.get(RESULTS_ENV) else [results_dir(), computed_dir()]


def default_dataset() -> str:
    """The first built-in dataset with stored studies, else the first with shipped checkpoints."""
    for test in (dataset_studies, lambda d: list(dataset_cards(d)["checkpoint"])):
        found = next((d for d in DATASETS if test(d)), None)
        if found is not None:
            return found
    return DATASETS[0]


def current_dataset() -> str:
    """The dataset chosen in the sidebar (shared by all pages through ``st.session_state``)."""
    value = st.session_state.get("dataset")
    return value if value in DATASETS else default_dataset()


def _stem(checkpoint: str, dataset: str) -> Path | None:
    for folder in search_dirs():
        stem = folder / f"{checkpoint}--{dataset}"
        if stem.with_suffix(".parquet").is_file() and stem.with_suffix(".npz").is_file():
            return stem
    return None


def _mtime(stem: Path) -> float:
    return max(stem.with_suffix(s).stat().st_mtime for s in (".parquet", ".npz"))


# ------------------------------------------------------------------------------ checkpoints


def checkpoint_cards() -> pd.DataFrame:
    """The catalogue of shipped checkpoints (re-read when a card is added or changed).

    Returns
    -------
    DataFrame
        :func:`probes.catalogue.checkpoint_table`: one row per card, columns
        :data:`probes.catalogue.CATALOGUE_COLUMNS` (``test_accuracy`` a fraction in [0, 1]).
    """
    from checkpoints import CHECKPOINT_DIR

    stamp = tuple(sorted((p.name, p.stat().st_mtime) for p in CHECKPOINT_DIR.glob("*.json")))
    return _checkpoint_cards(stamp)


@st.cache_data(show_spinner=False, max_entries=4)
def _checkpoint_cards(stamp: tuple[tuple[str, float], ...]) -> pd.DataFrame:
    from probes.catalogue import checkpoint_table

    return checkpoint_table()


def dataset_cards(dataset: str) -> pd.DataFrame:
    """Cards of the checkpoints trained on ``dataset`` (see :func:`checkpoint_cards`)."""
    cards = checkpoint_cards()
    return cards[cards["dataset"] == dataset].reset_index(drop=True)


def dataset_studies(dataset: str) -> list[str]:
    """Checkpoints with a study on ``dataset`` in :func:`search_dirs`.

    Shipped checkpoints come first (in card order), then any other ``<name>--<dataset>`` found
    (by name).
    """
    names: dict[str, None] = {}
    for name in checkpoint_cards()["checkpoint"]:
        if _stem(name, dataset) is not None:
            names[name] = None
    for folder in search_dirs():
        for path in sorted(folder.glob(f"*--{dataset}.parquet")):
            name = path.name[: -len(f"--{dataset}.parquet")]
            if name not in names and _stem(name, dataset) is not None:
                names[name] = None
    return list(names)


def missing_checkpoints(dataset: str) -> list[str]:
    """Shipped checkpoints trained on ``dataset`` that have no study on it yet."""
    have = set(dataset_studies(dataset))
    return [c for c in dataset_cards(dataset)["checkpoint"] if c not in have]


@st.cache_resource(show_spinner=False)
def shipped_model(name: str) -> Any:
    """The shipped checkpoint ``name`` loaded once per server (a ``LoadedModel``; do not mutate)."""
    from probes.loading import load_checkpoint

    return load_checkpoint(name)


@st.cache_data(show_spinner=False)
def model_points(name: str) -> list[str]:
    """Capture-point names of the shipped checkpoint ``name`` (:func:`analysis.embeddings.point_names`)."""
    from analysis.embeddings import point_names

    return point_names(shipped_model(name))


# ---------------------------------------------------------------------------------- studies


@st.cache_data(show_spinner=False, max_entries=64)
def _load_study(stem: str, mtime: float) -> StudyResult:
    return StudyResult.load(stem)


def study(checkpoint: str, dataset: str) -> StudyResult | None:
    """The stored study of ``checkpoint`` on ``dataset``, or None when there is none."""
    stem = _stem(checkpoint, dataset)
    return None if stem is None else _load_study(str(stem), _mtime(stem))


@st.cache_data(show_spinner=False, max_entries=16)
def _concat(stems: tuple[str, ...], mtimes: tuple[float, ...]) -> pd.DataFrame:
    frames = [_load_study(s, m).metrics for s, m in zip(stems, mtimes)]
    if not frames:
        return pd.DataFrame(columns=list(SCHEMA_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def dataset_metrics(dataset: str) -> pd.DataFrame:
    """Tidy metrics of every stored study on ``dataset`` (all checkpoints, all seeds)."""
    stems = [s for s in (_stem(c, dataset) for c in dataset_studies(dataset)) if s is not None]
    return _concat(tuple(str(s) for s in stems), tuple(_mtime(s) for s in stems))


def compute_shipped(checkpoint: str, dataset: str) -> StudyResult:
    """Compute the study of a shipped checkpoint with the shipped settings and store it.

    Slow (about a minute per checkpoint on a CPU); :func:`analysis.study.load_shipped` also
    caches it in the user cache, so a second call is quick.
    """
    from analysis.study import load_shipped

    result = load_shipped(checkpoint, dataset, compute=True, progress=False)
    target = (results_dir() if os.environ.get(RESULTS_ENV) else computed_dir()) / f"{checkpoint}--{dataset}"
    target.parent.mkdir(parents=True, exist_ok=True)
    result.save(target)
    return dataclasses.replace(result, probe=None)  # the sink states stay out of the page state


@st.cache_data(show_spinner=False, max_entries=8)
def _read_report(path: str, mtime: float) -> pd.DataFrame:
    return read_table(path)


def load_report(directory: str | Path) -> pd.DataFrame:
    """The ``metrics.parquet`` (or ``metrics.csv``) of a report directory.

    Raises
    ------
    ValueError
        If ``directory`` is not a folder or holds no metrics table (the message says which
        files were looked for), or the table is not in the results schema.
    """
    folder = Path(str(directory)).expanduser()
    if not folder.is_dir():
        raise ValueError(f"Report directory {str(folder)!r} does not exist or is not a folder.")
    for name in ("metrics.parquet", "metrics.csv"):
        path = folder / name
        if path.is_file():
            return _read_report(str(path), path.stat().st_mtime)
    raise ValueError(f"Report directory {str(folder)!r} holds no metrics.parquet or metrics.csv.")


# ------------------------------------------------------------------------------- embeddings


@st.cache_data(show_spinner=False, max_entries=32)
def point_cloud(checkpoint: str, dataset: str, point: str, *, n_images: int = 200,
                reservoir_size: int = 1500, seed: int = 0,
                sample_unit: str = "position") -> tuple[pd.DataFrame, np.ndarray]:
    """:func:`analysis.embeddings.point_cloud` of the shipped checkpoint ``checkpoint``, cached."""
    from analysis.embeddings import point_cloud as probe_point

    return probe_point(shipped_model(checkpoint), dataset, point, n_images=n_images,
                       reservoir_size=reservoir_size, seed=seed, sample_unit=sample_unit)


@st.cache_data(show_spinner=False, max_entries=64)
def embed_points(values: np.ndarray, method: str, *, seed: int = 0,
                 n_neighbors: int = 15) -> tuple[np.ndarray, str, str]:
    """:func:`analysis.embeddings.embed_points` (PCA or UMAP to 2-D), cached."""
    from analysis.embeddings import embed_points as embed

    return embed(values, method, seed=seed, n_neighbors=n_neighbors)


# ------------------------------------------------------------------------------------ charts


def fixed_size_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Prepare a fixed-size Vega-Lite spec for Streamlit's renderer.

    - ``autosize: pad``: without it Streamlit fits the chart into the height it measured
      first, which squeezes short charts (a two-row heatmap draws nothing) and clips titles;
    - inline top-level ``data.values`` become a named dataset: Streamlit ships unnamed data
      separately and inserts it after the view is built, which leaves faceted charts (row /
      column encodings) empty; named datasets are loaded with the spec.
    """
    spec = dict(spec)
    spec["autosize"] = {"type": "pad"}
    data = spec.get("data")
    if isinstance(data, dict) and "values" in data:
        name = f"values-{len(spec.get('datasets', {}))}"
        spec["datasets"] = {**spec.get("datasets", {}), name: spec.pop("data")["values"]}
        spec["data"] = {"name": name}
    return spec


@st.cache_data(show_spinner=False, max_entries=256)
def chart_spec(builder: str, /, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The Vega-Lite spec of ``analysis.figures.<builder>(*args, **kwargs)``, cached.

    Building and validating an Altair chart costs 0.1-0.5 s; caching the finished spec (keyed
    by the builder's inputs) is what keeps a widget change under a second.
    """
    from analysis import figures

    if builder not in figures.__all__:
        raise ValueError(f"The 'builder' parameter of chart_spec must name a builder of "
                         f"analysis.figures. Got {builder!r} instead.")
    return fixed_size_spec(getattr(figures, builder)(*args, **kwargs).to_dict())


@st.cache_data(show_spinner=False, max_entries=64)
def spiral_study(dims: tuple[int, ...], activation: str, seed: int, *, n_points: int = 1000,
                 radius: float = 1.0, noise: float = 0.0) -> tuple[pd.DataFrame, dict[str, Any]]:
    """:func:`analysis.spiral.run_spiral` for one seed and its figure's Vega-Lite spec, cached.

    Returns
    -------
    table : DataFrame
        One row per (n, method): ``recon_error``, ``invertible_fraction`` ... (see run_spiral).
    spec : dict
        :func:`analysis.figures.spiral_figure` as a Vega-Lite spec.
    """
    from analysis.figures import spiral_figure
    from analysis.spiral import run_spiral

    table, recon = run_spiral(dims, activation=activation, seeds=(seed,), n_points=n_points,
                              radius=radius, noise=noise)
    # 300 points per panel draw the spiral clearly; the figure's inline data is validated by
    # Altair point by point, so fewer points keep a new setting near a second.
    figure = spiral_figure(recon, seed=seed, panel_size=120, max_points=300)
    return table, fixed_size_spec(figure.to_dict(validate=False))
