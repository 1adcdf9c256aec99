"""Keras on its torch backend: every layer is a ``torch.nn.Module``, tapped with forward hooks."""

from __future__ import annotations

import torch

from ..hooks import HookedModel
from ..layers import LayerCall
from . import KerasModel

__all__ = ["MODEL", "KerasTorchModel"]


class KerasTorchModel(KerasModel, HookedModel):
    """A Keras model on the torch backend (hooks, as for any torch module)."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.network(inputs, training=False)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out

    def _trace_calls(self, inputs: torch.Tensor) -> list[LayerCall]:
        if not self.network.built:  # a subclassed model's first call also builds it
            self.forward(inputs)
        return self._require(super()._trace_calls(inputs))


MODEL = KerasTorchModel
