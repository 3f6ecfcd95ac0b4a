"""One pipeline from checkpoint x dataset to the tidy results table.

::

    checkpoint --load--> nn.Module --discover--> capture points
    dataset --batches--> forward pass --hooks--> sinks (probes.capture.probe)
    sinks --metrics--> tidy DataFrame (+ details for figures)

The CLI (``bnprobe probe``), the batch report and the dashboard all call :func:`run_study`
and read the same schema (docs/design.md "Results schema"); one row per value:

``checkpoint, arch, design, bottleneck_act, expand_ratio, shortcut, seed, dataset, block,
point, stage, pre, metric, value, reason, n_points, channels, stride, act, block_in,
block_hidden, block_out, has_residual, block_kind``

``reason`` is empty for a defined value and says why a value is NaN otherwise (a linear
output has no dead units; too few points; non-finite activations ...).

Which metric is computed where
------------------------------
- spectrum (``rank`` ... ``stable_rank``, ``*_frac``): every point, from its Moments sink.
- activity (``dead_fraction`` ... ``above_threshold_fraction``): every point *after* an
  activation; NaN with a reason where the activation has no flat region (linear projection,
  leaky ReLU). ``lemma2_invertible_fraction``: at ``expand`` points, an exact rank test on the
  BN-folded expansion weights for the paired reservoir points of the block input.
- reconstruction (``recon_error_linear``, ``recon_error_knn``, ``recon_r2_*``): every point of
  a block except ``input``, decoding the block input from the paired reservoir points;
  ``recon_error_exact`` (active-set inverse) at ``expand`` points.
- topology (``betti0``, ``betti1``, ``total_persistence_h1``, ``persistence_entropy_h1``,
  ``bottleneck_to_input_h1``, ``wasserstein_to_input_h1``): every point's reservoir after
  greedy subsampling to ``topology_points`` points.
- dimension (``twonn_id``, ``mle_id``), quantisation (``int8_sqnr_db``,
  ``int8_sqnr_db_per_channel`` ..., calibrated on the reservoir; ``int8_sqnr_db_stream`` and
  ``int8_sqnr_db_clipped``, calibrated on every captured value when the capture has an
  ``Extent`` sink, else NaN with a reason): every point's reservoir. Their spread over
  reservoir redraws: ``<metric>_ci_low`` / ``_ci_high`` rows by the delete-half jackknife
  (:func:`analysis.dimension.redraw_interval`). Topology is not resampled (each redraw is a
  ripser run); its values carry the reservoir's sampling error without an interval.

Sampling caveats carried as reasons on finite values: spectrum metrics from fewer points than
channels (a lower bound), ``dead_fraction`` from activity counts at sampled positions (an upper
bound; from counts at every position when the capture's ``Extent`` sink has them).
- similarity (``cka_to_input``): every point against its block's input (paired reservoirs).
- information (``input_decode_r2``, ``label_decode_acc``, ``factor_decode_r2_<name>``, each with
  a ``_knn`` column and ``_ci_low`` / ``_ci_high`` rows; :mod:`analysis.information`): the points
  of :data:`analysis.information.INFO_POINTS` (or ``points`` when given), from a second pass
  over the dataset's train AND test splits with one globally pooled point per image, whatever
  ``split``, ``n_images`` and ``sample_unit`` say; ``n_points`` is the number of test images.
  NaN with a reason on datasets without a train / test split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from analysis.settings import (
    DASHBOARD_PROBE_CONFIG,
    FAMILIES,
    SHIPPED_CONFIG,
    STUDY_FIELDS,
    FieldSpec,
    StudyConfig,
    StudyFieldError,
    check_study_field,
)
from probes._io import atomic_path
from probes.datasets import ImageDataset
from probes.points import point_name

__all__ = [
    "DASHBOARD_PROBE_CONFIG",
    "FAMILIES",
    "FieldSpec",
    "SHIPPED_CONFIG",
    "STUDY_FIELDS",
    "SCHEMA_COLUMNS",
    "StudyConfig",
    "StudyFieldError",
    "StudyResult",
    "check_study_field",
    "compute_metrics",
    "compute_shipped",
    "load_inputs",
    "load_shipped",
    "load_shipped_metrics",
    "read_table",
    "run_study",
    "shipped_result_path",
    "shipped_results_dir",
    "user_cache_dir",
    "write_table",
]

#: Columns of the tidy results table, in order.
SCHEMA_COLUMNS: tuple[str, ...] = (
    "checkpoint", "arch", "design", "bottleneck_act", "expand_ratio", "shortcut", "seed", "dataset",
    "block", "point", "stage", "pre", "metric", "value", "reason", "n_points", "channels", "stride",
    "act", "block_in", "block_hidden", "block_out", "has_residual", "block_kind",
)


@dataclasses.dataclass
class StudyResult:
    """What :func:`run_study` returns.

    Attributes
    ----------
    metrics : DataFrame
        The tidy results table (:data:`SCHEMA_COLUMNS`).
    details : dict
        Per point name: arrays for figures (``eigenvalues``, ``positive_hist``,
        ``active_fraction``, ``diagram_h0``, ``diagram_h1`` [, ``diagram_h2``]).
    meta : dict
        Provenance: checkpoint, arch, sha256, input spec, dataset meta, config, timings.
    probe : probes.capture.ProbeResult or None
        The sink states (kept in memory only; not saved).
    """

    metrics: pd.DataFrame
    details: dict[str, dict[str, np.ndarray]]
    meta: dict[str, Any]
    probe: Any = None

    def save(self, path: str | Path) -> None:
        """Write ``<path>.parquet`` (metrics), ``<path>.npz`` (details, with meta) atomically.

        Details are stored as float32 / int32 (they only feed figures); metrics stay float64.
        """
        path = Path(path)
        write_table(self.metrics, path.with_suffix(".parquet"))
        # details only feed figures: float32 / int32 halve the shipped results' size
        arrays = {f"{p}::{k}": v.astype(np.float32 if v.dtype.kind == "f" else np.int32)
                  for p, d in self.details.items() for k, v in d.items()}
        arrays["__meta__"] = np.array(json.dumps(self.meta, sort_keys=True, default=str))
        with atomic_path(path.with_suffix(".npz")) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "StudyResult":
        """Inverse of :meth:`save` (``probe`` is None)."""
        path = Path(path)
        metrics = read_table(path.with_suffix(".parquet"))
        details: dict[str, dict[str, np.ndarray]] = {}
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            for key in z.files:
                if key == "__meta__":
                    continue
                point, name = key.split("::", 1)
                details.setdefault(point, {})[name] = z[key]
        return cls(metrics=metrics, details=details, meta=meta)


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` as .parquet or .csv by suffix, atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ValueError(f"Output file {str(path)!r} must end in .parquet or .csv. Got {suffix or 'no suffix'!r}.")
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a results table written by :func:`write_table`; checks the schema columns."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Results table {str(path)!r} does not exist.")
    df = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path, keep_default_na=True)
    missing = [c for c in ("checkpoint", "point", "metric", "value") if c not in df.columns]
    if missing:
        raise ValueError(
            f"{str(path)!r} is not a bottleneck-probe results table: columns {missing} are missing."
        )
    if "reason" in df.columns:
        df["reason"] = df["reason"].astype("object").where(df["reason"].notna(), "").astype(str)
    return df


def load_inputs(dataset: str, *, split: str = "test", size: int | None = None, n_images: int | None = None,
                seed: int = 0) -> ImageDataset:
    """The images for a study: a built-in name, ``natural`` or a user path (see probes.datasets)."""
    from probes.datasets import load_dataset

    if dataset == "natural":
        return load_dataset("natural", size=size, n=n_images, seed=seed)
    ds = load_dataset(dataset, split=split, size=size)
    if n_images is not None:
        ds = ds.head(n_images)
    return ds


# --------------------------------------------------------------------------------------------
# metrics of one probe result


def _study_stream(config: StudyConfig, spec: Any, resize_size: int | None) -> Any:
    """The study's images as a stream prepared for ``spec`` (the shared ``predict`` transform).

    Built-in sets are made in memory (small); a user ``.npz`` is memory-mapped and an image
    folder decoded image by image. ``natural`` crops are cut at the model's size, so they are
    not resized again.
    """
    from probes.datasets import BUILTIN, open_streaming

    if config.dataset in BUILTIN:
        # built-in images are made at their native 32 px; natural crops at the model's size
        data_size = spec.size if config.dataset == "natural" else 32
        stream = open_streaming(load_inputs(config.dataset, split=config.split, size=data_size,
                                            n_images=config.n_images, seed=config.seed))
        if config.dataset == "natural":
            resize_size = None
    else:
        stream = open_streaming(config.dataset)
        if config.n_images is not None:
            stream = stream.shard(0, min(config.n_images, len(stream)))
    return stream.prepared(spec, resize_size=resize_size, gray_to_rgb=config.gray_to_rgb)


def _folded(model: torch.nn.Module, conv_path: str | None, bn_path: str | None) -> tuple[np.ndarray, np.ndarray] | None:
    from probes.blocks import fold_bn

    if conv_path is None:
        return None
    modules = dict(model.named_modules())
    conv = modules[conv_path]
    bn = modules.get(bn_path) if bn_path else None
    w, b = fold_bn(conv, bn)
    return w.reshape(w.shape[0], -1), b


def compute_metrics(probe_result: Any, model: torch.nn.Module, blocks: Sequence[Any],
                    config: StudyConfig, *, progress: bool = True,
                    information: tuple[dict[str, dict[str, Any]], int] | None = None,
                    workers: int | None = None,
                    ) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Metric rows (without design columns) and details for every probed point.

    Parameters
    ----------
    probe_result : probes.capture.ProbeResult
    model : nn.Module
        The probed model (for BN-folded weights of the Lemma-2 test and the exact inverse).
    blocks : sequence of probes.blocks.BlockInfo
        The model's blocks (module paths of the expansion conv and BN).
    config : StudyConfig
    information : (dict, int), optional
        ``({point: {metric: MetricValue}}, n_test)`` of the information family (computed by
        :func:`run_study` from its own pass over the train and test splits).
    workers : int, optional
        Threads that compute the Lemma-2 test, the reconstruction and the quantisation family
        (with its redraws) while the points are walked (default: torch's thread count). With
        more than one, the BLAS pools are pinned to one thread for the call (threadpoolctl); the
        table is the same as with ``workers=1`` (which computes everything in order, in this
        thread, as before) whenever BLAS runs on one thread, e.g. under
        :func:`compute_shipped`.

    Returns
    -------
    rows : list of dict
        One dict per value with the point and block columns of the schema.
    details : dict
        See :class:`StudyResult`.
    """
    workers = torch.get_num_threads() if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"The 'workers' parameter of compute_metrics must be an int >= 1. Got {workers!r} instead.")
    with _Jobs(int(workers)) as jobs:
        entries, details = _point_metrics(probe_result, model, blocks, config, jobs, progress=progress,
                                          information=information)
    return _rows(entries), details


