"""Known answers for the gradient-flow tables (analysis.gradients) and the paired test."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.gradients import gradient_comparison, gradient_figure, gradient_summary, gradient_table


def _card(design: str, seed: int, mean: float, std: float, epochs: int = 4, blocks: int = 3) -> dict:
    return {"name": f"digits-{design}-s{seed}", "design": design, "seed": seed, "dataset": {"name": "digits"},
            "gradient_norms": {"blocks": blocks, "mean": [[mean] * blocks] * epochs,
                               "std": [[std] * blocks] * epochs}}


def test_summary_of_constant_norms() -> None:
    table = gradient_table([_card("linear", 0, 2.0, 1.0), {"name": "old", "design": "relu6"}])
    assert len(table) == 4 * 3  # the card without gradient_norms is skipped
    s = gradient_summary(table)
    assert np.allclose(s["mean_norm"], 2.0) and np.allclose(s["cv"], 0.5)


def test_malformed_card_names_the_card() -> None:
    card = _card("linear", 0, 1.0, 1.0)
    card["gradient_norms"]["blocks"] = 5
    with pytest.raises(ValueError, match=r"Card 'digits-linear-s0': 'gradient_norms' must hold"):
        gradient_table([card])


def test_comparison_finds_a_steadier_design_and_no_difference_where_there_is_none() -> None:
    cards, noises = [], [0.01, -0.02, 0.015, 0.0, -0.01, 0.005]
    for seed, noise in enumerate(noises):
        cards.append(_card("linear", seed, 1.0, 0.2 + noise))   # cv 0.2
        cards.append(_card("relu6", seed, 1.0, 0.4 - noise))    # cv 0.4
    comp = gradient_comparison(gradient_summary(gradient_table(cards))).set_index(["quantity", "block"])
    cv = comp.loc[("cv", "all")]
    assert cv["n_pairs"] == 6 and cv["verdict"] == "relu6 higher"
    assert cv["mean_diff"] == pytest.approx(-0.2 + 2 * np.mean(noises), abs=1e-12)
    norm = comp.loc[("log10_norm", "all")]
    assert norm["mean_diff"] == 0 and norm["verdict"] == "no significant difference"


def test_figure_without_norms_says_why() -> None:
    chart = gradient_figure(gradient_table([]))
    assert "predate the per-block logging" in str(chart.to_dict())
