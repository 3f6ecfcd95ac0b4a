"""Chart builders return valid Vega-Lite with the expected encodings and the right numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import pytest

from analysis import figures as fg

BLOCK_IN = [8, 8, 8, 16, 16, 16, 24, 24, 24, 24, 32, 32, 32, 56, 56, 56, 56]
BLOCK_OUT = BLOCK_IN[1:] + [112]
EXPAND = [1] + [6] * 16
LINEAR_REASON = "not defined on a linear output"


def synthetic_results(n_blocks: int = 17, designs: tuple[str, ...] = ("linear", "relu6"),
                      seeds: tuple[int, ...] = (0, 1, 2), dataset: str = "digits") -> pd.DataFrame:
    """A tidy results frame shaped like the study's output, with smooth, seed-noisy values."""
    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    for design in designs:
        for seed in seeds:
            for b in range(n_blocks):
                c_in, c_out, t = BLOCK_IN[b % 17], BLOCK_OUT[b % 17], EXPAND[b % 17]
                hidden = t * c_in
                meta = dict(checkpoint=f"{dataset}-{design}-s{seed}", design=design,
                            bottleneck_act="linear" if design == "linear" else "relu6",
                            expand_ratio=float(t), shortcut="bottleneck", seed=seed,
                            dataset=dataset, block=b, stride=1, block_in=c_in,
                            block_hidden=hidden, block_out=c_out, has_residual=c_in == c_out,
                            n_points=512)
                for stage, pre, channels, act in (
                        ("input", False, c_in, "identity"), ("expand", True, hidden, "identity"),
                        ("expand", False, hidden, "relu6"), ("depthwise", True, hidden, "identity"),
                        ("depthwise", False, hidden, "relu6"), ("project", True, c_out, "identity"),
                        ("project", False, c_out, "linear" if design == "linear" else "relu6"),
                        ("output", False, c_out, "identity")):
                    if stage == "expand" and t == 1:
                        continue
                    point = f"blocks.{b}.{stage}" + (".pre" if pre else "")
                    drop = 0.0 if design == "linear" or stage != "project" or pre else 0.25
                    values = {
                        "rank_frac": 0.9 - 0.01 * b - drop + 0.02 * rng.standard_normal(),
                        "effective_rank_frac": 0.6 - 0.015 * b - drop + 0.02 * rng.standard_normal(),
                        "betti0": float(rng.integers(1, 4)),
                        "betti1": float(rng.integers(0, 3) + (design == "linear")),
                        "cka_to_input": 1.0 - 0.02 * b - drop + 0.01 * rng.standard_normal(),
                    }
                    reasons = {}
                    if act == "relu6" or act == "linear":
                        linear = act == "linear"
                        values["dead_fraction"] = np.nan if linear else 0.05 + 0.01 * b + drop
                        reasons["dead_fraction"] = LINEAR_REASON if linear else ""
                    if act == "relu6" and stage in ("expand", "depthwise"):
                        mean = hidden * (0.45 - 0.01 * b) + rng.normal(0, 0.5)
                        values.update(positive_min=mean * 0.4, positive_mean=mean,
                                      positive_max=min(hidden, mean * 1.5))
                    if stage != "input":
                        values.update(recon_error_linear=0.1 + 0.05 * (stage == "project") + drop,
                                      recon_error_knn=0.08 + 0.5 * drop,
                                      recon_error_exact=np.nan if pre or act != "relu6" else 0.01)
                        reasons["recon_error_exact"] = "" if not (pre or act != "relu6") else (
                            "no activation weights to invert")
                    for metric, value in values.items():
                        rows.append(dict(meta, point=point, stage=stage, pre=pre, metric=metric,
                                         value=float(value), reason=reasons.get(metric, ""),
                                         channels=channels, act=act))
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def tidy() -> pd.DataFrame:
    return synthetic_results()


def datasets(chart: Any) -> list[pd.DataFrame]:
    """All inline datasets of a chart's Vega-Lite dict (validated against the schema)."""
    spec = chart.to_dict()
    return [pd.DataFrame(v) for v in spec.get("datasets", {}).values()]


