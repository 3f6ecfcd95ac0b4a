"""Fixtures of the dashboard tests: small real studies of two shipped checkpoints.

The studies are computed once with :func:`analysis.study.run_study` (40 test images, 200-point
reservoirs, 60-point topology subsamples) and cached in pytest's cache folder, keyed by the
weights' sha256 and the settings, so later runs only read them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

FIXTURE_CONFIG = {"n_images": 40, "reservoir_size": 200, "topology_points": 60}


@dataclasses.dataclass(frozen=True)
class Shipped:
    """A results folder with the studies of one linear and one relu6 checkpoint."""

    results_dir: Path
    dataset: str
    linear: str
    relu6: str
    metrics: pd.DataFrame


def _pair() -> tuple[str, str, str] | None:
    from probes.catalogue import list_checkpoints

    names = {c["name"]: c for c in list_checkpoints()}
    for dataset in ("digits", "shapes"):
        lin, relu = f"{dataset}-linear-s0", f"{dataset}-relu6-s0"
        if lin in names and relu in names:
            return dataset, lin, relu
    return None


@pytest.fixture(scope="session")
def shipped(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Shipped:
    from analysis.study import StudyConfig, run_study

    pair = _pair()
    if pair is None:
        pytest.fail("needs shipped checkpoints <dataset>-linear-s0 and <dataset>-relu6-s0 in checkpoints/")
    dataset, lin, relu = pair
    cache = Path(request.config.cache.mkdir("bnprobe-dashboard-studies"))
    out = tmp_path_factory.mktemp("results")
    frames = []
    for name in (lin, relu):
        result = run_study(name, StudyConfig(dataset=dataset, **FIXTURE_CONFIG), cache_dir=cache,
                           progress=False, device="cpu")
        result.save(out / f"{name}--{dataset}")
        frames.append(result.metrics)
    return Shipped(out, dataset, lin, relu, pd.concat(frames, ignore_index=True))


@pytest.fixture
def results_env(shipped: Shipped, monkeypatch: pytest.MonkeyPatch) -> Shipped:
    """``$BNPROBE_RESULTS_DIR`` points at the fixture studies for this test."""
    from dashboard.state import RESULTS_ENV

    monkeypatch.setenv(RESULTS_ENV, str(shipped.results_dir))
    return shipped
