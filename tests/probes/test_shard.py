"""Streamed and sharded probes equal a single in-memory run."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.study import StudyConfig, run_study
from probes.capture import probe
from probes.catalogue import list_checkpoints
from probes.datasets import ArrayImages, load_npz
from probes.loading import load_checkpoint
from probes.shard import dask_client, probe_sharded, probe_stream, shard_bounds


def _zoo(name: str) -> str:
    if name not in {c["name"] for c in list_checkpoints()}:
        pytest.skip(f"shipped checkpoint {name} is not in checkpoints/")
    return name


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("npz") / "gray.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (20, 1, 32, 32), dtype=np.uint8), y=rng.integers(0, 10, 20))
    return path


def _same(a, b, *, rtol=0.0):
    assert list(a.points) == list(b.points) and a.n_images == b.n_images
    for name in a.points:
        sa, sb = a.stats[name], b.stats[name]
        np.testing.assert_array_equal(sa.reservoir.values, sb.reservoir.values)
        np.testing.assert_array_equal(sa.reservoir.block_ids(), sb.reservoir.block_ids())
        np.testing.assert_allclose(sa.moments.covariance(), sb.moments.covariance(), rtol=rtol, atol=rtol * 1e-3)
        assert sa.moments.count == sb.moments.count


def test_shard_bounds_cover_the_images_once():
    assert shard_bounds(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert shard_bounds(2, 5) == [(0, 1), (1, 2)]
    # cut at batch boundaries, so that every forward pass sees a single run's batch
    assert shard_bounds(20, 2, batch_size=8) == [(0, 16), (16, 20)]
    assert shard_bounds(20, 4, batch_size=8) == [(0, 8), (8, 16), (16, 20)]


def test_streamed_probe_equals_in_memory_probe(npz):
    loaded = load_checkpoint(_zoo("digits-linear-s0"))
    spec = loaded.input_spec
    ref = probe(loaded.model, load_npz(npz), input_spec=spec, batch_size=8, reservoir_size=50, progress=False)
    stream = ArrayImages(np.load(npz)["x"], name="gray").prepared(spec)
    got = probe_stream(loaded.model, stream, batch_size=8, num_workers=2, reservoir_size=50, progress=False)
    _same(ref, got)


def test_sharded_probe_on_two_workers_equals_one_process(npz):
    loaded = load_checkpoint(_zoo("digits-linear-s0"))
    from probes.datasets import NpzImages

    stream = NpzImages(npz).prepared(loaded.input_spec)
    single = probe_stream(loaded.model, stream, batch_size=8, reservoir_size=50, progress=False)
    with dask_client(workers=2) as client:
        sharded = probe_sharded(loaded.model, stream, client, batch_size=8, reservoir_size=50)
    assert sharded.config["shards"] == [[0, 16], [16, 20]]
    _same(single, sharded, rtol=1e-9)


def test_study_table_with_two_dask_workers_equals_one_process(npz):
    cfg = StudyConfig(dataset=str(npz), batch_size=8, reservoir_size=60, topology_points=30, moment_positions=8,
                      families=("spectrum", "topology", "similarity"))
    one = run_study(_zoo("digits-linear-s0"), cfg, progress=False).metrics
    two = run_study(_zoo("digits-linear-s0"), cfg, progress=False, workers=2).metrics
    assert len(one) == len(two) > 0
    np.testing.assert_allclose(two["value"].to_numpy(), one["value"].to_numpy(), rtol=1e-8, atol=1e-10)
    assert (one.drop(columns="value") == two.drop(columns="value")).all().all()
