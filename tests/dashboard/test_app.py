"""Every dashboard page renders without exceptions and shows the fixture studies' numbers.

Pages are run one at a time with ``AppTest.from_function`` (the router's pages are callables,
which ``AppTest.switch_page`` cannot select); the router itself is run with ``from_file``.
Values are checked against the fixture's tidy metrics (see ``conftest.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "dashboard" / "streamlit_app.py"
TIMEOUT = 120


def _page(name: str, dataset: str) -> None:
    import importlib

    import streamlit as st

    st.session_state.setdefault("dataset", dataset)
    importlib.import_module(f"dashboard.views.{name}").render()


def run_page(name: str, dataset: str, **state: object) -> AppTest:
    at = AppTest.from_function(_page, args=(name, dataset), default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def charts(at: AppTest) -> list[dict]:
    """Vega-Lite specs of the page's charts, in page order."""
    return [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]


def chart_data(at: AppTest, index: int) -> pd.DataFrame:
    """The data rows of the page's chart ``index`` (Streamlit ships them as Arrow datasets)."""
    import pyarrow as pa

    proto = at.get("vega_lite_chart")[index].proto
    frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in proto.datasets]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def expected_means(metrics: pd.DataFrame, metric: str, stage: str, pre: bool = False) -> pd.Series:
    rows = metrics[(metrics["metric"] == metric) & (metrics["stage"] == stage) & (metrics["pre"] == pre)]
    rows = rows[np.isfinite(rows["value"])]
    return rows.groupby(["design", "block"])["value"].mean().groupby("design").mean()


# ------------------------------------------------------------------------------------ router


def test_router_opens_on_the_overview_with_the_dataset_picker(results_env) -> None:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert_clean(at)
    assert at.title[0].value == "Overview"
    picker = at.sidebar.selectbox(key="dataset")
    assert picker.options == ["digits", "shapes"]
    assert picker.value == results_env.dataset


# ---------------------------------------------------------------------------------- overview


def test_overview_reads_the_chart_out_in_numbers(results_env) -> None:
    at = run_page("overview", results_env.dataset)
    assert_clean(at)
    assert at.selectbox(key="overview-metric").value == "effective_rank_frac"
    assert at.selectbox(key="overview-stage").value == "project"
    means = expected_means(results_env.metrics, "effective_rank_frac", "project")
    text = at.markdown[0].value
    assert text.startswith("At the projection, effective rank / C averages")
    assert f"**linear** {means['linear']:.3g}" in text
    assert f"**relu6** {means['relu6']:.3g}" in text


def test_overview_depth_curve_holds_the_seed_means(results_env) -> None:
    at = run_page("overview", results_env.dataset)
    specs = charts(at)
    assert len(specs) == 2  # depth curve + accuracy per design
    data = chart_data(at, 0)
    rows = results_env.metrics
    rows = rows[(rows["metric"] == "effective_rank_frac") & (rows["stage"] == "project") & ~rows["pre"]]
    want = rows.groupby(["design", "block"])["value"].mean()
    got = data.set_index(["design", "block"])["mean"]
    pd.testing.assert_series_equal(got.sort_index(), want.sort_index(), check_names=False)


def test_overview_metric_change_redraws_the_chart(results_env) -> None:
    at = run_page("overview", results_env.dataset)
    at.selectbox(key="overview-metric").set_value("dead_fraction").run()
    assert_clean(at)
    # The stage is kept; a linear projection has no dead units, and the reading says so.
    assert at.selectbox(key="overview-stage").value == "project"
    means = expected_means(results_env.metrics, "dead_fraction", "project")
    assert list(means.index) == ["relu6"]
    assert f"**relu6** {means['relu6']:.3g}" in at.markdown[0].value
    assert "Not defined for linear at this stage." in at.markdown[0].value
    at.selectbox(key="overview-stage").set_value("expand").run()
    assert "Dead channels" in json.dumps(charts(at)[0])
    means = expected_means(results_env.metrics, "dead_fraction", "expand")
    assert f"**linear** {means['linear']:.3g} vs **relu6** {means['relu6']:.3g}" in at.markdown[0].value


def test_overview_accuracy_comes_from_the_cards(results_env) -> None:
    from dashboard.state import dataset_cards

    at = run_page("overview", results_env.dataset)
    data = chart_data(at, 1)
    cards = dataset_cards(results_env.dataset)
    lin = cards.loc[cards["design"] == "linear", "test_accuracy"].mean()
    got = data.dropna(subset=["mean"]).set_index("design")["mean"]
    assert got["linear"] == pytest.approx(100 * lin)