def _point_metrics(probe_result: Any, model: torch.nn.Module, blocks: Sequence[Any], config: StudyConfig,
                   jobs: "_Jobs", *, progress: bool,
                   information: tuple[dict[str, dict[str, Any]], int] | None,
                   ) -> tuple[list[tuple[Any, dict[Any, Any]]], dict[str, dict[str, np.ndarray]]]:
    """The body of :func:`compute_metrics`: per point, its values (some still computing in
    ``jobs``: :class:`_Later` entries) in row order, and the details."""
    fams = set(config.families)
    points = probe_result.points
    # the folded expansion maps the block input only in a classic block (not depthwise first,
    # extra depthwise, ghost or fused, where something else feeds the expansion or it is kxk)
    expand_maps = {b.index: (b.expand_conv, b.expand_bn) for b in blocks
                   if getattr(b, "block_kind", "inverted_residual") == "inverted_residual"}
    entries: list[tuple[Any, dict[Any, Any]]] = []
    details: dict[str, dict[str, np.ndarray]] = {}
    input_topology: dict[int, Any] = {}
    topology_cache: dict[tuple[int, ...], Any] = {}
    dimension_cache: dict[int, dict[str, Any]] = {}
    cloud_ids: dict[tuple[Any, ...], list[int]] = {}
    distinct_clouds: list[np.ndarray] = []
    # points that hold the same values (a linear projection's pre-activation and its output, a
    # block output without residual) are scored once: keyed by the bytes of their arrays
    content_cache: dict[tuple[Any, ...], Any] = {}
    digests: dict[int, tuple[np.ndarray, bytes]] = {}  # the memo of _content_key
    bar = tqdm(list(points.values()), desc="metrics", disable=not progress, leave=False)
    for pt in bar:
        stats = probe_result.stats[pt.name]
        det: dict[str, np.ndarray] = {}
        vals: dict[str, Any] = {}
        res = stats.reservoir
        cloud = None if res is None or len(res) == 0 else np.asarray(res.values, dtype=np.float64)
        n_res = 0 if cloud is None else int(cloud.shape[0])
        finite = cloud is not None and bool(np.all(np.isfinite(cloud)))
        nonfinite = f"non-finite activations at {pt.name}"
        if cloud is not None and not finite:
            warnings.warn(f"{pt.name}: the reservoir holds NaN or Inf values; point-cloud metrics are NaN.",
                          RuntimeWarning, stacklevel=2)
        inp_name = point_name(pt.block, "input")
        paired = raw_paired = None
        if pt.stage != "input" and inp_name in points and cloud is not None:
            try:
                xp, xi, _ = probe_result.paired(pt.name, inp_name)
                paired = (np.asarray(xp, np.float64), np.asarray(xi, np.float64))
                raw_paired = (xp, xi)  # the reservoirs' own arrays, hashed once (_content_key)
            except ValueError:
                paired = None
        n_moments = int(stats.moments.count) if stats.moments is not None else 0
        folded = None
        if pt.stage == "expand" and paired is not None and {"activity", "reconstruction"} & fams:
            folded = _folded(model, *expand_maps.get(pt.block, (None, None)))

        if "spectrum" in fams and stats.moments is not None:
            from analysis.spectrum import covariance_spectrum, spectrum_metrics

            cov = stats.moments.covariance()
            lam = covariance_spectrum(cov) if n_moments >= 2 and np.all(np.isfinite(cov)) else None
            if lam is not None:
                det["eigenvalues"] = lam
            vals.update({k: (v, n_moments) for k, v in spectrum_metrics(
                cov, rtol=config.rtol, n_points=n_moments, point=pt.name, eigvals=lam).items()})

        if "activity" in fams and not pt.pre and pt.stage in ("expand", "depthwise", "project"):
            from analysis.activity import activity_metrics

            act = stats.activity
            kw: dict[str, Any] = {}
            if act is not None and folded is not None:
                kw = {"weight": folded[0], "bias": folded[1], "inputs": paired[1]}
            if act is not None:
                from analysis.activity import LEMMA2_NOT_GIVEN

                # the counts here; the Lemma-2 test (the costly part) in a job, where
                # activity_metrics would have computed it (it got as far as saying it is missing)
                m = activity_metrics(act.active, n_points=int(act.n_points), histogram=act.histogram,
                                     activation=act.kind, saturated_counts=act.saturated,
                                     threshold=pt.block_in, point=pt.name)
                m |= _full_activity(stats, m, sampled=config.moments != "exact")
                det["positive_hist"] = np.asarray(act.histogram, dtype=np.int64)
                det["active_fraction"] = np.asarray(act.active_fraction, dtype=np.float64)
                for k, v in m.items():
                    if k == "lemma2_invertible_fraction" and kw and v.reason == LEMMA2_NOT_GIVEN:
                        vals[("job", k)] = _Later(jobs.submit(_lemma2_job, kw, act.kind, pt.name), int(act.n_points))
                    else:
                        vals[k] = (v, int(act.n_points))
            else:
                # no Activity sink: an activation without a flat region (linear, leaky ReLU,
                # SiLU, GELU ...); activity_metrics says why for each kind
                m = activity_metrics(np.zeros(pt.channels), n_points=0, histogram=np.zeros(pt.channels + 1),
                                     activation=pt.act, point=pt.name)
                vals.update({k: (v, 0) for k, v in m.items()})

        if "reconstruction" in fams and paired is not None:
            from analysis.reconstruction import reconstruction_metrics

            kw = {}
            if folded is not None:
                kw = {"weight": folded[0], "bias": folded[1],
                      "activation": pt.act if not pt.pre else "linear"}
            # the exact inverse (with the folded expansion) is specific to its point: not shared
            key = None if kw else ("reconstruction", _content_key(*raw_paired, memo=digests))
            job = content_cache.get(key) if key else None
            if job is None:
                job = jobs.submit(reconstruction_metrics, paired[0], paired[1], seed=config.seed, point=pt.name, **kw)
                if key:
                    content_cache[key] = job
            vals[("job", "reconstruction")] = _Later(job, n_res)

        # one distance matrix per cloud, shared by topology, the intrinsic dimension and its
        # half-sample redraws; points with equal reservoirs (aliased points: a block's input is
        # the previous block's output; a linear projection's pre-activation and its output)
        # share a cloud id, whose metrics are computed once. Topology alone does not need the
        # whole matrix: its greedy subsample computes the rows it picks, equal to the matrix's
        # bit for bit
        cloud_dm = None
        cloud_id = None
        if cloud is not None and {"topology", "dimension"} & fams:
            cloud_id = _cloud_id(cloud_ids, distinct_clouds, np.asarray(res.values))
        topo_key = (cloud_id, config.topology_maxdim, config.topology_points)
        if finite and "dimension" in fams and cloud_id not in dimension_cache:
            from analysis.topology import DENSE_GREEDY_MAX, distance_matrix

            cloud_dm = distance_matrix(cloud) if n_res <= DENSE_GREEDY_MAX else None

        if "topology" in fams and cloud is not None:
            from analysis.topology import persistent_homology, with_reference

            ref = input_topology.get(pt.block) if pt.stage != "input" else None
            n_topo = min(n_res, config.topology_points)
            if finite:
                if topo_key not in topology_cache:
                    topology_cache[topo_key] = persistent_homology(
                        cloud, maxdim=config.topology_maxdim, n_perm=config.topology_points, distances=cloud_dm)
                if topo_key + (id(ref),) not in topology_cache:
                    topology_cache[topo_key + (id(ref),)] = with_reference(topology_cache[topo_key], ref)
                tr = topology_cache[topo_key + (id(ref),)]
                if pt.stage == "input":
                    input_topology[pt.block] = tr
                for dim, dgm in enumerate(tr.diagrams):
                    det[f"diagram_h{dim}"] = np.asarray(dgm, dtype=np.float64)
                vals.update({k: ((v, tr.reasons.get(k)), n_topo) for k, v in tr.metrics.items()})
            else:
                names = [f"betti{k}" for k in range(config.topology_maxdim + 1)] + [
                    "total_persistence_h1", "persistence_entropy_h1"]
                vals.update({k: ((math.nan, nonfinite), n_topo) for k in names})

        if "dimension" in fams and cloud is not None:
            from analysis.dimension import intrinsic_dimension

            if finite:
                if cloud_id not in dimension_cache:
                    m, reasons = intrinsic_dimension(cloud, distances=cloud_dm)

                    def half(rows: np.ndarray, dm: np.ndarray | None = cloud_dm) -> dict[str, float]:
                        sub = None if dm is None else dm.take(rows, 0).take(rows, 1)
                        return intrinsic_dimension(cloud[rows], distances=sub)[0]

                    dimension_cache[cloud_id] = {k: ((v, reasons.get(k)), n_res) for k, v in m.items()} | _redraw_rows(
                        cloud, half, m, n_res, config.seed, on_indices=True)
                vals.update(dimension_cache[cloud_id])
            else:
                vals.update({k: ((math.nan, nonfinite), n_res) for k in ("twonn_id", "mle_id")})

        if "similarity" in fams and paired is not None:
            from analysis.similarity import similarity_metrics

            if finite and np.all(np.isfinite(paired[1])):
                key = ("similarity", _content_key(*paired))
                if key not in content_cache:
                    content_cache[key] = similarity_metrics(paired[0], paired[1])
                m, reasons = content_cache[key]
                vals.update({k: ((v, reasons.get(k)), n_res) for k, v in m.items()})
            else:
                vals["cka_to_input"] = ((math.nan, nonfinite), n_res)

        if "quantization" in fams and cloud is not None:
            extent = getattr(stats, "extent", None)
            key = ("quantization", _content_key(res.values, memo=digests) + _content_key(*_extent_arrays(extent)))
            if key not in content_cache:
                content_cache[key] = jobs.submit(_quantization_job, cloud, extent, pt.name, n_res,
                                                 finite, config.seed)
            vals[("job", "quantization")] = _Later(content_cache[key])

        if "information" in fams and information is not None and pt.name in information[0]:
            vals.update({k: (v, information[1]) for k, v in information[0][pt.name].items()})

        entries.append((pt, vals))
        if det:
            details[pt.name] = det
    return entries, details


