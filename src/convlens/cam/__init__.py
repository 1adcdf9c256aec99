"""Class activation maps (the Grad-CAM family), object boxes and faithfulness metrics.

>>> cams = model.cam("chelsea", method="gradcam")       # target None: the top-1 class
>>> cams.heatmap.shape, cams.target_names, cams.boxes
>>> cl.overlay(cams.images[0], cams.heatmap[0])          # uint8 RGB, jet at alpha 0.4

Every method is one module of :mod:`convlens.cam.methods`, registered in ``METHODS`` on the shared
core (:mod:`convlens.cam.core`). Metrics: :mod:`convlens.cam.metrics`; the randomization sanity
check: :mod:`convlens.cam.sanity`.
"""

from . import methods as _methods  # noqa: F401  (registers every method)
from .compute import compute_cam, make_method
from .core import (
    METHODS,
    CamContext,
    CamMethod,
    GradientCam,
    WeightedCam,
    default_layer,
    method_class,
    register,
    target_layers,
)
from .localize import bounding_boxes
from .methods.ablationcam import AblationCAM
from .methods.eigencam import EigenCAM
from .methods.gradcam import GradCAM
from .methods.gradcampp import GradCAMPlusPlus
from .methods.hirescam import HiResCAM
from .methods.layercam import LayerCAM
from .methods.scorecam import ScoreCAM
from .methods.xgradcam import XGradCAM
from .result import CamResult

#: The methods that cost about one forward pass (one backward through the head).
GRADIENT_METHODS = tuple(name for name, cls in METHODS.items() if cls.needs_gradients)

__all__ = [
    "GRADIENT_METHODS", "METHODS", "AblationCAM", "CamContext", "CamMethod", "CamResult",
    "EigenCAM", "GradCAM", "GradCAMPlusPlus", "GradientCam", "HiResCAM", "LayerCAM", "ScoreCAM",
    "WeightedCam", "XGradCAM", "bounding_boxes", "compute_cam", "default_layer", "make_method",
    "method_class", "register", "target_layers",
]
