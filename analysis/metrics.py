"""One registry of every metric id: family, label, unit, bounds and direction.

The study, the report, the figures and the dashboard read labels and directions from here
(:func:`metric_info`), so a metric cannot be "keeps more" in one table and undirected in another.

Direction says what a *higher* value means for the information a capture point keeps:

``"higher keeps more"``  rank-like counts, active units, decodability (R^2, accuracy), SQNR.
``"lower keeps more"``   dead / rare / saturated units, reconstruction errors, topological
                         distances to the block input.
``None``                 no direction: Betti numbers and persistence summaries describe a shape
                         (more holes is not more information); intrinsic dimension (TwoNN, MLE)
                         rises with noise as well as with kept structure; linear CKA to the
                         block input measures *linear* similarity, and an invertible non-linear
                         map can keep everything at low CKA. Bootstrap / redraw bounds
                         (``*_ci_low``, ``*_ci_high``) carry no direction of their own.

Derived names are resolved by rule: ``<m>_frac`` (divided by C), ``<m>_knn`` (k-NN column of an
information metric), ``factor_decode_r2_<factor>``, ``<m>_ci_low`` / ``<m>_ci_high``.
"""

from __future__ import annotations

import dataclasses
import math
import re

__all__ = [
    "DIRECTIONS",
    "METRICS",
    "MetricInfo",
    "higher_is_better",
    "is_known",
    "metric_direction",
    "metric_family",
    "metric_info",
    "metric_label",
]

#: Allowed values of :attr:`MetricInfo.direction`.
DIRECTIONS: tuple[str | None, ...] = ("higher keeps more", "lower keeps more", None)

_HI, _LO = "higher keeps more", "lower keeps more"
_INF = math.inf
# ASCII only: the renderers' fonts lack combining accents and fall back to a serif face.
_REL_ERR = "||x_rec - x|| / ||x - mean x||"


@dataclasses.dataclass(frozen=True)
class MetricInfo:
    """What one metric id means.

    Attributes
    ----------
    name : str
        The id in the ``metric`` column.
    family : str
        The metric family that computes it (:data:`analysis.study.FAMILIES`), or ``"accuracy"``.
    label : str
        Axis title with units.
    unit : str
        ``dims``, ``fraction``, ``count``, ``R^2``, ``dB``, ``nats``, ``distance`` ...
    bounds : (float, float)
        Range of possible values (``-inf`` / ``inf`` where open).
    direction : str or None
        One of :data:`DIRECTIONS` (module docstring).
    """

    name: str
    family: str
    label: str
    unit: str
    bounds: tuple[float, float]
    direction: str | None


def _m(name: str, family: str, label: str, unit: str, bounds: tuple[float, float],
       direction: str | None) -> MetricInfo:
    return MetricInfo(name, family, label, unit, bounds, direction)


_SPECTRUM = [
    ("rank", "Numerical rank"), ("effective_rank", "Effective rank"),
    ("participation_ratio", "Participation ratio"), ("stable_rank", "Stable rank"),
    ("pca_dims_90", "PCA dims for 90 % variance"), ("pca_dims_95", "PCA dims for 95 % variance"),
    ("pca_dims_99", "PCA dims for 99 % variance"),
]
_ENTRIES: list[MetricInfo] = []
for _name, _label in _SPECTRUM:
    _ENTRIES.append(_m(_name, "spectrum", f"{_label} (dims)" if _name.startswith(("rank", "eff", "part", "stab"))
                       else _label, "dims", (0, _INF), _HI))
    _ENTRIES.append(_m(f"{_name}_frac", "spectrum", f"{_label} / C", "fraction", (0, 1), _HI))
_ENTRIES += [
    _m("dead_fraction", "activity", "Dead channels (fraction of C)", "fraction", (0, 1), _LO),
    _m("rare_fraction", "activity", "Channels active < 1 % (fraction of C)", "fraction", (0, 1), _LO),
    _m("saturated_fraction", "activity", "Saturated values (fraction)", "fraction", (0, 1), _LO),
    _m("positive_min", "activity", "Min active channels per point (count)", "count", (0, _INF), _HI),
    _m("positive_mean", "activity", "Mean active channels per point (count)", "count", (0, _INF), _HI),
    _m("positive_max", "activity", "Max active channels per point (count)", "count", (0, _INF), _HI),
    _m("above_threshold_fraction", "activity", "Points above invertibility threshold (fraction)", "fraction",
       (0, 1), _HI),
    _m("lemma2_invertible_fraction", "activity", "Lemma-2 invertible points (fraction)", "fraction", (0, 1), _HI),
]
for _d, _dl in (("linear", "Ridge"), ("knn", "k-NN"), ("mlp", "MLP"), ("exact", "Active-set inverse")):
    _ENTRIES.append(_m(f"recon_error_{_d}", "reconstruction",
                       f"{_dl} reconstruction error {_REL_ERR}" if _d != "exact" else f"{_dl} error {_REL_ERR}",
                       "relative error", (0, _INF), _LO))
    _ENTRIES.append(_m(f"recon_r2_{_d}", "reconstruction",
                       f"{_dl} reconstruction R\u00b2" if _d != "exact" else f"{_dl} R\u00b2", "R^2", (-_INF, 1), _HI))
