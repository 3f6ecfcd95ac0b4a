"""Batch analysis reports for papers: ``bnprobe report CONFIG.toml --out DIR``.

One TOML config describes a whole study (checkpoints, datasets, capture points, metric families,
sample sizes, seeds, topology and decoder settings, figures and tables; see
``analysis/configs/paper.toml`` for a documented example). :func:`run_report` validates it
completely *before* any work starts, runs one job per (checkpoint, dataset) through
:func:`analysis.study.run_study` on a pluggable executor, and writes::

    OUT/
      metrics.parquet  metrics.csv      tidy results (docs/design.md schema), deterministic row order
      spiral.csv                        the paper's Figure 1 experiment (analysis.spiral)
      surgery.csv                       bottleneck activation removed / inserted at inference (analysis.surgery)
      figures/*.svg|png|pdf             analysis.figures builders (vl-convert, no browser)
      tables/*.tex                      booktabs tables, mean +- std over seeds, best in bold;
                                        comparison-*.tex: paired a - b over seeds, 95 % CI, p, verdict
      comparison-*.csv                  analysis.compare.compare_designs rows (per block and point)
      report.md  report.html            the report; the HTML embeds every figure (offline)
      provenance.json                   config, versions, git commit, sha256, seeds, timings
      jobs/<job-id>.parquet|npz         one finished job each (the resume cache)

Executors
---------
Local processes by default (``concurrent.futures.ProcessPoolExecutor`` with the ``spawn``
context, one torch thread per job), in this process when ``workers == 1``, and a Dask
distributed cluster when ``scheduler`` is given (``dask.distributed.Client(address)``). Workers
only compute and *return* results; this process alone writes files, so a Dask cluster needs no
shared file system (only the same Python environment and access to the checkpoints and
datasets). Every job sets torch to one thread while it runs, so the numbers do not depend on
the executor: a serial, a process-pool and a Dask run give identical metrics files.

Resume and safety
-----------------
A finished job is written to ``OUT/jobs/<job-id>.{parquet,npz}`` (atomic renames through
:func:`probes._io.atomic_path`); the job id hashes the checkpoint's sha256, its loading options
and the study settings, so a changed config never reuses stale results. A run that is killed
and started again loads finished jobs instead of recomputing them (``provenance.json`` counts
``computed`` and ``cached`` jobs). Every output file appears only when complete.

Failures
--------
A job that fails (unreadable checkpoint, wrong architecture ...) is listed in the summary on
stderr and in ``report.md`` while the other jobs complete; :func:`run_report` then returns 1.
A bad config raises ValueError (the CLI prints one line and exits with status 2).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fnmatch
import hashlib
import html
import json
import math
import os
import re
import subprocess
import sys
import time
import tomllib
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis._workers import init_worker
from analysis.metrics import METRICS, higher_is_better
from analysis.metrics import metric_family as registry_family
from probes._io import atomic_write_json, atomic_write_text, check_output, sha256_file

__all__ = [
    "CheckpointSpec",
    "DEFAULT_CONFIG",
    "FIGURE_FORMATS",
    "HIGHER_IS_BETTER",
    "Job",
    "ReportConfig",
    "accuracy_table",
    "comparison_table",
    "comparison_to_latex",
    "comparison_to_markdown",
    "load_config",
    "metric_family",
    "metrics_table",
    "plan_jobs",
    "report_figures",
    "run_report",
    "table_to_latex",
    "table_to_markdown",
]

#: The documented default config (runs on the shipped checkpoints).
DEFAULT_CONFIG: Path = Path(__file__).resolve().parent / "configs" / "paper.toml"

#: Figure file formats that :func:`analysis.figures.save_chart` writes.
FIGURE_FORMATS: tuple[str, ...] = ("svg", "png", "pdf")

#: Direction of "better" per metric for the bold cell of a table row (True: higher keeps more),
#: from the registry :mod:`analysis.metrics`. Metrics without a direction there (Betti numbers,
#: intrinsic dimension, CKA, interval bounds ...) get no bold cell; derived names resolve
#: through :func:`analysis.metrics.higher_is_better`.
HIGHER_IS_BETTER: dict[str, bool] = {
    name: info.direction == "higher keeps more" for name, info in METRICS.items() if info.direction is not None
}

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

_VERSIONED_PACKAGES: tuple[str, ...] = (
    "bottleneck-probe", "torch", "torchvision", "timm", "numpy", "scipy", "pandas", "pyarrow",
    "scikit-learn", "ripser", "persim", "umap-learn", "altair", "vl-convert-python", "dask",
    "distributed", "safetensors", "tqdm",
)


def metric_family(metric: str) -> str | None:
    """The metric family (see :data:`analysis.study.FAMILIES`) that computes ``metric``.

    From the registry :mod:`analysis.metrics`; None for unknown names and for
    ``test_accuracy`` (not computed by a family).
    """
    family = registry_family(metric)
    return None if family == "accuracy" else family


# ============================================================================================
# config


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
    study: Any
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


_SECTIONS: dict[str, tuple[str, ...]] = {
    "report": ("title", "formats"),
    "checkpoints": ("zoo", "files"),
    "datasets": ("names", "pairing"),
    "study": ("split", "n_images", "points", "families", "sample_unit", "reservoir_size", "moments",
              "moment_positions", "seed", "rtol", "batch_size", "gray_to_rgb"),
    "topology": ("points", "maxdim", "diagrams"),
    "decoder": (),  # filled from StudyConfig fields named decoder_* (none yet)
    "figures": ("designs", "depth_metrics", "depth_stages"),
    "tables": ("metrics", "stages", "designs"),
    "spiral": ("enabled", "dims", "activation", "seeds"),
    "compare": ("designs", "level"),
    "surgery": ("enabled", "checkpoints", "blocks"),
    "claims": ("enabled", "edges"),
}
_FILE_KEYS = ("path", "arch", "mean", "std", "size", "gray_to_rgb")
_POINT_RE = re.compile(r"^blocks\.(\d+)\.(input|expand\.pre|expand|depthwise\.pre|depthwise|"
                       r"project\.pre|project|output)$")
_GLOB_CHARS = set("*?[")
_POINT_SUFFIXES = ("input", "expand.pre", "expand", "depthwise.pre", "depthwise", "project.pre", "project",
                   "output")


def _check_point_globs(ck: _Checker, patterns: Sequence[str]) -> None:
    """Each ``study.points`` name or glob must be able to match a capture point name
    (``blocks.N.SUFFIX``), so a typo fails before any job runs instead of failing every job."""
    names = [f"blocks.{i}.{suffix}" for i in range(1000) for suffix in _POINT_SUFFIXES]
    for pat in patterns:
        if not any(fnmatch.fnmatchcase(n, pat) for n in names):
            raise ck.fail("study.points", "names or globs of capture points like 'blocks.3.project' or "
                          f"'blocks.*.project*' (suffixes {', '.join(_POINT_SUFFIXES)})", pat)


def _decoder_fields() -> dict[str, str]:
    """``[decoder]`` key -> StudyConfig field, for StudyConfig fields named ``decoder_*``."""
    from analysis.study import StudyConfig

    return {f.name[len("decoder_"):]: f.name for f in dataclasses.fields(StudyConfig)
            if f.name.startswith("decoder_")}


def _resolve_checkpoints(ck: _Checker, table: dict[str, Any], base: Path) -> tuple[list[CheckpointSpec], list[str]]:
    from probes.loading import list_zoo

    notes: list[str] = []
    cards = {c["name"]: c for c in list_zoo()}
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
    from analysis.figures import STAGE_ORDER
    from analysis.study import FAMILIES, StudyConfig
    from probes.datasets import BUILTIN, SPLITS

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

    st = sec["study"]
    families = ck.str_list("study.families", st.get("families", list(FAMILIES)), FAMILIES, empty=False)
    families = tuple(f for f in FAMILIES if f in families)
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
    points = st.get("points")
    if points is not None:
        points = ck.str_list("study.points", points, empty=False)
        _check_point_globs(ck, points)
        points = points[0] if len(points) == 1 else points
    top = sec["topology"]
    kwargs: dict[str, Any] = {
        "split": ck.choice("study.split", st.get("split", "test"), SPLITS),
        "n_images": ck.int_("study.n_images", st.get("n_images"), 2, none=True),
        "points": points,
        "families": families,
        "sample_unit": ck.choice("study.sample_unit", st.get("sample_unit", "position"), ("position", "image")),
        "reservoir_size": ck.int_("study.reservoir_size", st.get("reservoir_size", 1000), 10),
        "moments": ck.choice("study.moments", st.get("moments", "sampled"), ("sampled", "exact")),
        "moment_positions": ck.int_("study.moment_positions", st.get("moment_positions", 16), 1),
        "seed": ck.int_("study.seed", st.get("seed", 0), 0),
        "rtol": ck.float_("study.rtol", st.get("rtol", 1e-6), 0.0, 1.0),
        "batch_size": ck.int_("study.batch_size", st.get("batch_size", 128), 1),
        "gray_to_rgb": ck.bool_("study.gray_to_rgb", st.get("gray_to_rgb", False)),
        "topology_points": ck.int_("topology.points", top.get("points", 200), 10),
        "topology_maxdim": int(ck.choice("topology.maxdim", top.get("maxdim", 1), (0, 1, 2))),  # type: ignore[arg-type]
    }
    for key, value in sec["decoder"].items():
        kwargs[decoder_map[key]] = value
    try:
        study = StudyConfig(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Config {source.name}: {exc}") from None
    diagrams = ck.str_list("topology.diagrams", top.get("diagrams", []))
    for p in diagrams:
        if not _POINT_RE.match(p):
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
                               STAGE_ORDER)
    table_metrics = metrics_key("tables.metrics", tab.get("metrics", list(depth_metrics)))
    table_stages = ck.str_list("tables.stages", tab.get("stages", list(depth_stages)), STAGE_ORDER)
    table_designs = ck.str_list("tables.designs", tab.get("designs", []))

    from probes.zoo import ACTIVATIONS

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
        from probes.loading import list_zoo

        zoo = sorted(c["name"] for c in list_zoo())
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


# ============================================================================================
# jobs


@dataclasses.dataclass(frozen=True)
class Job:
    """One (checkpoint, dataset) study; ``job_id`` names its cache files."""

    job_id: str
    checkpoint: CheckpointSpec
    dataset: str
    study: Any

    def label(self) -> str:
        return f"{self.checkpoint.name} on {Path(self.dataset).name}"


def _safe(text: str) -> str:
    """A file-name part without dots (stems get suffixes appended with Path.with_suffix)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "x"


