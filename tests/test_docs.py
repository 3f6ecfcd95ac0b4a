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

    assert callable(capture) and capture.__module__ == "probes.capture"


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
