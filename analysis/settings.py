"""The study settings: :class:`StudyConfig`, the one schema of every setting that changes the numbers.

Each field carries a :class:`FieldSpec` (help text, bounds or choices, its report-config key
and its ``bnprobe probe`` option), and :func:`check_study_field` is the one validation routine.
``StudyConfig.__post_init__``, the command line (:mod:`analysis.cli`, options built from
:data:`STUDY_FIELDS`) and the report config (:mod:`analysis.report.config`, ``[study]`` and
``[topology]``) all go through it; the dashboard starts from the named presets
(:data:`SHIPPED_CONFIG`, :data:`DASHBOARD_PROBE_CONFIG`). docs/design.md "Settings and
defaults" says which default holds where.

This module imports neither torch nor pandas, so ``bnprobe --help`` stays fast;
:mod:`analysis.study` re-exports every name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

__all__ = [
    "DASHBOARD_PROBE_CONFIG",
    "FAMILIES",
    "SHIPPED_CONFIG",
    "STUDY_FIELDS",
    "FieldSpec",
    "StudyConfig",
    "StudyFieldError",
    "check_study_field",
]

#: Metric families, in the order they are computed.
FAMILIES: tuple[str, ...] = (
    "spectrum", "activity", "reconstruction", "topology", "dimension", "similarity", "quantization",
    "information",
)


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """How one :class:`StudyConfig` field is checked, documented and exposed.

    The command line (``bnprobe probe``), the report config (``[study]`` / ``[topology]``) and
    the dashboard read these instead of restating the bounds, choices and help text.

    Attributes
    ----------
    help : str
        One-line description (CLI ``--help``, docs).
    kind : str
        ``int``, ``float`` (open interval ``(low, high)``), ``choice``, ``names`` (a non-empty
        list of names from ``choices``), ``bool``, ``str`` (non-empty) or ``points`` (a name or
        glob, or a list of them).
    low, high : float or None
        Bounds: ``int`` is ``>= low``; ``float`` lies in ``(low, high)``.
    choices : tuple or None
        Allowed values of ``choice`` and ``names``.
    optional : bool
        None is allowed (and means "all" / "unset").
    toml : str or None
        ``section.key`` of the field in a report config; None: set elsewhere in the config.
    cli : str or None
        Option of ``bnprobe probe``; None: not on the command line.
    metavar : str or None
        The value's name in ``--help``.
    """

    help: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    optional: bool = False
    toml: str | None = None
    cli: str | None = None
    metavar: str | None = None

    def expected(self) -> str:
        """What a valid value is, as the middle of "must be ... Got ... instead"."""
        if self.kind == "int":
            text = f"an int >= {self.low:g}"
        elif self.kind == "float":
            text = f"a float in ({self.low:g}, {self.high:g})"
        elif self.kind == "choice":
            text = f"one of {list(self.choices or ())}"
        elif self.kind == "names":
            text = f"a non-empty list of names from {list(self.choices or ())}"
        elif self.kind == "bool":
            text = "a bool (true or false)"
        elif self.kind == "points":
            text = "a capture-point name or glob (e.g. 'blocks.*.project'), or a list of them"
        else:
            text = "a non-empty string"
        return text + (" or None" if self.optional else "")


class StudyFieldError(ValueError):
    """A :class:`StudyConfig` field got a bad value; ``expected`` and ``got`` let each entry point
    name the value its own way (``--reservoir``, ``study.reservoir_size``, ``reservoir_size``)."""

    def __init__(self, name: str, expected: str, got: Any) -> None:
        self.name, self.expected, self.got = name, expected, got
        super().__init__(f"The '{name}' parameter of StudyConfig must be {expected}. Got {got!r} instead.")


def _spec(default: Any, help: str, kind: str, **kw: Any) -> Any:
    return dataclasses.field(default=default, metadata={"spec": FieldSpec(help=help, kind=kind, **kw)})


def check_study_field(name: str, value: Any) -> Any:
    """Validate one :class:`StudyConfig` field; return the value (``names`` as a tuple).

    The one validation routine of the study settings: :class:`StudyConfig`, the CLI and the
    report config all call it.

    Raises
    ------
    StudyFieldError
        ``value`` is not allowed by :data:`STUDY_FIELDS` ``[name]``.
    KeyError
        ``name`` is not a field.
    """
    spec = STUDY_FIELDS[name]
    if value is None and spec.optional:
        return None
    bad = StudyFieldError(name, spec.expected(), value)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if spec.kind == "int":
        if not (number and isinstance(value, int)) or value < spec.low:
            raise bad
    elif spec.kind == "float":
        if not number or not (spec.low < value < spec.high):
            raise bad
    elif spec.kind == "choice":
        if value not in (spec.choices or ()) or isinstance(value, bool):
            raise bad
    elif spec.kind == "names":
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
            raise bad
        unknown = [v for v in value if v not in (spec.choices or ())]
        if unknown:
            raise StudyFieldError(name, spec.expected(), unknown)
        return tuple(value)
    elif spec.kind == "bool":
        if not isinstance(value, bool):
            raise bad
    elif spec.kind == "points":
        many = isinstance(value, (list, tuple))
        items = list(value) if many else [value]
        if (many and not items) or not all(isinstance(v, str) and v for v in items):
            raise bad
    elif not isinstance(value, str) or not value:
        raise bad
    return value


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """Settings of one study (everything that changes the numbers): the one schema.

    Each field carries a :class:`FieldSpec` (help, bounds, choices, its report-config key and
    CLI option; :data:`STUDY_FIELDS`), checked by :func:`check_study_field`. ``bnprobe probe``
    builds its options from it, ``bnprobe report`` validates ``[study]`` / ``[topology]`` with
    it, and the dashboard starts from the named presets (:data:`SHIPPED_CONFIG`,
    :data:`DASHBOARD_PROBE_CONFIG`). docs/design.md "Settings and defaults" says which default
    holds where.

    Parameters
    ----------
    dataset : str
        ``digits``, ``shapes``, ``natural`` or a path (.npz / image folder).
    split : str
        ``train``, ``test`` or ``all`` (built-in datasets).
    n_images : int or None
        Use only the first ``n_images`` images.
    points : str or None
        Capture points (name or glob); None = all.
    families : tuple of str
        Metric families to compute (see :data:`FAMILIES`).
    sample_unit : str
        ``position`` (every spatial position is a point) or ``image`` (global average pool).
    reservoir_size : int
        Points kept per capture point for the point-cloud metrics.
    moments : str
        ``sampled`` (default) or ``exact`` covariance (see :func:`probes.capture.probe`).
    moment_positions : int
        Expected positions per image that enter the moments when sampled.
    seed : int
        Seeds the reservoir and moment sampling, the decoders' splits and the topology subsample.
    rtol : float
        Relative tolerance of the numerical rank.
    topology_points : int
        Greedy-permutation subsample size for persistent homology.
    topology_maxdim : int
        Highest homology dimension (1 by default; 2 is much slower).
    gray_to_rgb : bool
        Repeat a one-channel dataset for an RGB model.
    batch_size : int
        Images per forward pass.
    """

    dataset: str = _spec("digits", "digits, shapes, natural, or a path (.npz with x (N,C,H,W) [and y], or an "
                         "image folder)", "str", cli="--dataset", metavar="NAME|PATH")
    split: str = _spec("test", "split of a built-in dataset", "choice", choices=("train", "test", "all"),
                       toml="study.split", cli="--split")
    n_images: int | None = _spec(None, "use only the first N images (unset: all)", "int", low=2,
                                 optional=True, toml="study.n_images", cli="--n-images", metavar="N")
    points: str | None = _spec(None, "capture points: a name or glob, e.g. 'blocks.*.project*' (unset: all)",
                               "points", optional=True, toml="study.points", cli="--points", metavar="GLOB")
    families: tuple[str, ...] = _spec(FAMILIES, "metric families to compute", "names",
                                      choices=FAMILIES, toml="study.families", cli="--families", metavar="FAMILY")
    sample_unit: str = _spec("position", "position: every spatial position is a point; image: one "
                             "average-pooled vector per image", "choice", choices=("position", "image"),
                             toml="study.sample_unit", cli="--sample-unit")
    reservoir_size: int = _spec(1000, "reservoir points kept per capture point (point-cloud metrics)", "int",
                                low=10, toml="study.reservoir_size", cli="--reservoir", metavar="K")
    moments: str = _spec("sampled", "covariance from sampled positions or from every position", "choice",
                         choices=("sampled", "exact"), toml="study.moments", cli="--moments")
    moment_positions: int = _spec(16, "expected positions per image in the sampled moments", "int", low=1,
                                  toml="study.moment_positions", cli="--moment-positions", metavar="N")
    seed: int = _spec(0, "seed of the reservoir and moment sampling, decoder splits, topology subsample",
                      "int", low=0, toml="study.seed", cli="--seed", metavar="S")
    rtol: float = _spec(1e-6, "relative tolerance of the numerical rank", "float", low=0.0, high=1.0,
                        toml="study.rtol", cli="--rtol")
    topology_points: int = _spec(200, "greedy-permutation subsample size for persistent homology", "int",
                                 low=10, toml="topology.points", cli="--topology-points", metavar="N")
    topology_maxdim: int = _spec(1, "highest homology dimension (2 is much slower)", "choice",
                                 choices=(1, 2), toml="topology.maxdim", cli="--topology-maxdim")
    gray_to_rgb: bool = _spec(False, "repeat a 1-channel dataset for an RGB model", "bool",
                              toml="study.gray_to_rgb", cli="--gray-to-rgb")
    batch_size: int = _spec(128, "images per forward pass", "int", low=1, toml="study.batch_size",
                            cli="--batch-size", metavar="N")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, check_study_field(f.name, getattr(self, f.name)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["families"] = list(self.families)
        return d

    def key(self) -> str:
        """Short stable hash of the settings (for cache file names)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


#: Field name -> :class:`FieldSpec` of every :class:`StudyConfig` field, in field order.
STUDY_FIELDS: dict[str, FieldSpec] = {f.name: f.metadata["spec"] for f in dataclasses.fields(StudyConfig)}


#: Study settings of the precomputed results that ship with the checkpoints (the schema's
#: defaults; ``scripts/precompute_results.py`` sets the dataset per checkpoint).
SHIPPED_CONFIG = StudyConfig()

#: Preset of the dashboard's "Probe a checkpoint" page: a live probe of an uploaded model must
#: answer in seconds, so it starts on 32 test images and the point clouds are smaller than in the
#: shipped studies (reservoir 600, topology on 100 points). The page's widgets start from it; the
#: user picks dataset, images and families, and gray_to_rgb follows the model's input channels.
DASHBOARD_PROBE_CONFIG = StudyConfig(n_images=32, reservoir_size=600, topology_points=100)
