"""Keras on TensorFlow: layer taps on an eager pass, gradients from a ``tf.GradientTape``.

The tape starts at the first gradient source (the first ``grad_from`` layer's output, or the
input) and watches only the sources, never the weights: the layers before it run on TensorFlow's
fast eager path, and a Grad-CAM pass costs the forward pass plus a backward through the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import torch

from ..layers import LayerInfo
from .eager import EagerKerasModel, Pass

__all__ = ["MODEL", "KerasTensorFlowModel"]


class KerasTensorFlowModel(EagerKerasModel):
    """A Keras model on the TensorFlow backend."""

    backend = "tensorflow"

    def _to_backend(self, array: np.ndarray) -> Any:
        return tf.convert_to_tensor(array)

    def _to_torch(self, tensor: Any) -> torch.Tensor:
        return torch.from_dlpack(tf.experimental.dlpack.to_dlpack(tensor))

    def _run_pass(
        self, x: np.ndarray, layers: Sequence[LayerInfo], grad_layers: Sequence[str], mode: str,
        stop_early: bool,
    ) -> Pass:
        inputs = tf.convert_to_tensor(x)
        if mode == "plain":
            captured, taps = self._record(stop_early, layers)
            with taps:
                output = self._call(inputs)
            return Pass(captured, output)
        tape = tf.GradientTape(persistent=True, watch_accessed_variables=False)
        wanted = set(grad_layers)
        recording = [False]

        def watch(info: LayerInfo, value: Any) -> Any:
            if info.name in wanted:
                if not recording[0]:  # the tape starts here: what ran before is not recorded
                    tape.__enter__()
                    recording[0] = True
                tape.watch(value)
            return value

        captured, taps = self._record(stop_early, layers, watch if mode == "layers" else None)
        try:
            with taps:
                if mode == "input":
                    tape.__enter__()
                    recording[0] = True
                    tape.watch(inputs)
                output = self._call(inputs)
        finally:
            if recording[0]:
                tape.__exit__(None, None, None)
        if mode == "layers":
            sources = [captured[name] for name in grad_layers]
            targets = [] if output is None else [output]
        else:
            sources = [inputs]
            targets = [captured[info.name] for info in layers]
            if output is not None:
                targets.append(output)

        def pullback(cotangents: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
            used = [i for i, c in enumerate(cotangents) if c is not None]
            found = tape.gradient(
                [targets[i] for i in used], sources,
                output_gradients=[
                    tf.convert_to_tensor(cotangents[i].detach().cpu().numpy()) for i in used
                ],
            )
            return [None if g is None else self._to_torch(g) for g in found]

        return Pass(captured, output, targets, pullback)


MODEL = KerasTensorFlowModel
