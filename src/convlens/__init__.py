"""convlens: see what a convolutional network has learned.

>>> import convlens as cl
>>> model = cl.load_model()                        # EfficientNet-Lite0, ImageNet (or yours)
>>> x = cl.load_image("chelsea", size=(224, 224))
>>> acts = model.activations(x)                    # {layer: (N, H, W, C)}, one forward pass
>>> grid = cl.activation_grid(acts["_conv_stem"])  # the book's channel grid, uint8
>>> cams = model.cam(x, method="gradcam")          # heatmap, raw map, target, score, boxes
>>> picture = cl.overlay(x, cams.heatmap[0])       # jet at alpha 0.4 over the image
>>> fv = model.filters("_blocks.8._expand_conv", channels=range(16))
>>> tiles = cl.filter_grid(fv)                     # 8 per row, 5 px margins, as in the book
"""

from __future__ import annotations

from .activations import Activations, activation_grid, empty_channels
from .cam import METHODS as CAM_METHODS
from .cam import CamResult
from .errors import ConvlensError, ImageError, LayerNotFoundError, ModelError
from .evaluate import Evaluation, evaluate
from .filters import RECIPES as FILTER_RECIPES
from .filters import FilterResult, filter_grid
from .images import SAMPLES, load_image, load_images, sample_image
from .models import LayerInfo, Model, Prediction, load_model
from .notebook import show
from .render import overlay
from .scan import ScanResult, scan

__version__ = "0.1.0"

__all__ = [
    "CAM_METHODS", "FILTER_RECIPES", "SAMPLES", "Activations", "CamResult", "ConvlensError",
    "Evaluation", "FilterResult", "ImageError", "LayerInfo", "LayerNotFoundError", "Model",
    "ModelError", "Prediction", "ScanResult", "activation_grid", "empty_channels", "evaluate",
    "filter_grid", "load_image", "load_images", "load_model", "overlay", "sample_image", "scan",
    "show",
]
