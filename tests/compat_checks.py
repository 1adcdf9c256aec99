"""The compatibility matrix's checks, on any framework and any Keras backend.

``tests/test_compat.py`` runs them in its own process (PyTorch models; Keras on torch) and, as
``python tests/compat_checks.py OUT.json``, in a subprocess per other Keras backend (TensorFlow,
JAX: Keras picks its backend once per process), on one model of each ``keras.applications``
family. The worker writes each (model, view) result, ``✓`` or the one-line reason, and the CPU
seconds it used.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np

#: the matrix's columns
VIEWS = ("layers", "activations", "cam", "filters", "scan", "cam layer")
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
#: the row built past Keras's torch-backend guard on NASNetMobile
NASNET_MOBILE_UNGUARDED = "NASNetMobile (NASNet() with its arguments)"
#: filter-visualization steps (the check is that the ascent runs, not what it draws)
FILTER_STEPS = 1
#: the families JAX runs, one per kind of op the adapter must follow: keras.ops nodes and layer
#: scale (ConvNeXt), residual adds (ResNet), squeeze-excitation multiplies and swish
#: (EfficientNet), hard-swish op nodes (MobileNetV3). TensorFlow, whose taps are the same code,
#: runs all 14 families. JAX costs 10-76 CPU-s a model, most of it compiling every op of the
#: eager passes: all 14 took about 440 CPU-s (every check passed), which would double the suite
JAX_FAMILIES = ("ConvNeXt", "EfficientNet", "MobileNetV3", "ResNet")
#: what makes JAX's eager ops and random initializers cheaper to compile (in the worker only)
JAX_ENVIRONMENT = {
    "JAX_THREEFRY_PARTITIONABLE": "0",
    "XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
}


def keras_app(constructor: str, size: int) -> Callable[[], Any]:
    """A builder of ``keras.applications.<constructor>`` (random weights, 10 classes)."""

    def load() -> Any:
        import keras

        import convlens as cl

        keras.utils.set_random_seed(0)
        if constructor == NASNET_MOBILE_UNGUARDED:
            net = nasnet_mobile_unguarded(size)
        else:
            net = getattr(keras.applications, constructor)(
                weights=None, input_shape=(size, size, 3), classes=10
            )
        return cl.load_model(net)

    return load


def nasnet_mobile_unguarded(size: int) -> Any:
    """NASNetMobile as ``keras.applications.NASNetMobile`` builds it, minus the line that refuses
    the torch backend (keras-team/keras#18451): ``NASNet()`` with NASNetMobile's arguments."""
    from keras.src.applications.nasnet import NASNet

    return NASNet(
        (size, size, 3), penultimate_filters=1056, num_blocks=4, stem_block_filters=32,
        skip_reduction=False, filter_multiplier=2, weights=None, classes=10, default_size=224,
        name="nasnet_mobile",
    )


def backend_rows(backend: str) -> dict[str, tuple[str, int]]:
    """The rows another Keras backend runs: the smallest model of every family (TensorFlow) or
    of ``JAX_FAMILIES`` (JAX)."""
    return {
        smallest: (smallest, size) for family, (smallest, _, size) in KERAS_FAMILIES.items()
        if backend != "jax" or family in JAX_FAMILIES
    }


# -- the checks ----------------------------------------------------------------------------------
def _image(model: Any) -> np.ndarray:
    import convlens as cl

    return cl.load_image("chelsea", size=model.input_size)


def _conv_classes(model: Any) -> tuple[type, ...]:
    if model.framework == "torch":
        import torch

        return (torch.nn.modules.conv._ConvNd,)
    from keras.src.layers.convolutional import base_conv, base_depthwise_conv, base_separable_conv

    return (base_conv.BaseConv, base_depthwise_conv.BaseDepthwiseConv,
            base_separable_conv.BaseSeparableConv)


def check_layers(model: Any) -> None:
    infos = model.layers()
    assert infos and "block" not in {i.kind for i in infos}
    listed = {id(i.module) for i in infos if i.kind == "conv"}
    kinds = _conv_classes(model)
    if model.framework == "torch":
        everything = list(model.network.modules())
    else:
        everything = list(model.network._flatten_layers(include_self=False))
    convs = [m for m in everything if isinstance(m, kinds)]
    assert convs and all(id(m) in listed for m in convs), "a conv module is not listed as conv"


def check_activations(model: Any) -> None:
    chosen = model.resolve(None)
    acts = model.activations(_image(model))
    assert list(acts) == [i.name for i in chosen]
    for info in chosen:
        assert acts[info.name].shape == info.output_shape
        assert np.isfinite(acts[info.name]).all()


def check_cam(model: Any) -> None:
    from convlens.cam import default_layer

    result = model.cam(_image(model))
    assert result.layers == [default_layer(model).name]
    assert result.heatmap.shape == (1, *model.input_size)
    assert np.isfinite(result.heatmap).all()
    assert result.heatmap.min() >= 0 and result.heatmap.max() <= 1


def _middle_conv(model: Any) -> Any:
    """The middle one of the conv layers whose maps (at 64 px) are wider than the 2+2 border."""
    size = model.input_size[0] if model.fixed_input_size else 64
    convs = [
        i for i in model.resolve("conv")
        if i.spatial and min(i.output_shape[1:3]) * size / model.input_size[0] > 4
    ]
    return convs[len(convs) // 2]


def check_filters(model: Any) -> None:
    size = model.input_size[0] if model.fixed_input_size else 64
    middle = _middle_conv(model)
    fv = model.filters(middle.name, channels=[0, 1], steps=FILTER_STEPS, size=size)
    assert fv.images.shape[0] == 2 and fv.images.shape[-1] == 3 and fv.images.dtype == np.uint8
    assert np.isfinite(fv.activation).all()


def check_scan(model: Any) -> None:
    """A scan of three tiny random images, two labelled classes, one layer (no Ray)."""
    layer = _middle_conv(model).name
    images = np.random.default_rng(0).uniform(0, 255, (3, *model.input_size, 3))
    batches = [(images.astype(np.float32), np.array([0, 1, 0]))]
    with tempfile.TemporaryDirectory() as folder:
        result = model.scan(batches, folder, layers=layer, top_k=2, batch_size=1, workers=1)
        channels = result.channels
        assert result.layers == [layer]
        assert len(channels) == model.layer(layer).channels, "a channel row per channel"
        assert np.isfinite(channels["max"].to_numpy()).all(), "non-finite channel maxima"
        assert len(result.top_images(layer, 0)) == 2, "not 2 top images of channel 0"
        assert len(result.images) == 3, "not 3 image rows"
        mean_cam = result.class_mean_cam(0)
        assert np.isfinite(mean_cam).all(), "non-finite class mean CAM"


def _as_numpy(value: Any) -> np.ndarray:
    import keras

    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(keras.ops.convert_to_numpy(value))


def check_cam_layer(model: Any, expected: str | None = None) -> None:
    """The default CAM layer is the last spatial map the head is computed from.

    Read from the forward code when ``expected`` is given; otherwise the first layer after it
    (the head's pooling or flatten) must be fed exactly its output.
    """
    from convlens.cam import default_layer

    chosen = default_layer(model)
    if expected is not None:
        assert chosen.name == expected, f"the default CAM layer is {chosen.name!r}"
        return
    head = next(i for i in model.layers(include_blocks=True) if i.order > chosen.order)
    seen: dict[str, np.ndarray] = {}
    with model.capture([chosen]) as cap:
        cap.run(model.inputs(_image(model)))
        seen["output"] = _as_numpy(cap.outputs[chosen.name])
    module = head.module
    if hasattr(module, "register_forward_pre_hook"):  # torch modules; Keras op nodes
        def keep(module: Any, args: Any) -> None:
            seen.setdefault("input", _as_numpy(args[0]))

        handle = module.register_forward_pre_hook(keep)
        try:
            model.logits(_image(model))
        finally:
            handle.remove()
    else:  # a Keras layer on TensorFlow / JAX: its call, tapped for one pass
        original = module.call

        def call(*args: Any, **kwargs: Any) -> Any:
            seen.setdefault("input", _as_numpy(args[0]))
            return original(*args, **kwargs)

        object.__setattr__(module, "call", call)
        try:
            model.logits(_image(model))
        finally:
            object.__delattr__(module, "call")
    assert np.array_equal(seen["input"], seen["output"]), (
        f"{head.name!r} (the head) is not fed the output of {chosen.name!r}"
    )


def run_check(model: Any, view: str, cam_layer: str | None = None) -> None:
    if view == "cam layer":
        check_cam_layer(model, cam_layer)
    else:
        globals()[f"check_{view}"](model)


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:120]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(target: str) -> None:
    """Every backend row's views on this process's Keras backend → ``target`` (JSON)."""
    import gc

    import keras

    import convlens  # noqa: F401 (after keras, as a notebook imports them)

    backend = keras.config.backend()
    results: dict[str, Any] = {"backend": backend, "rows": {}}
    for name, (constructor, size) in backend_rows(backend).items():
        start = _cpu_seconds()
        views: dict[str, str] = {}
        try:
            model = keras_app(constructor, size)()
        except Exception as err:
            views = dict.fromkeys(VIEWS, one_line(err))
        else:
            for view in VIEWS:
                try:
                    run_check(model, view)
                    views[view] = "✓"
                except Exception as err:
                    views[view] = one_line(err)
            del model
        keras.backend.clear_session()
        gc.collect()
        results["rows"][name] = {"views": views, "cpu_s": round(_cpu_seconds() - start, 1)}
        print(name, results["rows"][name], flush=True)
    results["cpu_s"] = round(_cpu_seconds(), 1)
    with open(target, "w", encoding="utf-8") as f:
        json.dump(results, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