def plan_jobs(config: ReportConfig) -> tuple[list[Job], list[str]]:
    """The jobs of ``config`` in their deterministic order, and notes on skipped pairs.

    With ``pairing = "trained"`` a checkpoint with a card runs on the dataset it was trained on
    (if listed) and a checkpoint without one on every listed dataset; with ``"all"`` every
    checkpoint runs on every dataset. Jobs are ordered by (dataset, checkpoint name).
    """
    jobs: list[Job] = []
    notes: list[str] = []
    for ckpt in config.checkpoints:
        targets = list(config.datasets)
        if config.pairing == "trained" and ckpt.trained_on is not None:
            targets = [d for d in targets if d == ckpt.trained_on]
            if not targets:
                notes.append(f"{ckpt.name} skipped: trained on {ckpt.trained_on!r}, which is not in "
                             f"datasets.names (set datasets.pairing = 'all' to run it anyway)")
        for ds in targets:
            study = dataclasses.replace(config.study, dataset=ds)
            if ckpt.gray_to_rgb is not None:
                study = dataclasses.replace(study, gray_to_rgb=ckpt.gray_to_rgb)
            ident = json.dumps({"spec": ckpt.spec, "sha256": ckpt.sha256, "arch": ckpt.arch,
                                "mean": ckpt.mean, "std": ckpt.std, "size": ckpt.size,
                                "study": study.key()}, sort_keys=True)
            digest = hashlib.sha256(ident.encode()).hexdigest()[:12]
            job_id = f"{_safe(ckpt.name)}--{_safe(Path(ds).stem if os.sep in ds else ds)}--{digest}"
            jobs.append(Job(job_id=job_id, checkpoint=ckpt, dataset=ds, study=study))
    jobs.sort(key=lambda j: (j.dataset, j.checkpoint.name, j.job_id))
    return jobs, notes


