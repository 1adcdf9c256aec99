"""Keras on its torch backend: every layer is a ``torch.nn.Module``, tapped with forward hooks."""

from __future__ import annotations

import torch

from ..hooks import HookedModel
from . import KerasModel

__all__ = ["MODEL", "KerasTorchModel"]


class KerasTorchModel(KerasModel, HookedModel):
    """A Keras model on the torch backend (hooks, as for any torch module)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.network(inputs, training=False)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out


MODEL = KerasTorchModel
