"""The catalogue of shipped checkpoints: cards -> one table, the same everywhere."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from checkpoints import CHECKPOINT_DIR
from probes.catalogue import (
    CATALOGUE_COLUMNS,
    SUMMARY_COLUMNS,
    accuracy_summary,
    checkpoint_table,
    list_checkpoints,
)
from probes.train import catalogue_markdown, zoo_markdown, zoo_tables


def _raw_cards() -> list[dict]:
    """The shipped cards read as plain JSON (second route, no validation)."""
    cards = [json.loads(p.read_text()) for p in sorted(CHECKPOINT_DIR.glob("*.json"))]
    return sorted((c for c in cards if "architecture" in c), key=lambda c: c["name"])


def test_shipped_table_holds_every_card_value() -> None:
    raw = _raw_cards()
    assert raw, "no shipped checkpoint cards in checkpoints/"
    table = checkpoint_table()
    assert list(table.columns) == list(CATALOGUE_COLUMNS)
    assert list(table["checkpoint"]) == [c["name"] for c in raw]
    for row, card in zip(table.itertuples(), raw):
        cfg = card["architecture"]["config"]
        assert (row.dataset, row.design, row.seed, row.epochs, row.n_params) == (
            card["dataset"]["name"], card["design"], card["seed"], card["epochs"], card["n_params"])
        assert (row.test_accuracy, row.train_accuracy) == (card["test_accuracy"], card["train_accuracy"])
        assert row.shortcut == cfg["shortcut"] and row.expand_ratio == cfg["expand_ratio"]
        act = cfg["bottleneck_act"]
        assert row.bottleneck_act == (act if isinstance(act, str) else "schedule")


def test_a_schedule_and_missing_keys_read_as_such() -> None:
    card = {"name": "mine", "architecture": {"family": "zoo", "config": {"bottleneck_act": ["linear", "relu6"]}}}
    row = checkpoint_table([card]).iloc[0]
    assert (row["design"], row["bottleneck_act"], row["expand_ratio"], row["shortcut"]) == (
        "schedule", "schedule", 6, "bottleneck")
    assert row["dataset"] is None and row["seed"] is None and row["test_accuracy"] is None


def test_empty_catalogue_gives_empty_tables() -> None:
    table = checkpoint_table([])
    assert table.empty and list(table.columns) == list(CATALOGUE_COLUMNS)
    summary = accuracy_summary(table)
    assert summary.empty and list(summary.columns) == list(SUMMARY_COLUMNS)


def test_accuracy_summary_is_mean_and_sample_std_per_design() -> None:
    table = checkpoint_table()
    summary = accuracy_summary(table)
    raw = _raw_cards()
    for r in summary.itertuples():
        accs = [c["test_accuracy"] for c in raw if c["dataset"]["name"] == r.dataset and c["design"] == r.design]
        assert r.n_seeds == len(accs)
        assert r.test_accuracy_mean == pytest.approx(statistics.fmean(accs), rel=1e-12)
        if len(accs) > 1:
            assert r.test_accuracy_std == pytest.approx(statistics.stdev(accs), rel=1e-9)
        else:
            assert math.isnan(r.test_accuracy_std)


def test_checkpoints_readme_is_the_catalogue() -> None:
    """checkpoints/README.md was written by `bnprobe checkpoints --markdown`: it still is."""
    text = (CHECKPOINT_DIR / "README.md").read_text()
    assert catalogue_markdown(list_checkpoints()) == text


def test_list_checkpoints_reads_another_folder_and_skips_non_cards(tmp_path: Path) -> None:
    src = CHECKPOINT_DIR / f"{_raw_cards()[0]['name']}.json"
    (tmp_path / "a.json").write_bytes(src.read_bytes())
    (tmp_path / "notes.json").write_text(json.dumps({"not": "a card"}))
    assert [c["name"] for c in list_checkpoints(tmp_path)] == [_raw_cards()[0]["name"]]


def test_old_train_names_are_deprecated_aliases() -> None:
    cards = list_checkpoints()
    with pytest.warns(DeprecationWarning, match=r"zoo_markdown is deprecated; use probes\.train\.catalogue_markdown"):
        assert zoo_markdown(cards) == catalogue_markdown(cards)
    with pytest.warns(DeprecationWarning, match=r"zoo_tables is deprecated"):
        per, summary = zoo_tables(cards)
    np.testing.assert_array_equal(per["test_accuracy"], checkpoint_table(cards)["test_accuracy"])
    assert summary.equals(accuracy_summary(per))
