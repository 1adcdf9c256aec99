"""Class activation maps (the Grad-CAM family), object boxes and faithfulness metrics.

>>> cams = model.cam("chelsea", method="gradcam")       # target None: the top-1 class
>>> cams.heatmap.shape, cams.target_names, cams.boxes
>>> cl.overlay(cams.images[0], cams.heatmap[0])          # uint8 RGB, jet at alpha 0.4

Every method is one small module on the shared core (:mod:`convlens.cam.core`); ``METHODS``
lists them. Metrics: :mod:`convlens.cam.metrics`; the randomization sanity check:
:mod:`convlens.cam.sanity`.
"""

from .ablationcam import AblationCAM
from .compute import GRADIENT_METHODS, METHODS, compute_cam, make_method
from .core import CamContext, CamMethod, WeightedCam, default_layer, target_layers
from .eigencam import EigenCAM
from .gradcam import GradCAM
from .gradcampp import GradCAMPlusPlus
from .hirescam import HiResCAM
from .layercam import LayerCAM
from .localize import bounding_boxes
from .options import FAST_OPTIONS
from .result import CamResult
from .scorecam import ScoreCAM
from .targets import ClassTarget, SigmoidTarget, Target
from .xgradcam import XGradCAM

__all__ = [
    "FAST_OPTIONS",
    "GRADIENT_METHODS", "METHODS", "AblationCAM", "CamContext", "CamMethod", "CamResult",
    "ClassTarget", "EigenCAM", "GradCAM", "GradCAMPlusPlus", "HiResCAM", "LayerCAM", "ScoreCAM",
    "SigmoidTarget", "Target", "WeightedCam", "XGradCAM", "bounding_boxes", "compute_cam",
    "default_layer", "make_method", "target_layers",
]