def walk(obj: Any):
    """Every dict nested anywhere in a Vega-Lite spec."""
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk(v)


def marks(spec: dict) -> list[str]:
    out = []
    for d in walk(spec):
        m = d.get("mark")
        if m is not None:
            out.append(m if isinstance(m, str) else m["type"])
    return out


def encoding_of(spec: dict, mark: str) -> dict:
    """Encoding of the first view drawing ``mark``."""
    for d in walk(spec):
        m = d.get("mark")
        if m is not None and (m if isinstance(m, str) else m["type"]) == mark:
            return d["encoding"]
    raise AssertionError(f"no {mark} mark")


def encodings(spec: dict) -> list[dict]:
    return [d["encoding"] for d in walk(spec) if "encoding" in d and "mark" in d]


# ---------------------------------------------------------------------------- depth_curve


def test_depth_curve_encodings(tidy):
    chart = fg.depth_curve(tidy, "effective_rank_frac")
    spec = chart.to_dict()
    assert isinstance(chart, alt.LayerChart)
    assert sorted(marks(spec)) == ["area", "line", "point"]
    for enc in encodings(spec):
        assert enc["x"]["field"] == "block"
        assert enc["color"]["field"] == "design"
    area = encoding_of(spec, "area")
    assert (area["y"]["field"], area["y2"]["field"]) == ("lo", "hi")
    y_titles = {e["y"].get("title") for e in encodings(spec) if "title" in e["y"]}
    assert y_titles == {"Effective rank / C"}
    color = encodings(spec)[0]["color"]["scale"]
    assert color["domain"] == ["linear", "relu6"]
    assert color["range"] == [fg.DESIGN_COLORS["linear"], fg.DESIGN_COLORS["relu6"]]


def test_depth_curve_mean_std_values():
    df = synthetic_results(n_blocks=2, designs=("linear",), seeds=(0, 1, 2))
    sel = (df.metric == "rank_frac") & (df.stage == "project") & (~df.pre)
    df.loc[sel & (df.block == 1), "value"] = np.array([0.1, 0.2, 0.4])
    (data,) = datasets(fg.depth_curve(df, "rank_frac"))
    row = data[data.block == 1].iloc[0]
    assert row["mean"] == pytest.approx(0.7 / 3)
    assert row["std"] == pytest.approx(np.std([0.1, 0.2, 0.4], ddof=1))
    assert row["n"] == 3
    assert row["lo"] == pytest.approx(row["mean"] - row["std"])
    assert row["hi"] == pytest.approx(row["mean"] + row["std"])


def test_depth_curve_skips_nan_and_names_missing_design(tidy):
    df = tidy.copy()
    mask = (df.metric == "rank_frac") & (df.design == "relu6") & (df.seed == 0)
    df.loc[mask, "value"] = np.nan
    (data,) = datasets(fg.depth_curve(df, "rank_frac"))
    assert set(data.loc[data.design == "relu6", "n"]) == {2}
    spec = fg.depth_curve(tidy, "dead_fraction").to_dict()
    assert any("not applicable for linear: " + LINEAR_REASON in s for s in spec["title"]["subtitle"])


def test_depth_curve_not_applicable_text(tidy):
    chart = fg.depth_curve(tidy, "dead_fraction", designs=["linear"])
    spec = chart.to_dict()
    assert marks(spec) == ["text"]
    (data,) = datasets(chart)
    assert data["message"].iloc[0].replace("\n", " ") == f"not applicable: {LINEAR_REASON}"


def test_depth_curve_absent_stage_says_so(tidy):
    chart = fg.depth_curve(tidy, "positive_mean", stage="project")
    (data,) = datasets(chart)
    assert "no values of positive_mean at stage project" in data["message"].iloc[0]


def test_depth_curve_one_seed_has_zero_width_band():
    df = synthetic_results(n_blocks=3, seeds=(0,))
    (data,) = datasets(fg.depth_curve(df, "rank_frac"))
    assert data["std"].isna().all()
    np.testing.assert_allclose(data["lo"], data["mean"])


