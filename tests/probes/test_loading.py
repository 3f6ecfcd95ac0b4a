"""Safe checkpoint loading and preprocessing presets (probes/loading.py)."""

from __future__ import annotations

import collections
import json
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

import checkpoints
from probes._io import sha256_file
from probes.catalogue import list_checkpoints
from probes.loading import ARCH_FORMS, list_zoo, load_checkpoint, load_images, read_weights
from probes.natural import load_photo
from probes.preprocess import IMAGENET_MEAN, IMAGENET_STD, InputSpec
from probes.zoo import ZooConfig, build_model

ZOO_CONFIG = ZooConfig(input_size=32, num_classes=3, width_mult=0.35, head_channels=64, in_channels=1)
ZOO_INPUT = {"size": 32, "channels": 1, "mean": [0.14], "std": [0.2862], "interpolation": "bilinear"}


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _same(a: nn.Module, b: dict[str, torch.Tensor]) -> bool:
    own = a.state_dict()
    return set(own) == set(b) and all(torch.equal(own[k], b[k]) for k in b)


@pytest.fixture(scope="module")
def mobilenet10() -> dict[str, torch.Tensor]:
    """State dict of a seeded random torchvision mobilenet_v2 with 10 classes."""
    import torchvision

    torch.manual_seed(1)
    return _state(torchvision.models.mobilenet_v2(num_classes=10))


@pytest.fixture(scope="module")
def random_mobilenet():
    return load_checkpoint("torchvision:mobilenet_v2")