def _run_job(job: Job) -> dict[str, Any]:
    """Run one job (in a worker); return its result or its error, never raise.

    torch and the BLAS/OpenMP pools (numpy, scipy, scikit-learn) run on one thread while the
    job runs: the numbers then do not depend on the executor, and parallel jobs do not
    oversubscribe the cores (multi-threaded BLAS on small matrices is several times slower).
    """
    import torch
    from threadpoolctl import threadpool_limits

    from analysis.study import run_study

    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        torch.set_num_threads(1)
        c = job.checkpoint
        with threadpool_limits(limits=1):
            result = run_study(c.spec, job.study, arch=c.arch, mean=c.mean, std=c.std, size=c.size,
                               progress=False, device="cpu")
        return {"status": "ok", "metrics": result.metrics, "details": result.details,
                "meta": result.meta, "seconds": time.perf_counter() - t0}
    except Exception as exc:  # noqa: BLE001 - a failing job is reported, the others go on
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=8), "seconds": time.perf_counter() - t0}
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _process_pool(n: int) -> Iterator[Any]:
    """A spawn-context ProcessPoolExecutor of ``n`` workers that die with this process.

    On any exit other than normal completion (an exception, Ctrl-C, SIGTERM turned into
    SystemExit by :func:`_exit_on_sigterm`) the workers are terminated at once instead of
    finishing their current jobs.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                               initializer=init_worker, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        # The executor has no public way to stop running work; its worker table does.
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` while a report runs, so the workers are stopped and
    the lock released on the way out (Python's default is to die without cleaning up)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_LOCK_NAME = ".bnprobe-report.lock"


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on the report folder ``out`` (``fcntl.flock`` on a lock file in it).

    A second run on the same folder would delete the first one's temporary files and compute
    every job twice; it stops instead, naming the process that holds the lock. The kernel
    releases the lock when the holder exits, however it exits.

    Raises
    ------
    ValueError
        When another process holds the lock.
    """
    import fcntl

    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise ValueError(f"The report folder {str(out)!r} is in use by another bnprobe report "
                             f"(PID {holder}); wait for it to finish or choose another --out.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        os.close(fd)


def _connect(scheduler: str) -> Any:
    """A ``dask.distributed.Client`` for ``scheduler``; ValueError when it cannot connect."""
    from dask.distributed import Client

    try:
        return Client(scheduler, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ValueError(f"Cannot connect to the Dask scheduler at {scheduler!r}: {exc}") from None


def _failure(exc: BaseException) -> dict[str, Any]:
    return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "seconds": 0.0}


def _execute(jobs: Sequence[Job], *, client: Any = None, workers: int | None = None
             ) -> Iterator[tuple[Job, dict[str, Any]]]:
    """Yield ``(job, outcome)`` as jobs finish: on a Dask ``client``, in local spawned processes,
    or in this process (one worker)."""
    if not jobs:
        return
    if client is not None:
        from dask.distributed import as_completed

        futures = {client.submit(_run_job, job, pure=False, key=f"bnprobe-{job.job_id}"): job
                   for job in jobs}
        try:
            for fut in as_completed(futures):
                try:
                    outcome = fut.result()
                except Exception as exc:  # noqa: BLE001 - worker lost, deserialisation ...
                    outcome = _failure(exc)
                yield futures[fut], outcome
        finally:
            client.cancel(list(futures))
        return
    n = min(len(jobs), workers or os.cpu_count() or 1)
    if n <= 1:
        for job in jobs:
            yield job, _run_job(job)
        return
    from concurrent.futures import as_completed as cf_completed

    with _process_pool(n) as pool:
        futures = {pool.submit(_run_job, job): job for job in jobs}
        for fut in cf_completed(futures):
            try:
                outcome = fut.result()
            except Exception as exc:  # noqa: BLE001 - a crashed worker (BrokenProcessPool)
                outcome = _failure(exc)
            yield futures[fut], outcome


def _job_done(stem: Path) -> bool:
    return stem.with_suffix(".parquet").is_file() and stem.with_suffix(".npz").is_file()


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temporary files that a killed run left behind (names from atomic_path)."""
    for folder in (out, out / "jobs", out / "figures", out / "tables"):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                tmp.unlink(missing_ok=True)


# ============================================================================================
# tables


def _design_order(designs: Sequence[str]) -> list[str]:
    from analysis.figures import design_colors

    return list(design_colors(sorted(set(designs))))


def metrics_table(df: pd.DataFrame, *, metrics: Sequence[str], stages: Sequence[str],
                  designs: Sequence[str] = ()) -> pd.DataFrame:
    """Summary per (stage, metric) x design: mean and sample std over seeds of the block mean.

    Each checkpoint contributes one value per (stage, metric): the mean over blocks of the
    post-activation points of that stage, ``v_c = (1/B) sum_b value_{c,b}`` (non-finite values
    skipped; :func:`analysis.compare.band_values`, the per-seed summary shared with the paired
    comparison); a design's cell is ``mean_c v_c`` and ``std_c v_c`` (sample std, ddof = 1; NaN
    for one seed) over its checkpoints. This table describes each design; whether two designs
    differ is answered by :func:`comparison_table` (paired over seeds, with an interval).

    Parameters
    ----------
    df : DataFrame
        Tidy results of one dataset.
    metrics, stages : sequence of str
        Rows of the table (stage-major order).
    designs : sequence of str
        Columns; empty = every design in ``df`` (fixed legend order).

    Returns
    -------
    DataFrame
        Columns ``stage, metric, design, mean, std, n``; rows with no finite value are absent.
    """
    sel = df[df["metric"].isin(list(metrics)) & df["stage"].isin(list(stages)) & ~df["pre"].astype(bool)]
    if designs:
        sel = sel[sel["design"].isin(list(designs))]
    sel = sel[np.isfinite(sel["value"].astype(float))]
    cols = ["stage", "metric", "design", "mean", "std", "n"]
    if sel.empty:
        return pd.DataFrame(columns=cols)
    from analysis.compare import band_values

    per_ckpt = band_values(sel.assign(seed=sel["seed"] if "seed" in sel.columns else np.nan),
                           bands={"all": sorted(set(sel["block"].astype(int)))}, pre=False)
    agg = (per_ckpt.groupby(["stage", "metric", "design"], sort=True)["value"]
           .agg(mean="mean", std="std", n="count").reset_index())
    order = {(s, m): i for i, (s, m) in enumerate((s, m) for s in stages for m in metrics)}
    dorder = {d: i for i, d in enumerate(list(designs) or _design_order(agg["design"]))}
    agg["_k"] = [(order[(s, m)], dorder.get(d, len(dorder))) for s, m, d in
                 zip(agg["stage"], agg["metric"], agg["design"])]
    out = agg.sort_values("_k", kind="stable").drop(columns="_k").reset_index(drop=True)[cols]
    out.attrs["designs"] = sorted(set(out["design"]), key=lambda d: dorder.get(d, len(dorder)))
    return out


def accuracy_table(cards: pd.DataFrame) -> pd.DataFrame:
    """Test accuracy (%) per dataset x design, mean and sample std over seeds (from cards)."""
    cols = ["stage", "metric", "design", "mean", "std", "n"]
    if cards.empty:
        return pd.DataFrame(columns=cols)
    agg = (cards.assign(value=100.0 * cards["test_accuracy"].astype(float))
           .groupby(["dataset", "design"], sort=True)["value"]
           .agg(mean="mean", std="std", n="count").reset_index())
    agg = agg.rename(columns={"dataset": "stage"}).assign(metric="test_accuracy")
    dorder = {d: i for i, d in enumerate(_design_order(agg["design"]))}
    agg["_k"] = agg["design"].map(dorder)
    out = agg.sort_values(["stage", "_k"], kind="stable").drop(columns="_k").reset_index(drop=True)[cols]
    out.attrs["designs"] = list(dorder)
    return out


def comparison_table(df: pd.DataFrame, design_a: str, design_b: str, *, metrics: Sequence[str],
                     stages: Sequence[str], cards: pd.DataFrame | None = None,
                     level: float = 0.95) -> pd.DataFrame:
    """Paired comparison of two designs per (stage, metric), all blocks: the report's answer.

    Per seed the mean over all blocks of the stage's post-activation points
    (:func:`analysis.compare.band_values`), then :func:`analysis.compare.paired_stats` over the
    seeds trained for both designs: mean difference ``a - b``, Student-t interval, exact
    sign-flip p-value and verdict. With ``cards`` (``design, dataset, seed, test_accuracy``) a
    first row compares test accuracy (%) the same way.

    Returns
    -------
    DataFrame
        :data:`analysis.compare.BAND_COLUMNS` (band ``all``), in (stage, metric) order; empty
        when a design is missing.
    """
    from analysis.compare import BAND_COLUMNS, compare_bands, paired_stats

    rows = []
    if cards is not None and not cards.empty:
        acc = {(str(d), int(s)): 100.0 * float(v) for d, s, v in
               zip(cards["design"], cards["seed"], cards["test_accuracy"]) if pd.notna(s)}
        seeds = sorted({s for d, s in acc if d == design_a} & {s for d, s in acc if d == design_b})
        if seeds:
            r = paired_stats([acc[(design_a, s)] for s in seeds], [acc[(design_b, s)] for s in seeds],
                             seeds=seeds, level=level, names=(design_a, design_b))
            rows.append(pd.DataFrame([{"dataset": str(cards["dataset"].iloc[0]), "metric": "test_accuracy",
                                       "stage": "checkpoint", "pre": False, "band": "all", "blocks": "",
                                       "design_a": design_a, "design_b": design_b, **r}]))
    present = set(df["design"].astype(str)) if not df.empty else set()
    if {design_a, design_b} <= present:
        sel = df[df["metric"].isin(list(metrics)) & df["stage"].isin(list(stages))]
        if not sel.empty:
            blocks = sorted(set(sel["block"].astype(int)))
            paired = compare_bands(sel, design_a, design_b, stages=stages, pre=False, bands={"all": blocks},
                                   level=level)
            if not paired.empty:
                rows.append(paired)
    if not rows:
        return pd.DataFrame(columns=list(BAND_COLUMNS))
    out = pd.concat(rows, ignore_index=True)
    order = {("checkpoint", "test_accuracy"): -1,
             **{(st, m): i for i, (st, m) in enumerate((st, m) for st in stages for m in metrics)}}
    out["_k"] = [order.get((st, m), len(order)) for st, m in zip(out["stage"], out["metric"])]
    return out.sort_values("_k", kind="stable").drop(columns="_k").reset_index(drop=True)


def _comparison_cells(table: pd.DataFrame) -> list[tuple[str, str, str, str, str, str, str]]:
    """Formatted (stage, metric, mean a, mean b, diff [CI], p, verdict) per row."""
    def fmt(x: float, dec: int) -> str:
        if not np.isfinite(x):
            return "--"
        text = f"{x:.{dec}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.0"

    from analysis.compare import values_mean

    out = []
    for _, r in table.iterrows():
        if r["n_pairs"] == 0:
            # no pair, but one design may still have values (dead units of a ReLU6 output)
            r = r.copy()
            r["mean_a"], r["mean_b"] = values_mean(r["values_a"]), values_mean(r["values_b"])
        spread = [abs(r["ci_high"] - r["ci_low"])] if np.isfinite(r["ci_low"]) else []
        dec = _decimals([r["mean_a"], r["mean_b"]], [s / 2 for s in spread if s > 0])
        diff = (f"{fmt(r['mean_diff'], dec)} [{fmt(r['ci_low'], dec)}, {fmt(r['ci_high'], dec)}]"
                if np.isfinite(r["ci_low"]) else "--")
        p = f"{r['p_value']:.3g}" if np.isfinite(r["p_value"]) else "--"
        verdict = r["verdict"] if r["verdict"] != "n/a" else "n/a: " + str(r["reason"]).split("; ")[-1]
        out.append((str(r["stage"]), str(r["metric"]), fmt(r["mean_a"], dec), fmt(r["mean_b"], dec), diff, p, verdict))
    return out


def comparison_to_markdown(table: pd.DataFrame, *, level: float = 0.95) -> str:
    """Markdown version of :func:`comparison_table` (one row per stage x metric)."""
    if table.empty:
        return "_(no paired values)_\n"
    a, b = str(table["design_a"].iloc[0]), str(table["design_b"].iloc[0])
    lines = [f"| Stage | Metric | {a} | {b} | {a} \u2212 {b} [{100 * level:g} % CI] | p | verdict |",
             "|---|---|---|---|---|---|---|"]
    for stage, metric, ma, mb, diff, p, verdict in _comparison_cells(table):
        lines.append(f"| {stage} | `{metric}` | {ma} | {mb} | {diff} | {p} | {_md_escape(verdict)} |")
    return "\n".join(lines) + "\n"


def comparison_to_latex(table: pd.DataFrame, *, caption: str = "", level: float = 0.95) -> str:
    """A booktabs ``tabular`` of :func:`comparison_table`: means over paired seeds, the mean paired
    difference with its interval, the sign-flip p-value and the verdict."""
    lines = ["% Generated by `bnprobe report` (analysis.compare); needs \\usepackage{booktabs}."]
    if caption:
        lines += [f"% {line}" for line in caption.splitlines()]
    if table.empty:
        return "\n".join(lines + ["% (no paired values)"]) + "\n"
    a, b = str(table["design_a"].iloc[0]), str(table["design_b"].iloc[0])
    lines += ["\\begin{tabular}{llccccl}", "\\toprule",
              " & ".join(["Stage", "Metric", _latex_escape(a), _latex_escape(b),
                          f"{_latex_escape(a)} $-$ {_latex_escape(b)} [{100 * level:g}\\,\\% CI]", "$p$",
                          "Verdict"]) + " \\\\", "\\midrule"]
    previous = None
    for stage, metric, ma, mb, diff, p, verdict in _comparison_cells(table):
        if previous is not None and stage != previous:
            lines.append("\\midrule")
        previous = stage
        cells = [f"${c}$" if c != "--" else "--" for c in (ma, mb, diff, p)]
        lines.append(" & ".join([_latex_escape(stage), _latex_escape(metric), *cells, _latex_escape(verdict)]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _decimals(means: Sequence[float], stds: Sequence[float]) -> int:
    """Decimals of a table row: 3 significant digits of the largest mean, and enough to show
    the smallest non-zero std with one significant digit (at most 4)."""
    finite = [abs(m) for m in means if np.isfinite(m)]
    top = max(finite) if finite else 1.0
    dec = 3 if top == 0 else 2 - math.floor(math.log10(top))
    spreads = [s for s in stds if np.isfinite(s) and s > 0]
    if spreads:
        dec = max(dec, -math.floor(math.log10(min(spreads))))
    return int(min(4, max(0, dec)))


def _latex_escape(text: str) -> str:
    repl = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(repl.get(ch, ch) for ch in str(text))


def _table_rows(summary: pd.DataFrame) -> tuple[list[str], list[tuple[str, str, list[tuple[str, bool]]]]]:
    """Designs (columns) and rows of formatted cells ``(text, is_best)`` (plain text, +- sign)."""
    designs = list(summary.attrs.get("designs") or _design_order(summary["design"]))
    rows = []
    for (stage, metric), part in summary.groupby(["stage", "metric"], sort=False):
        cells = {d: (m, s, n) for d, m, s, n in zip(part["design"], part["mean"], part["std"], part["n"])}
        dec = _decimals([c[0] for c in cells.values()], [c[1] for c in cells.values()])
        direction = higher_is_better(metric)
        best = None
        if direction is not None and len(cells) > 1:
            means = [c[0] for c in cells.values()]
            best = max(means) if direction else min(means)
        out = []
        for d in designs:
            if d not in cells:
                out.append(("--", False))
                continue
            m, s, _ = cells[d]
            text = f"{m:.{dec}f}" + (f" \u00b1 {s:.{dec}f}" if np.isfinite(s) else "")
            out.append((text, best is not None and round(m, dec) == round(best, dec)))
        rows.append((str(stage), str(metric), out))
    return designs, rows


def table_to_latex(summary: pd.DataFrame, *, row_title: str = "Stage", caption: str = "") -> str:
    """A booktabs ``tabular`` (ready to ``\\input``) from :func:`metrics_table` output.

    One row per (stage, metric), one column per design, cells ``mean \\pm std`` over seeds
    (mean only for one seed, ``--`` where undefined), the best value of each row in bold
    (direction from :data:`HIGHER_IS_BETTER`; rows without a direction get none). Underscores
    and other LaTeX specials in names are escaped. Needs ``\\usepackage{booktabs}``.
    """
    lines = ["% Generated by `bnprobe report`; needs \\usepackage{booktabs}."]
    if caption:
        lines += [f"% {line}" for line in caption.splitlines()]
    if summary.empty:
        return "\n".join(lines + ["% (no values)"]) + "\n"
    designs, rows = _table_rows(summary)
    lines.append("\\begin{tabular}{ll" + "c" * len(designs) + "}")
    lines.append("\\toprule")
    lines.append(" & ".join([_latex_escape(row_title), "Metric", *(_latex_escape(d) for d in designs)]) + " \\\\")
    lines.append("\\midrule")
    previous = None
    for stage, metric, cells in rows:
        if previous is not None and stage != previous:
            lines.append("\\midrule")
        previous = stage
        tex = []
        for text, best in cells:
            if text == "--":
                tex.append("--")
                continue
            body = text.replace(" \u00b1 ", " \\pm ")
            tex.append(f"$\\mathbf{{{body}}}$" if best else f"${body}$")
        lines.append(" & ".join([_latex_escape(stage), _latex_escape(metric), *tex]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def table_to_markdown(summary: pd.DataFrame, *, row_title: str = "Stage") -> str:
    """The same table as :func:`table_to_latex` in Markdown (best value per row in bold)."""
    if summary.empty:
        return "_(no values)_\n"
    designs, rows = _table_rows(summary)
    lines = ["| " + " | ".join([row_title, "Metric", *designs]) + " |",
             "|" + "---|" * (2 + len(designs))]
    for stage, metric, cells in rows:
        tex = [f"**{t}**" if b else t for t, b in cells]
        lines.append("| " + " | ".join([stage, f"`{metric}`", *tex]) + " |")
    return "\n".join(lines) + "\n"


# ============================================================================================
# figures


def _cards_frame(config: ReportConfig) -> pd.DataFrame:
    rows = []
    for c in config.checkpoints:
        card = c.card or {}
        if "test_accuracy" in card and card.get("design") is not None:
            rows.append({"checkpoint": c.name, "design": str(card["design"]),
                         "dataset": str((card.get("dataset") or {}).get("name", "?")),
                         "seed": card.get("seed"), "test_accuracy": float(card["test_accuracy"])})
    return pd.DataFrame(rows, columns=["checkpoint", "design", "dataset", "seed", "test_accuracy"])


def _present(designs: Sequence[str], available: Sequence[str]) -> list[str]:
    chosen = [d for d in designs if d in set(available)]
    return chosen or _design_order(available)


def report_figures(metrics: pd.DataFrame, details: dict[str, dict[str, dict[str, np.ndarray]]],
                   cards: pd.DataFrame, config: ReportConfig) -> tuple[list[tuple[str, str, Any]], list[str]]:
    """The report's charts as ``(file stem, caption, chart)`` and notes on skipped figures.

    Parameters
    ----------
    metrics : DataFrame
        Tidy results of every finished job.
    details : dict
        Job id -> :attr:`analysis.study.StudyResult.details` (persistence diagrams).
    cards : DataFrame
        ``checkpoint, design, dataset, seed, test_accuracy`` (for the accuracy figure).
    config : ReportConfig
    """
    import altair as alt

    from analysis import figures as F

    out: list[tuple[str, str, Any]] = []
    notes: list[str] = []
    if not cards.empty:
        out.append(("accuracy", "Test accuracy per design (paper Fig. 6 ablations), from the "
                    "checkpoint cards: mean \u00b1 std over seeds, circles = seeds.",
                    F.accuracy_chart(cards)))
    if metrics.empty:
        notes.append("no metrics: every job failed")
        return out, notes
    available = sorted(pd.unique(metrics["design"].astype(str)))
    designs = _present(config.figure_designs, available)
    present_metrics = set(pd.unique(metrics["metric"].astype(str)))
    for metric in config.depth_metrics:
        for stage in config.depth_stages:
            if metric not in present_metrics:
                notes.append(f"depth curve of {metric}: no values in the results")
                continue
            chart = F.depth_curve(metrics, metric, stage=stage, designs=designs)
            out.append((f"depth-{metric}-{stage}",
                        f"{F.metric_label(metric)} across depth at the {stage} stage "
                        f"({', '.join(designs)}; mean \u00b1 std over seeds).", chart))
    out.extend(_paired_figures(metrics, config, notes))
    if "activity" in config.study.families:
        for ds in sorted(pd.unique(metrics["dataset"].astype(str))):
            part = metrics[metrics["dataset"].astype(str) == ds]
            for design in _present(config.figure_designs, sorted(pd.unique(part["design"].astype(str)))):
                chart = F.positive_channels_plot(part, design=design, dataset=ds,
                                                 title=f"Active channels per point, {design} ({ds})")
                out.append((f"positive-{_safe(ds)}-{_safe(design)}",
                            f"Active channels per point after each ReLU (paper Fig. 7), {design} "
                            f"on {ds}, against the invertibility threshold C_in.", chart))
    else:
        notes.append("positive-channel plot (Fig. 7): the 'activity' family is not computed")
    if config.diagram_points:
        index = (metrics[["checkpoint", "design", "dataset", "seed"]].drop_duplicates()
                 .assign(seed=lambda d: pd.to_numeric(d["seed"], errors="coerce"))
                 .sort_values(["dataset", "design", "seed", "checkpoint"], na_position="last"))
        job_of = {key: jid for jid, key in _job_keys(metrics).items()}
        for ds in sorted(index["dataset"].astype(str).unique()):
            rows = index[index["dataset"].astype(str) == ds]
            for point in config.diagram_points:
                panels = []
                for design in _present(config.figure_designs, sorted(rows["design"].astype(str).unique())):
                    first = rows[rows["design"].astype(str) == design].head(1)
                    if first.empty:
                        continue
                    ckpt = str(first["checkpoint"].iloc[0])
                    det = details.get(job_of.get((ckpt, ds), ""), {}).get(point, {})
                    dgms = [det[f"diagram_h{d}"] for d in range(3) if f"diagram_h{d}" in det]
                    if dgms:
                        panels.append(F.persistence_diagram(dgms, title=f"{design} ({ckpt})",
                                                            width=260, height=260, configure=False))
                if not panels:
                    notes.append(f"persistence diagram of {point} on {ds}: no diagram in the results")
                    continue
                chart = F.style_chart(alt.hconcat(*panels).properties(
                    title=alt.TitleParams(f"Persistence diagrams at {point} ({ds})",
                                          subtitle=["Lowest-seed checkpoint of each design; "
                                                    "scale-normalised point cloud"])))
                out.append((f"diagram-{_safe(ds)}-{_safe(point)}",
                            f"Persistence diagrams (H0, H1) at {point} on {ds}.", chart))
    return out, notes


def _paired_figures(metrics: pd.DataFrame, config: ReportConfig, notes: list[str]) -> list[tuple[str, str, Any]]:
    """Per dataset and depth stage: the paired difference of every depth metric across blocks."""
    import warnings

    from analysis import figures as F
    from analysis.compare import compare_designs

    a, b = config.compare_designs
    out: list[tuple[str, str, Any]] = []
    for ds in sorted(pd.unique(metrics["dataset"].astype(str))):
        part = metrics[metrics["dataset"].astype(str) == ds]
        if not {a, b} <= set(part["design"].astype(str)):
            continue
        wanted = [m for m in config.depth_metrics if m in set(part["metric"].astype(str))]
        if not wanted:
            continue
        with warnings.catch_warnings():
            # unpaired seeds are named once, in the notes of the comparison table
            warnings.simplefilter("ignore", UserWarning)
            cmp = compare_designs(part, a, b, metrics=wanted, level=config.compare_level)
        for stage in config.depth_stages:
            rows = cmp[(cmp["stage"] == stage) & ~cmp["pre"].astype(bool)]
            if rows.empty:
                continue
            out.append((f"paired-{_safe(ds)}-{stage}",
                        f"{a} \u2212 {b} per block at the {stage} stage on {ds}, paired over seeds: mean "
                        f"difference and its {100 * config.compare_level:g} % t-interval; filled points are "
                        "significant (interval excludes 0 and sign-flip p \u2264 "
                        f"{1 - config.compare_level:.2g}).",
                        F.paired_difference_chart(rows, metrics=list(config.depth_metrics), level=config.compare_level,
                                                  title=f"{a} \u2212 {b} on {ds}, {stage} stage", height=120)))
    return out


def _message_of(chart: Any) -> str | None:
    """The text of an :func:`analysis.figures.message_chart` ("not applicable: ..."), else None."""
    import altair as alt

    data = getattr(chart, "data", None)
    if isinstance(chart, alt.Chart) and isinstance(data, pd.DataFrame) and list(data.columns) == ["message"]:
        return " ".join(str(data["message"].iloc[0]).split())
    return None


def _job_keys(metrics: pd.DataFrame) -> dict[str, Any]:
    if "_job" not in metrics.columns:
        return {}
    keys = metrics[["_job", "checkpoint", "dataset"]].drop_duplicates("_job")
    return {str(j): (str(c), str(d)) for j, c, d in zip(keys["_job"], keys["checkpoint"], keys["dataset"])}


def _save_figure(chart: Any, stem: Path, formats: Sequence[str]) -> list[Path]:
    from analysis.figures import save_chart

    return [save_chart(chart, stem.parent / f"{stem.name}.{fmt}") for fmt in formats]


def _comparison_tables(metrics: pd.DataFrame, cards: pd.DataFrame, config: ReportConfig,
                       out: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Per dataset: the paired comparison table (LaTeX file, Markdown for the report) and the
    per-block comparison rows (``comparison-<dataset>.csv``); notes on datasets skipped."""
    import warnings

    from analysis.compare import COMPARE_COLUMNS, compare_designs
    from analysis.study import write_table

    a, b = config.compare_designs
    tables: list[tuple[str, str, str]] = []
    notes: list[str] = []
    for ds in sorted(pd.unique(metrics["dataset"].astype(str))) if not metrics.empty else []:
        part = metrics[metrics["dataset"].astype(str) == ds]
        missing = [d for d in (a, b) if d not in set(part["design"].astype(str))]
        if missing:
            notes.append(f"paired comparison on {ds}: no checkpoint of {', '.join(missing)} (compare.designs)")
            continue
        ds_cards = cards[cards["dataset"].astype(str) == ds] if not cards.empty else cards
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            table = comparison_table(part, a, b, metrics=config.table_metrics, stages=config.table_stages,
                                     cards=ds_cards, level=config.compare_level)
            wanted = sorted((set(config.table_metrics) | set(config.depth_metrics)) & set(part["metric"].astype(str)))
            per_block = (compare_designs(part, a, b, level=config.compare_level, metrics=wanted) if wanted
                         else pd.DataFrame(columns=list(COMPARE_COLUMNS)))
        notes.extend(dict.fromkeys(f"{ds}: {w.message}".replace("compare_bands: ", "").replace(
            "compare_designs: ", "") for w in caught))
        n = sorted(set(table["n_pairs"].astype(int)) - {0}) if not table.empty else []
        caption = (f"{ds}: {a} vs {b} paired over seeds (n = {', '.join(map(str, n)) or '-'} pairs); per seed "
                   f"the mean over blocks, {100 * config.compare_level:g} % Student-t interval of the mean paired "
                   "difference, exact sign-flip p-value.")
        name = f"comparison-{_safe(ds)}"
        atomic_write_text(out / "tables" / f"{name}.tex",
                          comparison_to_latex(table, caption=caption, level=config.compare_level))
        tables.append((name, caption, comparison_to_markdown(table, level=config.compare_level)))
        write_table(per_block, out / f"{name}.csv")
    return tables, notes


