"""Keras 3 adapter: Keras models run through Keras's torch backend.

Every Keras layer is then a ``torch.nn.Module``, so the same hooks work for Sequential, functional
and nested models. Layers are always called with ``training=False`` (augmentation layers off).
"""

from __future__ import annotations

import os
import random
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from .hooks import HookedModel
from .preprocess import Preprocess, resolve_preprocess

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
    "Flatten": "reshape", "Reshape": "reshape", "Permute": "reshape", "UpSampling2D": "reshape",
    "ZeroPadding2D": "reshape", "Cropping2D": "reshape",
    "Add": "merge", "Concatenate": "merge", "Multiply": "merge", "Average": "merge",
    "Rescaling": "preprocess", "Normalization": "preprocess", "Resizing": "preprocess",
    "CenterCrop": "preprocess",
    "Functional": "block", "Sequential": "block", "Model": "block",
}


def import_keras() -> Any:
    """Import Keras on its torch backend, or say clearly why it cannot be."""
    if "keras" in sys.modules:
        import keras

        backend = keras.backend.backend()
        if backend != "torch":
            raise ModelError(
                f"Keras is already imported with the {backend!r} backend; convlens runs Keras "
                "models on the torch backend. Set KERAS_BACKEND=torch before anything imports "
                "keras (or import convlens first), then restart the Python session"
            )
        return keras
    if os.environ.get("KERAS_BACKEND", "torch") != "torch":
        warnings.warn(
            f"KERAS_BACKEND={os.environ['KERAS_BACKEND']!r} replaced by 'torch' for convlens",
            stacklevel=3,
        )
    os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras
    except ImportError:
        raise ModelError("Keras is not installed; pip install 'convlens[keras]'") from None
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


class KerasModel(HookedModel):
    """A Keras 3 model (``.keras``, legacy ``.h5`` or in memory) on the torch backend."""

    framework = "keras"
    layout = "NHWC"

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
        shape = self._input_shape(network)
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
    def _input_shape(network: Any) -> tuple[Any, ...] | None:
        try:
            shape = network.input_shape
        except (AttributeError, ValueError):
            return None
        if isinstance(shape, list):
            shape = shape[0]
        if shape is None or len(shape) != 4:
            raise ModelError(
                f"this Keras model takes inputs of shape {shape}; convlens needs images "
                "(batch, height, width, channels)"
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

    def _walk(self) -> Iterator[tuple[str, torch.nn.Module, bool]]:
        def walk(layers: Sequence[Any], prefix: str) -> Iterator[tuple[str, Any, bool]]:
            for layer in layers:
                if "InputLayer" in _class_names(layer):
                    continue
                children = getattr(layer, "layers", None)
                name = prefix + layer.name
                yield name, layer, not children
                if children:
                    yield from walk(children, name + "/")

        yield from walk(self.network.layers, "")

    def _kind(self, module: Any) -> str:
        names = _class_names(module)
        if any(n.startswith("Random") for n in names if n not in ("RandomState",)):
            return "augment"
        for cls_name in (c.__name__ for c in type(module).__mro__):
            if cls_name in _KIND_BY_CLASS:
                return _KIND_BY_CLASS[cls_name]
        return "other"

    def to_network_layout(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.network(inputs, training=False)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out

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
        return KerasModel(network, **settings)

    def _leaf_layers(self) -> dict[str, Any]:
        return {name: layer for name, layer, leaf in self._walk() if leaf}

    def weighted_layers(self) -> list[str]:
        return [name for name, layer in self._leaf_layers().items() if layer.trainable_weights]

    def reinitialize(self, names: Sequence[str], seed: int) -> None:
        """Each layer's weights from a freshly built clone (its initializers, seeded)."""
        keras = import_keras()
        if seed not in self._fresh:
            with _random_state_restored():
                keras.utils.set_random_seed(seed)
                clone = keras.models.clone_model(self.network)
            self._fresh[seed] = KerasModel(clone)._leaf_layers()
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


def load_keras_file(path: Path, **options: Any) -> KerasModel:
    """Load a ``.keras`` or legacy ``.h5`` file."""
    keras = import_keras()
    try:
        network = keras.saving.load_model(path, compile=False)
    except Exception as err:
        raise ModelError(
            f"could not load the Keras model {path}: {type(err).__name__}: {err}"
        ) from err
    return KerasModel(network, **options)