def test_overview_offers_to_compute_missing_studies(results_env, tmp_path: Path, monkeypatch) -> None:
    """With no stored study the page explains, and its button computes each missing one."""
    import shutil

    from dashboard import state

    empty = tmp_path / "results"
    empty.mkdir()
    monkeypatch.setenv(state.RESULTS_ENV, str(empty))
    computed = []

    def fake_compute(checkpoint: str, dataset: str) -> None:
        computed.append(checkpoint)
        if checkpoint in (results_env.linear, results_env.relu6):
            for suffix in (".parquet", ".npz"):
                stem = f"{checkpoint}--{dataset}{suffix}"
                shutil.copy(results_env.results_dir / stem, empty / stem)

    monkeypatch.setattr(state, "compute_shipped", fake_compute)
    at = run_page("overview", results_env.dataset)
    assert_clean(at)
    assert at.info[0].value.startswith(f"No precomputed studies on **{results_env.dataset}**")
    assert not charts(at)
    missing = list(state.dataset_cards(results_env.dataset)["checkpoint"])
    at.button(key=f"compute-{results_env.dataset}").click().run()
    assert_clean(at)
    assert computed == missing
    assert len(charts(at)) == 2


# ----------------------------------------------------------------------------- block explorer


def test_block_explorer_shows_all_views_of_a_block(results_env) -> None:
    at = run_page("block_explorer", results_env.dataset)
    assert_clean(at)
    assert at.selectbox(key="block-checkpoint").value == results_env.linear
    block = at.select_slider(key="block-block").value
    text = json.dumps(charts(at))
    assert len(charts(at)) == 4
    for title in (f"Covariance spectrum, block {block}", "Active channels per point",
                  f"Channel activity, block {block}", f"Reconstruction of the input of block {block}"):
        assert title in text
    m = results_env.metrics
    lemma = m[(m["checkpoint"] == results_env.linear) & (m["block"] == block)
              & (m["metric"] == "lemma2_invertible_fraction")]["value"]
    assert at.metric[0].value == f"{100 * float(lemma.mean()):.1f} %"


def test_block_explorer_block_change(results_env) -> None:
    at = run_page("block_explorer", results_env.dataset)
    blocks = at.select_slider(key="block-block").options
    at.select_slider(key="block-block").set_value(blocks[-1]).run()
    assert_clean(at)
    assert any(c.value.startswith(f"Block {blocks[-1]} of {results_env.linear}:") for c in at.caption)
    assert f"Covariance spectrum, block {blocks[-1]}" in json.dumps(charts(at)[0])


# ---------------------------------------------------------------------------------- topology


def test_topology_diagrams_betti_and_distances(results_env) -> None:
    at = run_page("topology", results_env.dataset)
    assert_clean(at)
    chosen = at.multiselect(key="topo-points").value
    assert chosen == ["input", "expand", "project"]
    specs = charts(at)
    assert len(specs) == 2 * len(chosen) + 2  # diagram + barcode per point, Betti, distance
    assert "Betti numbers across depth, project" in json.dumps(specs[-2])
    block = at.select_slider(key="topo-block").value
    table = at.dataframe[0].value
    m = results_env.metrics
    want = m[(m["block"] == block) & (m["point"] == f"blocks.{block}.project")
             & (m["metric"] == "bottleneck_to_input_h1") & (m["design"] == "relu6")]["value"].mean()
    assert table.loc["project", "bottleneck (relu6)"] == pytest.approx(want)


# -------------------------------------------------------------------------------- embeddings


@pytest.mark.slow
def test_embeddings_two_designs_side_by_side(results_env) -> None:
    at = run_page("embeddings", results_env.dataset, **{"emb-method": "PCA", "emb-images": 50})
    assert_clean(at)
    left, right = at.selectbox(key="emb-left").value, at.selectbox(key="emb-right").value
    assert "linear" in left and "relu6" in right
    point = at.selectbox(key="emb-point").value
    assert point.endswith(".project")
    specs = charts(at)
    assert len(specs) == 2
    for i, name in enumerate((left, right)):
        text = json.dumps(specs[i])
        assert f"{name}: {point}" in text and "% var." in text
        assert len(chart_data(at, i)) > 100
    assert at.caption[-1].value == at.caption[-2].value  # same inputs, same number of points
    at.radio(key="emb-unit").set_value("image").run()
    assert_clean(at)
    assert at.caption[-1].value.startswith("50 points of ")  # one pooled vector per test image
    assert at.caption[-1].value.endswith("from 50 images (one per image).")


