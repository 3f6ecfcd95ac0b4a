"""Paired comparison over seeds: known answers computed by hand (scipy.stats.t, explicit loops)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import compare as cp


def _by_hand(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """mean diff, interval and exact sign-flip p by plain loops."""
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, df=n - 1) * sd / math.sqrt(n)
    observed = abs(sum(d))
    hits = sum(abs(sum(s * x for s, x in zip(signs, d))) >= observed - 1e-12
               for signs in itertools.product((-1, 1), repeat=n))
    return mean, mean - half, mean + half, hits / 2 ** n


def test_paired_interval_and_p_value_match_a_hand_computation() -> None:
    a = [0.81, 0.84, 0.79, 0.88, 0.83, 0.86, 0.80, 0.85]
    b = [0.74, 0.80, 0.77, 0.79, 0.81, 0.80, 0.78, 0.76]
    mean, lo, hi, p = _by_hand(a, b)
    r = cp.paired_stats(a, b, names=("linear", "relu6"))
    assert r["n_pairs"] == 8
    assert r["mean_diff"] == pytest.approx(mean, abs=1e-14)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert r["p_value"] == pytest.approx(p)
    assert p == pytest.approx(2 / 256)  # every difference is positive: only the all-+ and all-- patterns
    # scipy's paired t-test gives the same interval
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert r["verdict"] == "linear higher"
    assert r["mean_a"] - r["mean_b"] == pytest.approx(r["mean_diff"])
    assert r["values_a"].split(";")[0] == "0.81" and r["seeds"] == "0;1;2;3;4;5;6;7"


def test_p_value_with_mixed_signs_matches_enumeration() -> None:
    a = [1.0, 2.5, 0.3, 4.0, 1.1]
    b = [0.2, 2.9, 0.1, 3.0, 1.6]
    *_, p = _by_hand(a, b)
    assert cp.sign_flip_p_value(np.subtract(a, b)) == pytest.approx(p)
    assert 0.1 < p < 1


def test_lower_design_b_is_named_and_level_changes_the_interval() -> None:
    a = [1.0, 1.1, 0.9, 1.0, 1.05, 0.95]
    b = [2.0, 2.2, 2.1, 1.9, 2.0, 2.05]
    r = cp.paired_stats(a, b, names=("linear", "relu6"))
    assert r["verdict"] == "relu6 higher" and r["ci_high"] < 0
    wide = cp.paired_stats(a, b, level=0.99)
    assert wide["ci_low"] < r["ci_low"] and wide["ci_high"] > r["ci_high"]
    assert cp.paired_stats(a, b)["verdict"] == "b higher"


def test_identical_designs_give_zero_difference_and_no_significant_difference() -> None:
    v = [0.3, 0.5, 0.4]
    r = cp.paired_stats(v, v)
    assert (r["mean_diff"], r["ci_low"], r["ci_high"], r["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    assert r["verdict"] == "no significant difference"


def test_interval_excluding_zero_with_too_few_pairs_is_not_called_significant() -> None:
    # constant difference over 3 seeds: zero-width interval, but p cannot go below 2/8
    r = cp.paired_stats([1.0, 2.0, 3.0], [0.5, 1.5, 2.5])
    assert r["ci_low"] == pytest.approx(0.5) and r["ci_high"] == pytest.approx(0.5)
    assert r["p_value"] == 0.25
    assert r["verdict"] == "no significant difference"
    assert "3 pairs cannot reach p below 0.25" in r["reason"]


def test_fewer_than_two_pairs_give_nan_with_a_reason() -> None:
    r = cp.paired_stats([0.4, np.nan, 0.7], [0.2, 0.3, np.nan], seeds=[0, 1, 2])
    assert r["n_pairs"] == 1
    assert r["mean_diff"] == pytest.approx(0.2)
    assert all(math.isnan(r[k]) for k in ("ci_low", "ci_high", "p_value", "sd_diff"))
    assert r["verdict"] == "n/a"
    assert "an interval needs at least 2 seeds" in r["reason"] and "seed(s) 1, 2" in r["reason"]
    assert r["values_a"] == "0.4;nan;0.7"


def test_paired_stats_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"The 'level' parameter of paired_stats must be a float in \(0, 1\)\. Got 95"):
        cp.paired_stats([1, 2], [1, 2], level=95)
    with pytest.raises(ValueError, match=r"must have one value per seed each\. Got 2 and 3 values"):
        cp.paired_stats([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"The 'diffs' parameter of sign_flip_p_value"):
        cp.sign_flip_p_value([1.0, np.nan])


def test_many_pairs_fall_back_to_seeded_draws_close_to_the_exact_value() -> None:
    rng = np.random.default_rng(3)
    d = rng.normal(0.3, 1.0, size=22)
    # the t-test p is close to the permutation p for 22 roughly normal differences
    p = cp.sign_flip_p_value(d)
    assert p == cp.sign_flip_p_value(d)  # deterministic
    assert p == pytest.approx(stats.ttest_1samp(d, 0).pvalue, abs=0.03)


# ------------------------------------------------------------------------------ tidy tables


def _tidy(values: dict[tuple[str, int], list[float]], *, metric: str = "m", stage: str = "project",
          pre: bool = False) -> pd.DataFrame:
    rows = []
    for (design, seed), per_block in values.items():
        for block, v in enumerate(per_block):
            rows.append({"checkpoint": f"digits-{design}-s{seed}", "design": design, "seed": seed,
                         "dataset": "digits", "block": block, "point": f"blocks.{block}.{stage}" + (".pre" if pre else ""),
                         "stage": stage, "pre": pre, "metric": metric, "value": v,
                         "reason": "" if np.isfinite(v) else "not applicable: linear output"})
    return pd.DataFrame(rows)


def test_compare_designs_pairs_by_seed_per_block() -> None:
    lin = {0: [1.0, 5.0], 1: [2.0, 6.0], 2: [3.0, 8.0]}
    relu = {0: [0.5, 5.0], 1: [1.0, 6.0], 2: [2.0, 7.5]}
    df = _tidy({**{("linear", s): v for s, v in lin.items()}, **{("relu6", s): v for s, v in relu.items()}})
    out = cp.compare_designs(df.sample(frac=1, random_state=0), "linear", "relu6")
    assert list(out.columns) == list(cp.COMPARE_COLUMNS)
    assert list(out["block"]) == [0, 1]
    for block in (0, 1):
        row = out[out["block"] == block].iloc[0]
        a = [lin[s][block] for s in (0, 1, 2)]
        b = [relu[s][block] for s in (0, 1, 2)]
        mean, lo, hi, p = _by_hand(a, b)
        assert row["mean_diff"] == pytest.approx(mean)
        assert (row["ci_low"], row["ci_high"], row["p_value"]) == (pytest.approx(lo), pytest.approx(hi), pytest.approx(p))
        assert row["values_a"] == ";".join(format(x, ".10g") for x in a)
        assert row["point"] == f"blocks.{block}.project" and row["design_a"] == "linear"


def test_unpaired_seeds_are_dropped_with_a_warning_naming_them() -> None:
    df = _tidy({("linear", 0): [1.0], ("linear", 1): [2.0], ("linear", 4): [9.0],
                ("relu6", 0): [0.0], ("relu6", 1): [1.5], ("relu6", 7): [3.0]})
    with pytest.warns(UserWarning, match=r"digits-linear-s4 \(seed 4, only linear\), digits-relu6-s7 \(seed 7, only relu6\)"):
        out = cp.compare_designs(df, "linear", "relu6")
    assert out.loc[0, "seeds"] == "0;1" and out.loc[0, "n_pairs"] == 2


def test_undefined_values_carry_the_results_reason() -> None:
    df = _tidy({("linear", 0): [np.nan], ("linear", 1): [np.nan], ("relu6", 0): [0.1], ("relu6", 1): [0.0]})
    out = cp.compare_designs(df, "linear", "relu6")
    assert out.loc[0, "verdict"] == "n/a" and math.isnan(out.loc[0, "ci_low"])
    assert "not applicable: linear output" in out.loc[0, "reason"]


def test_compare_designs_rejects_bad_input() -> None:
    df = _tidy({("linear", 0): [1.0], ("relu6", 0): [1.0]})
    with pytest.raises(ValueError, match=r"The 'design_b' parameter of compare_designs must be a design in the "
                                         r"results, one of \['linear', 'relu6'\]\. Got 'relu' instead\."):
        cp.compare_designs(df, "linear", "relu")
    with pytest.raises(ValueError, match=r"must differ from design_a"):
        cp.compare_designs(df, "linear", "linear")
    two = pd.concat([df, df.assign(checkpoint="other-linear")[df["design"] == "linear"]])
    with pytest.raises(ValueError, match=r"Design 'linear' has 2 checkpoints for seed 0 \(digits-linear-s0, other-linear\)"):
        cp.compare_designs(two, "linear", "relu6")
    with pytest.raises(ValueError, match=r"The 'dataset' parameter of compare_designs must be a dataset in the results"):
        cp.compare_designs(df, "linear", "relu6", dataset="shapes")
    with pytest.raises(ValueError, match=r"The 'metrics' parameter of compare_designs must name metrics in the "
                                         r"results\. Got \['rank'\] instead; the results hold \['m'\]\."):
        cp.compare_designs(df, "linear", "relu6", metrics=["rank"])


def test_depth_bands_split_the_blocks_into_thirds() -> None:
    bands = cp.depth_bands(range(17))
    assert bands == {"0-5": tuple(range(6)), "6-11": tuple(range(6, 12)), "12-16": tuple(range(12, 17)),
                     "all": tuple(range(17))}
    assert list(cp.depth_bands([0, 1])) == ["0", "1", "all"]


def test_compare_bands_averages_blocks_per_seed_then_pairs() -> None:
    vals = {("linear", 0): [1.0, 3.0, 5.0], ("linear", 1): [2.0, 2.0, 8.0], ("linear", 2): [0.0, 4.0, 2.0],
            ("relu6", 0): [1.0, 1.0, 1.0], ("relu6", 1): [0.0, 1.0, 2.0], ("relu6", 2): [1.0, np.nan, 1.0]}
    df = _tidy(vals)
    out = cp.compare_bands(df, "linear", "relu6", bands={"early": [0, 1], "all": [0, 1, 2]})
    assert list(out["band"]) == ["early", "all"]
    assert list(out["blocks"]) == ["0-1", "0-2"]
    # per seed: mean over the band's finite values (relu6 seed 2 averages one block in 'early')
    a = [2.0, 2.0, 2.0]
    b = [1.0, 0.5, 1.0]
    mean, lo, hi, p = _by_hand(a, b)
    early = out.iloc[0]
    assert early["mean_diff"] == pytest.approx(mean) and early["ci_low"] == pytest.approx(lo)
    assert early["p_value"] == pytest.approx(p)
    assert "different numbers of blocks" in early["reason"]
    bv = cp.band_values(df, bands={"all": [0, 1, 2]})
    row = bv[(bv["design"] == "relu6") & (bv["seed"] == 2)].iloc[0]
    assert row["value"] == pytest.approx(1.0) and row["n_blocks"] == 2


def test_compare_bands_default_bands_and_pre_points() -> None:
    post_rows = _tidy({**{("linear", s): [float(s + 1)] * 6 for s in range(4)},
                       **{("relu6", s): [0.0] * 6 for s in range(4)}})
    pre_rows = _tidy({(d, s): [0.0] * 6 for d in ("linear", "relu6") for s in range(4)}, pre=True)
    df = pd.concat([post_rows, pre_rows], ignore_index=True)
    post = cp.compare_bands(df, "linear", "relu6")
    assert list(post["band"]) == ["0-1", "2-3", "4-5", "all"]
    assert (post["mean_diff"] == 2.5).all() and (post["verdict"] == "no significant difference").all()
    pre = cp.compare_bands(df, "linear", "relu6", pre=True)
    assert (pre["mean_diff"] == 0).all() and (pre["pre"]).all()


def test_compare_on_shipped_results_includes_every_block() -> None:
    from analysis.study import load_shipped_metrics

    df = load_shipped_metrics("digits")
    if not {"linear", "relu6"} <= set(df["design"]):
        pytest.skip("needs precomputed digits studies of linear and relu6")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every shipped seed is paired
        out = cp.compare_designs(df, "linear", "relu6", metrics=["effective_rank_frac"])
    project = out[out["point"].str.endswith(".project")]
    assert sorted(project["block"]) == sorted(set(df["block"]))
    seeds = sorted(set(df.loc[df["design"] == "linear", "seed"]))
    assert (project["n_pairs"] == len(seeds)).all()


# ------------------------------------------------------------------- report, CLI and findings


def _eight_seeds() -> tuple[pd.DataFrame, list[float], list[float]]:
    """effective_rank_frac at project over 2 blocks and 8 seeds; linear higher in every seed."""
    lin = [0.81, 0.84, 0.79, 0.88, 0.83, 0.86, 0.80, 0.85]
    relu = [0.74, 0.80, 0.77, 0.79, 0.81, 0.80, 0.78, 0.76]
    vals = {}
    for s in range(8):
        vals[("linear", s)] = [lin[s] - 0.1, lin[s] + 0.1]
        vals[("relu6", s)] = [relu[s] - 0.05, relu[s] + 0.05]
    df = _tidy(vals, metric="effective_rank_frac")
    dead = _tidy({**{("linear", s): [np.nan, np.nan] for s in range(8)},
                  **{("relu6", s): [0.1, 0.0] for s in range(8)}}, metric="dead_fraction")
    return pd.concat([df, dead], ignore_index=True), lin, relu


def test_report_comparison_table_matches_the_hand_computation() -> None:
    from analysis import report as rp

    df, lin, relu = _eight_seeds()
    cards = pd.DataFrame({"design": ["linear"] * 3 + ["relu6"] * 3, "seed": [0, 1, 2] * 2, "dataset": "digits",
                          "test_accuracy": [0.99, 0.98, 1.0, 0.97, 0.98, 0.96]})
    table = rp.comparison_table(df, "linear", "relu6", metrics=["effective_rank_frac", "dead_fraction"],
                                stages=["project"], cards=cards)
    assert list(table["metric"]) == ["test_accuracy", "effective_rank_frac", "dead_fraction"]
    acc = table.iloc[0]
    mean, lo, hi, p = _by_hand([99.0, 98.0, 100.0], [97.0, 98.0, 96.0])
    assert acc["mean_diff"] == pytest.approx(mean) and acc["ci_low"] == pytest.approx(lo) and acc["p_value"] == p
    row = table.iloc[1]
    mean, lo, hi, p = _by_hand(lin, relu)  # the block mean of each seed is the seed's centre value
    assert row["mean_diff"] == pytest.approx(mean) and row["ci_high"] == pytest.approx(hi)
    assert row["verdict"] == "linear higher"
    md = rp.comparison_to_markdown(table)
    assert "| Stage | Metric | linear | relu6 | linear \u2212 relu6 [95 % CI] | p | verdict |" in md
    assert f"| project | `effective_rank_frac` | {np.mean(lin):.3f} | {np.mean(relu):.3f} | " in md
    assert "| project | `dead_fraction` | -- | 0.0500 | -- | -- | n/a: not applicable: linear output |" in md
    tex = rp.comparison_to_latex(table, caption="digits")
    assert r"Stage & Metric & linear & relu6 & linear $-$ relu6 [95\,\% CI] & $p$ & Verdict \\" in tex
    assert f"& {2 / 256:.3g}$ & linear higher \\\\" in tex.replace("$0.00781$", "0.00781$")


def test_cli_compare_writes_rows_and_names_unpaired_seeds(tmp_path, capsys) -> None:
    from analysis.cli import main
    from analysis.study import write_table

    df, lin, relu = _eight_seeds()
    extra = _tidy({("linear", 9): [0.5, 0.5]}, metric="effective_rank_frac")
    src = tmp_path / "metrics.parquet"
    write_table(pd.concat([df, extra], ignore_index=True), src)
    out = tmp_path / "cmp.csv"
    assert main(["compare", "--results", str(src), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "digits-linear-s9 (seed 9, only linear)" in err
    table = pd.read_csv(out)
    assert set(table.columns) == set(cp.COMPARE_COLUMNS)
    assert len(table) == 4 and set(table["n_pairs"]) == {8, 0}
    assert main(["compare", "--results", str(src), "--bands", "--out", str(tmp_path / "b.csv"), "--quiet"]) == 0
    bands = pd.read_csv(tmp_path / "b.csv")
    assert list(bands.loc[bands["metric"] == "effective_rank_frac", "band"]) == ["0", "1", "all"]
    assert main(["compare", "--designs", "linear", "--results", str(src)]) == 2
    assert "--designs takes exactly two designs" in capsys.readouterr().err
    assert main(["compare", "--out", "x.txt"]) == 2


def test_findings_markdown_states_what_is_significant() -> None:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("findings", Path(__file__).parents[2] / "scripts" / "findings.py")
    findings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(findings)
    df, lin, relu = _eight_seeds()
    table = findings.findings(df, "linear", "relu6", dataset="digits")
    acc = cp.paired_stats([99.0, 98.0, 100.0], [99.0, 98.0, 100.0], seeds=[0, 1, 2], names=("linear", "relu6"))
    md = findings.markdown(table, acc, "linear", "relu6", dataset="digits", settings="test settings")
    mean, lo, hi, p = _by_hand(lin, relu)
    assert (f"| `effective_rank_frac` | all (0-1) | {np.mean(lin):.3g} | {np.mean(relu):.3g} | "
            f"{mean:.3g} [{lo:.3g}, {hi:.3g}] | {p:.3g} | linear higher |") in md
    assert "- **`effective_rank_frac` at `project`** differs significantly" in md
    assert "- **Test accuracy**: no significant difference (linear − relu6 = 0 [0, 0] points" in md
    assert "`dead_fraction` at `project` is not compared" in md and "not applicable: linear output" in md
    assert "| `dead_fraction` | all (0-1) | n/a | 0.05 | n/a | n/a | n/a |" in md
    assert "| `effective_rank_frac` | project | " + " | ".join(
        f"{x:.3g} / {y:.3g}" for x, y in zip(lin, relu)) + " |" in md


@pytest.mark.parametrize(("table", "message"), [
    ({"designs": ["linear"]}, r"Config cfg\.toml: 'compare\.designs' must be two different design names \(a, b\)\. "
                              r"Got \['linear'\] instead\."),
    ({"designs": ["relu6", "relu6"]}, r"'compare\.designs' must be two different design names"),
    ({"level": 95}, r"'compare\.level' must be a number in \(0, 1\)\. Got 95 instead\."),
    ({"colour": "red"}, r"unknown key 'compare\.colour'\. Allowed keys of \[compare\]: designs, level\."),
])
def test_report_compare_section_is_validated(tmp_path, table, message) -> None:
    import json

    from analysis import report as rp

    path = tmp_path / "cfg.toml"
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
    path.write_text(f'[checkpoints]\nzoo = ["digits-*"]\n\n[compare]\n{body}')
    with pytest.raises(ValueError, match=message):
        rp.load_config(path)
