"""StudyConfig is the one schema: FieldSpec per field, one validation routine, named presets."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from analysis.settings import (
    DASHBOARD_PROBE_CONFIG,
    FAMILIES,
    SHIPPED_CONFIG,
    STUDY_FIELDS,
    StudyConfig,
    StudyFieldError,
    check_study_field,
)


def test_every_field_has_a_spec_and_its_default_passes_the_check() -> None:
    assert list(STUDY_FIELDS) == [f.name for f in dataclasses.fields(StudyConfig)]
    for f in dataclasses.fields(StudyConfig):
        assert check_study_field(f.name, f.default) == f.default, f.name


@pytest.mark.parametrize("name, value, message", [
    ("reservoir_size", 9, r"^The 'reservoir_size' parameter of StudyConfig must be an int >= 10. Got 9 instead.$"),
    ("reservoir_size", True, r"must be an int >= 10. Got True instead"),
    ("reservoir_size", 10.0, r"must be an int >= 10. Got 10.0 instead"),
    ("n_images", 1, r"'n_images' parameter of StudyConfig must be an int >= 2 or None. Got 1 instead"),
    ("seed", -1, r"'seed' parameter of StudyConfig must be an int >= 0. Got -1 instead"),
    ("rtol", 1.0, r"'rtol' parameter of StudyConfig must be a float in \(0, 1\). Got 1.0 instead"),
    ("rtol", 0, r"must be a float in \(0, 1\). Got 0 instead"),
    ("split", "val", r"'split' parameter of StudyConfig must be one of \['train', 'test', 'all'\]. Got 'val'"),
    ("topology_maxdim", True, r"must be one of \[1, 2\]. Got True instead"),
    ("topology_maxdim", 0, r"must be one of \[1, 2\]. Got 0 instead"),
    ("families", (), r"must be a non-empty list of names from \['spectrum', .*Got \(\) instead"),
    ("families", "spectrum", r"must be a non-empty list of names .*Got 'spectrum' instead"),
    ("families", ["spectrum", "colour"], r"Got \['colour'\] instead"),
    ("gray_to_rgb", "yes", r"'gray_to_rgb' parameter of StudyConfig must be a bool \(true or false\)"),
    ("points", [""], r"'points' parameter of StudyConfig must be a capture-point name or glob"),
    ("dataset", "", r"'dataset' parameter of StudyConfig must be a non-empty string. Got '' instead"),
])
def test_bad_values_name_the_field_the_rule_and_the_value(name: str, value: Any, message: str) -> None:
    with pytest.raises(StudyFieldError, match=message) as exc:
        StudyConfig(**{name: value})
    assert exc.value.name == name and exc.value.expected == STUDY_FIELDS[name].expected()


def test_accepted_values_are_kept() -> None:
    c = StudyConfig(families=["topology", "spectrum"], points=["blocks.1.*", "blocks.2.project"], n_images=2,
                    rtol=1e-3, topology_maxdim=2, gray_to_rgb=True)
    assert c.families == ("topology", "spectrum")  # a tuple, in the order given
    assert c.points == ["blocks.1.*", "blocks.2.project"]
    assert check_study_field("n_images", None) is None


def test_cache_key_of_the_shipped_settings_is_unchanged() -> None:
    # the key names cached studies and report jobs; the schema metadata must not change it
    assert SHIPPED_CONFIG == StudyConfig()
    assert SHIPPED_CONFIG.key() == "e78a477421aea342"
    assert set(SHIPPED_CONFIG.families) == set(FAMILIES)


def test_dashboard_preset_differs_only_in_the_point_cloud_sizes() -> None:
    diff = {f.name for f in dataclasses.fields(StudyConfig)
            if getattr(DASHBOARD_PROBE_CONFIG, f.name) != getattr(SHIPPED_CONFIG, f.name)}
    assert diff == {"n_images", "reservoir_size", "topology_points"}
    assert DASHBOARD_PROBE_CONFIG.reservoir_size < SHIPPED_CONFIG.reservoir_size


def test_report_config_keys_are_the_schema_keys() -> None:
    from analysis.report.config import _SECTIONS

    for name, spec in STUDY_FIELDS.items():
        if spec.toml is not None:
            section, key = spec.toml.split(".")
            assert key in _SECTIONS[section], name
    assert set(_SECTIONS["study"]) == {s.toml.split(".")[1] for s in STUDY_FIELDS.values()
                                       if s.toml and s.toml.startswith("study.")}


def test_paper_toml_comments_state_the_schema_defaults() -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "analysis" / "configs" / "paper.toml").read_text()
    section = ""
    stated = {}
    for line in text.splitlines():
        if line.startswith("["):
            section = line.split("]")[0].strip("[ ")
        m = re.match(r"^(\w+)\s*=.*#.*\(default (\w+)\)", line)
        if m:
            stated[f"{section}.{m.group(1)}"] = m.group(2)
    by_key = {s.toml: name for name, s in STUDY_FIELDS.items() if s.toml}
    checked = {k: v for k, v in stated.items() if k in by_key}
    assert {"study.reservoir_size", "topology.points"} <= set(checked)
    for key, value in checked.items():
        assert value == str(getattr(StudyConfig(), by_key[key])), key
