"""The study pipeline: shipped checkpoint x dataset -> tidy results table."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from analysis.study import (
    SCHEMA_COLUMNS,
    StudyConfig,
    StudyResult,
    read_table,
    run_study,
    write_table,
)
from probes.catalogue import list_checkpoints

SMALL = StudyConfig(n_images=24, reservoir_size=120, topology_points=40, moment_positions=8,
                    families=("spectrum", "activity", "reconstruction", "similarity", "quantization"))


def _zoo(name: str) -> str:
    if name not in {c["name"] for c in list_checkpoints()}:
        pytest.fail(f"shipped checkpoint {name} is missing: checkpoints/{name}.safetensors and .json")
    return name


@pytest.fixture(scope="module")
def linear() -> StudyResult:
    return run_study(_zoo("digits-linear-s0"), SMALL, progress=False)


@pytest.fixture(scope="module")
def relu6() -> StudyResult:
    return run_study(_zoo("digits-relu6-s0"), SMALL, progress=False)


def _value(df: pd.DataFrame, point: str, metric: str) -> pd.Series:
    row = df[(df.point == point) & (df.metric == metric)]
    assert len(row) == 1, (point, metric, len(row))
    return row.iloc[0]


def test_schema_and_design_columns(linear: StudyResult) -> None:
    df = linear.metrics
    assert list(df.columns) == list(SCHEMA_COLUMNS)
    assert set(df.checkpoint) == {"digits-linear-s0"}
    assert set(df.design) == {"linear"} and set(df.bottleneck_act) == {"linear"}
    assert set(df.dataset) == {"digits"}
    assert sorted(df.block.unique()) == list(range(17))
    # block 0 has t = 1: no expansion points, exactly as docs/design.md says
    assert not df[(df.block == 0) & (df.stage == "expand")].shape[0]
    assert df[(df.block == 1) & (df.stage == "expand")].shape[0] > 0


def test_activity_not_applicable_on_linear_projection(linear: StudyResult, relu6: StudyResult) -> None:
    row = _value(linear.metrics, "blocks.5.project", "dead_fraction")
    assert math.isnan(row.value) and row.reason.startswith("not applicable")
    row = _value(relu6.metrics, "blocks.5.project", "dead_fraction")
    # counted at every position (the capture's Extent sink): exact, no caveat
    extent = relu6.probe.stats["blocks.5.project"].extent
    assert row.value == np.mean(np.asarray(extent.active) == 0) and row.reason == ""


def test_spectrum_rank_is_bounded_by_channels_and_points(linear: StudyResult) -> None:
    df = linear.metrics
    rank = df[df.metric == "rank"]
    assert (rank.value <= rank.channels).all()
    assert (rank.value <= rank.n_points).all()
    few = rank[rank.n_points - 1 < rank.channels]
    assert len(few) and few.reason.str.startswith("lower bound:").all()
    assert (rank[rank.n_points - 1 >= rank.channels].reason == "").all()
    frac = df[df.metric == "rank_frac"].set_index("point").value
    np.testing.assert_allclose(frac.values, (rank.set_index("point").value / rank.set_index("point").channels)
                               .loc[frac.index].values)


def test_exact_inverse_at_expansion_where_lemma2_holds(linear: StudyResult) -> None:
    df = linear.metrics
    inv = _value(df, "blocks.1.expand", "lemma2_invertible_fraction")
    err = _value(df, "blocks.1.expand", "recon_error_exact")
    # trained expansions keep more than C_in active units: Lemma 2 holds, and those points are
    # recovered exactly by the active-set inverse
    assert inv.value > 0.5
    assert err.value < 1e-6


def test_cka_of_input_with_itself_is_not_reported_but_others_in_unit_interval(linear: StudyResult) -> None:
    cka = linear.metrics[linear.metrics.metric == "cka_to_input"]
    assert "input" not in set(cka.stage)
    assert ((cka.value >= 0) & (cka.value <= 1 + 1e-9)).all()


def test_deterministic(linear: StudyResult) -> None:
    again = run_study("digits-linear-s0", SMALL, progress=False)
    pd.testing.assert_frame_equal(linear.metrics, again.metrics)


def test_cache_returns_saved_result_without_recomputing(tmp_path, monkeypatch) -> None:
    cfg = StudyConfig(n_images=8, reservoir_size=40, families=("spectrum",))
    first = run_study(_zoo("digits-linear-s0"), cfg, cache_dir=tmp_path, progress=False)
    import probes.shard

    def boom(*args, **kwargs):
        raise AssertionError("probe_stream() ran again although the result was cached")

    monkeypatch.setattr(probes.shard, "probe_stream", boom)
    second = run_study("digits-linear-s0", cfg, cache_dir=tmp_path, progress=False)
    pd.testing.assert_frame_equal(first.metrics, second.metrics)
    assert second.meta["sha256"] == first.meta["sha256"]
    # details are stored as float32 (they only feed figures)
    np.testing.assert_allclose(second.details["blocks.3.expand"]["eigenvalues"],
                               first.details["blocks.3.expand"]["eigenvalues"], rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_table_round_trip(tmp_path, linear: StudyResult, suffix: str) -> None:
    path = tmp_path / f"m{suffix}"
    write_table(linear.metrics, path)
    back = read_table(path)
    assert list(back.columns) == list(SCHEMA_COLUMNS)
    np.testing.assert_allclose(back.value.values, linear.metrics.value.values, equal_nan=True)
    assert list(back.reason) == list(linear.metrics.reason)


def test_table_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"must end in \.parquet or \.csv"):
        write_table(pd.DataFrame({"a": [1]}), tmp_path / "m.xlsx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_table(tmp_path / "missing.parquet")
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "other.csv")
    with pytest.raises(ValueError, match="not a bottleneck-probe results table"):
        read_table(tmp_path / "other.csv")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"families": ("spectrum", "magic")}, r"'families' parameter of StudyConfig .* Got \['magic'\]"),
        ({"reservoir_size": 3}, r"'reservoir_size' parameter of StudyConfig must be an int >= 10"),
        ({"n_images": 1}, r"'n_images' parameter of StudyConfig must be an int >= 2 or None"),
        ({"topology_maxdim": 4}, r"'topology_maxdim' parameter of StudyConfig must be one of \[1, 2\]"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StudyConfig(**kwargs)


def test_dead_fraction_from_counts_at_every_position_when_the_capture_has_them() -> None:
    from types import SimpleNamespace

    from analysis.spectrum import MetricValue
    from analysis.study import _full_activity

    sampled = {"dead_fraction": MetricValue(0.5), "rare_fraction": MetricValue(0.5)}
    # unit 1 is active at 3 of 1000 positions: dead in a sample, alive over every position
    extent = SimpleNamespace(active=np.array([0, 3, 500, 900]), n_points=1000)
    full = _full_activity(SimpleNamespace(extent=extent), sampled, sampled=True)
    assert full["dead_fraction"] == MetricValue(0.25) and full["rare_fraction"] == MetricValue(0.5)
    bound = _full_activity(SimpleNamespace(extent=None), sampled, sampled=True)
    assert bound["dead_fraction"].value == 0.5 and bound["dead_fraction"].reason.startswith("upper bound")
    assert _full_activity(SimpleNamespace(), sampled, sampled=False) == {}


def test_equal_reservoirs_share_one_cloud_id() -> None:
    from analysis.study import _cloud_id

    ids: dict = {}
    clouds: list = []
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    b = a.copy()
    b[1, 1] = 99.0  # same first and last row: a candidate, told apart by the whole comparison
    z = np.zeros((4, 3), np.float32)
    got = [_cloud_id(ids, clouds, x) for x in (a, a.copy(), b, z, -z, b.copy(), a[:, :2])]
    # -0.0 and 0.0 differ in their bytes: not shared (equal values would give equal metrics anyway)
    assert got == [0, 0, 1, 2, 3, 1, 4]


def test_topology_and_dimension_run_once_per_distinct_reservoir(monkeypatch) -> None:
    import analysis.topology as topo

    calls: list[int] = []
    real = topo.persistent_homology

    def counting(points, **kw):  # noqa: ANN001, ANN202
        calls.append(len(points))
        return real(points, **kw)

    monkeypatch.setattr(topo, "persistent_homology", counting)
    cfg = StudyConfig(n_images=24, reservoir_size=120, topology_points=40, moment_positions=8,
                      families=("topology", "dimension"))
    res = run_study(_zoo("digits-linear-s0"), cfg, progress=False)
    df = res.metrics
    # one ripser run per distinct reservoir: as many as the groups of points that agree on every
    # metric of the cloud alone (the distances to the block input depend on the block too)
    own = df[~df.metric.str.endswith("_to_input_h1")]
    wide = own.pivot_table(index="point", columns="metric", values="value", dropna=False)
    assert len(calls) == len(wide.drop_duplicates()) < df.point.nunique()
    # a linear projection's pre-activation and its output hold the same reservoir
    for metric in ("betti1", "total_persistence_h1", "twonn_id", "mle_id"):
        pre, out = _value(df, "blocks.1.project.pre", metric), _value(df, "blocks.1.project", metric)
        assert pre.value == out.value


def test_topology_alone_equals_topology_beside_the_dimension() -> None:
    # beside the dimension family the cloud's distance matrix is computed once and shared;
    # topology alone computes only the rows its greedy subsample picks, equal bit for bit
    base = {"n_images": 24, "reservoir_size": 120, "topology_points": 40, "moment_positions": 8}
    alone = run_study(_zoo("digits-linear-s0"), StudyConfig(**base, families=("topology",)), progress=False).metrics
    both = run_study(_zoo("digits-linear-s0"), StudyConfig(**base, families=("topology", "dimension")),
                     progress=False).metrics
    both = both[both.metric.isin(set(alone.metric))]
    key = ["point", "metric"]
    alone, both = alone.sort_values(key).reset_index(drop=True), both.sort_values(key).reset_index(drop=True)
    assert len(alone) > 50 and alone[key].equals(both[key])
    np.testing.assert_array_equal(alone["value"].to_numpy(float), both["value"].to_numpy(float))


def test_metric_jobs_in_threads_give_the_in_order_table(relu6: StudyResult, monkeypatch) -> None:
    # compute_metrics(workers=2) computes the Lemma-2 test, the reconstruction and the quantisation
    # family (with its redraws) in a thread pool; with BLAS on one thread the table must be the
    # in-order one (workers=1) row for row and bit for bit, and the BLAS pools are restored after
    import threading

    from threadpoolctl import threadpool_info, threadpool_limits

    import analysis.study as study
    from probes.blocks import find_blocks
    from probes.loading import load_checkpoint

    loaded = load_checkpoint(_zoo("digits-relu6-s0"))
    stream = study._study_stream(SMALL, loaded.input_spec, loaded.preset.get("resize_size"))
    blocks = find_blocks(loaded.model, stream[0][None])
    threads: set[str] = set()
    job = study._quantization_job

    def recording(*args):
        threads.add(threading.current_thread().name)
        return job(*args)

    monkeypatch.setattr(study, "_quantization_job", recording)
    tables = {}
    # every family the probe supports: topology and dimension run in this thread meanwhile
    config = dataclasses.replace(SMALL, families=tuple(f for f in study.FAMILIES if f != "information"))
    with threadpool_limits(limits=1):
        before = threadpool_info()
        for workers in (1, 2):
            rows, details = study.compute_metrics(relu6.probe, loaded.model, blocks, config, progress=False,
                                                  workers=workers)
            tables[workers] = pd.DataFrame(rows)
        assert threadpool_info() == before
    assert threads == {threading.current_thread().name} | {n for n in threads if n.startswith("bnprobe-metrics")}
    assert any(n.startswith("bnprobe-metrics") for n in threads)
    one, two = tables[1], tables[2]
    # in order: the rows of run_study's families come in run_study's order (workers=1 by default here)
    assert "twonn_id" in set(one.metric) and "betti1" in set(one.metric)
    mine = one[one.metric.isin(set(relu6.metrics.metric))]
    assert list(zip(mine.point, mine.metric)) == list(zip(relu6.metrics.point, relu6.metrics.metric))
    for metric in ("lemma2_invertible_fraction", "recon_error_exact", "recon_error_knn", "int8_sqnr_db_ci_low"):
        assert one[one.metric == metric].value.notna().any(), metric
    assert one.equals(two)
    with pytest.raises(ValueError, match="'workers' parameter of compute_metrics must be an int >= 1"):
        study.compute_metrics(relu6.probe, loaded.model, blocks, SMALL, progress=False, workers=0)
