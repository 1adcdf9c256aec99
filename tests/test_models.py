"""The model wrapper on torch and Keras models: layers, activations, predictions, hooks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import convlens as cl
from convlens.errors import LayerNotFoundError, ModelError


def all_hooks(network: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in network.modules())


class Bottleneck(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)  # used twice per block, in place, like torchvision

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(Bottleneck(8), Bottleneck(8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layer1(self.stem(x))), 1))


def test_sequential_layers_and_shapes(tiny_model):
    infos = tiny_model.layers()
    assert [i.kind for i in infos] == [
        "conv", "activation", "pool", "conv", "activation", "pool", "reshape", "linear",
    ]
    assert infos[0].output_shape == (1, 32, 32, 8)
    acts = tiny_model.activations(np.zeros((32, 32, 3), np.float32))
    assert list(acts) == ["0", "2", "3"]  # spatial conv + pool; the 1x1 global pool is left out
    assert acts["2"].shape == (1, 16, 16, 8)


def test_activation_before_an_inplace_relu_is_the_conv_output(tiny_model):
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    acts = tiny_model.activations(x, layers=["0", "1"])
    net = tiny_model.network
    with torch.no_grad():
        conv = net[0](torch.from_numpy(x).permute(0, 3, 1, 2) / 255.0)
    expected = conv.permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(acts["0"], expected, rtol=1e-6, atol=1e-6)
    assert acts["0"].min() < 0  # not overwritten by the in-place ReLU
    np.testing.assert_allclose(acts["1"], np.maximum(expected, 0), rtol=1e-6, atol=1e-6)


def test_nested_resnet_reused_module_gets_one_entry_per_call():
    model = cl.load_model(TinyResNet(), input_size=(16, 16))
    names = [i.name for i in model.layers()]
    assert "layer1.0.relu#1" in names and "layer1.0.relu#2" in names
    assert "layer1.0.relu" not in names
    both = model.resolve("layer1.0.relu")
    assert [i.name for i in both] == ["layer1.0.relu#1", "layer1.0.relu#2"]
    x = np.random.default_rng(1).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    acts = model.activations(x, layers=["layer1.0.relu#1", "layer1.0.relu#2", "layer1.*.conv2"])
    assert list(acts) == ["layer1.0.relu#1", "layer1.0.conv2", "layer1.0.relu#2", "layer1.1.conv2"]
    assert not np.array_equal(acts["layer1.0.relu#1"], acts["layer1.0.relu#2"])
    blocks = [i.name for i in model.layers(include_blocks=True) if i.kind == "block"]
    assert blocks == ["stem", "layer1.0", "layer1.1", "layer1"]


def test_selection_by_kind_glob_and_unknown_name(tiny_model):
    assert [i.name for i in tiny_model.resolve("conv")] == ["0", "3"]
    assert [i.name for i in tiny_model.resolve(["pool", "0"])] == ["0", "2", "5"]
    with pytest.raises(LayerNotFoundError, match="Did you mean") as err:
        cl.load_model().resolve("_conv_hed")
    assert "'_conv_head'" in str(err.value)


def test_batches_and_lists_of_images(tiny_model, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    arrays = rng.integers(0, 256, (3, 32, 32, 3)).astype(np.float32)
    paths = []
    for n, a in enumerate(arrays):
        p = tmp_path / f"{n}.png"
        Image.fromarray(a.astype(np.uint8)).save(p)
        paths.append(str(p))
    batch = tiny_model.activations(arrays, layers="3")
    listed = tiny_model.activations(paths, layers="3")
    chunked = tiny_model.activations(arrays, layers="3", batch_size=2)
    assert batch["3"].shape == (3, 16, 16, 16)
    np.testing.assert_allclose(batch["3"], listed["3"], atol=1e-5)
    np.testing.assert_allclose(batch["3"], chunked["3"], atol=1e-5)


def test_hooks_are_removed_after_calls_and_failures(tiny_model):
    net = tiny_model.network
    tiny_model.activations(np.zeros((32, 32, 3), np.float32))
    assert all_hooks(net) == 0
    with pytest.raises(ModelError):
        tiny_model.activations(np.zeros((32, 32, 4, 1), np.float32))
    assert all_hooks(net) == 0
    bad = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(10, 2))  # wrong in_features
    with pytest.raises(ModelError, match="could not run"):
        cl.load_model(bad, input_size=(8, 8)).layers()
    assert all_hooks(bad) == 0


def test_hooks_removed_when_the_forward_pass_raises(tiny_model):
    infos = tiny_model.resolve("conv")
    with pytest.raises(RuntimeError), tiny_model.capture(infos) as cap:
        cap.run(torch.zeros(1, 5, 32, 32))  # 5 channels: torch raises inside the conv
    assert all_hooks(tiny_model.network) == 0


def test_a_model_that_catches_its_own_errors_still_stops_early():
    class Careful(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)
            self.head = nn.Linear(4, 2)
            self.fallbacks = self.heads = 0

        def forward(self, x):
            try:
                x = self.conv2(self.conv1(x))
            except Exception:  # a model's own error handling, as real code has
                self.fallbacks += 1
                x = torch.zeros(x.shape[0], 4, 4, 4)
            self.heads += 1
            return self.head(x.mean(dim=(2, 3)))

    net = Careful()
    model = cl.load_model(net, input_size=(8, 8), preprocess="raw")
    model.layers()
    net.heads = 0
    acts = model.activations(np.zeros((8, 8, 3), np.float32), layers="conv1")
    assert acts["conv1"].shape == (1, 6, 6, 4)
    assert (net.fallbacks, net.heads) == (0, 0)  # stopped after conv1, not swallowed


def test_keras_input_with_one_free_dimension_is_resized_by_both():
    import keras

    inputs = keras.Input(shape=(None, 40, 3))
    x = keras.layers.Conv2D(4, 3, name="free_height_conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="free_height_pool")(x)
    outputs = keras.layers.Dense(2, name="free_height_head")(x)
    model = cl.load_model(keras.Model(inputs, outputs))
    assert model.input_size == (40, 40) and model.fixed_input_size
    image = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    assert tuple(model.to_pixels(image).shape) == (1, 40, 40, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # random weights: the map may be empty
        assert model.cam(image, method="eigencam").heatmap.shape == (1, 40, 40)


def test_model_without_conv_layers_is_refused_clearly():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 3, 4))
    model = cl.load_model(mlp, input_size=(8, 8))
    with pytest.raises(ModelError, match="convolutional"):
        model.activations(np.zeros((8, 8, 3), np.float32))


def test_default_model_classifies_the_samples(default_model, cat_224, coffee_224):
    top = default_model.predict([cat_224, coffee_224], top=5)
    assert 281 <= top[0][0].index <= 285
    assert top[1][0].index == 967 and top[1][0].name == "espresso"
    assert abs(sum(p.probability for p in top[0]) - 1) < 0.2


def test_default_model_layers_and_activations(default_model, cat_224):
    infos = default_model.layers()
    names = [i.name for i in infos]
    assert names.count("_swish#1") == 1 and names.count("_swish#2") == 1
    assert default_model.layer("_swish#2").output_shape == (1, 7, 7, 1280)
    acts = default_model.activations(cat_224)
    assert len(acts) == 49 and all(a.ndim == 4 for a in acts.values())
    assert acts["_conv_stem"].shape == (1, 112, 112, 32)
    assert all_hooks(default_model.network) == 0


def test_channels_last_models_give_the_same_numbers(tiny_model):
    import copy

    image = np.random.default_rng(3).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    network = copy.deepcopy(tiny_model.network)
    fast = cl.load_model(network, input_size=(32, 32), preprocess="unit", channels_last=True)
    conv = fast.network[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert fast.inputs(image).is_contiguous(memory_format=torch.channels_last)
    plain, last = tiny_model.activations(image), fast.activations(image)
    for name in plain:
        np.testing.assert_allclose(last[name], plain[name], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        fast.cam(image).heatmap, tiny_model.cam(image).heatmap, rtol=1e-4, atol=1e-5
    )


def test_default_model_runs_channels_last(default_model, cat_224):
    stem = default_model.network._conv_stem.weight
    assert stem.is_contiguous(memory_format=torch.channels_last)
    assert default_model.inputs(cat_224).is_contiguous(memory_format=torch.channels_last)


def test_user_preprocessing_for_torch_modules():
    net = nn.Sequential(nn.Conv2d(3, 1, 1, bias=False))
    nn.init.ones_(net[0].weight)
    x = np.full((4, 4, 3), 255.0, np.float32)
    unit = cl.load_model(net, input_size=(4, 4), preprocess="unit").activations(x)["0"]
    raw = cl.load_model(net, input_size=(4, 4), preprocess=lambda p: p * 2).activations(x)["0"]
    assert np.allclose(unit, 3.0) and np.allclose(raw, 1530.0)
    with pytest.raises(ModelError, match="unknown preprocessing"):
        cl.load_model(net, preprocess="caffe")


def test_keras_nested_sequential_and_h5(tmp_path):
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    features = keras.Sequential(
        [layers.Conv2D(4, 3, activation="relu", name="c1"), layers.MaxPooling2D(name="p1")],
        name="features",
    )
    inputs = keras.Input((12, 12, 3))
    x = features(inputs)
    x = layers.Conv2D(6, 3, activation="relu", name="c2")(x)
    outputs = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    nested = keras.Model(inputs, outputs)
    x_img = np.random.default_rng(3).uniform(0, 1, (2, 12, 12, 3)).astype(np.float32)

    model = cl.load_model(nested)
    acts = model.activations(x_img)
    assert list(acts) == ["features/c1", "features/p1", "c2"]
    c1 = features.layers[0](x_img)  # the layers called one by one, eagerly
    c2 = nested.get_layer("c2")(features.layers[1](c1))
    np.testing.assert_allclose(acts["features/c1"], keras.ops.convert_to_numpy(c1), atol=1e-5)
    np.testing.assert_allclose(acts["c2"], keras.ops.convert_to_numpy(c2), atol=1e-5)
    assert model.output == "probabilities"

    nested.save(tmp_path / "nested.h5")
    nested.save(tmp_path / "nested.keras")
    for path in ("nested.h5", "nested.keras"):
        again = cl.load_model(tmp_path / path).activations(x_img)
        for name in acts:
            np.testing.assert_allclose(again[name], acts[name], atol=1e-6)


def test_unsupported_keras_backend_is_explained(monkeypatch):
    import keras

    from convlens.models import keras as keras_adapter

    monkeypatch.setattr(keras.config, "backend", lambda: "openvino")
    with pytest.raises(ModelError, match=r"'openvino' backend.*torch, tensorflow, jax"):
        keras_adapter.import_keras()


def test_bad_model_sources(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        cl.load_model(tmp_path / "missing.keras")
    weights = tmp_path / "weights.pth"
    torch.save({"w": torch.zeros(1)}, weights)
    with pytest.raises(ModelError, match="state_dict"):
        cl.load_model(weights)
    with pytest.raises(ModelError, match="cannot use"):
        cl.load_model(42)


def test_activations_display_themselves_in_a_notebook(tiny_model):
    acts = tiny_model.activations(np.zeros((32, 32, 3), np.float32))
    html = acts._repr_html_()
    assert html.count("<img") == len(acts) == 3 and "data:image/png;base64," in html
    assert [row.layer for row in acts.empty_channels()] == list(acts)


def test_the_digits_convnet_is_built_in_and_reads_held_out_digits():
    """``load_model("digits_convnet")``: the scan demo's model loads by name, with no file to
    trust, and classifies the held-out digits as trained (93 % in tools/train_digits.py)."""
    from convlens.scan.demo import VALIDATION, digits_pixels

    model = cl.load_model("digits_convnet")
    assert model.input_size == (32, 32) and model.class_names == [str(d) for d in range(10)]
    pixels, labels = digits_pixels()
    top1 = model.probabilities(pixels[-VALIDATION:]).argmax(1).cpu().numpy()
    assert (top1 == labels[-VALIDATION:]).mean() > 0.9
