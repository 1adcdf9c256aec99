"""Layer kinds by what a module is; wrappers that pad, quantize or re-parameterize; refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

import convlens as cl
from convlens.cam import default_layer
from convlens.errors import ModelError


class PaddedConv(nn.Conv2d):
    """efficientnet_pytorch's Conv2dStaticSamePadding: a conv whose padding is a child module."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1):
        super().__init__(cin, cout, kernel, stride, bias=False)
        self.static_padding = nn.ZeroPad2d((0, 1, 0, 1)) if stride == 2 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.static_padding(x), self.weight, None, self.stride)


class Swish(nn.Module):
    """A library's own parameter-free activation (efficientnet_pytorch's MemoryEfficientSwish)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class Quantized(nn.Module):
    """A float model prepared for quantization: stubs around it, an observer on the conv."""

    def __init__(self):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv.activation_post_process = torch.ao.quantization.MinMaxObserver()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.quant(x))
        x = self.conv.activation_post_process(x)
        return self.dequant(self.fc(self.pool(x).flatten(1)))


def padded_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        PaddedConv(3, 8, 3, stride=2), nn.BatchNorm2d(8), Swish(),
        PaddedConv(8, 8, 3), Swish(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )


def test_a_conv_with_a_padding_child_is_one_conv_layer():
    model = cl.load_model(padded_net(), input_size=(16, 16))
    infos = model.layers()
    assert [(i.name, i.kind, i.is_leaf) for i in infos] == [
        ("0", "conv", True), ("1", "norm", True), ("2", "activation", True),
        ("3", "conv", True), ("4", "activation", True), ("5", "pool", True),
        ("6", "reshape", True), ("7", "linear", True),
    ]
    assert infos[0].output_shape == (1, 8, 8, 8)  # the conv's output, not the padding's (17x17)
    assert [i.name for i in model.resolve(None)] == ["0", "3"]
    assert default_layer(model).name == "4"
    x = np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    acts = model.activations(x)
    with torch.no_grad():
        expected = model.network[0](model.inputs(x))
    np.testing.assert_allclose(acts["0"], expected.permute(0, 2, 3, 1).numpy(), rtol=1e-6)


def test_weight_norm_parametrization_is_not_a_layer():
    torch.manual_seed(0)
    net = nn.Sequential(
        parametrizations.weight_norm(nn.Conv2d(3, 4, 3, padding=1)), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )
    model = cl.load_model(net, input_size=(8, 8))
    everything = model.layers(include_blocks=True)
    assert [(i.name, i.kind) for i in everything] == [
        ("0", "conv"), ("1", "activation"), ("2", "pool"), ("3", "reshape"), ("4", "linear"),
    ]  # the weight (4, 3, 3, 3) that the parametrization computes is no spatial "output"
    assert default_layer(model).name == "1"


def test_quant_stubs_and_observers():
    model = cl.load_model(Quantized(), input_size=(8, 8))
    assert [(i.name, i.kind) for i in model.layers(include_blocks=True)] == [
        ("quant", "reshape"), ("conv", "conv"), ("pool", "pool"), ("fc", "linear"),
        ("dequant", "reshape"),
    ]
    assert model.layer("conv").is_leaf


def test_a_typed_op_with_real_children_is_a_block():
    class ConvAct(nn.Conv2d):  # a conv subclass that also runs a child activation
        def __init__(self):
            super().__init__(3, 4, 3, padding=1)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(super().forward(x))

    model = cl.load_model(nn.Sequential(ConvAct(), nn.Flatten()), input_size=(8, 8))
    assert [(i.name, i.kind, i.is_leaf) for i in model.layers(include_blocks=True)] == [
        ("0.act", "activation", True), ("0", "conv", False), ("1", "reshape", True),
    ]


class FunctionalConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(F.conv2d(x, self.weight, padding=1).mean((2, 3)))


def test_functional_convolutions_name_the_module_to_use_instead():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = FunctionalConvs()

        def forward(self, x):
            return self.features(x)

    model = cl.load_model(Net(), input_size=(8, 8))
    with pytest.raises(ModelError, match=r"function calls \(F.conv2d\) in the forward of "
                       r"'features'; use their output instead \(layers=\['features'\]\)"):
        model.activations(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ModelError, match="'features'"):
        model.resolve("conv")


def test_functional_convolutions_in_the_root_forward():
    model = cl.load_model(FunctionalConvs(), input_size=(8, 8))
    with pytest.raises(ModelError, match=r"in FunctionalConvs.forward itself"):
        model.resolve(None)


def test_a_model_with_two_inputs_is_refused_in_one_line():
    class TwoTowers(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, image, text):
            return self.conv(image).mean() + text.sum()

    with pytest.raises(ModelError, match=r"^TwoTowers takes 2 inputs \(image, text\), not one "
                       r"image; every convlens view \(layers, activations, cam, filters\)") as err:
        cl.load_model(TwoTowers())
    assert "\n" not in str(err.value) and "wrap it" in str(err.value)


def test_a_token_model_is_refused_in_one_line():
    class TextClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(100, 8)
            self.fc = nn.Linear(8, 2)

        def forward(self, tokens):
            return self.fc(self.embed(tokens).mean(1))

    model = cl.load_model(TextClassifier())
    with pytest.raises(ModelError, match=r"takes token ids \(its 'embed' is an nn.Embedding"):
        model.layers()
    assert all(not m._forward_pre_hooks for m in model.network.modules())


def test_keras_models_that_do_not_take_one_image():
    import keras

    a, b = keras.Input((8, 8, 3)), keras.Input((4,))
    two = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Concatenate()(
        [keras.layers.GlobalAveragePooling2D()(a), b])))
    shapes = r"takes 2 inputs \(\S+ \(None, 8, 8, 3\), \S+ \(None, 4\)\)"
    with pytest.raises(ModelError, match=shapes):
        cl.load_model(two)
    tokens = keras.Input((12,), dtype="int32")
    text = keras.Model(tokens, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(
        keras.layers.Embedding(100, 8)(tokens))))
    with pytest.raises(ModelError, match=r"takes token ids of shape \(None, 12\), not one image"):
        cl.load_model(text)


def test_keras_layers_inside_a_custom_layer_are_listed():
    import keras

    class Residual(keras.layers.Layer):  # a block written as a Layer, not as a Model
        def __init__(self, channels, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(channels, 3, padding="same", name="conv")
            self.act = keras.layers.ReLU(name="relu")

        def call(self, x):
            return x + self.act(self.conv(x))

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = Residual(3, name="res")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    net = keras.Model(inputs, keras.layers.Dense(2, name="fc")(pooled))
    model = cl.load_model(net)
    assert [(i.name, i.kind, i.is_leaf) for i in model.layers(include_blocks=True)] == [
        ("res/conv", "conv", True), ("res/relu", "activation", True), ("res", "block", False),
        ("gap", "pool", True), ("fc", "linear", True),
    ]
    assert default_layer(model).name == "res"  # the sum, which the head pools
    x = np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    assert list(model.activations(x)) == ["res/conv"]


def test_keras_ops_in_a_functional_graph_are_layer_calls_and_the_head_s_sum_is_the_cam_layer():
    """``inputs + x`` (a keras.ops node, no layer) is listed, tapped, and the default CAM layer
    when the head pools it (Keras's ConvNeXt head); its taps are gone after each view."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    stem = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    branch = keras.layers.Conv2D(4, 3, padding="same", name="branch")(stem)
    total = stem + branch
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(total)
    net = keras.Model(inputs, keras.layers.Dense(2, name="fc")(pooled))
    op = next(o for o in net.operations if type(o).__name__ == "Add")
    model = cl.load_model(net)
    assert [(i.name, i.kind, i.type) for i in model.layers()] == [
        ("stem", "conv", "Conv2D"), ("branch", "conv", "Conv2D"), (op.name, "merge", "Add"),
        ("gap", "pool", "GlobalAveragePooling2D"), ("fc", "linear", "Dense"),
    ]
    assert default_layer(model).name == op.name
    x = np.random.default_rng(0).uniform(0, 255, (16, 16, 3)).astype(np.float32)
    acts = model.activations(x, layers=["stem", "branch", op.name])
    np.testing.assert_allclose(acts[op.name], acts["stem"] + acts["branch"], rtol=1e-5, atol=1e-5)
    cam = model.cam(x)
    assert cam.layers == [op.name] and np.isfinite(cam.heatmap).all()
    assert "call" not in vars(op) and op.name not in model.weighted_layers()


def _convnext_block_model() -> tuple[cl.Model, nn.Module]:
    from .compat_models import ConvNeXt

    torch.manual_seed(0)
    network = ConvNeXt()
    return cl.load_model(network, input_size=(64, 64)), network


def test_channels_last_layers_inside_an_nchw_network_keep_their_shapes():
    """ConvNeXt's block: conv → Permute → LayerNorm → Linear (×4) → GELU → Linear → Permute."""
    model, network = _convnext_block_model()
    shapes = {i.name: i.output_shape for i in model.layers(include_blocks=True)}
    assert shapes["features.1.0.block.0"] == (1, 16, 16, 16)  # the depthwise conv, NCHW
    assert shapes["features.1.0.block.3"] == (1, 16, 16, 64)  # Linear 16 → 64, channels-last
    assert shapes["features.1.0.block.4"] == (1, 16, 16, 64)  # GELU
    assert shapes["features.3.0.block.4"] == (1, 8, 8, 128)
    assert [i.name for i in model.layers() if i.channels_last][:6] == [
        f"features.1.0.block.{k}" for k in range(1, 6)] + ["features.1.1.block.1"]
    x = np.random.default_rng(0).uniform(0, 255, (64, 64, 3)).astype(np.float32)
    seen = {}
    handle = network.features[1][0].block[4].register_forward_hook(
        lambda module, args, output: seen.setdefault("gelu", output.detach().clone()))
    try:
        acts = model.activations(x, layers="features.1.0.block.4")
    finally:
        handle.remove()
    np.testing.assert_allclose(acts["features.1.0.block.4"], seen["gelu"].numpy(), rtol=1e-6)


def test_grad_cam_on_a_channels_last_layer_of_an_nchw_network():
    """Grad-CAM at the GELU inside ConvNeXt's block equals the one computed by hand."""
    model, network = _convnext_block_model()
    layer = "features.3.0.block.4"
    x = np.random.default_rng(1).uniform(0, 255, (64, 64, 3)).astype(np.float32)
    result = model.cam(x, layer=layer, target=3)
    kept = {}

    def keep(module, args, output):
        output.retain_grad()
        kept["maps"] = output

    handle = network.features[3][0].block[4].register_forward_hook(keep)
    try:
        network(model.inputs(x))[0, 3].backward()
    finally:
        handle.remove()
    maps = kept["maps"]  # (1, H, W, C)
    weights = maps.grad[0].mean(dim=(0, 1))
    expected = (maps[0] * weights).sum(-1).detach().numpy()
    assert result.raw.shape == (1, 8, 8)
    np.testing.assert_allclose(result.raw[0], expected, rtol=1e-4, atol=1e-5 * abs(expected).max())


def test_weight_norm_layers_are_weighted_by_their_name_and_reinitialized():
    """The sanity check's re-draw reaches a weight-normed conv (its weight lives in
    ``0.parametrizations.weight``), under the name ``layers()`` shows."""
    torch.manual_seed(0)
    net = nn.Sequential(
        parametrizations.weight_norm(nn.Conv2d(3, 4, 3, padding=1)), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2),
    )
    model = cl.load_model(net, input_size=(8, 8))
    assert model.weighted_layers() == ["0", "4"]
    before = net[0].weight.detach().clone()
    state = model.layer_state("0")
    model.reinitialize(["0"], seed=3)
    after = net[0].weight.detach().clone()
    assert not torch.allclose(before, after)
    twin = model.copy()
    twin.reinitialize(["0"], seed=3)
    torch.testing.assert_close(twin.network[0].weight, after)
    model.load_layer_state("0", state)
    torch.testing.assert_close(net[0].weight, before)
