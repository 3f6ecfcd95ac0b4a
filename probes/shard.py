"""Probing a streamed dataset, in one process or sharded over Dask workers.

:func:`probe_stream` runs a :class:`probes.datasets.StreamingImages` through a model with a
``torch.utils.data.DataLoader`` (worker processes decode and prepare the next batches while the
model runs; peak memory does not depend on the number of images) and returns the same
:class:`probes.capture.ProbeResult` as :func:`probes.capture.probe`.

:func:`probe_sharded` splits the images into contiguous shards [a, b), probes each on a Dask
worker with ``image_offset = a`` and merges the results (:meth:`ProbeResult.merge`). The hash
sampling plans and reservoir priorities are functions of the global image index, so the merged
reservoirs hold exactly the points of a single run and the moments differ only by the
rounding of the float64 merge (Chan et al.'s pairwise update instead of one stream).
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["dask_client", "probe_sharded", "probe_stream", "shard_bounds"]


def _worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)


def probe_stream(model: Any, data: Any, *, points: Any = None, batch_size: int = 64, num_workers: int = 0,
                 device: str | None = None, image_offset: int = 0, progress: bool = True,
                 **capture_kwargs: Any) -> Any:
    """Probe ``data`` (a prepared :class:`~probes.datasets.StreamingImages`) through a DataLoader.

    Parameters
    ----------
    model : nn.Module
    data : StreamingImages
        With its input spec set (:meth:`~probes.datasets.StreamingImages.prepared`).
    points, batch_size, device, progress
        As in :func:`probes.capture.probe`.
    num_workers : int
        DataLoader worker processes that decode and prepare images (0: in this process).
    image_offset : int
        Global index of ``data[0]`` (a shard's start).
    **capture_kwargs
        ``sample_unit``, ``reservoir_size``, ``seed``, ``moments``, ``moment_positions``,
        ``activity_positions``, ``sinks``: as in :func:`probes.capture.capture`.

    Returns
    -------
    probes.capture.ProbeResult
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from probes.capture.run import evaluating_on
    from probes.capture.session import capture

    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"The 'batch_size' parameter of probe_stream must be an int >= 1. Got {batch_size!r} instead.")
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise ValueError(f"The 'num_workers' parameter of probe_stream must be an int >= 0. Got {num_workers!r} instead.")
    n = len(data)
    if n == 0:
        raise ValueError(f"The dataset {data.name!r} holds no images.")
    with evaluating_on(model, device) as (dev, dtype):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            worker_init_fn=_worker_init if num_workers else None,
                            pin_memory=dev.type == "cuda")
        with torch.no_grad(), capture(model, points, example_input=data[0][None].to(dev, dtype),
                                      image_offset=image_offset, expected_images=n, **capture_kwargs) as cap:
            for batch in tqdm(loader, disable=not progress, desc="probe", unit="batch"):
                model(batch.to(dev, dtype, non_blocking=True))
            result = cap.result()
    result.config.update({"batch_size": batch_size, "device": str(dev),
                          "input_spec": data.spec.to_dict() if data.spec is not None else None})
    return result


def _probe_shard(model_bytes: bytes, data: Any, start: int, stop: int, kwargs: dict[str, Any]) -> Any:
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with threadpool_limits(limits=1):
            return probe_stream(pickle.loads(model_bytes), data.shard(start, stop), image_offset=start, progress=False,
                                device="cpu", **kwargs)
    finally:
        torch.set_num_threads(threads)


def shard_bounds(n: int, n_shards: int, batch_size: int = 1) -> list[tuple[int, int]]:
    """At most ``n_shards`` contiguous [a, b) ranges covering 0..n, cut at multiples of
    ``batch_size``, with batch counts differing by at most one.

    Cutting at batch boundaries makes every forward pass of the shards see the same images as
    a single run's: float32 convolutions can round differently for other batch sizes.
    """
    n_batches = -(-n // batch_size)
    edges = np.linspace(0, n_batches, min(n_shards, n_batches) + 1).round().astype(int) * batch_size
    return [(int(a), int(min(b, n))) for a, b in zip(edges[:-1], edges[1:])]


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """A Dask client: connected to ``scheduler``, or a local cluster of ``workers`` processes
    (one thread each) that is shut down on exit."""
    if scheduler is not None:
        from analysis.report.jobs import _connect

        client = _connect(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    from dask.distributed import Client, LocalCluster

    n = workers or os.cpu_count() or 1
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def probe_sharded(model: Any, data: Any, client: Any, *, n_shards: int | None = None, **kwargs: Any) -> Any:
    """Probe ``data`` in shards on the workers of a Dask ``client`` and merge the results.

    Parameters
    ----------
    model : nn.Module
        Sent once to every worker.
    data : StreamingImages
        Prepared; it must pickle (file lists and memory-mapped .npz files are reopened by path
        on the worker, so the workers need the same file system).
    client : dask.distributed.Client
    n_shards : int, optional
        Default: one per worker.
    **kwargs
        As in :func:`probe_stream` (not ``image_offset``, ``device``, ``progress``).

    Returns
    -------
    probes.capture.ProbeResult
        Equal to a single run over ``data`` up to float64 merge rounding of the moments.
    """
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    bounds = shard_bounds(len(data), n_shards or n_workers, kwargs.get("batch_size", 64))
    # pickled here: Dask's own torch serialiser rebuilds a module's hook dicts as plain dicts,
    # on which torch cannot register hooks. The bytes come from this process, like every task
    # argument Dask pickles.
    [model_f] = client.scatter([pickle.dumps(model)], broadcast=True)
    futures = [client.submit(_probe_shard, model_f, data, a, b, kwargs, pure=False) for a, b in bounds]
    try:
        results = client.gather(futures)
    finally:
        client.cancel(futures)
    merged = results[0]
    for r in results[1:]:
        merged = merged.merge(r)
    merged.config["shards"] = [list(b) for b in bounds]
    return merged
