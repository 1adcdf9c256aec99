"""Keras 3 adapter, on whichever backend the user's Keras runs: torch, TensorFlow or JAX.

``KerasModel(network)`` builds the subclass of ``keras.config.backend()``: torch — forward hooks
(every Keras layer is an ``nn.Module`` there); TensorFlow — layer taps and ``tf.GradientTape``;
JAX — layer taps and ``jax.vjp``. What they share (layer walk and kinds, heads, copies,
re-initialization) lives here. convlens never sets or changes the backend. Layers are always
called with ``training=False`` (augmentation layers off), with the model's own weights.
"""

from __future__ import annotations

import importlib
import os
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ...errors import ModelError
from ..base import Model
from ..inputs import not_one_image
from ..layers import LayerCall
from ..preprocess import Preprocess, resolve_preprocess
from .callhooks import OpCall, graph_members, op_kind

_KIND_BY_CLASS = {
    "BaseConv": "conv", "BaseDepthwiseConv": "conv", "BaseSeparableConv": "conv",
    "BaseConvTranspose": "conv",
    "BasePooling": "pool", "BaseGlobalPooling": "pool",
    "Dense": "linear", "EinsumDense": "linear",
    "BatchNormalization": "norm", "LayerNormalization": "norm", "GroupNormalization": "norm",
    "UnitNormalization": "norm",
    "Activation": "activation", "ReLU": "activation", "LeakyReLU": "activation",
    "Softmax": "activation", "ELU": "activation", "PReLU": "activation",
    "Dropout": "dropout", "SpatialDropout2D": "dropout", "GaussianNoise": "dropout",
    "GaussianDropout": "dropout", "AlphaDropout": "dropout", "StochasticDepth": "dropout",
    "Flatten": "reshape", "Reshape": "reshape", "Permute": "reshape", "UpSampling2D": "reshape",
    "ZeroPadding2D": "reshape", "Cropping2D": "reshape", "Identity": "reshape",
    "Add": "merge", "Concatenate": "merge", "Multiply": "merge", "Average": "merge",
    "Subtract": "merge", "Maximum": "merge", "Minimum": "merge",
    "CustomScaleLayer": "merge",  # InceptionResNetV2's residual: inputs[0] + inputs[1] * scale
    "Rescaling": "preprocess", "Normalization": "preprocess", "Resizing": "preprocess",
    "CenterCrop": "preprocess",
    "Functional": "block", "Sequential": "block", "Model": "block",
}


#: The Keras backends convlens runs on, and the module of each one's adapter.
BACKENDS = {"torch": "torch_backend", "tensorflow": "tensorflow_backend", "jax": "jax_backend"}


def import_keras() -> Any:
    """Import Keras on whatever backend the user chose (never changing it), or say why not."""
    try:
        import keras
    except ImportError as err:
        if err.name == "keras":
            raise ModelError("Keras is not installed; pip install 'convlens[keras]'") from None
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        raise ModelError(
            f"Keras could not start its {backend!r} backend ({err}); install it "
            f"(pip install 'convlens[{backend}]') or choose another one, e.g. "
            "KERAS_BACKEND=torch, before anything imports keras"
        ) from None
    backend = keras.config.backend()
    if backend not in BACKENDS:
        raise ModelError(
            f"Keras runs on the {backend!r} backend; convlens supports "
            f"{', '.join(BACKENDS)}: set KERAS_BACKEND to one of them before importing keras"
        )
    return keras


