"""Batch reports (analysis/report/): config validation, tables, figures, jobs, resume, Dask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from analysis import report as rp
from analysis.report import charts, vocabulary
from analysis.report import config as rp_config
from probes._io import sha256_file
from probes.zoo import ZooConfig, build_model

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "analysis" / "configs"
TINY_INPUT = {"size": 32, "channels": 1, "mean": [0.3], "std": [0.4], "interpolation": "bilinear"}

# Tiny, fast study settings: one block's points, 8 images, the spectrum family only.
BASE: dict[str, dict[str, Any]] = {
    "report": {"title": "Tiny", "formats": ["svg", "png"]},
    "datasets": {"names": ["digits"]},
    "study": {"n_images": 8, "points": "blocks.1.*", "families": ["spectrum"], "reservoir_size": 20,
              "moment_positions": 4},
    "figures": {"designs": ["linear", "relu6"], "depth_metrics": ["effective_rank_frac"],
                "depth_stages": ["project"]},
    "tables": {"metrics": ["effective_rank_frac", "rank_frac"], "stages": ["expand", "project"]},
    "spiral": {"enabled": False},
}


def _toml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)  # strings, numbers and booleans are spelt alike in JSON and TOML


def _config(folder: Path, files: list[Any], override: dict[str, dict[str, Any]] | None = None) -> Path:
    """Write a TOML config: BASE, the checkpoint files, then ``override`` merged per section."""
    sections = {name: dict(table) for name, table in BASE.items()}
    sections["checkpoints"] = {"files": files}
    for name, table in (override or {}).items():
        sections.setdefault(name, {}).update(table)
    text = "".join(f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in table.items()) + "\n"
                   for name, table in sections.items())
    path = folder / "cfg.toml"
    path.write_text(text)
    return path


@pytest.fixture
def all_families(monkeypatch: pytest.MonkeyPatch) -> None:
    """Config-only tests: treat every metric family's code as installed (no study runs)."""
    from analysis.study import FAMILIES

    monkeypatch.setattr(rp_config, "_FAMILY_FUNCTIONS", {f: ("analysis.study", "run_study") for f in FAMILIES})


def _write_tiny(folder: Path, name: str, *, design: str, seed: int, accuracy: float = 0.9) -> Path:
    """A random-weight zoo checkpoint + card, written like probes/train.py does."""
    config = ZooConfig(bottleneck_act=design, input_size=32, num_classes=10, width_mult=0.35,
                       head_channels=32, in_channels=1)
    torch.manual_seed(seed)
    model = build_model(config)
    path = folder / f"{name}.safetensors"
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(path))
    card = {"name": name, "design": design, "seed": seed, "test_accuracy": accuracy,
            "architecture": {"family": "zoo", "config": config.to_dict()},
            "dataset": {"name": "digits"}, "input": TINY_INPUT, "weights_file": path.name,
            "sha256": sha256_file(path)}
    (folder / f"{name}.json").write_text(json.dumps(card))
    return path


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_zoo")
    _write_tiny(folder, "digits-linear-s0", design="linear", seed=0, accuracy=0.91)
    _write_tiny(folder, "digits-linear-s1", design="linear", seed=1, accuracy=0.93)
    _write_tiny(folder, "digits-relu6-s0", design="relu6", seed=0, accuracy=0.88)
    return folder


def _files(zoo: Path, *names: str) -> list[str]:
    return [str(zoo / f"{n}.safetensors") for n in names]


# ============================================================================ config validation


def test_shipped_configs_use_only_known_keys() -> None:
    for name in ("paper.toml", "smoke.toml"):
        raw = tomllib.loads((CONFIGS / name).read_text())
        assert set(raw) <= set(rp_config._SECTIONS), name
        for section, table in raw.items():
            assert set(table) <= set(rp_config._SECTIONS[section]), (name, section)


def test_smoke_config_resolves_on_the_shipped_checkpoints() -> None:
    from probes.catalogue import list_checkpoints

    if not any(c["name"].endswith(("-linear-s0", "-relu6-s0")) for c in list_checkpoints()):
        pytest.fail("no shipped *-linear-s0 / *-relu6-s0 checkpoint in checkpoints/")
    config = rp.load_config(CONFIGS / "smoke.toml")
    assert config.study.families == ("spectrum", "activity")
    assert config.study.n_images == 16 and config.spiral is None
    jobs, _ = rp.plan_jobs(config)
    # pairing = "trained": every shipped checkpoint runs only on the dataset it was trained on
    assert all(j.dataset == j.checkpoint.trained_on for j in jobs)


