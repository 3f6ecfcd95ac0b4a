"""Zoo cards are data: checked against a schema before any model is built, one line naming the
file and the key (issue 13, items 3 and 10)."""

from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from probes._io import sha256_file
from probes.loading import MAX_CARD_PARAMS, load_checkpoint, validate_card, zoo_param_count
from probes.zoo import ZooConfig, build_model

CONFIG = ZooConfig(input_size=32, num_classes=3, width_mult=0.35, head_channels=32, in_channels=1)


@pytest.fixture
def zoo_file(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in build_model(CONFIG).state_dict().items()}, str(path))
    card = {"name": "tiny", "architecture": {"family": "zoo", "config": CONFIG.to_dict()},
            "input": {"size": 32, "channels": 1, "mean": [0.5], "std": [0.5]},
            "weights_file": path.name, "sha256": sha256_file(path), "n_params": zoo_param_count(CONFIG),
            "gradient_norms": {"description": "per-block gradient L2 norms", "blocks": 17,
                               "mean": [[0.1] * 17, [0.05] * 17], "std": [[0.01] * 17, [None] * 17]}}
    return path, card


def _with(card: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    card = json.loads(json.dumps(card))
    *parents, last = key.split(".")
    node = card
    for p in parents:
        node = node[p]
    node[last] = value
    return card


def test_valid_card_with_gradient_norms_loads(zoo_file) -> None:
    path, card = zoo_file
    path.with_suffix(".json").write_text(json.dumps(card))
    assert load_checkpoint(path).arch == "zoo"


@pytest.mark.parametrize("key, value, expected", [
    ("architecture.config.width_mult", "abc", r"'architecture\.config\.width_mult' must be a number in \(0\.0, 8\.0\]\. Got 'abc'"),
    ("architecture.config.width_mult", -1, r"'architecture\.config\.width_mult' must be a number"),
    ("architecture.config.expand_ratio", 2.5, r"'architecture\.config\.expand_ratio' must be an int in \[1, 32\]\. Got 2\.5"),
    ("architecture.config.num_classes", True, r"'architecture\.config\.num_classes' must be an int"),
    ("architecture.config.bottleneck_act", "gelu", r"'architecture\.config\.bottleneck_act' must be one of"),
    ("architecture.config.colour", 1, r"'architecture\.config' must be an object with keys from .* Got \['colour'\]"),
    ("architecture.family", "factory", r"'architecture' must be an object with family 'zoo'"),
    ("weights_file", "../../etc/passwd", r"'weights_file' must be a file name beside the card"),
    ("sha256", "abc", r"'sha256' must be 64 lowercase hex digits"),
    ("n_params", 5, r"'n_params' must be \d[\d,]*, the parameter count"),
    ("input.std", [0.0], r"'input' must be an input spec"),
    ("gradient_norms.mean", "high", r"'gradient_norms\.mean' must be a list of numbers"),
])
def test_bad_card_is_one_line_naming_file_and_key(zoo_file, key: str, value: Any, expected: str) -> None:
    path, card = zoo_file
    card_path = path.with_suffix(".json")
    card_path.write_text(json.dumps(_with(card, key, value)))
    with pytest.raises(ValueError, match=rf"^Card {re.escape(str(card_path))}: key {expected}") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_huge_card_is_refused_before_allocating(zoo_file) -> None:
    path, card = zoo_file
    card_path = path.with_suffix(".json")
    card = _with(card, "architecture.config.width_mult", 8.0)
    card = _with(card, "architecture.config.head_channels", 65536)
    card.pop("n_params")
    card_path.write_text(json.dumps(card))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"describes a model of [\d,]+ parameters; the limit for a card is {MAX_CARD_PARAMS:,}"):
            load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20


def test_card_json_error_names_the_file(zoo_file) -> None:
    path, _ = zoo_file
    card_path = path.with_suffix(".json")
    card_path.write_text('{"architecture": ')
    with pytest.raises(ValueError, match=rf"^Card {re.escape(str(card_path))} is not valid JSON: Expecting value at line 1, column 18\.$"):
        load_checkpoint(path)


@pytest.mark.parametrize("config", [
    ZooConfig(), CONFIG, ZooConfig(width_mult=1.4, expand_ratio=4, shortcut="expansion", num_classes=7),
    ZooConfig(width_mult=0.5, head_channels=100, in_channels=2),
])
def test_param_count_from_the_config_equals_the_built_model(config: ZooConfig) -> None:
    assert zoo_param_count(config) == sum(p.numel() for p in build_model(config).parameters())


def test_shipped_cards_are_valid() -> None:
    from checkpoints import CHECKPOINT_DIR

    cards = sorted(CHECKPOINT_DIR.glob("*.json"))
    assert cards
    for path in cards:
        validate_card(json.loads(path.read_text()), path)
