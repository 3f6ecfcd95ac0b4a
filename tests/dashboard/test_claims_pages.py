"""The "Claims of the notes" and "What each design keeps" pages show the numbers of analysis.claims
and analysis.keeps (AppTest, fixture studies of ``conftest.py``)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.dashboard.test_app import assert_clean, charts, run_page


@pytest.fixture
def cache_env(results_env, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Model measurements and decoded inputs cached in pytest's cache folder (reused across runs)."""
    from pathlib import Path

    monkeypatch.setenv("BNPROBE_CACHE", str(Path(request.config.cache.mkdir("bnprobe-claims-cache"))))
    return results_env


def test_claims_page_shows_the_computed_scoreboard(cache_env, tmp_path, monkeypatch) -> None:
    from analysis.claims import scoreboard
    from dashboard.state import dataset_metrics
    from probes.catalogue import list_checkpoints

    monkeypatch.setenv("BNPROBE_CACHE", str(tmp_path))  # nothing measured yet: only studies and cards
    at = run_page("claims", cache_env.dataset)
    assert_clean(at)
    assert at.title[0].value == "Claims of the notes"
    shown = at.dataframe[0].value
    cards = [c for c in list_checkpoints() if c["dataset"]["name"] == cache_env.dataset and c["design"] in ("linear", "relu6")]
    want = scoreboard(dataset_metrics(cache_env.dataset), cards, None, dataset=cache_env.dataset)
    assert list(shown["verdict"]) == list(want["verdict"])
    assert list(shown["difference"]) == list(want["difference"])
    acc = shown[shown["measurement"].str.startswith("test accuracy")].iloc[0]
    lin = np.mean([c["test_accuracy"] for c in cards if c["design"] == "linear"])
    assert acc["linear"] == f"{lin:.3g}"
    # the fixture has one study per design: a paired interval over seeds is impossible, and said
    rank = shown[shown["measurement"].str.startswith("numerical rank")].iloc[0]
    assert rank["verdict"] == "not measurable here"
    assert at.button(key="claims-measure").label.startswith("Measure the missing checkpoints")
    assert len(charts(at)) == 1  # gradient figure (or the message chart saying why there is none)


def test_keeps_page_shows_maps_decoded_inputs_and_edge_scores(cache_env) -> None:
    pytest.importorskip("analysis.information", reason="the decoder comes from the information family")
    from analysis.keeps import decoded_inputs

    at = run_page("keeps", cache_env.dataset, **{"keeps-a": cache_env.linear, "keeps-b": cache_env.relu6})
    assert_clean(at)
    assert at.title[0].value == "What each design keeps"
    block = at.selectbox(key="keeps-block").value
    # channel maps of both checkpoints at every capture point of the block, the original, and one
    # decoded image per block and checkpoint
    captions = [img.caption for el in at.main if type(el).__name__ == "Image" for img in el.proto.imgs]
    maps = [c for c in captions if c.startswith(f"blocks.{block}.")]
    assert len(maps) >= 2 * 4 and maps[0] == f"blocks.{block}.input"
    assert "original (test image 0)" in captions
    scores_a, _ = decoded_inputs(cache_env.linear)
    assert captions.count("16") == 2  # the last block's decoded image, once per checkpoint
    table = at.dataframe[0].value
    got = table[f"highpass_r2 ({cache_env.linear})"].to_numpy()
    assert got == pytest.approx(np.round(scores_a.sort_values("block")["highpass_r2"].to_numpy(), 3))
    spec = json.dumps(charts(at)[0])
    assert "Edge detail of the decoded input per block" in spec
    at.selectbox(key="keeps-block").set_value(0 if block else 1).run()
    assert_clean(at)