def _cloud_id(ids: dict[tuple[Any, ...], list[int]], clouds: list[np.ndarray], values: np.ndarray) -> int:
    """Index of ``values`` among the distinct reservoirs seen so far: byte-equal arrays share one.

    Candidates are found by shape, dtype and the bytes of the first and last row, then compared
    whole (cheaper than a digest of every reservoir: most have no equal)."""
    v = np.ascontiguousarray(values)
    key = (v.shape, v.dtype.str, v[:1].tobytes(), v[-1:].tobytes())
    same = ids.setdefault(key, [])
    for i in same:
        if np.array_equal(clouds[i].view(np.uint8), v.view(np.uint8)):
            return i
    clouds.append(v)
    same.append(len(clouds) - 1)
    return len(clouds) - 1


def _rows(entries: list[tuple[Any, dict[Any, Any]]]) -> list[dict[str, Any]]:
    """One row per value of :func:`_point_metrics`'s entries, a :class:`_Later` expanded in place."""
    rows: list[dict[str, Any]] = []
    for pt, vals in entries:
        for key, val in vals.items():
            for metric, (mv, n) in (val.items() if isinstance(val, _Later) else ((key, val),)):
                value, reason = _value_reason(mv)
                rows.append({
                    "block": pt.block, "point": pt.name, "stage": pt.stage, "pre": pt.pre,
                    "metric": metric, "value": value, "reason": reason, "n_points": int(n),
                    "channels": pt.channels, "stride": pt.stride, "act": pt.act, "block_in": pt.block_in,
                    "block_hidden": pt.block_hidden, "block_out": pt.block_out, "has_residual": pt.has_residual,
                    "block_kind": pt.block_kind,
                })
    return rows


