import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeCV

from analysis.information import (
    ALPHAS,
    bootstrap_counts,
    decode,
    decode_input,
    extract_features,
    information_metrics,
    metric_names,
    ridge_loo,
)
from probes.datasets import ImageDataset
from probes.zoo import ZooConfig, build_model


def _images(n, seed, rank=6, side=4):
    """Images of a rank-``rank`` family: x = coefficients @ basis (plus a fixed mean)."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(size=(rank, side * side))
    coef = rng.normal(size=(n, rank))
    return coef, (coef @ basis + 0.5).reshape(n, 1, side, side)


def test_identity_point_decodes_the_image_with_r2_one():
    coef_tr, x_tr = _images(300, 0)
    coef_te, x_te = _images(120, 1)
    res = decode_input(x_tr.reshape(300, -1), x_tr, x_te.reshape(120, -1), x_te)
    assert res.predicted.shape == (120, 1, 4, 4)
    assert res.score == pytest.approx(1.0, abs=1e-6)
    assert res.ci_low <= res.score <= res.ci_high + 1e-12
    # the generating coefficients are a linear image of the pixels too
    res = decode_input(coef_tr, x_tr, coef_te, x_te)
    assert res.score == pytest.approx(1.0, abs=1e-6)


def test_mean_predictor_scores_r2_zero():
    # constant features: the decoders can only predict the train mean, here equal to the test
    # mean (same images), so R^2 is exactly 0 for the ridge and the k-NN decoder
    _, x = _images(80, 2)
    flat = np.zeros((80, 3))
    out = decode(flat, flat, regression={"input": (x, x)}, decoders=("linear", "knn"))
    assert out["linear"]["input"].score == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(out["linear"]["input"].predicted, np.broadcast_to(x.mean(0), x.shape), atol=1e-12)


def test_r2_matches_plain_numpy_ridge_with_the_chosen_alpha():
    rng = np.random.default_rng(3)
    F_tr, F_te = rng.normal(size=(200, 7)), rng.normal(size=(90, 7))
    W = rng.normal(size=(7, 5))
    y_tr = F_tr @ W + rng.normal(scale=2.0, size=(200, 5))
    y_te = F_te @ W + rng.normal(scale=2.0, size=(90, 5))
    res = decode(F_tr, F_te, regression={"y": (y_tr, y_te)}, decoders=("linear",))["linear"]["y"]
    # plain numpy: standardise with train statistics, solve (X^T X + a I) w = X^T y on centred data
    mu, sd = F_tr.mean(0), F_tr.std(0)
    X, Xt = (F_tr - mu) / sd, (F_te - mu) / sd
    w = np.linalg.solve(X.T @ X + res.alpha * np.eye(7), X.T @ (y_tr - y_tr.mean(0)))
    pred = Xt @ w + y_tr.mean(0)
    want = 1 - np.sum((pred - y_te) ** 2) / np.sum((y_te - y_te.mean(0)) ** 2)
    assert res.score == pytest.approx(want, rel=1e-9)
    np.testing.assert_allclose(res.predicted, pred, atol=1e-9)


def test_leave_one_out_alpha_matches_scikit_learn_ridgecv():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(150, 6))
    Y = X @ rng.normal(size=(6, 3)) + rng.normal(scale=3.0, size=(150, 3))
    (coef, icpt, alpha), = ridge_loo(X, [Y])
    ref = RidgeCV(alphas=ALPHAS).fit(X, Y)  # efficient LOO, one alpha for all targets
    assert alpha == ref.alpha_
    np.testing.assert_allclose(coef, ref.coef_.T, atol=1e-9)
    np.testing.assert_allclose(icpt, ref.intercept_, atol=1e-9)


def test_labels_linear_and_knn():
    rng = np.random.default_rng(5)
    F_tr, F_te = rng.normal(size=(300, 4)), rng.normal(size=(100, 4))
    M = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, -1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    lab = lambda F: np.argmax(F @ M, axis=1)  # noqa: E731  three linearly separable classes
    out = decode(F_tr, F_te, labels=(lab(F_tr), lab(F_te)))
    assert out["linear"]["label"].score > 0.85
    assert out["knn"]["label"].score > 0.85
    noise = decode(rng.normal(size=(300, 4)), rng.normal(size=(100, 4)), labels=(lab(F_tr), lab(F_te)))
    assert noise["linear"]["label"].score < 0.55  # features unrelated to the labels


def test_bootstrap_interval_is_seeded_and_covers_the_score():
    c = bootstrap_counts(50, n_boot=30, seed=1)
    assert c.shape == (30, 50) and np.all(c.sum(axis=1) == 50)
    np.testing.assert_array_equal(c, bootstrap_counts(50, n_boot=30, seed=1))
    rng = np.random.default_rng(6)
    F_tr, F_te = rng.normal(size=(200, 3)), rng.normal(size=(80, 3))
    y_tr, y_te = F_tr[:, 0] + rng.normal(size=200), F_te[:, 0] + rng.normal(size=80)
    r = decode(F_tr, F_te, regression={"y": (y_tr, y_te)})["linear"]["y"]
    assert r.ci_low < r.score < r.ci_high
    assert 0.2 < r.ci_high - r.ci_low < 0.6  # 80 images: an R^2 near 0.5 is known to about +-0.15


def test_information_metrics_names_and_factors():
    coef_tr, x_tr = _images(200, 7)
    coef_te, x_te = _images(80, 8)
    tr = ImageDataset(name="t", x=x_tr, y=(coef_tr[:, 0] > 0).astype(int), factors={"a": coef_tr[:, 1]})
    te = ImageDataset(name="t", x=x_te, y=(coef_te[:, 0] > 0).astype(int), factors={"a": coef_te[:, 1]})
    m = information_metrics(coef_tr, coef_te, tr, te)
    assert list(m) == metric_names(["a"])
    assert m["factor_decode_r2_a"].value == pytest.approx(1.0, abs=1e-6)
    assert m["input_decode_r2"].value == pytest.approx(1.0, abs=1e-6)
    assert m["label_decode_acc"].value > 0.95
    assert "factor_decode_r2_a_knn_ci_high" in m
    bad = coef_te.copy()
    bad[0, 0] = np.nan
    m = information_metrics(coef_tr, bad, tr, te, point="blocks.2.project")
    assert math.isnan(m["input_decode_r2"].value) and m["input_decode_r2"].reason == (
        "non-finite activations at blocks.2.project")


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"'decoders' parameter of decode must contain only \['linear', 'knn'\]\. Got 'svm'"):
        decode(np.zeros((10, 2)), np.zeros((5, 2)), labels=(np.zeros(10), np.zeros(5)), decoders=("svm",))
    with pytest.raises(ValueError, match=r"one row per image: 10 train and 5 test images\. Got 10 and 4 rows"):
        decode(np.zeros((10, 2)), np.zeros((4, 2)), labels=(np.zeros(10), np.zeros(5)))


def test_extract_features_are_pooled_in_dataset_order():
    torch.manual_seed(0)
    model = build_model(ZooConfig(input_size=32, num_classes=10, width_mult=0.35, head_channels=32,
                                  in_channels=1, bottleneck_act="relu6")).eval()
    x = np.random.default_rng(0).random((37, 1, 32, 32)).astype(np.float32)
    ds = ImageDataset(name="r", x=x, y=np.zeros(37, dtype=int))
    feats = extract_features(model, ds, points=["blocks.2.project.pre", "blocks.2.output"], batch_size=8,
                             device="cpu")
    # own hooks: the project BN output (before ReLU6) and the block output, averaged over positions
    seen = {}
    blk = model.blocks[2]
    h1 = blk.project.bn.register_forward_hook(lambda m, i, o: seen.__setitem__("pre", o.mean((2, 3)).clone()))
    h2 = blk.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o.mean((2, 3)).clone()))
    try:
        with torch.no_grad():
            model(torch.from_numpy(x))
    finally:
        h1.remove()
        h2.remove()
    np.testing.assert_allclose(feats["blocks.2.project.pre"], seen["pre"].numpy(), atol=1e-5)
    np.testing.assert_allclose(feats["blocks.2.output"], seen["out"].numpy(), atol=1e-5)


def test_decode_input_at_a_zoo_checkpoint_gives_decoded_test_images():
    from analysis.information import decode_input_at
    from probes.loading import load_checkpoint

    loaded = load_checkpoint("digits-linear-s0")
    res, test = decode_input_at(loaded.model, "digits", "blocks.16.output", input_spec=loaded.input_spec,
                                device="cpu")
    assert res.predicted.shape == test.x.shape == (360, 1, 32, 32)
    assert 0.3 < res.score < 1.0 and res.ci_low < res.score < res.ci_high
    x = test.x.astype(np.float64)
    err = np.sum((res.predicted - x) ** 2) / np.sum((x - x.mean(0)) ** 2)
    assert res.score == pytest.approx(1 - err, rel=1e-9)
    with pytest.raises(ValueError, match=r"'dataset' parameter of decode_input_at must be 'digits' or 'shapes'"):
        decode_input_at(loaded.model, "natural", "blocks.0.output")
