"""convlens: see what a convolutional network has learned.

>>> import convlens as cl
>>> model = cl.load_model()                       # EfficientNet-Lite0, ImageNet (or yours)
>>> x = cl.load_image("chelsea", size=(224, 224))
>>> acts = model.activations(x)                   # {layer: (N, H, W, C)}, one forward pass
>>> grid = cl.activation_grid(acts["_conv_stem"])  # the seed's channel grid, uint8
"""

from __future__ import annotations

import os

# Keras models run on Keras's torch backend; this must be set before keras is first imported.
os.environ.setdefault("KERAS_BACKEND", "torch")

from .activations import activation_grid, empty_channels
from .errors import ConvlensError, ImageError, LayerNotFoundError, ModelError
from .images import SAMPLES, load_image, load_images, sample_image
from .models import LayerInfo, Model, Prediction, load_model
from .render import overlay

__version__ = "0.1.0"

__all__ = [
    "SAMPLES", "ConvlensError", "ImageError", "LayerInfo", "LayerNotFoundError", "Model",
    "ModelError", "Prediction", "activation_grid", "empty_channels", "load_image", "load_images",
    "load_model", "overlay", "sample_image",
]
