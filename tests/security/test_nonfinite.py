"""Weights holding NaN or Inf are refused before probing, naming the file and the first bad
tensor, or probed with a warning on request (issue 13, item 8)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from analysis import cli
from probes._io import sha256_file
from probes.loading import check_finite, load_checkpoint
from probes.zoo import ZooConfig, build_model

CONFIG = ZooConfig(input_size=32, num_classes=3, width_mult=0.35, head_channels=32, in_channels=1)


@pytest.fixture
def nan_zoo(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    state = {k: v.clone().contiguous() for k, v in build_model(CONFIG).state_dict().items()}
    state["blocks.3.project.conv.weight"][0, 0] = math.nan
    state["classifier.bias"][1] = math.inf
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path))
    card = {"name": "nan", "architecture": {"family": "zoo", "config": CONFIG.to_dict()},
            "input": {"size": 32, "channels": 1, "mean": [0.5], "std": [0.5]},
            "weights_file": path.name, "sha256": sha256_file(path)}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def test_nonfinite_weights_are_refused_naming_file_and_tensor(nan_zoo: Path) -> None:
    with pytest.raises(ValueError, match=rf"^{nan_zoo}: tensor 'blocks\.3\.project\.conv\.weight' holds 1 "
                                         r"non-finite value\(s\) \(NaN or Inf\), and 2 tensor\(s\) in all; .*"
                                         r"--allow-nonfinite"):
        load_checkpoint(nan_zoo)


def test_allow_nonfinite_warns_and_loads(nan_zoo: Path) -> None:
    with pytest.warns(RuntimeWarning, match=r"'blocks\.3\.project\.conv\.weight' holds 1 .*probing anyway"):
        lm = load_checkpoint(nan_zoo, allow_nonfinite=True)
    assert torch.isnan(lm.model.blocks[3].project.conv.weight).sum() == 1


def test_integer_buffers_and_finite_weights_pass() -> None:
    check_finite({"w": torch.ones(3), "n": torch.tensor(7)}, "f")


def test_cli_refuses_before_probing(nan_zoo: Path, capsys) -> None:
    assert cli.main(["probe", str(nan_zoo), "--n-images", "4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bnprobe probe: error: {nan_zoo}: tensor 'blocks.3.project.conv.weight'")
    assert err.count("\n") == 1