def test_depth_curve_facets_datasets():
    df = pd.concat([synthetic_results(n_blocks=3), synthetic_results(n_blocks=3, dataset="shapes")])
    chart = fg.depth_curve(df, "rank_frac")
    spec = chart.to_dict()
    assert spec["facet"]["column"]["field"] == "dataset"


def test_depth_curve_bad_input(tidy):
    with pytest.raises(ValueError, match="The 'metric' parameter of depth_curve must be a metric "
                                         "present in df.*Got 'nope' instead"):
        fg.depth_curve(tidy, "nope")
    with pytest.raises(ValueError, match="The 'stage' parameter of depth_curve must be one of"):
        fg.depth_curve(tidy, "rank_frac", stage="middle")
    with pytest.raises(ValueError, match=r"must have columns .*missing \['metric'\]"):
        fg.depth_curve(tidy.drop(columns="metric"), "rank_frac")


def test_unknown_designs_get_fallback_colours():
    assert fg.design_colors(["zeta", "relu6", "alpha"]) == {
        "relu6": fg.DESIGN_COLORS["relu6"], "alpha": fg.FALLBACK_COLORS[0],
        "zeta": fg.FALLBACK_COLORS[1]}
    assert len(set(fg.DESIGN_COLORS.values())) == len(fg.DESIGN_COLORS)


def test_betti_curve_two_panels(tidy):
    spec = fg.betti_curve(tidy).to_dict()
    assert len(spec["hconcat"]) == 2
    titles = {e["y"]["title"] for e in encodings(spec) if "title" in e["y"]}
    assert titles == {fg.METRIC_LABELS["betti0"], fg.METRIC_LABELS["betti1"]}
    with pytest.raises(ValueError, match="The 'metrics' parameter of betti_curve"):
        fg.betti_curve(tidy, metrics=("betti7",))


# ------------------------------------------------------------------ positive channels (Fig. 7)


def test_positive_channels_plot_threshold_and_band(tidy):
    chart = fg.positive_channels_plot(tidy, design="relu6")
    spec = chart.to_dict()
    assert len(spec["hconcat"]) == 2
    assert spec["resolve"]["scale"]["y"] == "shared"
    assert marks(spec).count("area") == 2
    frames = datasets(chart)
    refs = next(f for f in frames if "count" in f and "series" in f
                and (f.series == "threshold C_in (Lemma 2)").any())
    thr = refs[refs.series == "threshold C_in (Lemma 2)"].set_index("block")["count"]
    assert thr[5] == BLOCK_IN[5]
    dashed = [e for e in encodings(spec) if "strokeDash" in e]
    assert dashed and dashed[0]["strokeDash"]["scale"]["range"][2] == [6, 3]
    band = next(f for f in frames if "positive_min" in f and (f.series == "min\u2013max over points").any())
    sel = tidy[(tidy.design == "relu6") & (tidy.stage == "expand") & (~tidy.pre)
               & (tidy.block == 4) & (tidy.metric == "positive_mean")]
    assert band.set_index("block").loc[4, "positive_mean"] == pytest.approx(sel.value.mean())


def test_positive_channels_plot_requires_design(tidy):
    with pytest.raises(ValueError, match=r"The 'design' parameter of positive_channels_plot must be "
                                         r"one of \['linear', 'relu6'\]"):
        fg.positive_channels_plot(tidy)


# ------------------------------------------------------------------------------ accuracy


def test_accuracy_chart_values():
    cards = pd.DataFrame({
        "checkpoint": [f"digits-{d}-s{s}" for d in ("linear", "relu6") for s in range(3)],
        "design": ["linear"] * 3 + ["relu6"] * 3, "dataset": "digits", "seed": [0, 1, 2] * 2,
        "test_accuracy": [0.97, 0.98, 0.96, 0.95, 0.96, 0.94]})
    chart = fg.accuracy_chart(cards)
    spec = chart.to_dict()
    agg = next(f for f in datasets(chart) if "mean" in f).set_index("design")
    assert agg.loc["linear", "mean"] == pytest.approx(97.0)
    assert agg.loc["relu6", "std"] == pytest.approx(1.0)
    assert agg.loc["linear", "label"] == "97.00 \u00b1 1.00"
    assert {"rule", "tick", "point", "text"} <= set(marks(spec))
    seeds = next(f for f in datasets(chart) if "value" in f)
    assert len(seeds) == 6
    with pytest.raises(ValueError, match="test_accuracy as a fraction in \\[0, 1\\]. Got \\[97.0\\]"):
        fg.accuracy_chart(cards.assign(test_accuracy=[97.0] + [0.9] * 5))


