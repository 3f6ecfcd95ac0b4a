"""`bnprobe probe` end to end on third-party files: torchvision, timm and a user factory.

Random weights saved to local files stand in for downloaded checkpoints (nothing is
downloaded); the `natural` dataset is cut at each model's own input size.
"""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest
import torch

from analysis.cli import main
from analysis.study import SCHEMA_COLUMNS

FAST = ["--n-images", "3", "--points", "blocks.1.*", "--metrics", "spectrum", "activity",
        "--reservoir", "20", "--quiet"]


def _probe(tmp_path, *args: str) -> pd.DataFrame:
    out = tmp_path / "m.parquet"
    assert main(["probe", *args, *FAST, "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert list(df.columns) == list(SCHEMA_COLUMNS)
    assert set(df.dataset) == {"natural"}
    assert set(df.block) == {1}
    return df


def test_torchvision_file_with_natural_images(tmp_path) -> None:
    import torchvision
    torch.manual_seed(0)
    path = tmp_path / "mnv2.pth"
    torch.save(torchvision.models.mobilenet_v2(weights=None, num_classes=7).state_dict(), path)
    df = _probe(tmp_path, str(path), "--arch", "torchvision:mobilenet_v2", "--dataset", "natural")
    # torchvision's block 1: 16 -> 96 (t = 6) -> 24, stride 2, ReLU6 after the expansion
    expand = df[(df.point == "blocks.1.expand") & (df.metric == "rank")].iloc[0]
    assert (expand.channels, expand.block_in, expand.block_out, expand.stride) == (96, 16, 24, 2)
    assert expand.act == "relu6"
    assert set(df.arch) == {"torchvision:mobilenet_v2"}


def test_timm_file_with_natural_images(tmp_path) -> None:
    import timm
    torch.manual_seed(0)
    path = tmp_path / "effnet.safetensors"
    from safetensors.torch import save_file

    model = timm.create_model("efficientnet_b0", pretrained=False, num_classes=5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    df = _probe(tmp_path, str(path), "--arch", "timm:efficientnet_b0", "--dataset", "natural")
    # timm efficientnet_b0 block 1: 16 -> 96 -> 24 with SiLU (no flat region)
    expand = df[(df.point == "blocks.1.expand") & (df.metric == "rank")].iloc[0]
    assert (expand.channels, expand.block_in, expand.block_out) == (96, 16, 24)
    dead = df[(df.point == "blocks.1.expand") & (df.metric == "dead_fraction")].iloc[0]
    assert dead.reason != ""  # SiLU has no flat region: no dead-unit count, and it says why


def test_user_factory_with_flags(tmp_path) -> None:
    factory = tmp_path / "my_model.py"
    factory.write_text(textwrap.dedent("""
        from probes.zoo import ZooConfig, build_model

        def build():
            return build_model(ZooConfig(input_size=48, num_classes=4, width_mult=0.35, head_channels=64))
    """))
    from probes.zoo import ZooConfig, build_model

    torch.manual_seed(0)
    weights = tmp_path / "mine.pt"
    torch.save(build_model(ZooConfig(input_size=48, num_classes=4, width_mult=0.35, head_channels=64)).state_dict(),
               weights)
    df = _probe(tmp_path, str(weights), "--arch", f"{factory}:build", "--mean", "0.5", "0.5", "0.5",
                "--std", "0.25", "0.25", "0.25", "--size", "48", "--dataset", "natural")
    assert {"rank", "dead_fraction"} <= set(df.metric)