@contextmanager
def _random_state_restored() -> Iterator[None]:
    """Python's, NumPy's and torch's global random states are as before after this block."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _class_names(layer: Any) -> set[str]:
    return {cls.__name__ for cls in type(layer).__mro__}


def _sublayers(layer: Any) -> list[Any]:
    """A model's layers, or those a custom layer holds (a residual block written as a Layer).

    A functional model's op nodes (``inputs + x``) come with its layers, in graph order.
    """
    if isinstance(layer, OpCall):
        return []
    members = graph_members(layer)
    if members is not None:
        return members
    if getattr(layer, "layers", None):
        return list(layer.layers)
    flatten = getattr(layer, "_flatten_layers", None)
    return list(flatten(include_self=False, recursive=False)) if flatten else []


class KerasModel(Model):
    """A Keras 3 model (``.keras``, legacy ``.h5`` or in memory), on the backend Keras runs.

    ``KerasModel(network, ...)`` gives the subclass for ``keras.config.backend()``.
    """

    framework = "keras"
    layout = "NHWC"

    def __new__(cls, *args: Any, **kwargs: Any) -> KerasModel:
        if cls is KerasModel:
            cls = backend_class(import_keras().config.backend())
        return super().__new__(cls)

    def __init__(
        self,
        network: Any,
        *,
        name: str | None = None,
        preprocess: str | Preprocess | None = None,
        input_size: tuple[int, int] | None = None,
        class_names: Sequence[str] | None = None,
        output: str | None = None,
    ):
        keras = import_keras()
        if not isinstance(network, keras.Model):
            raise ModelError(f"expected a keras.Model, got {type(network).__name__}")
        shape = self._input_shape(network, name or network.name)
        if input_size is None:
            # a free dimension takes the fixed one's size (square images), or 224
            h, w = (None, None) if shape is None else shape[1:3]
            input_size = (int(h or w or 224), int(w or h or 224))
        self._fixed = shape is not None and (shape[1] is not None or shape[2] is not None)
        self._head = self._final_activation_layer(network)
        self._fresh: dict[int, dict[str, Any]] = {}
        if output is None:
            output = self._output_kind()
        super().__init__(
            network,
            name=name or network.name,
            preprocess=resolve_preprocess(preprocess, "raw"),
            input_size=input_size,
            class_names=class_names,
            output=output,
        )

    @staticmethod
    def _input_shape(network: Any, name: str) -> tuple[Any, ...] | None:
        try:
            shape = network.input_shape
        except (AttributeError, ValueError):
            return None
        if isinstance(shape, list) and len(shape) > 1:
            shapes = ", ".join(
                f"{getattr(t, 'name', '?')} {tuple(s)}" for t, s in zip(network.inputs, shape)
            )
            raise not_one_image(
                name, f"{len(shape)} inputs ({shapes})",
                "build a keras.Model whose only input is the image (the other inputs fixed)",
            )
        if isinstance(shape, list):
            shape = shape[0]
        if shape is None or len(shape) != 4:
            dtype = str(getattr(network.inputs[0], "dtype", ""))
            what = "token ids" if "int" in dtype else "inputs"
            raise not_one_image(
                name, f"{what} of shape {tuple(shape) if shape else shape}",
                "pass a model whose input is images (batch, height, width, channels)",
            )
        return tuple(shape)

    @staticmethod
    def _final_activation_layer(network: Any) -> Any:
        layers = network.layers
        while layers:
            last = layers[-1]
            if hasattr(last, "layers") and last.layers:
                layers = last.layers
                continue
            return last if hasattr(last, "activation") else None
        return None

    def _output_kind(self) -> str:
        act = getattr(self._head, "activation", None)
        name = getattr(act, "__name__", "")
        if name == "sigmoid":
            return "sigmoid"
        if name == "softmax":
            return "probabilities"
        return "logits"

    @property
    def fixed_input_size(self) -> bool:
        return self._fixed

    def _walk(self) -> Iterator[tuple[str, Any, bool]]:
        def walk(layers: Sequence[Any], prefix: str) -> Iterator[tuple[str, Any, bool]]:
            for layer in layers:
                if "InputLayer" in _class_names(layer):
                    continue
                children = _sublayers(layer)
                name = prefix + layer.name
                yield name, layer, not children
                if children:
                    yield from walk(children, name + "/")

        yield from walk(_sublayers(self.network) or self.network.layers, "")

    def _kind(self, module: Any) -> str:
        if isinstance(module, OpCall):
            return op_kind(module)
        names = _class_names(module)
        if any(n.startswith("Random") for n in names if n not in ("RandomState",)):
            return "augment"
        for cls_name in (c.__name__ for c in type(module).__mro__):
            if cls_name in _KIND_BY_CLASS:
                return _KIND_BY_CLASS[cls_name]
        return "block" if _sublayers(module) else "other"

    def to_network_layout(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _require(self, calls: list[LayerCall]) -> list[LayerCall]:
        """``calls``, or the error that says what still works when no layer call was seen."""
        if not calls:
            raise ModelError(
                f"{self.name} calls no Keras layer as layer(x) (a subclassed model of raw ops?), "
                "so convlens cannot see inside it: its predictions work, but activations, CAM "
                "and filters need its layers called as layer(x) in call()"
            )
        return calls

    @property
    def logit_space(self) -> bool:
        # logit_outputs() swaps a final sigmoid / softmax for the identity
        return self.output == "logits" or self._head is not None

    # -- copies and re-initialization (the randomization sanity check) ----------------------
    def copy(self, **options: Any) -> KerasModel:
        keras = import_keras()
        network = keras.models.clone_model(self.network)
        network.set_weights(self.network.get_weights())
        settings: dict[str, Any] = dict(
            name=self.name, preprocess=self.preprocess, input_size=self.input_size,
            class_names=self.class_names, output=self.output,
        )
        settings.update(options)
        return type(self)(network, **settings)

    def _leaf_layers(self) -> dict[str, Any]:
        return {
            name: layer for name, layer, leaf in self._walk()
            if leaf and not isinstance(layer, OpCall)
        }

    def weighted_layers(self) -> list[str]:
        return [name for name, layer in self._leaf_layers().items() if layer.trainable_weights]

    def reinitialize(self, names: Sequence[str], seed: int) -> None:
        """Each layer's weights from a freshly built clone (its initializers, seeded)."""
        keras = import_keras()
        if seed not in self._fresh:
            with _random_state_restored():
                keras.utils.set_random_seed(seed)
                clone = keras.models.clone_model(self.network)
            self._fresh[seed] = type(self)(clone)._leaf_layers()
        mine = self._leaf_layers()
        for name in names:
            mine[name].set_weights(self._fresh[seed][name].get_weights())

    def layer_state(self, name: str) -> Any:
        return self._leaf_layers()[name].get_weights()

    def load_layer_state(self, name: str, state: Any) -> None:
        self._leaf_layers()[name].set_weights(state)

    @contextmanager
    def logit_outputs(self) -> Iterator[None]:
        """Swap a final sigmoid / softmax for the identity, so scores are logits."""
        head = self._head
        if head is None or self.output == "logits":
            yield
            return
        keras = import_keras()
        saved = head.activation
        head.activation = keras.activations.linear
        try:
            yield
        finally:
            head.activation = saved


def backend_class(backend: str) -> type[KerasModel]:
    """The adapter class for one Keras backend."""
    module = importlib.import_module(f"{__name__}.{BACKENDS[backend]}")
    return module.MODEL