# ------------------------------------------------------------------------- block explorer


def test_scree_plot_normalised_log():
    spectra = pd.DataFrame({"point": ["blocks.1.expand"] * 3 + ["blocks.1.input"] * 3,
                            "index": [1, 2, 3] * 2, "eigenvalue": [4.0, 2.0, 0.0, 1.0, 0.5, 0.25]})
    chart = fg.scree_plot(spectra)
    spec = chart.to_dict()
    enc = encodings(spec)[0]
    assert enc["y"]["scale"]["type"] == "log"
    assert enc["x"]["field"] == "index"
    (data,) = datasets(chart)
    ratios = data.set_index(["point", "index"])["ratio"]
    assert ratios[("blocks.1.expand", 2)] == pytest.approx(0.5)
    assert ratios[("blocks.1.expand", 3)] == pytest.approx(1e-12)
    assert "1 ratios below 1e-12" in spec["title"]["subtitle"][0]
    assert enc["color"]["scale"]["domain"] == ["input", "expand"]


def test_positive_histogram_rule_at_threshold():
    hist = pd.DataFrame({"n_active": [2, 3, 4, 5, 6], "count": [1, 1, 2, 4, 2]})
    chart = fg.positive_histogram(hist, threshold=4)
    spec = chart.to_dict()
    assert {"rect", "rule", "text"} == set(marks(spec))
    frames = datasets(chart)
    rule = next(f for f in frames if "label" in f)
    assert rule["x"].iloc[0] == 3.5
    assert rule["label"].iloc[0] == "threshold C_in = 4"
    bars = next(f for f in frames if "percent" in f)
    assert bars["percent"].sum() == pytest.approx(100)
    assert "20.0 % of 10 points below the threshold" in spec["title"]["subtitle"][0]
    with pytest.raises(ValueError, match="The 'threshold' parameter of positive_histogram"):
        fg.positive_histogram(hist, threshold=0)


def test_activity_heatmap():
    act = pd.DataFrame({"point": ["blocks.2.expand"] * 4 + ["blocks.2.project"] * 2,
                        "channel": [0, 1, 2, 3, 0, 1],
                        "active_fraction": [0.0, 0.5, 1.0, 0.25, np.nan, np.nan]})
    chart = fg.activity_heatmap(act)
    spec = chart.to_dict()
    enc = encodings(spec)[0]
    assert enc["color"]["field"] == "active_fraction"
    assert enc["color"]["scale"] == {"domain": [0, 1], "scheme": "viridis"}
    assert spec["title"]["subtitle"] == ["dead channels (never active): expand 25 %",
                                         "activity not defined at: project"]
    with pytest.raises(ValueError, match="active_fraction in \\[0, 1\\]. Got \\[1.5\\]"):
        fg.activity_heatmap(act.assign(active_fraction=[1.5, 0, 0, 0, 0, 0]))


def test_reconstruction_bars(tidy):
    block = tidy[tidy.block == 3]
    chart = fg.reconstruction_bars(block)
    spec = chart.to_dict()
    assert len(spec["hconcat"]) == 2
    enc = next(e for e in encodings(spec) if "xOffset" in e and "color" in e)
    assert (enc["xOffset"]["field"], enc["color"]["field"]) == ("decoder_label", "decoder_label")
    assert enc["color"]["scale"]["domain"] == ["ridge (linear)", "k-NN", "active-set inverse"]
    agg = pd.concat([f for f in datasets(chart) if "decoder" in f]).drop_duplicates(
        ["design", "point", "decoder"])
    row = agg[(agg.design == "relu6") & (agg.point == "blocks.3.project") & (agg.decoder == "linear")]
    assert row["mean"].iloc[0] == pytest.approx(0.1 + 0.05 + 0.25)
    assert any("no exact value" in s and "no activation weights to invert" in s
               for s in spec["title"]["subtitle"])
    with pytest.raises(ValueError, match="must hold one block. Got blocks \\[3, 4\\]"):
        fg.reconstruction_bars(tidy[tidy.block.isin([3, 4])])