@pytest.fixture
def zoo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private zoo with one tiny checkpoint ``shapes-linear-s3`` written like train.py does."""
    torch.manual_seed(3)
    model = build_model(ZOO_CONFIG)
    save_file(_state(model), str(tmp_path / "shapes-linear-s3.safetensors"))
    card = {
        "name": "shapes-linear-s3", "design": "linear",
        "architecture": {"family": "zoo", "config": ZOO_CONFIG.to_dict()},
        "dataset": {"name": "shapes"}, "input": ZOO_INPUT, "seed": 3,
        "weights_file": "shapes-linear-s3.safetensors",
        "sha256": sha256_file(tmp_path / "shapes-linear-s3.safetensors"),
    }
    (tmp_path / "shapes-linear-s3.json").write_text(json.dumps(card))
    (tmp_path / "notes.json").write_text(json.dumps({"not": "a card"}))
    monkeypatch.setattr(checkpoints, "CHECKPOINT_DIR", tmp_path)
    return tmp_path


# ------------------------------------------------------------------------------------ zoo


def test_zoo_by_name_uses_card(zoo_dir: Path) -> None:
    lm = load_checkpoint("shapes-linear-s3")
    assert _same(lm.model, read_weights(zoo_dir / "shapes-linear-s3.safetensors"))
    assert (lm.name, lm.source, lm.arch) == ("shapes-linear-s3", "zoo", "zoo")
    assert lm.input_spec == InputSpec.from_dict(ZOO_INPUT, source="checkpoint card shapes-linear-s3.json")
    assert lm.design == {"bottleneck_act": "linear", "expand_ratio": 6, "shortcut": "bottleneck",
                         "seed": 3, "design": "linear"}
    assert lm.class_names == ["circle", "square", "triangle"]
    assert lm.sha256 == sha256_file(zoo_dir / "shapes-linear-s3.safetensors")
    assert not lm.model.training


def test_list_checkpoints_returns_cards_only(zoo_dir: Path) -> None:
    assert [c["name"] for c in list_checkpoints()] == ["shapes-linear-s3"]


def test_list_zoo_is_a_deprecated_alias(zoo_dir: Path) -> None:
    with pytest.warns(DeprecationWarning, match=r"list_zoo is deprecated; use probes\.catalogue\.list_checkpoints"):
        cards = list_zoo()
    assert cards == list_checkpoints()


def test_zoo_sha256_mismatch_is_refused(zoo_dir: Path) -> None:
    card = json.loads((zoo_dir / "shapes-linear-s3.json").read_text())
    card["sha256"] = "0" * 64
    (zoo_dir / "shapes-linear-s3.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"shapes-linear-s3.safetensors does not match its card"):
        load_checkpoint("shapes-linear-s3")


def test_unknown_name_lists_zoo(zoo_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"'digits-nope' is neither a zoo checkpoint.*\['shapes-linear-s3'\]"):
        load_checkpoint("digits-nope")


def test_file_with_card_beside_it_loads_as_zoo(zoo_dir: Path, tmp_path_factory) -> None:
    other = tmp_path_factory.mktemp("copy")
    for suffix in (".safetensors", ".json"):
        (other / f"mine{suffix}").write_bytes((zoo_dir / f"shapes-linear-s3{suffix}").read_bytes())
    lm = load_checkpoint(other / "mine.safetensors")
    assert (lm.arch, lm.source, lm.input_spec.channels) == ("zoo", str(other / "mine.safetensors"), 1)


def test_shipped_checkpoint_loads() -> None:
    cards = list_checkpoints()
    assert cards, "no shipped checkpoint (*.safetensors with its .json card) in checkpoints/"
    lm = load_checkpoint(cards[0]["name"])
    assert lm.sha256 == cards[0]["sha256"]
    assert lm.model(torch.zeros(1, lm.input_spec.channels, lm.input_spec.size, lm.input_spec.size)).shape[1] \
        == cards[0]["architecture"]["config"]["num_classes"]


# ---------------------------------------------------------------------------- weights files


def test_safetensors_with_torchvision_arch_infers_classes(tmp_path: Path, mobilenet10) -> None:
    save_file(mobilenet10, str(tmp_path / "mv2.safetensors"))
    lm = load_checkpoint(tmp_path / "mv2.safetensors", arch="torchvision:mobilenet_v2")
    assert _same(lm.model, mobilenet10)
    assert lm.model.classifier[1].out_features == 10
    assert (lm.name, lm.source, lm.arch) == ("mv2", str(tmp_path / "mv2.safetensors"), "torchvision:mobilenet_v2")
    assert lm.class_names is None and lm.design["bottleneck_act"] == "linear"


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "epoch": 3},
    lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
    lambda sd: {"module." + k: v for k, v in sd.items()},
    lambda sd: {"model_state_dict": {"module." + k: v for k, v in sd.items()}},
], ids=["bare", "state_dict", "model", "module-prefix", "wrapped-and-prefixed"])
def test_pt_state_dict_wrappers(tmp_path: Path, mobilenet10, wrap) -> None:
    torch.save(wrap(mobilenet10), tmp_path / "w.pth")
    assert _same(load_checkpoint(tmp_path / "w.pth", arch="torchvision:mobilenet_v2").model, mobilenet10)


class _Payload:
    """Unpickling this creates the marker file (stands for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    obj = {"weight": torch.zeros(2), "x": _Payload(marker)}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    with pytest.raises(ValueError, match=r"Refused to load .*evil\.pt") as err:
        load_checkpoint(path, arch="torchvision:mobilenet_v2")
    assert "weights_only=False" not in str(err.value)
    assert not marker.exists()


def test_whole_pickled_module_suggests_state_dict(tmp_path: Path) -> None:
    torch.save(nn.Linear(2, 3), tmp_path / "whole.pt")
    with pytest.raises(ValueError, match=r"whole\.pt: it is a whole pickled model.*state_dict\(\)"):
        read_weights(tmp_path / "whole.pt")


def test_torchscript_is_refused_with_how_to_export_a_state_dict(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(nn.Linear(2, 3)).save(str(tmp_path / "ts.pt"))
    with pytest.raises(ValueError, match=r"ts\.pt: it is a TorchScript archive, whose code runs when "
                                         r"loaded\. Export a state dict .*torch\.jit\.load\(FILE\)\.state_dict\(\)"):
        load_checkpoint(tmp_path / "ts.pt", arch="torchvision:mobilenet_v2")


def test_mnasnet_state_dict_keeps_its_module_versions(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mnasnet0_5(num_classes=4)
    own = model.state_dict()
    # as nn.DataParallel(model).state_dict() writes it: every key and module path under "module"
    sd = collections.OrderedDict((f"module.{k}", v) for k, v in own.items())
    sd._metadata = collections.OrderedDict((f"module.{k}" if k else "module", v)
                                           for k, v in own._metadata.items())
    torch.save({"state_dict": sd}, tmp_path / "m.pt")
    state = read_weights(tmp_path / "m.pt")
    assert state._metadata[""]["version"] == 2  # MNASNet's own version, prefix stripped
    lm = load_checkpoint(tmp_path / "m.pt", arch="torchvision:mnasnet0_5")
    assert _same(lm.model, model.state_dict())
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))  # no metadata: current versions
    assert _same(load_checkpoint(tmp_path / "m.safetensors", arch="torchvision:mnasnet0_5").model,
                 model.state_dict())


def test_regnet_builds_although_its_init_cannot_run_on_the_meta_device() -> None:
    lm = load_checkpoint("torchvision:regnet_x_400mf")
    assert lm.model.fc.out_features == 1000


def test_factory_that_crashes_is_one_line_naming_it(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "crashy.py").write_text("def build():\n    raise RuntimeError('bad width\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"^The architecture 'crashy:build' failed while building: "
                                         r"RuntimeError: bad width$"):
        load_checkpoint("crashy:build")


def test_factories_refused_when_not_allowed(tmp_path: Path) -> None:
    marker = tmp_path / "RAN"
    (tmp_path / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef build():\n    return None\n")
    for arch in (f"{tmp_path / 'evil.py'}:build", "os:abort"):
        with pytest.raises(ValueError, match=r"names code to import and run .* which is disabled here"):
            load_checkpoint(arch, allow_factory=False)
    assert not marker.exists()


def test_misfit_state_dict_lists_missing_unexpected_and_shapes(tmp_path: Path, mobilenet10) -> None:
    sd = dict(mobilenet10)
    sd.pop("features.0.0.weight")
    sd.pop("features.0.1.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["features.1.conv.1.weight"] = torch.zeros(5, 5)
    save_file(sd, str(tmp_path / "bad.safetensors"))
    pattern = (r"bad\.safetensors does not fit the architecture: 2 missing keys "
               r"\[features\.0\.0\.weight, features\.0\.1\.bias\]; 1 unexpected keys \[extra\.weight\]; "
               r"1 shape mismatches \[features\.1\.conv\.1\.weight: file \(5, 5\) vs model \(16, 32, 1, 1\)\]")
    with pytest.raises(ValueError, match=pattern):
        load_checkpoint(tmp_path / "bad.safetensors", arch="torchvision:mobilenet_v2")


def test_misfit_lists_first_five_and_counts(tmp_path: Path, mobilenet10) -> None:
    save_file(mobilenet10, str(tmp_path / "mv2.safetensors"))
    with pytest.raises(ValueError, match=r"mv2\.safetensors does not fit.*\d+ missing keys \[.*\.\.\. \(\d+ more\)\]"):
        load_checkpoint(tmp_path / "mv2.safetensors", arch="timm:mobilenetv2_050")


def test_bare_state_dict_needs_arch(tmp_path: Path, mobilenet10) -> None:
    save_file(mobilenet10, str(tmp_path / "mv2.safetensors"))
    with pytest.raises(ValueError, match=r"mv2\.safetensors is a bare state dict .* name its architecture"):
        load_checkpoint(tmp_path / "mv2.safetensors")


@pytest.mark.parametrize("arch", ["mobilenet_v2", "torchvision:", "pkg.mod:", "pkg:not-a-name", ""])
def test_bad_arch_strings(tmp_path: Path, mobilenet10, arch: str) -> None:
    save_file(mobilenet10, str(tmp_path / "mv2.safetensors"))
    with pytest.raises(ValueError, match=r"The 'arch' parameter must be one of 'zoo', 'torchvision:NAME'"):
        load_checkpoint(tmp_path / "mv2.safetensors", arch=arch)


def test_unknown_library_model_suggests_names() -> None:
    with pytest.raises(ValueError, match=r"Unknown torchvision classification model 'mobilenetv2'\. Did you mean \['mobilenet_v2'"):
        load_checkpoint("torchvision:mobilenetv2")
    with pytest.raises(ValueError, match=r"Unknown timm model 'efficientnet_bx'"):
        load_checkpoint(None, arch="timm:efficientnet_bx")


def test_garbage_and_unknown_suffix(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        load_checkpoint(tmp_path / "junk.pt", arch="torchvision:mobilenet_v2")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match=r"Cannot read .*junk\.safetensors as a safetensors file"):
        read_weights(tmp_path / "junk.safetensors")
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"Unknown checkpoint file type 'w\.npz'"):
        read_weights(tmp_path / "w.npz")


def test_random_weights_are_seeded(random_mobilenet) -> None:
    again = load_checkpoint("torchvision:mobilenet_v2")
    other = load_checkpoint("torchvision:mobilenet_v2", seed=1)
    assert random_mobilenet.source == "torchvision:mobilenet_v2 (random weights)"
    assert _same(again.model, _state(random_mobilenet.model))
    assert not torch.equal(other.model.features[0][0].weight, random_mobilenet.model.features[0][0].weight)


# ------------------------------------------------------------------------------- factories

FACTORY = """
import torch
from torch import nn

def build():
    return nn.Sequential(nn.Conv2d({c}, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))

not_callable = 3
"""


@pytest.mark.parametrize("form", ["file", "module"])
def test_factory_arch_with_imagenet_defaults(tmp_path: Path, monkeypatch, form: str) -> None:
    (tmp_path / "my_tiny_net.py").write_text(FACTORY.format(c=3))
    torch.manual_seed(0)
    ns: dict = {}
    exec(FACTORY.format(c=3), ns)
    sd = _state(ns["build"]())
    save_file(sd, str(tmp_path / "tiny.safetensors"))
    if form == "module":
        monkeypatch.syspath_prepend(str(tmp_path))
        arch = "my_tiny_net:build"
    else:
        arch = f"{tmp_path / 'my_tiny_net.py'}:build"
    lm = load_checkpoint(tmp_path / "tiny.safetensors", arch=arch)
    assert _same(lm.model, sd)
    assert lm.arch == f"factory:{arch}"
    assert (lm.input_spec.size, lm.input_spec.mean, lm.input_spec.std) == (224, IMAGENET_MEAN, IMAGENET_STD)


def test_factory_flags_and_channel_inference(tmp_path: Path) -> None:
    (tmp_path / "gray.py").write_text(FACTORY.format(c=1))
    arch = f"{tmp_path / 'gray.py'}:build"
    with pytest.raises(ValueError, match=r"first convolution takes 1 channels.*--mean and --std with 1 values"):
        load_checkpoint(None, arch=arch)
    lm = load_checkpoint(None, arch=arch, mean=[0.5], std=[0.25], size=48)
    assert (lm.input_spec.channels, lm.input_spec.mean, lm.input_spec.std, lm.input_spec.size) == (1, (0.5,), (0.25,), 48)
    with pytest.raises(ValueError, match=r"has no callable 'not_callable'"):
        load_checkpoint(None, arch=f"{tmp_path / 'gray.py'}:not_callable")
    with pytest.raises(ValueError, match=r"Cannot import module 'no_such_pkg_xyz\.mod' named by arch"):
        load_checkpoint(None, arch="no_such_pkg_xyz.mod:build")


# -------------------------------------------------------------------------------- presets


def test_torchvision_preset_matches_weights_transforms(random_mobilenet) -> None:
    import torchvision

    t = torchvision.models.MobileNet_V2_Weights.DEFAULT.transforms()
    s = random_mobilenet.input_spec
    assert (s.size, list(s.mean), list(s.std), s.interpolation, s.channels) == (
        t.crop_size[0], t.mean, t.std, t.interpolation.value, 3)
    assert random_mobilenet.preset["resize_size"] == t.resize_size[0] == 232
    assert random_mobilenet.class_names[281] == "tabby"


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenetv3_large_100"])
def test_timm_preset_matches_resolve_data_config(name: str) -> None:
    import math

    from timm.data import resolve_data_config

    lm = load_checkpoint(f"timm:{name}")
    cfg = resolve_data_config({}, model=lm.model)
    s = lm.input_spec
    assert ((s.channels, s.size, s.size), s.mean, s.std, s.interpolation) == (
        cfg["input_size"], cfg["mean"], cfg["std"], cfg["interpolation"])
    assert lm.preset["resize_size"] == math.floor(s.size / cfg["crop_pct"])
    assert lm.class_names[0] == "tench, Tinca tinca"


@pytest.fixture(scope="module")
def cat_png(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "chelsea.png"
    load_photo("chelsea").save(path)  # 451 x 300: non-square, so resize + crop both matter
    return path


def test_eval_transform_equals_torchvision(random_mobilenet, cat_png: Path) -> None:
    import torchvision

    ref = torchvision.models.MobileNet_V2_Weights.DEFAULT.transforms()(Image.open(cat_png).convert("RGB"))
    mine = load_images([cat_png], random_mobilenet.input_spec,
                       resize_size=random_mobilenet.preset["resize_size"])[0]
    torch.testing.assert_close(mine, ref, rtol=0, atol=1e-6)


def test_eval_transform_equals_timm(cat_png: Path) -> None:
    from timm.data import create_transform, resolve_data_config

    lm = load_checkpoint("timm:mobilenetv2_050")
    ref = create_transform(**resolve_data_config({}, model=lm.model))(Image.open(cat_png).convert("RGB"))
    mine = load_images([cat_png], lm.input_spec, resize_size=lm.preset["resize_size"])[0]
    torch.testing.assert_close(mine, ref, rtol=0, atol=1e-6)


def test_flags_override_preset_and_input_spec_replaces_it(tmp_path: Path) -> None:
    lm = load_checkpoint("torchvision:mobilenet_v2", mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], size=112)
    assert (lm.input_spec.mean, lm.input_spec.size, lm.input_spec.interpolation) == ((0.5,) * 3, 112, "bilinear")
    assert "flags" in lm.input_spec.source and lm.preset["resize_size"] == 116
    spec = InputSpec(size=64, source="mine")
    assert load_checkpoint("torchvision:mobilenet_v2", input_spec=spec).input_spec == spec
    with pytest.raises(ValueError, match="one mean and one std per channel"):
        load_checkpoint("torchvision:mobilenet_v2", mean=[0.5], std=[0.5])


def test_arch_forms_are_documented() -> None:
    assert "torchvision:mobilenet_v2" in ARCH_FORMS and "path/to/model.py:FACTORY" in ARCH_FORMS


def test_torchvision_loads_without_torch_compiler_stack() -> None:
    # In a fresh interpreter: torchvision's random-weight model loads without importing
    # torch._dynamo, and torchvision's one use of it still answers (importing it then).
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys\n"
        "from probes.loading import load_checkpoint\n"
        "lm = load_checkpoint('torchvision:mobilenet_v2')\n"
        "before = 'torch._dynamo' in sys.modules\n"
        "roi = sys.modules['torchvision.ops.roi_align']\n"
        "print(before, type(lm.model).__name__, roi.is_compile_supported('cpu'), 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.stdout.split() == ["False", "MobileNetV2", "True", "True"]