class _Jobs:
    """Runs the costly metric computations of :func:`compute_metrics` in ``workers`` threads.

    ``submit(func, *args, **kwargs)`` returns a handle whose ``result()`` is the call's value.
    With one worker the call runs at once, in this thread (in order, exactly as without a pool);
    with more, in a thread pool while the points are walked, and the caller places the handle
    where the values go (a :class:`_Later` in the point's values), so the rows keep their order.
    As a context manager, with more than one worker, it pins the BLAS pools to one thread (the
    workers are the parallelism, and results do not depend on their number); it waits for
    every job on exit.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: Any = None
        self._limits: Any = None

    def __enter__(self) -> "_Jobs":
        if self.workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            from threadpoolctl import threadpool_limits

            self._limits = threadpool_limits(limits=1, user_api="blas")
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="bnprobe-metrics",
                                            initializer=_one_openmp_thread)
        return self

    def submit(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        if self._pool is None:
            return _Done(func(*args, **kwargs))
        return self._pool.submit(func, *args, **kwargs)

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=exc[0] is not None)
        finally:
            if self._limits is not None:
                self._limits.restore_original_limits()


def _one_openmp_thread() -> None:
    """Initialiser of a metric thread: its own OpenMP pools on one thread (scikit-learn's kNN).

    An OpenMP thread count is per calling thread, so this leaves the caller's (and torch's)
    as they are; without it each job's kNN spins up every core's worth of OpenMP threads.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="openmp")


