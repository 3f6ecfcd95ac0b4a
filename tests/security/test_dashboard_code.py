"""The dashboard never imports or runs what a visitor types or uploads (issue 13, item 1).

Architectures come from a fixed list; the strings an attacker would use (``os:abort``, a
``.py`` path that writes a marker file when imported) are refused even when they reach the
page's state directly, and a card naming a factory is refused as data. ``os.abort`` would kill
this test process, so reaching the assertions is itself the check that the server survived.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

from dashboard.views import probe_checkpoint as page

TIMEOUT = 120


def _page() -> None:
    import streamlit as st

    from dashboard.views.probe_checkpoint import render

    st.session_state.setdefault("dataset", "digits")
    render()


@pytest.fixture
def evil_py(tmp_path: Path) -> tuple[str, Path]:
    marker = tmp_path / "RAN"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef build():\n    return None\n")
    return f"{tmp_path / 'evil.py'}:build", marker


def _messages(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Architectures the page hands to the loader; the loader then stops (no study runs)."""
    import probes.loading

    seen: list[str] = []
    real = probes.loading.load_checkpoint

    def recording(spec, **kwargs):
        seen.append(str(spec if spec is not None else kwargs.get("arch")))
        if kwargs.get("allow_factory", True):
            pytest.fail("the dashboard loaded with factories allowed")
        real(None, arch="torchvision:no_such_net", allow_factory=False)  # raises: stop here

    monkeypatch.setattr(probes.loading, "load_checkpoint", recording)
    return seen


@pytest.mark.parametrize("arch", ["os:abort", "EVIL_PY", "posix:abort"])
def test_injected_architecture_runs_nothing(arch: str, evil_py, loads: list[str]) -> None:
    arch = evil_py[0] if arch == "EVIL_PY" else arch
    at = AppTest.from_function(_page, default_timeout=TIMEOUT)
    at.session_state["probe-source"] = "Architecture with random weights"
    at.session_state["probe-arch-random"] = arch
    at.run()
    at.button(key="probe-run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not evil_py[1].exists()
    assert "probe-result" not in at.session_state
    assert arch not in loads and all(a in page.architecture_choices() for a in loads), loads
    assert len(_messages(at)) == 1, _messages(at)


def test_uploaded_card_naming_a_factory_is_refused(tmp_path: Path, evil_py) -> None:
    import torch

    buf = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(buf))
    card = {"name": "w", "architecture": {"family": "factory", "spec": evil_py[0],
                                          "config": {"width_mult": 1.0}}}
    at = AppTest.from_function(_page, default_timeout=TIMEOUT).run()
    uploaders = at.get("file_uploader")
    uploaders[0].set_value(("w.safetensors", buf.read_bytes(), "application/octet-stream"))
    at.run()
    at.get("file_uploader")[1].set_value(("w.json", json.dumps(card).encode(), "application/json"))
    at.button(key="probe-run").click().run()
    assert not at.exception
    assert not evil_py[1].exists()
    assert _messages(at) and "key 'architecture' must be an object with family 'zoo'" in _messages(at)[0]


class _Upload(io.BytesIO):
    def __init__(self, name: str, data: bytes) -> None:
        super().__init__(data)
        self.name, self.size = name, len(data)


@pytest.mark.parametrize("arch", ["os:abort", "EVIL_PY", "torchvision:no_such_net"])
def test_load_upload_refuses_unlisted_architectures(tmp_path: Path, evil_py, arch: str) -> None:
    import torch

    arch = evil_py[0] if arch == "EVIL_PY" else arch
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match=r"is not one of the listed torchvision / timm architectures"):
        page.load_upload(_Upload("w.safetensors", path.read_bytes()), None, arch)
    assert not evil_py[1].exists()


def test_config_listens_on_localhost_only() -> None:
    import tomllib

    config = tomllib.loads((Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"