def test_config_maps_onto_study_config(tmp_path: Path, tiny_zoo: Path, all_families: None) -> None:
    override = {"study": {"seed": 3, "split": "train", "families": ["topology", "spectrum"]},
                "topology": {"points": 30, "maxdim": 2}}
    config = rp.load_config(_config(tmp_path, _files(tiny_zoo, "digits-linear-s0"), override))
    st = config.study
    assert (st.seed, st.split, st.topology_points, st.topology_maxdim) == (3, "train", 30, 2)
    assert st.families == ("spectrum", "topology")  # canonical order of analysis.study.FAMILIES
    assert st.points == "blocks.1.*" and st.reservoir_size == 20 and st.dataset == "digits"
    assert [c.name for c in config.checkpoints] == ["digits-linear-s0"]
    assert config.checkpoints[0].sha256 == sha256_file(tiny_zoo / "digits-linear-s0.safetensors")
    jobs, notes = rp.plan_jobs(config)
    assert [j.study.dataset for j in jobs] == ["digits"] and notes == []


def test_job_ids_are_file_safe_and_change_with_the_settings(tmp_path: Path, tiny_zoo: Path) -> None:
    _write_tiny(tmp_path, "net v1.2", design="linear", seed=0)
    files = [str(tmp_path / "net v1.2.safetensors")]
    (a,), _ = rp.plan_jobs(rp.load_config(_config(tmp_path, files)))
    (b,), _ = rp.plan_jobs(rp.load_config(_config(tmp_path, files, {"study": {"seed": 1}})))
    assert a.job_id.startswith("net_v1_2--digits--") and "." not in a.job_id
    assert a.job_id != b.job_id


@pytest.mark.parametrize("section, key, value, message", [
    ("study", "famlies", ["spectrum"],
     r"unknown key 'study.famlies'. Allowed keys of \[study\]: batch_size, families, gray_to_rgb"),
    ("plots", "x", 1, r"unknown key 'plots'. Allowed keys of the top level: checkpoints, claims, compare, datasets, decoder"),
    ("decoder", "alpha", 1.0, r"unknown key 'decoder.alpha'. Allowed keys of \[decoder\]"),
    ("study", "split", "val", r"'study.split' must be one of \['train', 'test', 'all'\]. Got 'val' instead"),
    ("study", "families", ["spectrum", "colour"],
     r"'study.families' must be a non-empty list of names from \['spectrum', 'activity', .*Got \['colour'\] "
     r"instead"),
    ("study", "n_images", 1, r"'study.n_images' must be an int >= 2 or None. Got 1 instead"),
    ("study", "reservoir_size", "many", r"'study.reservoir_size' must be an int >= 10. Got 'many'"),
    ("study", "rtol", 2.0, r"'study.rtol' must be a float in \(0, 1\). Got 2.0 instead"),
    ("study", "sample_unit", "pixel", r"'study.sample_unit' must be one of \['position', 'image'\]"),
    ("study", "points", [], r"'study.points' must be a capture-point name or glob .*Got \[\] instead"),
    ("topology", "maxdim", 3, r"'topology.maxdim' must be one of \[1, 2\]. Got 3 instead"),
    ("datasets", "pairing", "some", r"'datasets.pairing' must be one of \['trained', 'all'\]"),
    ("datasets", "names", ["mnist"], r"'datasets.names' must be built-in names \['digits', 'shapes', 'natural'\]"),
    ("report", "formats", ["gif"],
     r"'report.formats' must be a list of names from \['svg', 'png', 'pdf'\]. Got \['gif'\]"),
    ("report", "formats", ["pdf"], r"'report.formats' must be a list with 'svg' or 'png'"),
    ("tables", "metrics", ["betti1"],
     r"'tables.metrics' must be metrics of the computed families \['spectrum'\]; 'betti1' needs 'topology'"),
    ("figures", "depth_metrics", ["accuracy"], r"'figures.depth_metrics' must be metric names"),
    ("figures", "depth_stages", ["middle"],
     r"'figures.depth_stages' must be a list of names from \['input', 'expand', 'depthwise', 'project'"),
    ("topology", "diagrams", ["block3.project"], r"'topology.diagrams' must be capture point names like"),
    ("topology", "diagrams", ["blocks.3.project"], r"'topology.diagrams' must be empty unless 'topology'"),
    ("spiral", "activation", "tanh", r"'spiral.activation' must be one of \['linear', 'relu6', 'relu'"),
    ("spiral", "dims", [], r"'spiral.dims' must be a non-empty list of integers >= 2. Got \[\] instead"),
])
def test_bad_config_names_the_key_and_the_allowed_values(tmp_path: Path, tiny_zoo: Path, section: str,
                                                          key: str, value: Any, message: str,
                                                          all_families: None) -> None:
    path = _config(tmp_path, _files(tiny_zoo, "digits-linear-s0"), {section: {key: value}})
    with pytest.raises(ValueError, match=message):
        rp.load_config(path)