# ------------------------------------------------------------------------------- topology


def test_persistence_diagram_infinite_and_diagonal():
    dgms = [np.array([[0.0, 0.2], [0.0, 0.5], [0.0, np.inf]]), np.array([[0.3, 0.9]])]
    chart = fg.persistence_diagram(dgms, title="blocks.1.input")
    spec = chart.to_dict()
    frames = datasets(chart)
    pts = next(f for f in frames if "dim" in f)
    inf_row = pts[pts.death_label == "inf"]
    assert len(inf_row) == 1
    assert inf_row["death_plot"].iloc[0] == pytest.approx(0.9 * 1.1)
    assert set(pts["dim"]) == {"H0", "H1"}
    assert any(f.get("label", pd.Series([None])).iloc[0] == "inf" for f in frames)
    assert set(marks(spec)) == {"line", "rule", "text", "point"}


def test_persistence_diagram_empty_and_bad():
    spec = fg.persistence_diagram([np.empty((0, 2))], title="x").to_dict()
    assert marks(spec) == ["text"]
    with pytest.raises(ValueError, match="arrays of shape \\(k, 2\\). Got shape \\(3,\\) for H0"):
        fg.persistence_diagram([np.zeros(3)], title="x")


def test_barcode_sorted_and_truncated():
    h0 = np.column_stack([np.zeros(60), np.linspace(0.01, 0.6, 60)])
    h0[-1, 1] = np.inf
    chart = fg.barcode([h0, np.array([[0.2, 0.5]])], max_bars=10)
    spec = chart.to_dict()
    assert len(spec["vconcat"]) == 2
    bars = next(f for f in datasets(chart) if "rank" in f and (f.dim == "H0").all())
    assert len(bars) == 10
    assert bars.sort_values("rank")["death_label"].iloc[0] == "inf"
    titles = [e["y"]["title"] for e in encodings(spec) if "y" in e and "title" in e["y"]]
    assert "H0 (longest 10 of 60)" in titles and "H1 (1 bars)" in titles


# ------------------------------------------------------------------------------ embeddings


def test_embedding_scatter_categorical_and_continuous():
    rng = np.random.default_rng(0)
    emb = pd.DataFrame({"x": rng.normal(size=30), "y": rng.normal(size=30),
                        "label": np.arange(30) % 3, "size": rng.uniform(1, 2, 30)})
    enc = fg.embedding_scatter(emb, color="label").to_dict()["encoding"]
    assert enc["color"]["type"] == "nominal"
    assert enc["color"]["scale"]["range"] == fg.CATEGORICAL_COLORS[:3]
    enc = fg.embedding_scatter(emb, color="size").to_dict()["encoding"]
    assert enc["color"]["type"] == "quantitative"
    assert enc["color"]["scale"]["scheme"] == "viridis"
    with pytest.raises(ValueError, match=r"missing \['shape'\]"):
        fg.embedding_scatter(emb, color="shape")


# ----------------------------------------------------------------------------------- saving


@pytest.mark.parametrize("suffix,magic", [(".svg", b"<svg"), (".png", b"\x89PNG\r\n\x1a\n"),
                                          (".pdf", b"%PDF")])
def test_save_chart_formats(tmp_path: Path, suffix: str, magic: bytes):
    chart = fg.positive_histogram(pd.DataFrame({"n_active": [1, 2], "count": [3, 4]}), threshold=2)
    out = fg.save_chart(chart, tmp_path / f"fig{suffix}")
    data = out.read_bytes()
    assert data.startswith(magic)
    assert len(data) > 1000
    assert [p.name for p in tmp_path.iterdir()] == [f"fig{suffix}"]