# ============================================================================================
# provenance


def _git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip(),
                "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in _VERSIONED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# ============================================================================================
# report documents


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _html_table(md_table: str) -> str:
    lines = [ln for ln in md_table.strip().splitlines() if ln.startswith("|")]
    if len(lines) < 2:
        return f"<p>{html.escape(md_table.strip())}</p>"

    def cells(line: str) -> list[str]:
        parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        return [p.strip().replace("\\|", "|") for p in parts]

    def fmt(cell: str) -> str:
        text = html.escape(cell)
        text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    head = "".join(f"<th>{fmt(c)}</th>" for c in cells(lines[0]))
    body = "".join("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in cells(ln)) + "</tr>" for ln in lines[2:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1150px;
margin:2em auto;padding:0 1.5em;color:#1d1d1d;line-height:1.45}
h1{font-size:1.7em;border-bottom:2px solid #0072B2;padding-bottom:.2em}
h2{font-size:1.3em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.15em}
figure{margin:1.2em 0 2em 0}figure img{max-width:100%;height:auto}
.grid{display:grid;gap:0 1.5em}.grid figure img{width:100%}
figcaption{font-size:.92em;color:#444;margin-top:.35em}
table{border-collapse:collapse;margin:.6em 0 1.4em 0;font-size:.92em}
th,td{border-top:1px solid #ccc;border-bottom:1px solid #ccc;padding:.25em .7em;text-align:left}
thead th{border-bottom:2px solid #333}code{background:#f4f4f4;padding:0 .2em;border-radius:3px}
.failed{color:#D55E00;font-weight:600}.note{color:#555}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em}
"""


_SVG_INLINE_MAX = 1_000_000


class _Doc:
    """A report as blocks, rendered to both Markdown and self-contained HTML."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.blocks: list[tuple[str, Any]] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str, cls: str = "") -> None:
        self.blocks.append(("p", (text, cls)))

    def items(self, items: Sequence[str], cls: str = "") -> None:
        if items:
            self.blocks.append(("ul", (list(items), cls)))

    def table(self, md: str) -> None:
        self.blocks.append(("table", md))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def figures(self, figures: Sequence[tuple[dict[str, Path], str]], *, columns: int = 1) -> None:
        """Figures ``(files by format, caption)``; HTML lays them out in ``columns`` columns."""
        self.blocks.append(("figures", (list(figures), columns)))

    def markdown(self) -> str:
        out = []
        for kind, val in self.blocks:
            if kind == "h":
                out.append(f"{'#' * val[0]} {val[1]}\n")
            elif kind == "p":
                out.append(f"{val[0]}\n")
            elif kind == "ul":
                out.append("\n".join(f"- {i}" for i in val[0]) + "\n")
            elif kind == "table":
                out.append(val)
            elif kind == "code":
                out.append(f"```\n{val}\n```\n")
            elif kind == "figures":
                for files, caption in val[0]:
                    show = files.get("png") or files.get("svg")
                    links = ", ".join(f"[{fmt.upper()}]({p.relative_to(self.out).as_posix()})"
                                      for fmt, p in files.items())
                    out.append(f"![{caption}]({show.relative_to(self.out).as_posix()})\n\n"
                               f"*{caption}* ({links})\n")
        return "\n".join(out)

    def html(self, title: str) -> str:
        parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                 f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                 f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
        for kind, val in self.blocks:
            if kind == "h":
                parts.append(f"<h{val[0]}>{_inline(val[1])}</h{val[0]}>")
            elif kind == "p":
                cls = f' class="{val[1]}"' if val[1] else ""
                parts.append(f"<p{cls}>{_inline(val[0])}</p>")
            elif kind == "ul":
                cls = f' class="{val[1]}"' if val[1] else ""
                parts.append(f"<ul{cls}>" + "".join(f"<li>{_inline(i)}</li>" for i in val[0]) + "</ul>")
            elif kind == "table":
                parts.append(_html_table(val))
            elif kind == "code":
                parts.append(f"<pre>{html.escape(val)}</pre>")
            elif kind == "figures":
                figs, columns = val
                items = []
                for files, caption in figs:
                    # Vector SVG unless it is heavy (dense scatter plots), then the 2x PNG.
                    svg = files.get("svg")
                    if svg is not None and (svg.stat().st_size <= _SVG_INLINE_MAX or "png" not in files):
                        src = "data:image/svg+xml;base64," + base64.b64encode(svg.read_bytes()).decode()
                    else:
                        src = "data:image/png;base64," + base64.b64encode(files["png"].read_bytes()).decode()
                    items.append(f"<figure><img src=\"{src}\" alt=\"{html.escape(caption)}\">"
                                 f"<figcaption>{_inline(caption)}</figcaption></figure>")
                if columns > 1 and len(items) > 1:
                    parts.append(f'<div class="grid" style="grid-template-columns:repeat({columns},1fr)">'
                                 + "".join(items) + "</div>")
                else:
                    parts.extend(items)
        parts.append("</body></html>\n")
        return "\n".join(parts)


def _inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', out)


# ============================================================================================
# main entry


def run_report(config_path: str | Path, out_dir: str | Path, *, scheduler: str | None = None,
               workers: int | None = None, progress: bool = True) -> int:
    """Run the study of a config and write the report folder; return the exit status.

    Parameters
    ----------
    config_path : str or Path
        TOML config (see :func:`load_config` and ``analysis/configs/paper.toml``).
    out_dir : str or Path
        Output folder (created; finished jobs found in ``out_dir/jobs`` are reused).
    scheduler : str, optional
        Address of a Dask distributed scheduler (``tcp://host:8786``); default: local processes.
    workers : int, optional
        Local worker processes (default: the CPU count; 1 = run in this process).
    progress : bool, default=True
        Show a progress bar over jobs (stderr).

    Returns
    -------
    int
        0 when every job and every report part succeeded, 1 otherwise (the failures are listed
        on stderr and in ``report.md``).

    Raises
    ------
    ValueError
        Bad config or arguments, before any work starts.
    """
    t_start = time.perf_counter()
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"The 'workers' parameter of run_report must be an int >= 1. Got {workers!r} instead.")
    if scheduler is not None and not (isinstance(scheduler, str) and scheduler.strip()):
        raise ValueError(f"The 'scheduler' parameter of run_report must be a Dask scheduler address "
                         f"such as 'tcp://127.0.0.1:8786'. Got {scheduler!r} instead.")
    config = load_config(config_path)
    jobs, plan_notes = plan_jobs(config)
    if not jobs:
        raise ValueError(f"Config {config.source.name}: no (checkpoint, dataset) pair to run: "
                         + "; ".join(plan_notes))
    out = check_output(out_dir, kind="folder")
    with _exit_on_sigterm(), _locked(out):
        client = _connect(scheduler) if scheduler is not None else None
        try:
            return _report(config, jobs, plan_notes, out, client=client, scheduler=scheduler,
                           workers=workers, progress=progress, t_start=t_start)
        finally:
            if client is not None:
                client.close()


def _report(config: ReportConfig, jobs: list[Job], plan_notes: list[str], out: Path, *, client: Any,
            scheduler: str | None, workers: int | None, progress: bool, t_start: float) -> int:
    from tqdm.auto import tqdm

    from analysis.study import SCHEMA_COLUMNS, StudyResult, write_table

    jobs_dir = out / "jobs"
    jobs_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)

    # ---------------------------------------------------------------- jobs
    cached = [j for j in jobs if _job_done(jobs_dir / j.job_id)]
    pending = [j for j in jobs if j not in cached]
    status: dict[str, dict[str, Any]] = {
        j.job_id: {"job": j.job_id, "checkpoint": j.checkpoint.name, "dataset": j.dataset,
                   "status": "cached", "seconds": None} for j in cached}
    t_jobs = time.perf_counter()
    bar = tqdm(total=len(jobs), initial=len(cached), desc="jobs", unit="job", disable=not progress,
               file=sys.stderr)
    # closed in finally: the workers stop as soon as an exception (Ctrl-C, SIGTERM) leaves the
    # loop, not when the traceback holding the generator is freed
    outcomes = _execute(pending, client=client, workers=workers)
    try:
        for job, outcome in outcomes:
            entry = {"job": job.job_id, "checkpoint": job.checkpoint.name, "dataset": job.dataset,
                     "status": outcome["status"], "seconds": round(float(outcome.get("seconds", 0.0)), 2)}
            if outcome["status"] == "ok":
                StudyResult(metrics=outcome["metrics"], details=outcome["details"],
                            meta=outcome["meta"]).save(jobs_dir / job.job_id)
            else:
                entry["error"] = outcome["error"]
                bar.write(f"job {job.label()} FAILED: {outcome['error']}", file=sys.stderr)
            status[job.job_id] = entry
            bar.update(1)
    finally:
        outcomes.close()
        bar.close()
    t_jobs = time.perf_counter() - t_jobs

    # ---------------------------------------------------------------- assemble
    frames, details, metas = [], {}, {}
    for job in jobs:
        if status[job.job_id]["status"] == "failed":
            continue
        res = StudyResult.load(jobs_dir / job.job_id)
        frames.append(res.metrics)
        details[job.job_id] = res.details
        metas[job.job_id] = res.meta
        if status[job.job_id]["seconds"] is None:
            status[job.job_id]["seconds"] = res.meta.get("seconds")
    metrics = (pd.concat(frames, ignore_index=True) if frames
               else pd.DataFrame(columns=list(SCHEMA_COLUMNS)))
    write_table(metrics, out / "metrics.parquet")
    write_table(metrics, out / "metrics.csv")
    failed = [s for s in status.values() if s["status"] == "failed"]
    part_failures: list[str] = []

    # ---------------------------------------------------------------- spiral
    t_spiral = time.perf_counter()
    spiral_chart = None
    if config.spiral is not None:
        try:
            from analysis.spiral import run_spiral, spiral_figure

            table, recon = run_spiral(config.spiral["dims"], activation=config.spiral["activation"],
                                      seeds=config.spiral["seeds"])
            write_table(table, out / "spiral.csv")
            spiral_chart = spiral_figure(recon)
        except Exception as exc:  # noqa: BLE001 - one part fails, the report goes on
            part_failures.append(f"spiral: {type(exc).__name__}: {exc}")
    t_spiral = time.perf_counter() - t_spiral

    # ---------------------------------------------------------------- surgery
    surgery_charts = []
    if config.surgery is not None:
        from analysis.surgery import run_surgery, surgery_figure

        frames_s = []
        for name in config.surgery["checkpoints"]:
            try:
                table = run_surgery(name, blocks=config.surgery["blocks"], seed=config.study.seed, progress=False)
                frames_s.append(table)
                surgery_charts.append((f"surgery-{_safe(name)}", f"{name}: bottleneck activation changed at "
                                       "inference, one block at a time and in all blocks; change of test accuracy "
                                       "and of the input image's decodability (ridge R\u00b2) at the changed "
                                       "block's projection, with 95 % bootstrap intervals over test images.",
                                       surgery_figure(table)))
            except Exception as exc:  # noqa: BLE001 - one part fails, the report goes on
                part_failures.append(f"surgery {name}: {type(exc).__name__}: {exc}")
        if frames_s:
            write_table(pd.concat(frames_s, ignore_index=True), out / "surgery.csv")

    # ---------------------------------------------------------------- figures
    t_fig = time.perf_counter()
    cards = _cards_frame(config)
    tagged = (pd.concat([f.assign(_job=jid) for jid, f in zip(details, frames)], ignore_index=True)
              if frames else metrics)
    try:
        charts, fig_notes = report_figures(tagged, details, cards, config)
    except Exception as exc:  # noqa: BLE001
        charts, fig_notes = [], []
        part_failures.append(f"figures: {type(exc).__name__}: {exc}")
    if spiral_chart is not None:
        charts.append(("spiral", "A 2-D spiral embedded in n dimensions by a random matrix T, passed "
                       "through ReLU and mapped back (paper Fig. 1).", spiral_chart))
    charts.extend(surgery_charts)
    fig_dir = out / "figures"
    written: dict[str, tuple[dict[str, Path], str]] = {}
    for stem, caption, chart in charts:
        message = _message_of(chart)
        if message is not None:
            fig_notes.append(f"figure {stem} not drawn: {message}")
            continue
        try:
            files = _save_figure(chart, fig_dir / stem, config.formats)
            written[stem] = ({p.suffix[1:]: p for p in files}, caption)
        except Exception as exc:  # noqa: BLE001
            part_failures.append(f"figure {stem}: {type(exc).__name__}: {exc}")
    t_fig = time.perf_counter() - t_fig

    # ---------------------------------------------------------------- tables
    tab_dir = out / "tables"
    tables: list[tuple[str, str, str]] = []
    for ds in sorted(pd.unique(metrics["dataset"].astype(str))) if not metrics.empty else []:
        summary = metrics_table(metrics[metrics["dataset"].astype(str) == ds], metrics=config.table_metrics,
                                stages=config.table_stages, designs=config.table_designs)
        n_seeds = sorted(set(summary["n"].astype(int))) if not summary.empty else []
        caption = (f"{ds}: per checkpoint the mean over blocks, then mean +- sample std over seeds "
                   f"(n = {', '.join(map(str, n_seeds)) or '-'}). Bold: best value per row.")
        name = f"metrics-{_safe(ds)}"
        atomic_write_text(tab_dir / f"{name}.tex", table_to_latex(summary, caption=caption))
        tables.append((name, caption, table_to_markdown(summary)))
    try:
        comparisons, cmp_notes = _comparison_tables(metrics, cards, config, out)
        tables.extend(comparisons)
        fig_notes.extend(cmp_notes)
    except Exception as exc:  # noqa: BLE001 - one part fails, the report goes on
        part_failures.append(f"paired comparison: {type(exc).__name__}: {exc}")
    if not cards.empty:
        acc = accuracy_table(cards)
        caption = "Test accuracy (%) per dataset and design, mean +- sample std over seeds (checkpoint cards)."
        atomic_write_text(tab_dir / "accuracy.tex", table_to_latex(acc, row_title="Dataset", caption=caption))
        tables.insert(0, ("accuracy", caption, table_to_markdown(acc, row_title="Dataset")))

    # ---------------------------------------------------------------- claims of the notes
    claims_part = _claims_part(config, metrics, out, progress, written, part_failures)

    # ---------------------------------------------------------------- provenance
    computed = [s for s in status.values() if s["status"] == "ok"]
    seeds = sorted({int(c.card["seed"]) for c in config.checkpoints
                    if c.card and isinstance(c.card.get("seed"), int)})
    provenance = {
        "config_file": str(config.source),
        "config_sha256": sha256_file(config.source),
        "config": config.raw,
        "study": config.study.to_dict(),
        "versions": _versions(),
        "git": _git_commit(),
        "command": {"scheduler": scheduler, "workers": workers},
        "checkpoints": [{"name": c.name, "source": c.spec, "arch": c.arch or "zoo", "sha256": c.sha256,
                         "design": (c.card or {}).get("design"), "seed": (c.card or {}).get("seed")}
                        for c in config.checkpoints],
        "seeds": {"study": config.study.seed, "checkpoints": seeds,
                  "spiral": list(config.spiral["seeds"]) if config.spiral else []},
        "jobs": {"total": len(jobs), "computed": len(computed), "cached": len(cached),
                 "failed": len(failed),
                 "list": [status[j.job_id] for j in jobs]},
        "timings": {"jobs_s": round(t_jobs, 2), "spiral_s": round(t_spiral, 2), "figures_s": round(t_fig, 2),
                    "total_s": round(time.perf_counter() - t_start, 2)},
        "failures": [f"{s['checkpoint']} on {s['dataset']}: {s['error']}" for s in failed] + part_failures,
        "notes": list(config.notes) + plan_notes + fig_notes,
    }
    atomic_write_json(out / "provenance.json", provenance)

    # ---------------------------------------------------------------- report.md / report.html
    doc = _build_doc(out, config, jobs, status, failed, part_failures, written, tables, provenance, metrics)
    if claims_part is not None:
        _claims_doc(doc, claims_part, written)
    atomic_write_text(out / "report.md", doc.markdown())
    atomic_write_text(out / "report.html", doc.html(config.title))

    total = time.perf_counter() - t_start
    print(f"bnprobe report: {len(jobs)} jobs ({len(computed)} computed, {len(cached)} cached, "
          f"{len(failed)} failed), {len(written)} figures, {len(tables)} tables in {total:.0f} s "
          f"-> {out / 'report.html'}", file=sys.stderr)
    for s in failed:
        print(f"  FAILED {s['checkpoint']} on {s['dataset']}: {s['error']}", file=sys.stderr)
    for f in part_failures:
        print(f"  FAILED {f}", file=sys.stderr)
    return 1 if failed or part_failures else 0


def _claims_part(config: ReportConfig, metrics: pd.DataFrame, out: Path, progress: bool,
                 written: dict[str, tuple[dict[str, Path], str]], part_failures: list[str]) -> Any:
    """Scoreboard, tables and figures of the notes' claims (analysis.claims); None if not run."""
    cards = [c.card for c in config.checkpoints if c.card]
    if config.claims is None or not cards:
        return None
    try:
        from analysis.claims import claims_report, scoreboard_markdown

        part = claims_report(metrics, cards, cache_dir=out / "claims", edges=config.claims["edges"],
                             progress=progress)
        for ds, board in part.boards.items():
            atomic_write_text(out / "tables" / f"claims-{_safe(ds)}.md", scoreboard_markdown(board))
            atomic_write_text(out / "tables" / f"claims-{_safe(ds)}.csv", board.to_csv(index=False))
        for stem, caption, chart in part.charts:
            files = _save_figure(chart, out / "figures" / stem, config.formats)
            written[stem] = ({p.suffix[1:]: p for p in files}, caption)
        return part
    except Exception as exc:  # noqa: BLE001 - one part fails, the report goes on
        part_failures.append(f"claims: {type(exc).__name__}: {exc}")
        return None


def _claims_doc(doc: "_Doc", part: Any, written: dict[str, tuple[dict[str, Path], str]]) -> None:
    from analysis.claims import scoreboard_markdown

    doc.h(2, "Claims of the notes")
    doc.p("Each claim of the background notes next to its measurement: linear vs relu6 paired over seeds "
          "(mean over seeds; difference with its 95 % t-interval). Verdicts are computed from the results: "
          "supported / contradicted when the interval excludes 0, no significant difference when it covers 0, "
          "not measurable here when nothing in the toolkit tests the claim. CSV in `tables/claims-*.csv`.")
    for ds, board in part.boards.items():
        doc.p(f"**Scoreboard \u2014 {ds}**")
        doc.table(scoreboard_markdown(board))
    for name, caption, md in part.tables:
        doc.p(f"**{name}** \u2014 {caption}")
        doc.table(md)
    stems = [s for s in written if s.startswith("claims-")]
    if stems:
        doc.figures([written[s] for s in stems], columns=1)


def _build_doc(out: Path, config: ReportConfig, jobs: Sequence[Job], status: dict[str, dict[str, Any]],
               failed: list[dict[str, Any]], part_failures: list[str],
               written: dict[str, tuple[dict[str, Path], str]], tables: list[tuple[str, str, str]],
               provenance: dict[str, Any], metrics: pd.DataFrame) -> _Doc:
    doc = _Doc(out)
    doc.h(1, config.title)
    st = config.study
    datasets = ", ".join(Path(d).name for d in config.datasets)
    jobs_info = provenance["jobs"]
    doc.p(f"{jobs_info['total']} jobs (checkpoint \u00d7 dataset): {jobs_info['computed']} computed, "
          f"{jobs_info['cached']} reused from `jobs/`, {jobs_info['failed']} failed. "
          f"Datasets: {datasets} ({st.split} split"
          f"{f', first {st.n_images} images' if st.n_images else ''}). "
          f"Metric families: {', '.join(st.families)}. Study seed {st.seed}; "
          f"reservoir {st.reservoir_size} points per capture point; topology on "
          f"{st.topology_points} points.")
    if failed or part_failures:
        doc.h(2, "Failures")
        doc.items([f"**{s['checkpoint']}** on {Path(s['dataset']).name}: {s['error']}" for s in failed]
                  + part_failures, cls="failed")
    notes = provenance["notes"]
    if notes:
        doc.h(2, "Notes")
        doc.items(notes, cls="note")

    sections = [
        ("accuracy", "Accuracy per design", 1),
        ("depth-", "Metrics across depth", len(config.depth_stages)),
        ("positive-", "Active channels after each ReLU (Fig. 7)", 1),
        ("spiral", "Spiral through ReLU (Fig. 1)", 1),
        ("surgery-", "Surgery: bottleneck activation removed or inserted at inference", 1),
        ("diagram-", "Persistence diagrams", 1),
    ]
    for prefix, heading, columns in sections:
        stems = [s for s in written if s == prefix or (prefix.endswith("-") and s.startswith(prefix))]
        if not stems:
            continue
        doc.h(2, heading)
        if prefix == "accuracy" and tables and tables[0][0] == "accuracy":
            doc.table(tables[0][2])
        doc.figures([written[stem] for stem in stems], columns=min(columns, 2))
    paired_tables = [t for t in tables if t[0].startswith("comparison-")]
    paired_figs = [s for s in written if s.startswith("paired-")]
    if paired_tables or paired_figs:
        a, b = config.compare_designs
        doc.h(2, f"Paired comparison: {a} vs {b}")
        doc.p(f"Each seed trains both designs from the same initial weights in the same batch order, so "
              f"designs are compared paired over seeds: per seed the mean over blocks, then the mean "
              f"difference {a} \u2212 {b} with its {100 * config.compare_level:g} % Student-t interval and "
              "the exact sign-flip p-value over all 2^n sign patterns. A design is called higher only when "
              f"the interval excludes 0 and p \u2264 {1 - config.compare_level:.2g}; otherwise the row says "
              "*no significant difference*. Per-block rows with the per-seed values are in `comparison-*.csv`.")
        for name, caption, md in paired_tables:
            doc.p(f"**{name}** \u2014 {caption}")
            doc.table(md)
        doc.figures([written[stem] for stem in paired_figs], columns=1)
    metric_tables = [t for t in tables if t[0] != "accuracy" and not t[0].startswith("comparison-")]
    if metric_tables:
        doc.h(2, "Tables")
        doc.p("LaTeX versions (booktabs, ready to `\\input`) are in `tables/`.")
        for name, caption, md in metric_tables:
            doc.p(f"**{name}** \u2014 {caption}")
            doc.table(md)
    doc.h(2, "Jobs")
    rows = ["| checkpoint | design | seed | dataset | status | seconds |", "|---|---|---|---|---|---|"]
    for j in jobs:
        s = status[j.job_id]
        sec = s.get("seconds")
        sec_text = f"{sec:.1f}" if isinstance(sec, (int, float)) else (
            f"{sum(sec.values()):.1f}" if isinstance(sec, dict) else "")
        card = j.checkpoint.card or {}
        rows.append(f"| {_md_escape(j.checkpoint.name)} | {_md_escape(card.get('design', j.checkpoint.arch or ''))} | "
                    f"{card.get('seed', '')} | {_md_escape(Path(j.dataset).name)} | {s['status']} | {sec_text} |")
    doc.table("\n".join(rows) + "\n")
    doc.h(2, "Files and provenance")
    git = provenance["git"]
    doc.items([
        "`metrics.parquet`, `metrics.csv`: tidy results, one row per value "
        f"({len(metrics)} rows)",
        "`spiral.csv`: the spiral experiment" if (out / "spiral.csv").exists() else "spiral: not run",
        "`surgery.csv`: the surgery table" if (out / "surgery.csv").exists() else "surgery: not run",
        f"`figures/`: {len(written)} figures as {', '.join(f.upper() for f in config.formats)}",
        "`tables/`: LaTeX tables; `provenance.json`: config, versions, checkpoint sha256, seeds, timings",
        f"config `{config.source.name}` (sha256 {provenance['config_sha256'][:12]}), git commit "
        f"{git['commit'] or 'unknown'}{' (uncommitted changes)' if git.get('dirty') else ''}",
    ])
    return doc