@pytest.mark.parametrize("files, message", [
    (["missing/*.safetensors"], r"'checkpoints.files\[0\].path' must be a glob that matches at least one"),
    (["nowhere.safetensors"], r"'checkpoints.files\[0\].path' must be an existing weights file"),
    ([{"path": "x.pth", "arch": "torchvision:mobilenet_v9"}],
     r"'checkpoints.files\[0\].arch' must be a torchvision model name"),
    ([{"path": "x.pth", "arch": "torchvision:mobilenet_v2", "size": 4}],
     r"'checkpoints.files\[0\].size' must be an integer >= 8. Got 4"),
    ([{"path": "x.pth", "weights": 1}], r"unknown key 'checkpoints.files\[0\].weights'. Allowed keys of "
                                        r"\[checkpoints.files\[0\]\]: arch, gray_to_rgb, mean, path, size, std"),
    (["x.pth"], r"'checkpoints.files\[0\].arch' must be given for a file without a zoo card"),
])
def test_bad_checkpoint_entries(tmp_path: Path, files: list[Any], message: str) -> None:
    (tmp_path / "x.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=message):
        rp.load_config(_config(tmp_path, files))


def test_duplicate_checkpoint_names_are_refused(tmp_path: Path, tiny_zoo: Path) -> None:
    other = tmp_path / "copy"
    other.mkdir()
    for suffix in (".safetensors", ".json"):
        (other / f"digits-linear-s0{suffix}").write_bytes((tiny_zoo / f"digits-linear-s0{suffix}").read_bytes())
    files = _files(tiny_zoo, "digits-linear-s0") + [str(other / "digits-linear-s0.safetensors")]
    with pytest.raises(ValueError, match=r"'checkpoints' must be checkpoints with distinct names. "
                                         r"Got 'digits-linear-s0 \("):
        rp.load_config(_config(tmp_path, files))


def test_family_without_code_is_refused(tmp_path: Path, tiny_zoo: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(rp_config._FAMILY_FUNCTIONS, "spectrum", ("analysis.no_such_module", "spectrum_metrics"))
    with pytest.raises(ValueError, match=r"'study.families' must be families whose code is installed; "
                                         r"not available: spectrum \(needs analysis.no_such_module"):
        rp.load_config(_config(tmp_path, _files(tiny_zoo, "digits-linear-s0")))


def test_unknown_zoo_name_lists_the_shipped_ones(tmp_path: Path, all_families: None) -> None:
    path = tmp_path / "cfg.toml"
    path.write_text('[checkpoints]\nzoo = ["digits-sigmoid-s0"]\n')
    with pytest.raises(ValueError, match=r"'checkpoints.zoo' must be zoo names or globs; shipped "
                                         r"checkpoints are \[.*\]. Got 'digits-sigmoid-s0' instead"):
        rp.load_config(path)


def test_bad_config_fails_before_any_work(tmp_path: Path, tiny_zoo: Path) -> None:
    path = _config(tmp_path, _files(tiny_zoo, "digits-linear-s0"), {"decoder": {"k": 3}})
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"unknown key 'decoder.k'"):
        rp.run_report(path, out, workers=1)
    assert not out.exists()


def test_bad_workers_and_scheduler(tmp_path: Path, tiny_zoo: Path) -> None:
    path = _config(tmp_path, _files(tiny_zoo, "digits-linear-s0"))
    with pytest.raises(ValueError, match=r"The 'workers' parameter of run_report must be an int >= 1. Got 0"):
        rp.run_report(path, tmp_path / "out", workers=0)
    with pytest.raises(ValueError, match=r"The 'scheduler' parameter of run_report must be a Dask"):
        rp.run_report(path, tmp_path / "out", scheduler=" ")


def test_metric_family() -> None:
    assert [rp.metric_family(m) for m in ("rank_frac", "dead_fraction", "recon_r2_knn", "betti1",
                                          "twonn_id", "cka_to_input", "int8_sqnr_db", "accuracy")] == \
        ["spectrum", "activity", "reconstruction", "topology", "dimension", "similarity", "quantization", None]


# ================================================================================ tables


def _tidy(rows: list[tuple[str, int, str, str, float]]) -> pd.DataFrame:
    """Rows (design, seed, stage, metric, value) over two blocks (value, value + 0.2)."""
    out = []
    for design, seed, stage, metric, value in rows:
        for block, delta in ((0, 0.0), (1, 0.2)):
            out.append({"checkpoint": f"d-{design}-s{seed}", "design": design, "seed": seed,
                        "dataset": "digits", "block": block, "point": f"blocks.{block}.{stage}",
                        "stage": stage, "pre": False, "metric": metric, "value": value + delta})
    return pd.DataFrame(out)


def test_metrics_table_means_over_blocks_then_seeds() -> None:
    df = _tidy([("relu6", 0, "project", "effective_rank_frac", 0.3), ("relu6", 1, "project", "effective_rank_frac", 0.5),
                ("linear", 0, "project", "effective_rank_frac", 0.6), ("linear", 1, "project", "effective_rank_frac", 0.8)])
    summary = rp.metrics_table(df, metrics=["effective_rank_frac"], stages=["project"])
    assert list(summary["design"]) == ["linear", "relu6"]  # fixed design order: linear first
    # per checkpoint: block mean = value + 0.1; over seeds: mean of (0.7, 0.9), std = 0.1 * sqrt(2)
    np.testing.assert_allclose(summary["mean"], [0.8, 0.5])
    np.testing.assert_allclose(summary["std"], [np.sqrt(0.02)] * 2)
    assert list(summary["n"]) == [2, 2]


def test_latex_table_booktabs_bold_best_and_escaped() -> None:
    df = _tidy([("linear", 0, "project", "effective_rank_frac", 0.6), ("linear", 1, "project", "effective_rank_frac", 0.8),
                ("relu6", 0, "project", "effective_rank_frac", 0.3), ("relu6", 1, "project", "effective_rank_frac", 0.5),
                ("linear", 0, "project", "recon_error_linear", 0.4), ("linear", 1, "project", "recon_error_linear", 0.4),
                ("relu6", 0, "project", "recon_error_linear", 0.1), ("relu6", 1, "project", "recon_error_linear", 0.3),
                ("shortcut_none", 0, "expand", "betti1", 2.0)])
    summary = rp.metrics_table(df, metrics=["effective_rank_frac", "recon_error_linear", "betti1"],
                               stages=["expand", "project"])
    tex = rp.table_to_latex(summary, caption="digits")
    lines = tex.splitlines()
    assert lines[0].startswith("%") and "booktabs" in lines[0] and lines[1] == "% digits"
    assert lines[2] == r"\begin{tabular}{llccc}"
    assert lines[3:6] == [r"\toprule", r"Stage & Metric & linear & relu6 & shortcut\_none \\", r"\midrule"]
    # betti1 has no "better" direction: no bold; single seed: mean only; undefined: --
    assert lines[6] == r"expand & betti1 & -- & -- & $2.10$ \\"
    assert lines[7] == r"\midrule"
    # higher effective rank is better (linear), lower reconstruction error is better (relu6)
    assert lines[8] == (r"project & effective\_rank\_frac & $\mathbf{0.800 \pm 0.141}$ & "
                        r"$0.500 \pm 0.141$ & -- \\")
    assert lines[9] == (r"project & recon\_error\_linear & $0.500 \pm 0.000$ & "
                        r"$\mathbf{0.300 \pm 0.141}$ & -- \\")
    assert lines[-2:] == [r"\bottomrule", r"\end{tabular}"]
    md = rp.table_to_markdown(summary)
    assert "| project | `effective_rank_frac` | **0.800 \u00b1 0.141** | 0.500 \u00b1 0.141 | -- |" in md


def test_accuracy_table_in_percent() -> None:
    cards = pd.DataFrame({"checkpoint": ["a", "b", "c"], "design": ["relu6", "linear", "linear"],
                          "dataset": ["digits"] * 3, "seed": [0, 0, 1], "test_accuracy": [0.9, 0.95, 0.97]})
    tex = rp.table_to_latex(rp.accuracy_table(cards), row_title="Dataset")
    assert r"Dataset & Metric & linear & relu6 \\" in tex
    assert r"digits & test\_accuracy & $\mathbf{96.0 \pm 1.4}$ & $90.0$ \\" in tex


# =============================================================================== figures


def _synthetic_job() -> tuple[pd.DataFrame, dict[str, Any]]:
    rows = []
    for design in ("linear", "relu6"):
        for seed in (0, 1):
            for block in (0, 1, 2):
                for stage, metric, value in (("project", "effective_rank_frac", 0.5 + 0.1 * seed),
                                             ("expand", "positive_min", 3.0), ("expand", "positive_mean", 8.0),
                                             ("expand", "positive_max", 12.0),
                                             ("depthwise", "positive_mean", 7.0)):
                    rows.append({"checkpoint": f"digits-{design}-s{seed}", "design": design, "seed": seed,
                                 "dataset": "digits", "block": block, "point": f"blocks.{block}.{stage}",
                                 "stage": stage, "pre": False, "metric": metric, "value": value,
                                 "reason": "", "block_in": 4, "block_hidden": 24, "act": "relu6",
                                 "_job": f"job-{design}-{seed}"})
    diagrams = {f"job-{d}-0": {"blocks.1.project": {"diagram_h0": np.array([[0.0, 0.5], [0.0, np.inf]]),
                                                    "diagram_h1": np.array([[0.2, 0.6]])}}
                for d in ("linear", "relu6")}
    return pd.DataFrame(rows), diagrams


def test_report_figures_are_valid_vega_lite_with_expected_encodings(tmp_path: Path, tiny_zoo: Path,
                                                                    all_families: None) -> None:
    override = {"study": {"families": ["spectrum", "activity", "topology"]},
                "topology": {"diagrams": ["blocks.1.project"]}}
    config = rp.load_config(_config(tmp_path, _files(tiny_zoo, "digits-linear-s0", "digits-relu6-s0"), override))
    metrics, details = _synthetic_job()
    charts, notes = rp.report_figures(metrics, details, vocabulary._cards_frame(config), config)
    by_name = {name: chart.to_dict() for name, _, chart in charts}  # to_dict validates the schema
    assert sorted(by_name) == ["accuracy", "depth-effective_rank_frac-project", "diagram-digits-blocks_1_project",
                               "paired-digits-project", "positive-digits-linear", "positive-digits-relu6"]
    assert notes == []
    # both designs have the same values: the paired difference is 0 in every block, never significant
    paired = by_name["paired-digits-project"]
    rows = pd.DataFrame(next(v for v in paired["datasets"].values() if v and "mean_diff" in v[0]))
    assert sorted(rows["block"]) == [0, 1, 2] and (rows["mean_diff"] == 0).all()
    assert set(rows["verdict"]) == {"no significant difference"}
    depth = by_name["depth-effective_rank_frac-project"]
    enc = [layer["encoding"] for layer in depth["layer"]]
    assert all(e["x"]["field"] == "block" and e["color"]["field"] == "design" for e in enc)
    assert {e["y"]["field"] for e in enc} == {"mean", "lo"}
    assert depth["layer"][0]["encoding"]["y"]["title"] == "Effective rank / C"
    data = pd.DataFrame(depth["datasets"][depth["data"]["name"]])
    np.testing.assert_allclose(sorted(set(data["mean"])), [0.55])  # mean over seeds 0.5, 0.6
    positive = json.dumps(by_name["positive-digits-relu6"])
    assert "threshold C_in (Lemma 2)" in positive and "Active channels per point (count)" in positive
    diagram = by_name["diagram-digits-blocks_1_project"]
    assert len(diagram["hconcat"]) == 2 and diagram["title"]["text"].startswith("Persistence diagrams")
    acc = json.dumps(by_name["accuracy"])
    assert "Test accuracy (%)" in acc


# ====================================================================== end-to-end runs


def _run(config: Path, out: Path, **kw: Any) -> int:
    return rp.run_report(config, out, progress=False, **kw)


@pytest.fixture(scope="module")
def serial_run(tiny_zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    folder = tmp_path_factory.mktemp("serial")
    config = _config(folder, _files(tiny_zoo, "digits-linear-s0", "digits-linear-s1", "digits-relu6-s0"))
    out = folder / "out"
    return config, out, _run(config, out, workers=1)


def test_report_writes_the_full_folder(serial_run: tuple[Path, Path, int]) -> None:
    config, out, status = serial_run
    assert status == 0
    for name in ("metrics.parquet", "metrics.csv", "report.md", "report.html", "provenance.json",
                 "tables/metrics-digits.tex", "tables/accuracy.tex", "figures/accuracy.svg",
                 "figures/accuracy.png", "figures/depth-effective_rank_frac-project.svg",
                 "figures/depth-effective_rank_frac-project.png"):
        assert (out / name).is_file(), name
    assert not (out / "figures" / "accuracy.pdf").exists()  # formats = ["svg", "png"]
    assert len(list((out / "jobs").glob("*.parquet"))) == 3
    assert not list(out.rglob(".*.tmp"))


def test_metrics_follow_the_schema_in_job_order(serial_run: tuple[Path, Path, int]) -> None:
    from analysis.study import SCHEMA_COLUMNS, read_table

    _, out, _ = serial_run
    df = read_table(out / "metrics.parquet")
    assert tuple(df.columns) == SCHEMA_COLUMNS
    assert list(pd.unique(df["checkpoint"])) == ["digits-linear-s0", "digits-linear-s1", "digits-relu6-s0"]
    assert set(df["point"].str.split(".").str[1]) == {"1"}
    assert set(df["dataset"]) == {"digits"}
    csv = pd.read_csv(out / "metrics.csv")
    pd.testing.assert_frame_equal(csv[["checkpoint", "point", "metric"]], df[["checkpoint", "point", "metric"]])
    np.testing.assert_allclose(csv["value"], df["value"], rtol=1e-15, equal_nan=True)


def test_provenance(serial_run: tuple[Path, Path, int], tiny_zoo: Path) -> None:
    config, out, _ = serial_run
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config_sha256"] == sha256_file(config)
    assert prov["config"]["study"]["families"] == ["spectrum"]
    assert prov["jobs"]["total"] == 3 and prov["jobs"]["computed"] == 3 and prov["jobs"]["cached"] == 0
    shas = {c["name"]: c["sha256"] for c in prov["checkpoints"]}
    assert shas["digits-relu6-s0"] == sha256_file(tiny_zoo / "digits-relu6-s0.safetensors")
    assert prov["seeds"] == {"study": 0, "checkpoints": [0, 1], "spiral": []}
    assert prov["versions"]["torch"] == torch.__version__.split("+")[0] or prov["versions"]["torch"].startswith(
        torch.__version__.split("+")[0])
    assert set(prov["git"]) == {"commit", "dirty"}
    assert prov["git"]["commit"] is None or len(prov["git"]["commit"]) == 40
    assert prov["timings"]["total_s"] > 0


def test_report_html_is_self_contained(serial_run: tuple[Path, Path, int]) -> None:
    _, out, _ = serial_run
    page = (out / "report.html").read_text()
    assert page.count('<img src="data:image/svg+xml;base64,') == 3  # accuracy, one depth curve, paired diffs
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "<table>" in page and "effective_rank_frac" in page
    md = (out / "report.md").read_text()
    assert "![" in md and "figures/accuracy.png" in md and "3 jobs" in md


def test_rerun_reuses_jobs_and_gives_identical_metrics(serial_run: tuple[Path, Path, int]) -> None:
    config, out, _ = serial_run
    before = (out / "metrics.parquet").read_bytes(), (out / "metrics.csv").read_bytes()
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "jobs").iterdir()}
    assert _run(config, out, workers=1) == 0
    assert ((out / "metrics.parquet").read_bytes(), (out / "metrics.csv").read_bytes()) == before
    assert {p.name: p.stat().st_mtime_ns for p in (out / "jobs").iterdir()} == mtimes
    prov = json.loads((out / "provenance.json").read_text())
    assert (prov["jobs"]["computed"], prov["jobs"]["cached"]) == (0, 3)


