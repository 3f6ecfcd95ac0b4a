"""The report config: TOML file -> validated :class:`ReportConfig`, before any work starts.

The ``[study]`` and ``[topology]`` keys are the :class:`analysis.settings.StudyConfig` fields
with a report-config key (``FieldSpec.toml`` in :data:`analysis.settings.STUDY_FIELDS`), checked
by the schema's one routine :func:`analysis.settings.check_study_field`; an absent key keeps the
StudyConfig default. This module validates only what is the report's own (checkpoints,
datasets, figures, tables, spiral, comparison, surgery, claims).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.metrics import metric_family as registry_family
from analysis.report.vocabulary import _check_point_globs
from analysis.settings import FAMILIES, STUDY_FIELDS, StudyConfig, StudyFieldError, check_study_field
from probes._io import sha256_file
from probes.points import STAGES, is_point_name

__all__ = ["CheckpointSpec", "DEFAULT_CONFIG", "FIGURE_FORMATS", "ReportConfig", "load_config", "metric_family"]


#: The documented default config (runs on the shipped checkpoints).
DEFAULT_CONFIG: Path = Path(__file__).resolve().parents[1] / "configs" / "paper.toml"


#: Figure file formats that :func:`analysis.figures.save_chart` writes.
FIGURE_FORMATS: tuple[str, ...] = ("svg", "png", "pdf")


_FAMILY_FUNCTIONS: dict[str, tuple[str, str]] = {
    "spectrum": ("analysis.spectrum", "spectrum_metrics"),
    "activity": ("analysis.activity", "activity_metrics"),
    "reconstruction": ("analysis.reconstruction", "reconstruction_metrics"),
    "topology": ("analysis.topology", "persistent_homology"),
    "dimension": ("analysis.dimension", "intrinsic_dimension"),
    "similarity": ("analysis.similarity", "similarity_metrics"),
    "quantization": ("analysis.quantization", "quantization_metrics"),
    "information": ("analysis.information", "information_metrics"),
}


def metric_family(metric: str) -> str | None:
    """The metric family (see :data:`analysis.study.FAMILIES`) that computes ``metric``.

    From the registry :mod:`analysis.metrics`; None for unknown names and for
    ``test_accuracy`` (not computed by a family).
    """
    family = registry_family(metric)
    return None if family == "accuracy" else family


@dataclasses.dataclass(frozen=True)
class CheckpointSpec:
    """One checkpoint of the config, resolved: a zoo name or a weights file (+ options)."""

    name: str
    spec: str
    arch: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    size: int | None = None
    gray_to_rgb: bool | None = None
    sha256: str | None = None
    card: dict[str, Any] | None = dataclasses.field(default=None, compare=False, hash=False, repr=False)

    @property
    def trained_on(self) -> str | None:
        return ((self.card or {}).get("dataset") or {}).get("name")


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """A validated report config (see :func:`load_config`)."""

    source: Path
    raw: dict[str, Any]
    title: str
    formats: tuple[str, ...]
    checkpoints: tuple[CheckpointSpec, ...]
    datasets: tuple[str, ...]
    pairing: str
    study: StudyConfig
    diagram_points: tuple[str, ...]
    figure_designs: tuple[str, ...]
    depth_metrics: tuple[str, ...]
    depth_stages: tuple[str, ...]
    table_metrics: tuple[str, ...]
    table_stages: tuple[str, ...]
    table_designs: tuple[str, ...]
    spiral: dict[str, Any] | None
    notes: tuple[str, ...] = ()
    compare_designs: tuple[str, ...] = ("linear", "relu6")
    compare_level: float = 0.95
    surgery: dict[str, Any] | None = None
    claims: dict[str, Any] | None = None


class _Checker:
    """Validation helpers that name the config file and the key in every message."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, key: str, expected: str, got: Any) -> ValueError:
        return ValueError(f"Config {self.source.name}: '{key}' must be {expected}. Got {got!r} instead.")

    def keys(self, table: Any, section: str, allowed: Sequence[str]) -> dict[str, Any]:
        where = f"[{section}]" if section else "the top level"
        if not isinstance(table, dict):
            raise self.fail(section, "a table", table)
        unknown = sorted(set(table) - set(allowed))
        if unknown:
            key = f"{section}.{unknown[0]}" if section else unknown[0]
            listed = ", ".join(sorted(allowed)) if allowed else "none in this version"
            raise ValueError(f"Config {self.source.name}: unknown key '{key}'. Allowed keys of "
                             f"{where}: {listed}.")
        return table

    def int_(self, key: str, v: Any, low: int, *, none: bool = False) -> int | None:
        if v is None and none:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise self.fail(key, f"an integer >= {low}", v)
        return v

    def float_(self, key: str, v: Any, low: float, high: float) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not low < v < high:
            raise self.fail(key, f"a number in ({low:g}, {high:g})", v)
        return float(v)

    def bool_(self, key: str, v: Any) -> bool:
        if not isinstance(v, bool):
            raise self.fail(key, "true or false", v)
        return v

    def str_(self, key: str, v: Any) -> str:
        if not isinstance(v, str) or not v:
            raise self.fail(key, "a non-empty string", v)
        return v

    def choice(self, key: str, v: Any, allowed: Sequence[str]) -> str:
        if v not in allowed:
            raise self.fail(key, f"one of {list(allowed)}", v)
        return v

    def str_list(self, key: str, v: Any, allowed: Sequence[str] | None = None, *,
                 empty: bool = True) -> tuple[str, ...]:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
            raise self.fail(key, "a list of strings", v)
        if not v and not empty:
            raise self.fail(key, "a non-empty list", v)
        if allowed is not None:
            bad = [s for s in v if s not in allowed]
            if bad:
                raise self.fail(key, f"a list of names from {list(allowed)}", bad)
        return tuple(v)

    def int_list(self, key: str, v: Any, low: int) -> tuple[int, ...]:
        if (not isinstance(v, list) or not v
                or not all(isinstance(i, int) and not isinstance(i, bool) and i >= low for i in v)):
            raise self.fail(key, f"a non-empty list of integers >= {low}", v)
        return tuple(v)

    def float_list(self, key: str, v: Any) -> tuple[float, ...]:
        if (not isinstance(v, list) or not v
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
            raise self.fail(key, "a non-empty list of numbers", v)
        return tuple(float(x) for x in v)


def _toml_keys(section: str) -> tuple[str, ...]:
    """Keys of ``[section]`` that set StudyConfig fields (from their FieldSpec.toml)."""
    return tuple(s.toml.split(".")[1] for s in STUDY_FIELDS.values() if s.toml and s.toml.startswith(f"{section}."))


_SECTIONS: dict[str, tuple[str, ...]] = {
    "report": ("title", "formats"),
    "checkpoints": ("zoo", "files"),
    "datasets": ("names", "pairing"),
    # the StudyConfig fields with a report-config key (FieldSpec.toml), and the report's own keys
    "study": _toml_keys("study"),
    "topology": (*_toml_keys("topology"), "diagrams"),
    "decoder": (),  # filled from StudyConfig fields named decoder_* (none yet)
    "figures": ("designs", "depth_metrics", "depth_stages"),
    "tables": ("metrics", "stages", "designs"),
    "spiral": ("enabled", "dims", "activation", "seeds"),
    "compare": ("designs", "level"),
    "surgery": ("enabled", "checkpoints", "blocks"),
    "claims": ("enabled", "edges"),
}


_FILE_KEYS = ("path", "arch", "mean", "std", "size", "gray_to_rgb")


_GLOB_CHARS = set("*?[")


def _decoder_fields() -> dict[str, str]:
    """``[decoder]`` key -> StudyConfig field, for StudyConfig fields named ``decoder_*``."""
    return {f.name[len("decoder_"):]: f.name for f in dataclasses.fields(StudyConfig)
            if f.name.startswith("decoder_")}


def _resolve_checkpoints(ck: _Checker, table: dict[str, Any], base: Path) -> tuple[list[CheckpointSpec], list[str]]:
    from probes.catalogue import list_checkpoints

    notes: list[str] = []
    cards = {c["name"]: c for c in list_checkpoints()}
    out: list[CheckpointSpec] = []
    for pattern in ck.str_list("checkpoints.zoo", table.get("zoo", [])):
        if _GLOB_CHARS & set(pattern):
            names = sorted(fnmatch.filter(cards, pattern))
            if not names:
                notes.append(f"checkpoints.zoo pattern {pattern!r} matches no shipped checkpoint")
        elif pattern in cards:
            names = [pattern]
        else:
            raise ck.fail("checkpoints.zoo", f"zoo names or globs; shipped checkpoints are {sorted(cards)}",
                          pattern)
        for name in names:
            card = cards[name]
            out.append(CheckpointSpec(name=name, spec=name, sha256=card.get("sha256"), card=card))
    files = table.get("files", [])
    if not isinstance(files, list):
        raise ck.fail("checkpoints.files", "a list of paths/globs or tables {path = ..., arch = ...}", files)
    for i, item in enumerate(files):
        key = f"checkpoints.files[{i}]"
        entry = {"path": item} if isinstance(item, str) else item
        if not isinstance(entry, dict):
            raise ck.fail(key, "a path/glob or a table {path = ..., arch = ...}", item)
        ck.keys(entry, key, _FILE_KEYS)
        pattern = ck.str_(f"{key}.path", entry.get("path"))
        arch = ck.str_(f"{key}.arch", entry["arch"]) if "arch" in entry else None
        if arch is not None:
            from probes.loading import ARCH_FORMS, _parse_arch

            try:
                kind, arch_name = _parse_arch(arch)
            except ValueError:
                raise ck.fail(f"{key}.arch", f"an architecture, one of {ARCH_FORMS}", arch) from None
            if kind == "torchvision":
                from probes._lazy import import_torchvision

                import_torchvision()  # without torch's compiler stack
                import torchvision.models as tvm

                if arch_name not in tvm.list_models():
                    raise ck.fail(f"{key}.arch", "a torchvision model name (torchvision.models.list_models())",
                                  arch)
            elif kind == "timm":
                import timm

                if not timm.is_model(arch_name):
                    raise ck.fail(f"{key}.arch", "a timm model name (timm.list_models())", arch)
        mean = ck.float_list(f"{key}.mean", entry["mean"]) if "mean" in entry else None
        std = ck.float_list(f"{key}.std", entry["std"]) if "std" in entry else None
        size = ck.int_(f"{key}.size", entry["size"], 8) if "size" in entry else None
        gray = ck.bool_(f"{key}.gray_to_rgb", entry["gray_to_rgb"]) if "gray_to_rgb" in entry else None
        full = Path(pattern).expanduser()
        full = full if full.is_absolute() else base / full
        if _GLOB_CHARS & set(pattern):
            paths = sorted(p for p in Path(full.anchor).glob(str(full.relative_to(full.anchor))) if p.is_file())
            paths = [p for p in paths if p.suffix.lower() != ".json"]
            if not paths:
                raise ck.fail(f"{key}.path", "a glob that matches at least one weights file", pattern)
        else:
            if not full.is_file():
                raise ck.fail(f"{key}.path", "an existing weights file (.safetensors, .pt, .pth, .bin)",
                              str(full))
            paths = [full]
        for p in paths:
            p = p.resolve()
            card = None
            card_path = p.with_suffix(".json")
            if arch in (None, "zoo") and card_path.is_file():
                from probes.loading import card_beside

                card = card_beside(p)  # a bad card fails here, naming its file and key
            if arch is None and card is None:
                raise ck.fail(f"{key}.arch", "given for a file without a zoo card beside it "
                              "(e.g. 'torchvision:mobilenet_v2')", str(p))
            name = str(card.get("name", p.stem)) if card else p.stem
            out.append(CheckpointSpec(name=name, spec=str(p), arch=arch, mean=mean, std=std, size=size,
                                      gray_to_rgb=gray, sha256=sha256_file(p), card=card))
    seen: dict[str, str] = {}
    for c in out:
        if c.name in seen and seen[c.name] != c.spec:
            raise ck.fail("checkpoints", "checkpoints with distinct names", f"{c.name} ({seen[c.name]} and {c.spec})")
        seen[c.name] = c.spec
    unique = list({c.name: c for c in out}.values())
    if not unique:
        raise ck.fail("checkpoints", f"at least one checkpoint (zoo names/globs from {sorted(cards)} or files)",
                      table)
    return unique, notes


def load_config(path: str | Path) -> ReportConfig:
    """Read and validate a report config; raises ValueError before any work starts.

    Parameters
    ----------
    path : str or Path
        A TOML file (``analysis/configs/paper.toml`` documents every key). Relative paths in
        it (checkpoint files, dataset paths) are relative to the config file's folder.

    Returns
    -------
    ReportConfig

    Raises
    ------
    ValueError
        Unknown sections or keys (the message lists the allowed ones), bad values (the message
        names the key, the allowed values and the value found), zoo names that do not exist,
        file globs that match nothing, metric families whose code is missing, figure/table
        metrics whose family is not computed.
    FileNotFoundError
        ``path`` does not exist.
    """
    from probes.datasets import BUILTIN

    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"Config file {str(source)!r} does not exist.")
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"Config {source.name} is not valid TOML: {exc}.") from None
    ck = _Checker(source)
    base = source.resolve().parent
    ck.keys(raw, "", list(_SECTIONS))
    sec = {name: ck.keys(raw.get(name, {}), name, keys) for name, keys in _SECTIONS.items()
           if name != "decoder"}
    decoder_map = _decoder_fields()
    sec["decoder"] = ck.keys(raw.get("decoder", {}), "decoder", list(decoder_map))

    rep = sec["report"]
    title = ck.str_("report.title", rep.get("title", "Linear vs ReLU bottlenecks"))
    formats = ck.str_list("report.formats", rep.get("formats", list(FIGURE_FORMATS)), FIGURE_FORMATS,
                          empty=False)
    if "svg" not in formats and "png" not in formats:
        raise ck.fail("report.formats", "a list with 'svg' or 'png' (report.html embeds one of them)",
                      list(formats))

    ds = sec["datasets"]
    names = ck.str_list("datasets.names", ds.get("names", ["digits", "shapes"]), empty=False)
    datasets = []
    for n in names:
        if n in BUILTIN or n == "natural":
            datasets.append(n)
            continue
        p = Path(n).expanduser()
        p = p if p.is_absolute() else base / p
        if not (p.is_dir() or (p.is_file() and p.suffix.lower() == ".npz")):
            raise ck.fail("datasets.names", f"built-in names {list(dict.fromkeys([*BUILTIN, 'natural']))} or existing .npz "
                          "files / image folders", n)
        datasets.append(str(p.resolve()))
    pairing = ck.choice("datasets.pairing", ds.get("pairing", "trained"), ("trained", "all"))

    # [study] and [topology]: the StudyConfig schema (STUDY_FIELDS) checks every value; an absent
    # key keeps the StudyConfig default
    kwargs: dict[str, Any] = {}
    for name, spec in STUDY_FIELDS.items():
        if spec.toml is None:
            continue
        section, key = spec.toml.split(".")
        if key not in sec[section]:
            continue
        try:
            kwargs[name] = check_study_field(name, sec[section][key])
        except StudyFieldError as exc:
            raise ck.fail(spec.toml, exc.expected, exc.got) from None
    if "families" in kwargs:
        kwargs["families"] = tuple(f for f in FAMILIES if f in kwargs["families"])
    if kwargs.get("points") is not None:
        points = [kwargs["points"]] if isinstance(kwargs["points"], str) else list(kwargs["points"])
        _check_point_globs(ck, points)
        kwargs["points"] = points[0] if len(points) == 1 else tuple(points)
    for key, value in sec["decoder"].items():
        kwargs[decoder_map[key]] = value
    try:
        study = StudyConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Config {source.name}: {exc}") from None
    families = study.families
    missing = []
    for fam in families:
        module, attr = _FAMILY_FUNCTIONS[fam]
        try:
            mod = __import__(module, fromlist=[attr])
            getattr(mod, attr)
        except (ImportError, AttributeError):
            missing.append(f"{fam} (needs {module}.{attr})")
    if missing:
        raise ck.fail("study.families", "families whose code is installed; not available: "
                      + "; ".join(missing), list(families))
    top = sec["topology"]
    diagrams = ck.str_list("topology.diagrams", top.get("diagrams", []))
    for p in diagrams:
        if not is_point_name(p):
            raise ck.fail("topology.diagrams", "capture point names like 'blocks.3.project' "
                          "(suffixes input, expand[.pre], depthwise[.pre], project[.pre], output)", p)
    if diagrams and "topology" not in families:
        raise ck.fail("topology.diagrams", "empty unless 'topology' is in study.families", list(diagrams))

    def metrics_key(key: str, value: Any) -> tuple[str, ...]:
        ms = ck.str_list(key, value)
        for m in ms:
            fam = metric_family(m)
            if fam is None:
                raise ck.fail(key, "metric names of the results schema (docs/design.md), e.g. "
                              "'effective_rank_frac', 'dead_fraction', 'recon_error_linear'", m)
            if fam not in families:
                raise ck.fail(key, f"metrics of the computed families {list(families)}; "
                              f"{m!r} needs {fam!r} in study.families", m)
        return ms

    fig = sec["figures"]
    tab = sec["tables"]
    figure_designs = ck.str_list("figures.designs", fig.get("designs", ["linear", "relu6"]))
    depth_metrics = metrics_key("figures.depth_metrics", fig.get(
        "depth_metrics", [m for m in ("effective_rank_frac", "dead_fraction") if metric_family(m) in families]))
    depth_stages = ck.str_list("figures.depth_stages", fig.get("depth_stages", ["expand", "project"]),
                               STAGES)
    table_metrics = metrics_key("tables.metrics", tab.get("metrics", list(depth_metrics)))
    table_stages = ck.str_list("tables.stages", tab.get("stages", list(depth_stages)), STAGES)
    table_designs = ck.str_list("tables.designs", tab.get("designs", []))

    from probes.activations import ACTIVATIONS

    sp = sec["spiral"]
    spiral: dict[str, Any] | None = {
        "dims": ck.int_list("spiral.dims", sp.get("dims", [2, 3, 5, 15, 30]), 2),
        "activation": ck.choice("spiral.activation", sp.get("activation", "relu"), ACTIVATIONS),
        "seeds": ck.int_list("spiral.seeds", sp.get("seeds", [0, 1, 2]), 0),
    }
    if not ck.bool_("spiral.enabled", sp.get("enabled", True)):
        spiral = None
    cl = sec["claims"]
    claims = ({"edges": ck.bool_("claims.edges", cl.get("edges", True))}
              if ck.bool_("claims.enabled", cl.get("enabled", False)) else None)

    cmp = sec["compare"]
    compare_designs = ck.str_list("compare.designs", cmp.get("designs", ["linear", "relu6"]), empty=False)
    if len(compare_designs) != 2 or compare_designs[0] == compare_designs[1]:
        raise ck.fail("compare.designs", "two different design names (a, b)", list(compare_designs))
    compare_level = ck.float_("compare.level", cmp.get("level", 0.95), 0.0, 1.0)

    su = sec["surgery"]
    surgery: dict[str, Any] | None = {
        "checkpoints": ck.str_list("surgery.checkpoints", su.get("checkpoints", [])),
        "blocks": ck.int_list("surgery.blocks", su.get("blocks", []), 0) if su.get("blocks") else None,
    }
    if not ck.bool_("surgery.enabled", su.get("enabled", False)) or not surgery["checkpoints"]:
        surgery = None
    else:
        from probes.catalogue import list_checkpoints

        zoo = sorted(c["name"] for c in list_checkpoints())
        for name in surgery["checkpoints"]:
            if name not in zoo:
                raise ck.fail("surgery.checkpoints", f"shipped zoo checkpoint names ({', '.join(zoo)})", name)

    checkpoints, notes = _resolve_checkpoints(ck, sec["checkpoints"], base)
    return ReportConfig(
        source=source.resolve(), raw=raw, title=title, formats=formats,
        checkpoints=tuple(checkpoints), datasets=tuple(datasets), pairing=pairing, study=study,
        diagram_points=diagrams, figure_designs=figure_designs, depth_metrics=depth_metrics,
        depth_stages=depth_stages, table_metrics=table_metrics, table_stages=table_stages,
        table_designs=table_designs, spiral=spiral, notes=tuple(notes), surgery=surgery,
        compare_designs=compare_designs, compare_level=compare_level,
        claims=claims,
    )