# ------------------------------------------------------------------------------------ spiral


def test_spiral_lab_shows_figure_one_and_its_errors() -> None:
    from analysis.spiral import run_spiral

    at = run_page("spiral_lab", "digits", **{"spiral-dims": [2, 30]})
    assert_clean(at)
    assert len(charts(at)) == 2
    table = at.dataframe[0].value
    want, _ = run_spiral((2, 30), activation="relu", seeds=(0,))
    err = want.set_index(["n", "method"])["recon_error"]
    assert table.loc[30, "active-set inverse"] == pytest.approx(err[(30, "active_set")])
    assert table.loc[30, "active-set inverse"] < 1e-8 < table.loc[30, "pinv(T) act(Tx)"]
    assert table.loc[2, "Lemma-2 invertible"] < table.loc[30, "Lemma-2 invertible"]


def test_spiral_lab_without_dims_asks_for_one() -> None:
    at = run_page("spiral_lab", "digits", **{"spiral-dims": []})
    assert_clean(at)
    assert "Choose at least one" in at.info[0].value


# ----------------------------------------------------------------------------- probe a checkpoint


def test_probe_bad_file_gives_a_readable_message() -> None:
    at = run_page("probe_checkpoint", "digits")
    at.get("file_uploader")[0].set_value(("broken.pt", b"not a checkpoint", "application/octet-stream"))
    at.button(key="probe-run").click().run()
    assert not at.exception
    assert len(at.error) == 1
    assert at.error[0].value.startswith("Could not load the checkpoint:")
    assert "broken.pt" in at.error[0].value


def test_probe_architectures_come_from_a_fixed_list() -> None:
    at = run_page("probe_checkpoint", "digits", **{"probe-source": "Architecture with random weights"})
    options = at.selectbox(key="probe-arch-random").options
    assert options[0] == "torchvision:mobilenet_v2"
    assert {"torchvision:regnet_y_400mf", "timm:mobilenetv4_conv_small"} <= set(options)
    assert all(o.startswith(("torchvision:", "timm:")) for o in options)
    assert len(at.text_input) == 0  # nothing typed in reaches the loader


@pytest.mark.slow
def test_probe_uploaded_zoo_checkpoint_shows_overview_and_block(results_env) -> None:
    from checkpoints import CHECKPOINT_DIR

    name = results_env.linear
    at = run_page("probe_checkpoint", results_env.dataset,
                  **{"probe-images": 16, "probe-families": ["spectrum", "activity"]})
    uploaders = at.get("file_uploader")
    uploaders[0].set_value((f"{name}.safetensors", (CHECKPOINT_DIR / f"{name}.safetensors").read_bytes(),
                            "application/octet-stream"))
    uploaders[1].set_value((f"{name}.json", (CHECKPOINT_DIR / f"{name}.json").read_bytes(), "application/json"))
    at.button(key="probe-run").click().run()
    assert_clean(at)
    assert at.success[0].value.startswith(f"{name} (zoo) on {results_env.dataset}")
    assert len(charts(at)) >= 3  # depth curve, scree plot, histogram ...


# ----------------------------------------------------------------------------------- reports


def test_reports_browse_a_report_directory(results_env, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BNPROBE_REPORT_ROOT", str(tmp_path))
    results_env.metrics.to_parquet(tmp_path / "metrics.parquet", index=False)
    at = run_page("reports", results_env.dataset, **{"report-dir": str(tmp_path)})
    assert_clean(at)
    assert len(charts(at)) == 3  # depth curve, reconstruction, Figure 7
    means = expected_means(results_env.metrics, "effective_rank_frac", "project")
    assert f"**relu6** {means['relu6']:.3g}" in at.markdown[0].value


def test_reports_missing_directory_is_a_message(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BNPROBE_REPORT_ROOT", str(tmp_path))
    at = run_page("reports", "digits", **{"report-dir": str(tmp_path / "nope")})
    assert not at.exception
    assert at.error[0].value == "There is no folder 'nope' under the report root."
    (tmp_path / "empty").mkdir()
    at = run_page("reports", "digits", **{"report-dir": "empty"})
    assert at.error[0].value == "Could not open the report 'empty': Report directory 'empty' holds no metrics.parquet or metrics.csv."