def test_failing_job_is_reported_and_the_others_complete(tmp_path: Path, tiny_zoo: Path) -> None:
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"\x00garbage, not a checkpoint")
    files = [str(tiny_zoo / "digits-linear-s0.safetensors"), {"path": str(bad), "arch": "torchvision:mobilenet_v2"}]
    out = tmp_path / "out"
    assert _run(_config(tmp_path, files), out, workers=1) == 1
    df = pd.read_parquet(out / "metrics.parquet")
    assert set(df["checkpoint"]) == {"digits-linear-s0"}
    md = (out / "report.md").read_text()
    assert "## Failures" in md and "**broken** on digits" in md
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["jobs"]["failed"] == 1 and "broken on digits" in prov["failures"][0]
    assert not list((out / "jobs").glob("broken*"))  # a failure is not cached: a rerun retries it


@pytest.mark.slow
def test_dask_cluster_equals_serial(serial_run: tuple[Path, Path, int], tmp_path: Path) -> None:
    from dask.distributed import LocalCluster

    config, serial_out, _ = serial_run
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        assert _run(config, tmp_path / "dask", scheduler=cluster.scheduler_address) == 0
    for name in ("metrics.parquet", "metrics.csv"):
        assert (tmp_path / "dask" / name).read_bytes() == (serial_out / name).read_bytes(), name