def test_save_chart_png_scale(tmp_path: Path):
    import struct
    chart = fg.message_chart("hello", width=100, height=50)
    widths = []
    for scale in (1.0, 2.0):
        data = fg.save_chart(chart, tmp_path / f"s{scale}.png", scale=scale).read_bytes()
        widths.append(struct.unpack(">I", data[16:20])[0])
    assert widths[1] == 2 * widths[0]


def test_save_chart_bad_suffix(tmp_path: Path):
    with pytest.raises(ValueError, match="must end in .svg, .png or .pdf. Got '.*fig.jpg' instead"):
        fg.save_chart(fg.message_chart("x"), tmp_path / "fig.jpg")
    assert not list(tmp_path.iterdir())


def test_band_clipped_to_metric_range():
    df = synthetic_results(n_blocks=2, designs=("relu6",))
    sel = (df.metric == "betti1") & (df.stage == "project") & (~df.pre) & (df.block == 0)
    df.loc[sel, "value"] = [0.0, 0.0, 3.0]
    sel_f = (df.metric == "dead_fraction") & (df.stage == "project") & (~df.pre) & (df.block == 0)
    df.loc[sel_f, "value"] = [1.0, 1.0, 0.4]
    (betti,) = datasets(fg.depth_curve(df, "betti1"))
    assert betti.set_index("block").loc[0, "lo"] == 0.0
    (dead,) = datasets(fg.depth_curve(df, "dead_fraction"))
    assert dead.set_index("block").loc[0, "hi"] == 1.0


def all_charts(tidy: pd.DataFrame) -> dict[str, Any]:
    dgms = [np.array([[0.0, 0.3], [0.0, np.inf]]), np.array([[0.2, 0.8]])]
    return {
        "depth": fg.depth_curve(tidy, "rank_frac"),
        "betti": fg.betti_curve(tidy),
        "fig7": fg.positive_channels_plot(tidy, design="relu6"),
        "recon": fg.reconstruction_bars(tidy[tidy.block == 2]),
        "accuracy": fg.accuracy_chart(pd.DataFrame({
            "checkpoint": ["a", "b"], "design": ["linear", "relu6"], "dataset": "digits",
            "seed": [0, 0], "test_accuracy": [0.9, 0.8]})),
        "scree": fg.scree_plot(pd.DataFrame({"point": "blocks.1.input", "index": [1, 2],
                                             "eigenvalue": [1.0, 0.1]})),
        "hist": fg.positive_histogram(pd.DataFrame({"n_active": [1, 2], "count": [1, 1]}),
                                      threshold=2),
        "heatmap": fg.activity_heatmap(pd.DataFrame({"point": "blocks.1.expand", "channel": [0, 1],
                                                     "active_fraction": [0.2, 0.0]})),
        "diagram": fg.persistence_diagram(dgms, title="d"),
        "barcode": fg.barcode(dgms),
        "embedding": fg.embedding_scatter(pd.DataFrame({"x": [0.0, 1.0], "y": [1.0, 0.0],
                                                        "label": [0, 1]}), color="label"),
        "message": fg.message_chart("not applicable: test"),
    }


@pytest.mark.slow
def test_every_builder_compiles_and_renders(tidy, tmp_path: Path):
    # Schema validation (to_dict) does not catch Vega compile errors; rendering does.
    for name, chart in all_charts(tidy[tidy.block < 4]).items():
        svg = fg.save_chart(chart, tmp_path / f"{name}.svg").read_text()
        assert svg.startswith("<svg") and "<text" in svg, name


def test_configure_false_composes(tidy):
    a = fg.depth_curve(tidy, "rank_frac", configure=False)
    b = fg.depth_curve(tidy, "effective_rank_frac", configure=False)
    spec = fg.style_chart(alt.hconcat(a, b)).to_dict()
    assert spec["config"]["axis"]["labelFontSize"] == 12
    with pytest.raises(TypeError, match="config"):
        alt.hconcat(fg.depth_curve(tidy, "rank_frac"), b)