_ENTRIES += [
    _m("recon_exact_fraction", "reconstruction", "Points with an exact inverse (fraction)", "fraction", (0, 1), _HI),
    _m("betti0", "topology", "Betti-0 (significant H0 bars)", "count", (0, _INF), None),
    _m("betti1", "topology", "Betti-1 (significant H1 bars)", "count", (0, _INF), None),
    _m("betti2", "topology", "Betti-2 (significant H2 bars)", "count", (0, _INF), None),
    _m("total_persistence_h1", "topology", "Total H1 persistence (normalised distance)", "distance", (0, _INF), None),
    _m("persistence_entropy_h1", "topology", "H1 persistence entropy (nats)", "nats", (0, _INF), None),
    _m("bottleneck_to_input_h1", "topology", "H1 bottleneck distance to block input", "distance", (0, _INF), _LO),
    _m("wasserstein_to_input_h1", "topology", "H1 Wasserstein distance to block input", "distance", (0, _INF), _LO),
    _m("twonn_id", "dimension", "Intrinsic dimension, TwoNN (dims)", "dims", (0, _INF), None),
    _m("mle_id", "dimension", "Intrinsic dimension, MLE (dims)", "dims", (0, _INF), None),
    _m("cka_to_input", "similarity", "Linear CKA to block input (0\u20131)", "similarity", (0, 1), None),
    _m("int8_sqnr_db", "quantization", "int8 fake-quant SQNR, per-tensor min-max (dB)", "dB", (-_INF, _INF), _HI),
    _m("int8_sqnr_db_per_channel", "quantization", "int8 fake-quant SQNR, per-channel min-max (dB)", "dB",
       (-_INF, _INF), _HI),
    _m("int8_sqnr_db_symmetric", "quantization", "int8 fake-quant SQNR, per-tensor symmetric (dB)", "dB",
       (-_INF, _INF), _HI),
    _m("int8_sqnr_db_per_channel_symmetric", "quantization", "int8 fake-quant SQNR, per-channel symmetric (dB)",
       "dB", (-_INF, _INF), _HI),
    _m("int8_sqnr_db_stream", "quantization", "int8 SQNR, per-channel range of all values (dB)", "dB",
       (-_INF, _INF), _HI),
    _m("int8_sqnr_db_clipped", "quantization", "int8 SQNR, per-tensor 99.99th-percentile-clipped range (dB)", "dB",
       (-_INF, _INF), _HI),
    _m("input_decode_r2", "information", "Input image decoded, ridge R\u00b2 (test split)", "R^2", (-_INF, 1), _HI),
    _m("input_decode_r2_knn", "information", "Input image decoded, k-NN R\u00b2 (test split)", "R^2", (-_INF, 1), _HI),
    _m("label_decode_acc", "information", "Label decoded, linear accuracy (test split)", "fraction", (0, 1), _HI),
    _m("label_decode_acc_knn", "information", "Label decoded, k-NN accuracy (test split)", "fraction", (0, 1), _HI),
    _m("test_accuracy", "accuracy", "Test accuracy", "fraction", (0, 1), _HI),
]

#: Every metric id with its own entry (derived names: :func:`metric_info`).
METRICS: dict[str, MetricInfo] = {m.name: m for m in _ENTRIES}

_FACTOR = re.compile(r"^factor_decode_r2_(?P<factor>[a-z0-9_]+?)(?P<knn>_knn)?$")


def metric_info(name: str) -> MetricInfo | None:
    """The registry entry of ``name`` (derived names resolved by rule); None if unknown.

    Examples
    --------
    >>> metric_info("input_decode_r2_ci_low").direction is None
    True
    >>> metric_info("factor_decode_r2_scale_knn").family
    'information'
    """
    name = str(name)
    if name in METRICS:
        return METRICS[name]
    for end, word in (("_ci_low", "lower"), ("_ci_high", "upper")):
        if name.endswith(end):
            base = metric_info(name.removesuffix(end))
            if base is None:
                return None
            return MetricInfo(name, base.family, f"{base.label}, 95 % interval {word} bound", base.unit,
                              base.bounds, None)
    m = _FACTOR.match(name)
    if m:
        how = "k-NN" if m.group("knn") else "ridge"
        return MetricInfo(name, "information", f"Factor '{m.group('factor')}' decoded, {how} R\u00b2 (test split)",
                          "R^2", (-_INF, 1), _HI)
    return None


def is_known(name: str) -> bool:
    """Whether ``name`` is a metric id of the registry (directly or by rule)."""
    return metric_info(name) is not None


def metric_label(name: str) -> str:
    """Axis title with units; the id itself when unknown."""
    info = metric_info(name)
    return name if info is None else info.label


def metric_family(name: str) -> str | None:
    """The family that computes ``name`` (None if unknown)."""
    info = metric_info(name)
    return None if info is None else info.family


def metric_direction(name: str) -> int:
    """+1 when higher keeps more information, -1 when lower does, 0 without a direction."""
    info = metric_info(name)
    if info is None or info.direction is None:
        return 0
    return 1 if info.direction == _HI else -1


def higher_is_better(name: str) -> bool | None:
    """True / False for a directed metric, None for one without a direction (or unknown)."""
    d = metric_direction(name)
    return None if d == 0 else d > 0