@pytest.mark.slow
def test_process_pool_equals_serial(serial_run: tuple[Path, Path, int], tmp_path: Path) -> None:
    config, serial_out, _ = serial_run
    assert _run(config, tmp_path / "pool", workers=2) == 0
    for name in ("metrics.parquet", "metrics.csv"):
        assert (tmp_path / "pool" / name).read_bytes() == (serial_out / name).read_bytes(), name


@pytest.mark.slow
def test_resume_after_sigkill(serial_run: tuple[Path, Path, int], tmp_path: Path) -> None:
    config, serial_out, _ = serial_run
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "analysis.cli", "report", str(config), "--out", str(out), "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "jobs").glob("*.npz")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.parquet").exists()
    done = {p.stem: p.stat().st_mtime_ns for p in (out / "jobs").glob("*.npz")}
    assert 1 <= len(done) < 3
    assert subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, timeout=300).returncode == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert (prov["jobs"]["cached"], prov["jobs"]["computed"]) == (len(done), 3 - len(done))
    assert {p.stem: p.stat().st_mtime_ns for p in (out / "jobs").glob("*.npz")
            if p.stem in done} == done
    assert not list(out.rglob(".*.tmp"))
    for name in ("metrics.parquet", "metrics.csv"):
        assert (out / name).read_bytes() == (serial_out / name).read_bytes(), name


