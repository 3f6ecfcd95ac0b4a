import math

import pytest

from analysis import figures, report
from analysis.information import metric_names
from analysis.metrics import (
    DIRECTIONS,
    METRICS,
    higher_is_better,
    metric_direction,
    metric_family,
    metric_info,
    metric_label,
)
from analysis.quantization import CALIBRATED_METRICS, QUANTIZATION_METRICS
from analysis.study import FAMILIES


def test_every_entry_is_well_formed():
    for name, info in METRICS.items():
        assert info.name == name
        assert info.direction in DIRECTIONS
        assert info.family in FAMILIES + ("accuracy",), name
        lo, hi = info.bounds
        assert lo < hi and info.label and info.unit


def test_emitted_metric_ids_are_registered():
    names = metric_names(["x", "y", "scale", "rotation", "intensity"]) + list(QUANTIZATION_METRICS) + list(
        CALIBRATED_METRICS) + ["twonn_id_ci_low", "int8_sqnr_db_stream_ci_high"]
    for name in names:
        assert metric_info(name) is not None, name
    assert metric_family("factor_decode_r2_rotation_knn") == "information"
    assert metric_info("no_such_metric") is None and metric_label("no_such_metric") == "no_such_metric"


def test_directions_agree_everywhere():
    # the dashboard once called a higher twonn_id "keeps more" while the report gave it none
    assert metric_direction("twonn_id") == 0 and higher_is_better("twonn_id") is None
    assert metric_direction("recon_error_knn") == -1 and metric_direction("input_decode_r2") == 1
    assert metric_direction("input_decode_r2_ci_low") == 0  # bounds are not compared
    for name, info in METRICS.items():
        want = None if info.direction is None else info.direction == "higher keeps more"
        assert report.HIGHER_IS_BETTER.get(name) == want, name
        assert figures.metric_label(name) == info.label
    assert report.metric_family("label_decode_acc") == "information"
    assert report.metric_family("test_accuracy") is None


def test_interval_bounds_inherit_family_and_label():
    info = metric_info("twonn_id_ci_high")
    assert info.family == "dimension" and info.label.startswith(METRICS["twonn_id"].label)
    assert "upper bound" in info.label
    assert METRICS["input_decode_r2"].bounds == (-math.inf, 1)