class _Done:
    """The handle of a job that already ran (``_Jobs`` with one worker)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


class _Later:
    """Values of a point that a job computes: its ``{metric: value}`` with ``n`` points each, or
    its ``{metric: (value, n)}`` as they are (``n`` None). A key of their own in the point's
    values, so that they keep their place among the rows."""

    def __init__(self, handle: Any, n: int | None = None) -> None:
        self.handle, self.n = handle, n

    def items(self) -> Any:
        got = self.handle.result()
        return got.items() if self.n is None else ((k, (v, self.n)) for k, v in got.items())


def _content_key(*arrays: np.ndarray | None, memo: dict[int, tuple[np.ndarray, Any]] | None = None,
                 ) -> tuple[Any, ...]:
    """Shapes, dtypes and a SHA-256 digest of the bytes of ``arrays``: equal keys, equal values.

    With ``memo`` ({id: (array, key)}, kept by the caller), an array's key is computed once: the
    memo holds the array, so its id is not reused while the memo lives (arrays not changed).
    """
    key: list[Any] = []
    for a in arrays:
        if a is None:
            key.append(None)
            continue
        if memo is not None and id(a) in memo:
            key.append(memo[id(a)][1])
            continue
        c = np.ascontiguousarray(a)
        k = (c.shape, c.dtype.str, hashlib.sha256(c.view(np.uint8)).digest())
        if memo is not None:
            memo[id(a)] = (a, k)
        key.append(k)
    return tuple(key)


def _lemma2_job(kw: dict[str, Any], activation: str, point: str) -> dict[str, Any]:
    """``lemma2_invertible_fraction`` as :func:`analysis.activity.activity_metrics` computes it."""
    from analysis.activity import lemma2_invertible_fraction

    return {"lemma2_invertible_fraction": lemma2_invertible_fraction(
        kw["weight"], kw["bias"], kw["inputs"], activation=activation, rtol=None, point=point)}


def _quantization_job(cloud: np.ndarray, extent: Any, point: str, n: int, finite: bool,
                      seed: int) -> dict[str, Any]:
    """The quantisation family of one reservoir and, when finite, its redraw intervals."""
    from analysis.quantization import RESAMPLED_METRICS, calibrated_metrics, quantization_metrics, resampled_metrics

    m = quantization_metrics(cloud, point=point) | calibrated_metrics(cloud, extent, point=point)
    got = {k: (v, n) for k, v in m.items()}
    if finite:  # the redraws compute only the metrics that get an interval
        got |= _redraw_rows(cloud, lambda c: resampled_metrics(c, extent),
                            {k: m[k].value for k in RESAMPLED_METRICS}, n, seed)
    return got


def _extent_arrays(extent: Any) -> tuple[np.ndarray | None, ...]:
    """What :func:`analysis.quantization.calibrated_metrics` reads of an Extent sink."""
    if extent is None:
        return (None,)
    return tuple(None if getattr(extent, f, None) is None else np.asarray(getattr(extent, f))
                 for f in ("ch_min", "ch_max", "abs_hist")) + (np.asarray([getattr(extent, "n_points", 0),
                                                                         getattr(extent, "hist_points", 0)]),)


def _redraw_rows(cloud: np.ndarray, func: Any, values: dict[str, Any], n: int, seed: int,
                 on_indices: bool = False) -> dict[str, Any]:
    """``<metric>_ci_low`` / ``_ci_high`` over reservoir redraws (analysis.dimension.redraw_interval)."""
    from analysis.dimension import redraw_interval

    plain = {k: float(getattr(v, "value", v)) for k, v in values.items()}
    out: dict[str, Any] = {}
    if cloud.shape[0] < 20:
        return out
    for k, (lo, hi) in redraw_interval(cloud, func, plain, seed=seed, on_indices=on_indices).items():
        why = None if math.isfinite(lo) else "not defined: the value or a half-sample value is not finite"
        out[f"{k}_ci_low"] = ((lo, why), n)
        out[f"{k}_ci_high"] = ((hi, why), n)
    return out


def _full_activity(stats: Any, m: dict[str, Any], *, sampled: bool) -> dict[str, Any]:
    """dead / rare fractions from counts at every position (``Extent``) when the capture has them.

    Without them, counts at sampled positions make a rarely active unit read as dead: the
    value is then an upper bound and says so.
    """
    from analysis.spectrum import MetricValue

    extent = getattr(stats, "extent", None)
    active = None if extent is None else getattr(extent, "active", None)
    if active is not None and int(getattr(extent, "n_points", 0)) > 0:
        frac = np.asarray(active, dtype=np.float64) / float(extent.n_points)
        return {"dead_fraction": MetricValue(float(np.mean(frac == 0))),
                "rare_fraction": MetricValue(float(np.mean(frac < 0.01)))}
    if not sampled:
        return {}
    out = {}
    for k in ("dead_fraction",):
        v = m.get(k)
        if v is not None and not getattr(v, "reason", None) and math.isfinite(getattr(v, "value", math.nan)):
            out[k] = MetricValue(v.value, "upper bound: counted at sampled positions only (a unit active only "
                                          "at positions that were not sampled reads as dead); use moments='exact'")
    return out


def _value_reason(mv: Any) -> tuple[float, str]:
    if isinstance(mv, tuple) and len(mv) == 2 and not hasattr(mv, "value"):
        value, reason = mv
    elif hasattr(mv, "value"):
        value, reason = mv.value, mv.reason
    else:
        value, reason = mv, None
    value = math.nan if value is None else float(value)
    if reason is None:
        reason = "" if math.isfinite(value) else "undefined"
    return value, reason


def _information(model: torch.nn.Module, spec: Any, config: StudyConfig, pr: Any, *,
                 device: str | None, progress: bool) -> tuple[dict[str, dict[str, Any]], int]:
    """The information family on the points of ``pr`` that it covers (see the module docstring)."""
    import fnmatch

    from analysis.information import INFO_POINTS, information_rows, metric_names
    from analysis.spectrum import MetricValue

    names = list(pr.points)
    if config.points is None:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in INFO_POINTS)]
    if config.dataset not in ("digits", "shapes"):
        reason = (f"not available: the information family decodes from a train split and scores on a "
                  f"test split; only the built-in digits and shapes have them (got {config.dataset!r})")
        return {n: {m: MetricValue(math.nan, reason) for m in metric_names()} for n in names}, 0
    metrics, meta = information_rows(model, config.dataset, input_spec=spec, points=names, seed=config.seed,
                                     gray_to_rgb=config.gray_to_rgb, device=device, progress=progress)
    return metrics, int(meta["n_test"])


def _cache_path(cache_dir: Path, identity: str, config: StudyConfig) -> Path:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("bottleneck-probe")
    except PackageNotFoundError:
        v = "dev"
    key = hashlib.sha256(f"{identity}|{config.key()}|{v}".encode()).hexdigest()[:20]
    return cache_dir / f"study-{key}"


def run_study(checkpoint: Any, config: StudyConfig | None = None, *, arch: str | None = None,
              mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
              size: int | None = None, cache_dir: str | Path | None = None, progress: bool = True,
              device: str | None = None, scheduler: str | None = None, workers: int | None = None,
              loader_workers: int | None = None) -> StudyResult:
    """Probe one checkpoint on one dataset and compute every requested metric family.

    Parameters
    ----------
    checkpoint : str, path or probes.loading.LoadedModel
        A zoo name, a weights file, or an already loaded model.
    config : StudyConfig, optional
    arch, mean, std, size
        Passed to :func:`probes.loading.load_checkpoint` (third-party files, user factories).
    cache_dir : path, optional
        If given, the result is cached there (keyed by the weights' sha256, the config and the
        package version) and a second call returns it without recomputing.
    progress : bool
        Show progress bars.
    device : str, optional
        Device of the forward pass (default: cuda when available).
    scheduler, workers : optional
        Shard the images over the Dask scheduler at ``scheduler``, or over a local cluster of
        ``workers`` processes (:func:`probes.shard.probe_sharded`); the metrics equal a
        single-process run up to float64 merge rounding.
    loader_workers : int, optional
        DataLoader processes decoding images (default: up to 2 for image files, else 0: arrays
        need no decoding and a worker takes seconds to start).

    Returns
    -------
    StudyResult
    """
    from probes.blocks import find_blocks
    from probes.datasets import ImageFiles
    from probes.loading import LoadedModel, load_checkpoint

    config = config or StudyConfig()
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_checkpoint(
        checkpoint, arch=arch, mean=mean, std=std, size=size)
    identity = f"{loaded.source}|{loaded.arch}|{loaded.sha256}|{json.dumps(loaded.input_spec.to_dict(), sort_keys=True)}"
    cache = None
    if cache_dir is not None and loaded.sha256 is not None:
        cache = _cache_path(Path(cache_dir), identity, config)
        if cache.with_suffix(".parquet").exists() and cache.with_suffix(".npz").exists():
            return StudyResult.load(cache)

    spec = loaded.input_spec
    t0 = time.perf_counter()
    stream = _study_stream(config, spec, loaded.preset.get("resize_size"))
    model = loaded.model
    blocks = find_blocks(model, stream[0][None])
    kw = dict(points=config.points, batch_size=config.batch_size, sample_unit=config.sample_unit,
              reservoir_size=config.reservoir_size, seed=config.seed, moments=config.moments,
              moment_positions=config.moment_positions)
    if scheduler is not None or workers is not None:
        from probes.shard import dask_client, probe_sharded

        with dask_client(scheduler, workers) as client:
            pr = probe_sharded(model, stream, client, **kw)
    else:
        from probes.shard import probe_stream

        n_loader = loader_workers if loader_workers is not None else (
            min(2, os.cpu_count() or 1) if isinstance(stream, ImageFiles) else 0)
        pr = probe_stream(model, stream, num_workers=n_loader, device=device, progress=progress, **kw)

    t_probe = time.perf_counter() - t0
    info, t_info = None, 0.0
    if "information" in config.families:
        info = _information(model, spec, config, pr, device=device, progress=progress)
        t_info = time.perf_counter() - t0 - t_probe
    rows, details = compute_metrics(pr, model, blocks, config, progress=progress, information=info)
    t_metrics = time.perf_counter() - t0 - t_probe

    design = loaded.design or {}
    act = design.get("bottleneck_act")
    fixed = {
        "checkpoint": loaded.name, "arch": loaded.arch, "design": design.get("design") or loaded.arch,
        "bottleneck_act": act if isinstance(act, str) or act is None else "schedule",
        "expand_ratio": design.get("expand_ratio"), "shortcut": design.get("shortcut"),
        "seed": design.get("seed"), "dataset": stream.name,
    }
    df = pd.DataFrame([{**fixed, **r} for r in rows], columns=list(SCHEMA_COLUMNS))
    df = df.astype({"block": "int64", "n_points": "int64", "pre": "bool", "has_residual": "bool",
                    "value": "float64"})
    meta = {
        "checkpoint": loaded.name, "source": str(loaded.source), "arch": loaded.arch,
        "sha256": loaded.sha256, "design": design, "input_spec": spec.to_dict(),
        "dataset": {"name": stream.name, **{k: v for k, v in stream.meta.items() if k != "factor_ranges"}},
        "config": config.to_dict(), "n_images": int(pr.n_images), "n_blocks": len(blocks),
        "seconds": {"probe": round(t_probe, 2), "metrics": round(t_metrics, 2),
                    "information": round(t_info, 2)},
    }
    result = StudyResult(metrics=df, details=details, meta=meta, probe=pr)
    if cache is not None:
        result.save(cache)
    return result


# --------------------------------------------------------------------------------------------
# precomputed results of the shipped checkpoints (checkpoints/results/)

def shipped_results_dir() -> Path:
    """``checkpoints/results``: precomputed studies of the shipped checkpoints."""
    from checkpoints import CHECKPOINT_DIR

    return CHECKPOINT_DIR / "results"


def shipped_result_path(checkpoint: str, dataset: str) -> Path:
    """Stem (no suffix) of the precomputed study of ``checkpoint`` on ``dataset``."""
    return shipped_results_dir() / f"{checkpoint}--{dataset}"


#: Environment under which the shipped results are computed: every floating-point kernel
#: family pinned to the AVX2 instruction set (torch's ATen dispatch, oneDNN convolutions,
#: OpenBLAS in numpy and scipy, numpy's own SIMD loops), so a machine with AVX-512 takes the
#: same code paths, and the same last float digits, as one without. The libraries read these
#: when they load, so they must be set before the process imports numpy or torch:
#: ``scripts/precompute_results.py`` starts its workers with them and
#: ``tests/analysis/test_shipped_results.py`` recomputes in a subprocess that has them.
#: (Without them, the same code on an AVX-512 machine changed 3,404 of 7,874 values of a
#: shipped study, by up to 2.6 % where an ill-conditioned reconstruction amplifies rounding.)
SHIPPED_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4",
}


def compute_shipped(checkpoint: str, dataset: str) -> StudyResult:
    """Study a shipped checkpoint exactly as its precomputed result was made.

    :data:`SHIPPED_CONFIG` on ``dataset``, on the CPU, with torch and the BLAS / OpenMP pools
    (numpy, scipy, scikit-learn) pinned to one thread while it runs (the thread count changes
    the last float digits of reductions). The process must have been started with
    :data:`SHIPPED_ENV` (the instruction set, which changes them too) for the result to match
    the shipped files on every x86-64 machine. ``scripts/precompute_results.py`` writes its
    result with :meth:`StudyResult.save`; ``tests/analysis/test_shipped_results.py``
    recomputes one shipped study through this function and compares the files byte for byte.
    """
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with threadpool_limits(limits=1):
            return run_study(checkpoint, dataclasses.replace(SHIPPED_CONFIG, dataset=dataset), progress=False,
                             device="cpu")
    finally:
        torch.set_num_threads(threads)


def load_shipped(checkpoint: str, dataset: str | None = None, *, compute: bool = True,
                 progress: bool = False) -> StudyResult:
    """The study of a shipped checkpoint on ``dataset`` (default: the one it was trained on).

    Read from ``checkpoints/results/`` when precomputed with :data:`SHIPPED_CONFIG`; otherwise
    computed (if ``compute``) and cached in the user cache directory.
    """
    from probes.catalogue import list_checkpoints

    cards = {c["name"]: c for c in list_checkpoints()}
    if checkpoint not in cards:
        raise ValueError(f"Unknown zoo checkpoint {checkpoint!r}; available: {sorted(cards)}.")
    dataset = dataset or cards[checkpoint]["dataset"]["name"]
    stem = shipped_result_path(checkpoint, dataset)
    if stem.with_suffix(".parquet").exists() and stem.with_suffix(".npz").exists():
        result = StudyResult.load(stem)
        if result.meta.get("sha256") == cards[checkpoint]["sha256"]:
            return result
    if not compute:
        raise FileNotFoundError(f"No precomputed results for {checkpoint!r} on {dataset!r} in {stem.parent}.")
    return run_study(checkpoint, dataclasses.replace(SHIPPED_CONFIG, dataset=dataset),
                     cache_dir=user_cache_dir(), progress=progress)


def load_shipped_metrics(dataset: str | None = None) -> pd.DataFrame:
    """Concatenated tidy metrics of every precomputed shipped study (optionally one dataset)."""
    frames = [read_table(p) for p in sorted(shipped_results_dir().glob("*.parquet"))]
    if not frames:
        return pd.DataFrame(columns=list(SCHEMA_COLUMNS))
    df = pd.concat(frames, ignore_index=True)
    return df if dataset is None else df[df["dataset"] == dataset].reset_index(drop=True)


def user_cache_dir() -> Path:
    """Cache folder for computed studies: ``$BNPROBE_CACHE`` or ``~/.cache/bottleneck-probe``."""
    import os

    root = os.environ.get("BNPROBE_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bottleneck-probe"
    return Path(root)