def test_not_applicable_charts_are_recognised() -> None:
    from analysis import figures as F

    assert charts._message_of(F.message_chart("not applicable: linear output", title="t")) == \
        "not applicable: linear output"
    metrics, _ = _synthetic_job()
    assert charts._message_of(F.depth_curve(metrics, "effective_rank_frac", stage="project")) is None


def test_surgery_section(tmp_path: Path, tiny_zoo: Path) -> None:
    files = [str(tiny_zoo / "digits-linear-s0.safetensors")]
    assert rp.load_config(_config(tmp_path, files)).surgery is None  # off unless asked for
    on = rp.load_config(_config(tmp_path, files, {"surgery": {"enabled": True, "checkpoints": ["digits-relu6-s0"],
                                                              "blocks": [0, 3]}}))
    assert on.surgery == {"checkpoints": ("digits-relu6-s0",), "blocks": (0, 3)}
    with pytest.raises(ValueError, match=r"unknown key 'surgery.block'"):
        rp.load_config(_config(tmp_path, files, {"surgery": {"block": [0]}}))
    with pytest.raises(ValueError, match=r"'surgery.checkpoints' must be shipped zoo checkpoint names .*'nope'"):
        rp.load_config(_config(tmp_path, files, {"surgery": {"enabled": True, "checkpoints": ["nope"]}}))
