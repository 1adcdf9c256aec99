"""Preprocessing: float pixels 0..255, channels-last (N, H, W, 3) → what the network expects."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ModelError

__all__ = ["PREPROCESSING", "Preprocess", "resolve_preprocess"]

Preprocess = Callable[[torch.Tensor], torch.Tensor]


def _imagenet(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406], device=x.device, dtype=x.dtype)
    std = torch.tensor([0.229, 0.224, 0.225], device=x.device, dtype=x.dtype)
    return (x / 255.0 - mean) / std


#: Named preprocessings; each takes float pixels 0..255, channels-last (N, H, W, 3).
PREPROCESSING: dict[str, Preprocess] = {
    "raw": lambda x: x,
    "unit": lambda x: x / 255.0,
    "symmetric": lambda x: (x / 255.0 - 0.5) / 0.5,  # EfficientNet-Lite's: -1..1
    "imagenet": _imagenet,
}


def resolve_preprocess(preprocess: str | Preprocess | None, default: str) -> Preprocess:
    """A preprocessing function from a name, a function, or None (``default``)."""
    if preprocess is None:
        preprocess = default
    if callable(preprocess):
        return preprocess
    try:
        return PREPROCESSING[preprocess]
    except KeyError:
        raise ModelError(
            f"unknown preprocessing {preprocess!r}; use one of {', '.join(PREPROCESSING)} "
            "or a function of a (N, H, W, 3) 0..255 tensor"
        ) from None
