"""Training recipes run end to end, write weights plus a complete card, and are deterministic."""

from __future__ import annotations

import json

import pytest
import torch

from probes._io import sha256_file
from probes.datasets import load_dataset
from probes.train import RECIPES, Recipe, evaluate, recipe_names, train
from probes.zoo import ZooConfig, build_model

RECIPE = "digits-linear-s0"
CARD_KEYS = {
    "name", "design", "architecture", "dataset", "input", "seed", "epochs", "optimizer",
    "train_accuracy", "test_accuracy", "n_params", "weights_file", "sha256", "train_seconds",
    "torch_threads", "versions", "gradient_norms",
}



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    card = train(RECIPE, out_dir=out, epochs=1, progress=False)
    return out, card


def test_writes_weights_and_card(run):
    out, card = run
    assert sorted(p.name for p in out.iterdir()) == [f"{RECIPE}.json", f"{RECIPE}.safetensors"]
    assert json.loads((out / f"{RECIPE}.json").read_text()) == card


def test_card_has_documented_keys(run):
    _, card = run
    assert set(card) == CARD_KEYS
    assert card["name"] == RECIPE and card["design"] == "linear" and card["seed"] == 0
    assert card["epochs"] == 1  # the override is recorded, not the recipe's 30
    assert card["architecture"]["family"] == "zoo"
    assert card["dataset"] == {"name": "digits", "train_images": 1437, "test_images": 360, "split": 0}
    assert card["input"] == {"size": 32, "channels": 1, "mean": [0.3054], "std": [0.3237],
                             "interpolation": "bilinear"}
    opt = card["optimizer"]
    assert (opt["name"], opt["lr_max"], opt["momentum"], opt["batch_size"]) == ("SGD", 0.1, 0.9, 64)
    assert {"python", "torch", "numpy", "scikit-learn", "safetensors"} <= set(card["versions"])
    assert card["versions"]["torch"] == torch.__version__
    assert card["torch_threads"] == 1 and card["train_seconds"] >= 0


def test_gradient_norms_match_an_independent_route(run):
    _, card = run
    g = card["gradient_norms"]
    assert g["blocks"] == 17 and len(g["mean"]) == len(g["std"]) == 1  # one epoch
    assert len(g["mean"][0]) == 17 and all(v > 0 for v in g["mean"][0])
    # first optimiser step, recomputed by hand: same seed, same first batch, one flat gradient
    torch.manual_seed(0)
    recipe = RECIPES[RECIPE]
    model = build_model(recipe.zoo_config())
    from probes.train import _normalise, _shift

    gen = torch.Generator().manual_seed(0)
    data = load_dataset("digits", split="train")
    idx = torch.randperm(len(data), generator=gen)[:recipe.batch_size]
    xb = _normalise(_shift(torch.from_numpy(data.x)[idx], recipe.max_shift, gen), recipe.input_spec())
    model.train()
    loss = torch.nn.functional.cross_entropy(model(xb), torch.from_numpy(data.y)[idx],
                                             label_smoothing=recipe.label_smoothing)
    loss.backward()
    flat = torch.cat([p.grad.flatten() for p in model.blocks[3].parameters()])
    from probes.train import _block_grad_norms

    assert _block_grad_norms(list(model.blocks))[3] == pytest.approx(float(flat.norm()), rel=1e-5)


def test_card_sha256_and_accuracy(run):
    out, card = run
    assert card["weights_file"] == f"{RECIPE}.safetensors"
    assert card["sha256"] == sha256_file(out / card["weights_file"])
    for key, n in (("train_accuracy", 1437), ("test_accuracy", 360)):
        assert 0.0 <= card[key] <= 1.0
        # a fraction of the split's images, rounded to 6 decimals
        assert card[key] * n == pytest.approx(round(card[key] * n), abs=1e-3)


def test_weights_load_and_reproduce_card(run):
    from safetensors.torch import load_file

    out, card = run
    config = ZooConfig.from_dict(card["architecture"]["config"])
    assert config == RECIPES[RECIPE].zoo_config()
    model = build_model(config)
    model.load_state_dict(load_file(out / card["weights_file"]), strict=True)
    assert sum(p.numel() for p in model.parameters()) == card["n_params"]
    acc = evaluate(model, load_dataset("digits", split="test"), card["input"])
    assert acc == pytest.approx(card["test_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_training_is_deterministic(run, tmp_path):
    out, card = run
    again = train(RECIPE, out_dir=tmp_path, epochs=1, progress=False)
    assert again["sha256"] == card["sha256"]
    assert (tmp_path / card["weights_file"]).read_bytes() == (out / card["weights_file"]).read_bytes()
    assert again["test_accuracy"] == card["test_accuracy"]


def test_train_restores_deterministic_flag(run, tmp_path, monkeypatch):
    # train() switches deterministic algorithms on for its own loop only, even when it fails
    assert not torch.are_deterministic_algorithms_enabled()

    def boom(config):
        assert torch.are_deterministic_algorithms_enabled()
        raise RuntimeError("boom")

    monkeypatch.setattr("probes.train.build_model", boom)
    with pytest.raises(RuntimeError, match="boom"):
        train(RECIPE, out_dir=tmp_path, epochs=1, progress=False)
    assert not torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            train(RECIPE, out_dir=tmp_path, epochs=1, progress=False)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_unknown_recipe_lists_names(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown recipe 'digits-gelu-s0'; available recipes are \[.*'digits-linear-s0'"):
        train("digits-gelu-s0", out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_bad_epochs(tmp_path):
    with pytest.raises(ValueError, match=r"The 'epochs' parameter must be an int >= 1\. Got 0 instead"):
        train(RECIPE, out_dir=tmp_path, epochs=0)


def test_recipe_table():
    names = recipe_names()
    assert len(names) == 31 and len(set(names)) == 31
    for dataset, n_seeds in (("digits", 10), ("shapes", 3)):
        for design in ("linear", "relu6"):
            assert {f"{dataset}-{design}-s{s}" for s in range(n_seeds)} <= set(names)
    for design in ("shortcut_expansion", "shortcut_none", "partial", "hswish", "leaky_relu"):
        assert f"digits-{design}-s0" in names
    for name, r in RECIPES.items():
        assert isinstance(r, Recipe) and r.name == name
        assert name == f"{r.dataset}-{r.design}-s{r.seed}"
        cfg = r.zoo_config()
        assert (cfg.in_channels, cfg.input_size, cfg.width_mult, cfg.head_channels) == (1, 32, 0.35, 256)
    assert RECIPES["digits-relu6-s1"].zoo_config().bottleneck_act == "relu6"
    assert RECIPES["digits-shortcut_none-s0"].zoo_config().shortcut == "none"
    assert RECIPES["digits-partial-s0"].zoo_config().bottleneck_act == "partial"
    assert RECIPES["shapes-linear-s2"].zoo_config().num_classes == 3


def test_input_stats_match_train_split():
    # INPUT_STATS documents the mean and std of each train split's pixels (rounded)
    from probes.train import INPUT_STATS

    for name, (mean, std) in INPUT_STATS.items():
        x = load_dataset(name, split="train").x
        assert float(x.mean()) == pytest.approx(mean, abs=5e-4), name
        assert float(x.std()) == pytest.approx(std, abs=5e-4), name
