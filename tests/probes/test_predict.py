"""The prediction sanity check (probes.loading.predict / format_predictions)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from probes.loading import format_predictions, load_checkpoint, predict
from probes.natural import load_photo

# A tiny classifier whose answer is fixed by its final bias: with zero weights the logits are
# the bias, whatever the image.
RIGGED = """
from torch import nn

def build(n_classes={n}):
    m = nn.Sequential(nn.Conv2d({c}, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, n_classes))
    nn.init.zeros_(m[3].weight)
    nn.init.zeros_(m[3].bias)
    return m
"""


def _rigged(tmp: Path, *, n: int, favourite: int, channels: int = 3) -> tuple[Path, str]:
    """Write a factory file and a weights file whose bias favours ``favourite`` (logit 5)."""
    (tmp / f"rigged{n}_{channels}.py").write_text(RIGGED.format(n=n, c=channels))
    ns: dict = {}
    exec(RIGGED.format(n=n, c=channels), ns)
    sd = {k: v.clone() for k, v in ns["build"]().state_dict().items()}
    sd["3.bias"][favourite] = 5.0
    weights = tmp / f"rigged{n}_{channels}.safetensors"
    save_file(sd, str(weights))
    return weights, f"{tmp / f'rigged{n}_{channels}.py'}:build"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("images")
    paths = [d / "cat.png", d / "coffee.jpg"]
    load_photo("chelsea").save(paths[0])
    load_photo("coffee").resize((200, 133)).save(paths[1])
    return paths


def test_rigged_model_predicts_its_class_first(tmp_path: Path, images) -> None:
    weights, arch = _rigged(tmp_path, n=10, favourite=7)
    lm = load_checkpoint(weights, arch=arch, size=32)
    preds = predict(lm, images)
    assert len(preds) == 2 and all(len(p) == 5 for p in preds)
    p7 = math.exp(5) / (math.exp(5) + 9)
    for p in preds:
        assert p[0][0] == "7"
        assert p[0][1] == pytest.approx(p7, rel=1e-5)
        assert p[1][1] == pytest.approx(1 / (math.exp(5) + 9), rel=1e-5)
    text = format_predictions(lm, [str(i) for i in images], preds)
    lines = text.splitlines()
    assert lines[2] == str(images[0])
    assert lines[3].split() == ["1.", f"{100 * p7:.2f}%", "7"]


def test_imagenet_names_for_1000_outputs(tmp_path: Path, images) -> None:
    weights, arch = _rigged(tmp_path, n=1000, favourite=281)
    lm = load_checkpoint(weights, arch=arch, size=32)
    preds = predict(lm, images[:1], topk=3)
    assert [len(p) for p in preds] == [3]
    assert preds[0][0][0] == "tabby"
    assert "1." in format_predictions(lm, images[:1], preds).splitlines()[3]


def test_grayscale_model_gets_gray_images(tmp_path: Path, images) -> None:
    weights, arch = _rigged(tmp_path, n=3, favourite=2, channels=1)
    lm = load_checkpoint(weights, arch=arch, mean=[0.5], std=[0.5], size=16)
    assert [p[0][0] for p in predict(lm, images)] == ["2", "2"]
    assert len(predict(lm, images, topk=10)[0]) == 3


def test_random_mobilenet_probabilities(images) -> None:
    lm = load_checkpoint("torchvision:mobilenet_v2", size=64)
    preds = predict(lm, images)
    probs = [p for _, p in preds[0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    assert "resize 66 + centre crop" in format_predictions(lm, images, preds)


def test_bad_and_missing_image_files(tmp_path: Path, images) -> None:
    lm = load_checkpoint("torchvision:mobilenet_v2", size=32)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a jpeg")
    with pytest.raises(ValueError, match=r"Cannot read image file .*broken\.jpg"):
        predict(lm, [images[0], bad])
    with pytest.raises(ValueError, match=r"Image file .*nowhere\.png does not exist"):
        predict(lm, [tmp_path / "nowhere.png"])
    with pytest.raises(ValueError, match=r"The 'topk' parameter of predict must be an int >= 1\. Got 0"):
        predict(lm, images, topk=0)


def test_truncated_image_is_an_error(tmp_path: Path) -> None:
    lm = load_checkpoint("torchvision:mobilenet_v2", size=32)
    good = tmp_path / "full.png"
    Image.fromarray((torch.rand(64, 64, 3) * 255).to(torch.uint8).numpy()).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"Cannot read image file .*cut\.png"):
        predict(lm, [cut])
