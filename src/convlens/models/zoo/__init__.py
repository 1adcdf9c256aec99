"""Built-in models: EfficientNet-Lite0 with ImageNet weights, ready to explore offline."""

from convlens.models.zoo.classes import IMAGENET_CLASSES
from convlens.models.zoo.efficientnet_lite import (
    EfficientNetLite,
    efficientnet_lite0,
    efficientnet_preprocess,
)

__all__ = ["IMAGENET_CLASSES", "EfficientNetLite", "efficientnet_lite0", "efficientnet_preprocess"]
