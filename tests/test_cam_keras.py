"""Keras 3 models (torch backend) work like torch modules: the seed's sigmoid convnet, nested."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import convlens as cl
from convlens.cam import METHODS


@pytest.fixture(scope="module")
def seed_model(seed_keras_path):
    return cl.load_model(seed_keras_path)


@pytest.fixture(scope="module")
def cat_180():
    return cl.load_image("chelsea", size=(180, 180))


def _hooks(model: cl.Model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.network.modules())


def test_seed_model_explains_both_classes_of_its_sigmoid(seed_model, cat_180):
    assert seed_model.output == "sigmoid"
    p = float(seed_model.probabilities(cat_180)[0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one of them may be all negative
        dog = seed_model.cam(cat_180, target=1)
        cat = seed_model.cam(cat_180, target=0)
    assert dog.layers == ["conv2d_4"] and dog.raw.shape == (1, 7, 7)
    assert dog.heatmap.shape == (1, 180, 180)
    # class 1 is the logit z, class 0 its negation: -z; Grad-CAM is linear in the gradient
    assert dog.score[0] == pytest.approx(-cat.score[0], rel=1e-5)
    assert dog.probability[0] == pytest.approx(p, rel=1e-4)
    assert cat.probability[0] == pytest.approx(1 - p, rel=1e-4)
    np.testing.assert_allclose(cat.raw, -dog.raw, rtol=1e-5, atol=1e-7)
    assert dog.empty[0] == (dog.raw <= 0).all() and cat.empty[0] == (cat.raw <= 0).all()
    assert not (dog.empty[0] and cat.empty[0])
    top = seed_model.cam(cat_180)
    assert top.target == [int(p > 0.5)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        both = seed_model.cam(cat_180, target="top-2")
    assert both.target == [top.target[0], 1 - top.target[0]]


def test_seed_model_logit_is_the_pre_sigmoid_score(seed_model, cat_180):
    cams = seed_model.cam(cat_180, target=1)
    p = float(seed_model.probabilities(cat_180)[0, 1])
    assert cams.score[0] == pytest.approx(np.log(p / (1 - p)), rel=1e-3, abs=1e-4)
    assert seed_model.forward(seed_model.inputs(cat_180)).shape == (1, 1)  # sigmoid restored


def test_keras_sigmoid_classes_are_the_signed_logit(seed_model, cat_180):
    """Class 1 explains the single logit z, class 0 explains -z."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        by_class = [seed_model.cam(cat_180, target=t) for t in (0, 1)]
        by_function = [seed_model.cam(cat_180, target=lambda out, s=s: s * out[0]) for s in (-1, 1)]
    for a, b in zip(by_class, by_function):
        np.testing.assert_allclose(a.raw, b.raw, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_runs_on_the_keras_model(seed_model, cat_180, method):
    options = {"top_k": 8} if method == "scorecam" else {}
    cams = seed_model.cam(cat_180, method=method, target=1, **options)
    assert cams.heatmap.shape == (1, 180, 180) and np.isfinite(cams.raw).all()
    assert cams.heatmap.min() >= 0.0 and cams.heatmap.max() <= 1.0
    assert _hooks(seed_model) == 0


def test_keras_ablation_matches_the_hand_computed_drops(seed_model, cat_180):
    """conv2d_4 -> Flatten -> Dense(1): zeroing channel k lowers the logit z by
    sum_ij A_k^ij K_k^ij, so w_k = that / z (Desai & Ramaswamy), the map sum_k w_k A_k."""
    from convlens.cam import AblationCAM

    method = AblationCAM()
    cams = seed_model.cam(cat_180, method=method, target=1, layer="conv2d_4")
    assert method.expanded  # the batch could be expanded after the layer (valid here)
    acts = seed_model.activations(cat_180, layers=["conv2d_4"])["conv2d_4"][0]  # (7, 7, 256)
    dense = seed_model.network.get_layer("dense")
    kernel = dense.get_weights()[0][:, 0].reshape(7, 7, 256)
    z = float(cams.score[0])
    weights = (acts * kernel).sum(axis=(0, 1)) / z
    np.testing.assert_allclose(cams.raw[0], acts @ weights, rtol=2e-3, atol=1e-5)


def test_nested_keras_model():
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    base = keras.Sequential(
        [layers.Conv2D(8, 3, activation="relu", name="c1"),
         layers.Conv2D(6, 3, activation="relu", name="c2")],
        name="base",
    )
    inputs = keras.Input((32, 32, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = base(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(4, activation="softmax")(x)
    model = cl.load_model(keras.Model(inputs, outputs))
    image = cl.load_image("chelsea", size=(32, 32))
    acts = model.activations(image, layers=["base"])["base"][0]  # (28, 28, 6)
    kernel, bias = model.network.layers[-1].get_weights()
    # GAP + Dense: the gradient of logit c is kernel[:, c] / (28 * 28) at every position
    maps = np.einsum("hwk,kc->chw", acts, kernel / (28 * 28))
    target = int(maps.reshape(4, -1).max(axis=1).argmax())  # a class with a visible map
    cams = model.cam(image, target=target)
    assert cams.layers == ["base"] and cams.raw.shape == (1, 28, 28) and not cams.empty[0]
    np.testing.assert_allclose(cams.raw[0], maps[target], rtol=1e-4, atol=1e-7)
    logits = acts.mean(axis=(0, 1)) @ kernel + bias
    assert cams.score[0] == pytest.approx(logits[target], rel=1e-4)
    inner = model.cam(image, target=target, layer="base/c1")
    assert inner.layers == ["base/c1"] and inner.raw.shape == (1, 30, 30)
    fused = model.cam(image, target=target, layer=["base/c1", "base"])
    assert fused.layers == ["base/c1", "base"]
    np.testing.assert_allclose(fused.raw_maps["base/c1"], inner.raw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fused.raw_maps["base"], cams.raw, rtol=1e-5, atol=1e-7)
    assert _hooks(model) == 0
    assert torch.is_grad_enabled()
