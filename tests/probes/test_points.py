"""The capture-point vocabulary: one grammar, used by discovery and by every reader."""

from __future__ import annotations

import pytest
import torch

from probes.blocks import capture_points
from probes.points import (
    POINT_SUFFIXES,
    STAGES,
    PointName,
    is_point_name,
    parse_point,
    pattern_can_match,
    point_block,
    point_name,
    point_sort_key,
    point_suffix,
    suffix_sort_key,
)
from probes.zoo import ZooConfig, build_model


@pytest.mark.parametrize("suffix", POINT_SUFFIXES)
def test_format_and_parse_are_inverse(suffix: str) -> None:
    name = point_name(12, suffix)
    assert name == f"blocks.12.{suffix}"
    parsed = parse_point(name)
    assert parsed == PointName(12, suffix.split(".")[0], suffix.endswith(".pre"))
    assert (parsed.name, parsed.suffix, point_block(name), point_suffix(name)) == (name, suffix, 12, suffix)
    assert parsed.stage in STAGES and is_point_name(name)


@pytest.mark.parametrize("name", ["blocks.1.input.pre", "blocks.-1.input", "blocks.01.input", "blocks.1",
                                  "blocks.1.expand.conv", "stem", "blocks.x.output", "Blocks.1.input"])
def test_names_outside_the_grammar_are_refused(name: str) -> None:
    assert not is_point_name(name)
    with pytest.raises(ValueError, match=rf"^{name!r} is not a capture-point name: expected "
                                         r"'blocks\.\{i\}\.\{suffix\}' with a suffix in \['input', "):
        parse_point(name)


def test_point_name_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match=r"The 'block' parameter of point_name must be an int >= 0\. Got -1 instead\."):
        point_name(-1, "input")
    with pytest.raises(ValueError, match=r"The 'block' parameter of point_name must be an int >= 0\. Got True instead\."):
        point_name(True, "input")
    with pytest.raises(ValueError, match=r"The 'suffix' parameter of point_name must be one of \[.*\]\. Got 'proj' instead\."):
        point_name(1, "proj")


def test_sort_key_is_execution_order_with_numeric_blocks() -> None:
    names = [point_name(b, s) for b in (10, 2, 0) for s in reversed(POINT_SUFFIXES)] + ["stem"]
    got = sorted(names, key=point_sort_key)
    assert got[0] == "stem"
    assert got[1:] == [point_name(b, s) for b in (0, 2, 10) for s in POINT_SUFFIXES]
    assert sorted(reversed(POINT_SUFFIXES), key=suffix_sort_key) == list(POINT_SUFFIXES)


def test_discovery_names_every_point_in_the_grammar_and_in_sorted_order() -> None:
    model = build_model(ZooConfig(width_mult=0.35, num_classes=10, in_channels=1, input_size=32,
                                  head_channels=64, bottleneck_act="relu6"))
    points = capture_points(model, torch.zeros(1, 1, 32, 32))
    names = [p.name for p in points]
    assert names and all(is_point_name(n) for n in names)
    assert names == sorted(names, key=point_sort_key)  # inverted residuals: data-flow order
    for p in points:
        assert parse_point(p.name) == (p.block, p.stage, p.pre)


def test_pattern_can_match_accepts_globs_of_real_names_only() -> None:
    assert pattern_can_match("blocks.3.project") and pattern_can_match("blocks.[01].*.pre")
    assert not pattern_can_match("blocks.*.projcet") and not pattern_can_match("block.2.input")
