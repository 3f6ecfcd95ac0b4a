"""The documentation runs: docstring examples (doctest) and the README's Python API example."""

from __future__ import annotations

import contextlib
import doctest
import importlib
import io
import pkgutil
import re
from pathlib import Path

import pytest

import analysis
import probes

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> list[str]:
    """Every module of the two packages with a docstring example that is not skipped."""
    names = []
    for pkg in (probes, analysis):
        files = {pkg.__name__: Path(pkg.__file__)}
        files |= {f"{pkg.__name__}.{m.name}": Path(pkg.__path__[0]) / f"{m.name}.py"
                  for m in pkgutil.iter_modules(pkg.__path__) if not m.ispkg}
        names += [name for name, path in files.items()
                  if any(">>> " in line and "+SKIP" not in line for line in path.read_text().splitlines())]
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_pass(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             report=False)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (run doctest -v)"


def test_public_api_names() -> None:
    from probes.capture import capture, probe
    from probes.datasets import load_dataset
    from probes.loading import load_checkpoint

    assert (probes.capture, probes.probe, probes.load_checkpoint, probes.load_dataset) == (
        capture, probe, load_checkpoint, load_dataset)
    assert sorted(probes.__all__) == ["capture", "load_checkpoint", "load_dataset", "probe"]
    from analysis.study import StudyConfig, run_study

    assert (analysis.run_study, analysis.StudyConfig) == (run_study, StudyConfig)
    with pytest.raises(AttributeError, match="module 'probes' has no attribute 'nope'"):
        probes.nope  # noqa: B018


def test_capture_stays_the_function_after_the_submodule_is_imported() -> None:
    import probes.capture  # noqa: F401  (binds nothing over the function)
    from probes import capture

    assert capture is importlib.import_module("probes.capture").capture


def _readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"^## Python API\n\n```python\n(.*?)^```", text, re.S | re.M)
    assert match, "README.md has no '## Python API' section starting with a python code block"
    return match.group(1)


def test_readme_python_api_example_runs() -> None:
    namespace: dict[str, object] = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_readme_block(), "README.md (Python API)", "exec"), namespace)  # noqa: S102
    erank, act = namespace["erank"], namespace["act"]
    assert list(erank.index[:3]) == ["blocks.0.project", "blocks.1.project", "blocks.2.project"]
    assert ((erank > 0) & (erank <= 1)).all()
    # a ReLU6 expansion of block 3 (t = 6): every position keeps some but not all channels
    assert 0 < act.positive_min <= act.positive_max < act.n_channels
    assert out.getvalue().splitlines()[-1] == (
        f"active channels per position: {act.positive_min} to {act.positive_max} of {act.n_channels}")


# -------------------------------------------------------------------- docs/design.md tracks the code

DESIGN = ROOT / "docs" / "design.md"


def test_design_doc_names_every_metric_and_column() -> None:
    from analysis.activity import ACTIVITY_METRICS
    from analysis.quantization import QUANTIZATION_METRICS
    from analysis.spectrum import SPECTRUM_METRICS
    from analysis.study import SCHEMA_COLUMNS, load_shipped_metrics

    doc = DESIGN.read_text()
    metrics = set(load_shipped_metrics().metric) | set(SPECTRUM_METRICS) | set(ACTIVITY_METRICS)
    metrics |= set(QUANTIZATION_METRICS)
    assert len(metrics) > 40
    assert sorted(m for m in metrics if f"`{m}`" not in doc) == []
    assert [c for c in SCHEMA_COLUMNS if f"`{c}`" not in doc] == []


def test_design_doc_lists_every_cli_subcommand_and_option() -> None:
    from analysis.cli import build_parser

    doc = DESIGN.read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(cmd for cmd in sub.choices if f"bnprobe {cmd}" not in doc) == []
    options = {opt for p in sub.choices.values() for a in p._actions for opt in a.option_strings
               if opt.startswith("--") and opt != "--help"}
    assert sorted(o for o in options if o not in doc) == []


def _doc_row(label: str) -> list[str]:
    line = next(line for line in DESIGN.read_text().splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip().split(" ")[0] for cell in line.strip("|").split("|")][1:]


def test_design_doc_defaults_table_matches_the_code() -> None:
    import inspect
    import tomllib

    from analysis.cli import build_parser
    from analysis.settings import DASHBOARD_PROBE_CONFIG, StudyConfig
    from probes.capture import probe

    defaults = {k: v.default for k, v in inspect.signature(probe).parameters.items()}
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["probe"]
    cli = {a.dest: a.default for a in sub._actions}
    toml = tomllib.loads((ROOT / "analysis" / "configs" / "paper.toml").read_text())
    config = StudyConfig()
    assert cli["reservoir_size"] == config.reservoir_size and cli["topology_points"] == config.topology_points
    assert _doc_row("reservoir size K")[:4] == [
        str(defaults["reservoir_size"]), str(config.reservoir_size), str(toml["study"]["reservoir_size"]),
        str(DASHBOARD_PROBE_CONFIG.reservoir_size)]
    assert _doc_row("moment positions per image")[:4] == [
        str(defaults["moment_positions"]), str(config.moment_positions), str(toml["study"]["moment_positions"]),
        str(DASHBOARD_PROBE_CONFIG.moment_positions)]
    assert _doc_row("activity positions per image")[0] == str(defaults["activity_positions"])
    assert _doc_row("topology points")[1:4] == [
        str(config.topology_points), str(toml["topology"]["points"]), str(DASHBOARD_PROBE_CONFIG.topology_points)]
    assert _doc_row("images")[2:4] == [str(toml["study"]["n_images"]), str(DASHBOARD_PROBE_CONFIG.n_images)]
