"""Known answers for the claims scoreboard (analysis.claims): verdicts follow the numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.claims import CLAIMS, SCOREBOARD_COLUMNS, model_measurements, scoreboard, scoreboard_markdown


def _metrics(values: dict[tuple[str, str], dict[str, list[float]]], blocks: int = 3) -> pd.DataFrame:
    """values[(metric, stage)][design] = one value per seed (the same at every block)."""
    rows = []
    for (metric, stage), per_design in values.items():
        for design, seeds in per_design.items():
            for seed, v in enumerate(seeds):
                for block in range(blocks):
                    rows.append({"checkpoint": f"digits-{design}-s{seed}", "design": design, "seed": seed,
                                 "dataset": "digits", "block": block, "stage": stage, "pre": False,
                                 "metric": metric, "value": v})
    return pd.DataFrame(rows)


def _cards(acc: dict[str, list[float]], cv: dict[str, list[float]] | None = None) -> list[dict]:
    out = []
    for design, seeds in acc.items():
        for seed, a in enumerate(seeds):
            card = {"name": f"digits-{design}-s{seed}", "design": design, "seed": seed,
                    "dataset": {"name": "digits", "test_images": 360}, "test_accuracy": a}
            if cv is not None:
                c = cv[design][seed]
                card["gradient_norms"] = {"blocks": 2, "mean": [[1.0, 1.0]] * 3, "std": [[c, c]] * 3}
            out.append(card)
    return out


def _row(board: pd.DataFrame, claim: str, contains: str) -> pd.Series:
    rows = board[(board["claim_id"] == claim) & board["measurement"].str.contains(contains, regex=False)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_verdicts_follow_the_paired_intervals() -> None:
    metrics = _metrics({
        # six seeds: with fewer, a sign-flip test cannot reach p < 0.05 however large the effect
        ("rank_frac", "project"): {"linear": [1.0] * 6, "relu6": [0.9, 0.8, 0.85, 0.8, 0.9, 0.85]},
        ("int8_sqnr_db", "project"): {"linear": [39.0, 38.0, 40.0, 39.0, 38.5, 39.5],
                                      "relu6": [45.0, 46.0, 44.5, 45.0, 45.5, 44.0]},
        ("effective_rank_frac", "project"): {"linear": [0.8, 0.7, 0.9, 0.8, 0.75, 0.85],
                                             "relu6": [0.75, 0.85, 0.8, 0.85, 0.7, 0.8]},
        ("dead_fraction", "project"): {"relu6": [0.0, 0.1, 0.0, 0.0, 0.0, 0.0]},
    })
    cards = _cards({"linear": [0.99, 0.98, 0.99, 0.98, 0.99, 0.98], "relu6": [0.99, 0.98, 0.99, 0.98, 0.99, 0.98]},
                   cv={"linear": [0.2, 0.25, 0.22, 0.21, 0.23, 0.2], "relu6": [0.4, 0.45, 0.41, 0.42, 0.4, 0.43]})
    board = scoreboard(metrics, cards)
    assert list(board.columns) == list(SCOREBOARD_COLUMNS)
    rank = _row(board, "relu-low-dim", "numerical rank")
    assert rank["verdict"] == "supported" and rank["n_seeds"] == 6
    assert rank["linear"] == "1" and rank["relu6"] == "0.85"
    assert _row(board, "int8", "SQNR")["verdict"] == "contradicted"
    assert _row(board, "relu-low-dim", "effective rank")["verdict"] == "no significant difference"
    assert _row(board, "relu-low-dim", "dead fraction")["verdict"] == "supported"
    assert _row(board, "accuracy", "test accuracy")["verdict"] == "no significant difference"
    # lower CV = steadier: linear's lower CV supports the claim
    assert _row(board, "gradients", "coefficient of variation")["verdict"] == "supported"
    # no results for these: said, not guessed
    assert _row(board, "topology", "Wasserstein")["verdict"] == "not measurable here"
    assert _row(board, "imagenet", "ImageNet")["verdict"] == "not measurable here"
    assert _row(board, "fusion", "needs the networks")["verdict"] == "not measurable here"
    assert set(board["claim_id"]) == {c.claim_id for c in CLAIMS}


def test_one_seed_is_not_a_comparison() -> None:
    metrics = _metrics({("rank_frac", "project"): {"linear": [1.0], "relu6": [0.5]}})
    row = _row(scoreboard(metrics, _cards({"linear": [1.0], "relu6": [0.9]})), "relu-low-dim", "numerical rank")
    assert row["verdict"] == "not measurable here" and "a paired interval needs 2" in row["detail"]


def test_the_numbers_change_with_the_results() -> None:
    base = {"linear": [1.0] * 6, "relu6": [0.9, 0.8, 0.85, 0.9, 0.8, 0.85]}
    flipped = {"linear": base["relu6"], "relu6": base["linear"]}
    cards = _cards({"linear": [1.0] * 6, "relu6": [1.0] * 6})
    a = _row(scoreboard(_metrics({("rank_frac", "project"): base}), cards), "relu-low-dim", "numerical rank")
    b = _row(scoreboard(_metrics({("rank_frac", "project"): flipped}), cards), "relu-low-dim", "numerical rank")
    assert (a["verdict"], b["verdict"]) == ("supported", "contradicted")
    lo, hi = a["difference"].split(" [")[1].rstrip("]").split(", ")
    d = np.array([0.1, 0.2, 0.15, 0.1, 0.2, 0.15])
    half = 2.570581835636314 * d.std(ddof=1) / np.sqrt(6)  # t_{0.975, 5}
    assert float(lo) == pytest.approx(d.mean() - half, rel=1e-2) and float(hi) == pytest.approx(d.mean() + half, rel=1e-2)


def test_markdown_has_one_line_per_row() -> None:
    board = scoreboard(_metrics({("rank_frac", "project"): {"linear": [1.0] * 6, "relu6": [0.5, 0.6, 0.55] * 2}}),
                       _cards({"linear": [1.0] * 6, "relu6": [1.0] * 6}))
    md = scoreboard_markdown(board)
    assert md.count("\n") == len(board) + 2 and "**supported**" in md


def test_model_measurements_of_a_zoo_checkpoint_are_cached(tmp_path) -> None:
    from probes.catalogue import list_checkpoints

    cards = [c for c in list_checkpoints() if c["name"] == "digits-linear-s0"]
    if not cards:
        pytest.skip("needs the shipped checkpoint digits-linear-s0")
    m = model_measurements(cards, edges=False, cache_dir=tmp_path)
    assert m.fold["relative_error"].iloc[0] < 1e-5 and m.fold["n_images"].iloc[0] == 360
    assert set(m.fusion["pattern"]) >= {"Conv2d(1x1)+BN+linear", "Conv2d(dw 3x3)+BN+ReLU6"}
    mem = m.memory.iloc[0]
    assert 0 < mem["peak_bytes"] < mem["all_block_tensors_bytes"]
    assert len(m.per_image) == 17
    again = model_measurements(cards, edges=False, cache_dir=tmp_path, compute=False)
    pd.testing.assert_frame_equal(again.memory, m.memory, check_dtype=False)
    assert model_measurements(cards, edges=True, cache_dir=tmp_path, compute=False).fold.empty


def test_report_config_claims_section(tmp_path) -> None:
    from analysis.report import load_config

    path = tmp_path / "c.toml"
    path.write_text('[checkpoints]\nzoo = ["digits-linear-s0"]\n[claims]\nenabled = true\nedges = false\n')
    assert load_config(path).claims == {"edges": False}
    path.write_text('[checkpoints]\nzoo = ["digits-linear-s0"]\n')
    assert load_config(path).claims is None  # off unless asked for: it runs the networks again
    path.write_text('[checkpoints]\nzoo = ["digits-linear-s0"]\n[claims]\nenabled = "yes"\n')
    with pytest.raises(ValueError, match=r"Config c\.toml: 'claims\.enabled' must be true or false\. Got 'yes'"):
        load_config(path)
