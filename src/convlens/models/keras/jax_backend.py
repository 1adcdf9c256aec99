"""Keras on JAX: layer taps on an eager pass, gradients from ``jax.vjp``.

Gradients at a layer: the tap adds a zero perturbation ``delta`` to the layer's output and
``jax.vjp`` differentiates the network output with respect to ``delta``, which is the gradient
with respect to the layer's output. Everything before the first perturbed layer runs on concrete
arrays (not traced), so a Grad-CAM pass costs the forward pass plus a backward through the head.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from ..layers import LayerInfo
from .eager import EagerKerasModel, Pass

__all__ = ["MODEL", "KerasJaxModel"]


class KerasJaxModel(EagerKerasModel):
    """A Keras model on the JAX backend."""

    backend = "jax"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._shapes: dict[tuple[Any, ...], dict[str, jax.ShapeDtypeStruct]] = {}

    def _to_backend(self, array: np.ndarray) -> Any:
        return jnp.asarray(array)

    def _to_torch(self, tensor: Any) -> torch.Tensor:
        return torch.from_dlpack(tensor)

    def _output_specs(self, x: Any, layers: Sequence[LayerInfo]) -> dict[str, Any]:
        """The output shape and dtype of each of ``layers`` for inputs like ``x`` (cached)."""
        key = (x.shape, str(x.dtype), tuple(info.name for info in layers))
        if key not in self._shapes:
            def shapes(inputs: Any) -> dict[str, Any]:
                captured, taps = self._record(True, layers)
                with taps:
                    self._call(inputs)
                return captured

            self._shapes[key] = jax.eval_shape(shapes, jax.ShapeDtypeStruct(x.shape, x.dtype))
        return self._shapes[key]

    def _run_pass(
        self, x: np.ndarray, layers: Sequence[LayerInfo], grad_layers: Sequence[str], mode: str,
        stop_early: bool,
    ) -> Pass:
        inputs = jnp.asarray(x)
        if mode == "plain":
            captured, taps = self._record(stop_early, layers)
            with taps:
                output = self._call(inputs)
            return Pass(captured, output)
        if mode == "input":
            names = [info.name for info in layers]

            def network(inputs: Any) -> tuple[list[Any], Any]:
                captured, taps = self._record(stop_early, layers)
                with taps:
                    output = self._call(inputs)
                return [captured[n] for n in names if n in captured], output

            (values, output), vjp = jax.vjp(network, inputs)
            captured = dict(zip(names, values))
            targets = [*values] + ([] if output is None else [output])

            def pullback(cotangents: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
                found = [self._cotangent(c, t) for c, t in zip(cotangents, targets)]
                out = found.pop() if output is not None else None
                (grad,) = vjp((found, out))
                return [self._to_torch(grad)]

            return Pass(captured, output, targets, pullback)

        grad_infos = [info for info in layers if info.name in set(grad_layers)]
        specs = self._output_specs(inputs, grad_infos)
        deltas = [jnp.zeros(specs[name].shape, specs[name].dtype) for name in grad_layers]
        position = {name: i for i, name in enumerate(grad_layers)}

        def perturbed(*deltas: Any) -> tuple[Any, dict[str, Any]]:
            def nudge(info: LayerInfo, value: Any) -> Any:
                i = position.get(info.name)
                return value if i is None else value + deltas[i]

            captured, taps = self._record(stop_early, layers, nudge)
            with taps:
                output = self._call(inputs)
            return output, captured

        output, vjp, captured = jax.vjp(perturbed, *deltas, has_aux=True)

        def pullback(cotangents: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
            return [self._to_torch(g) for g in vjp(self._cotangent(cotangents[0], output))]

        return Pass(captured, output, [] if output is None else [output], pullback)

    @staticmethod
    def _cotangent(grad: torch.Tensor | None, like: Any) -> Any:
        if grad is None:
            return jnp.zeros(like.shape, like.dtype)
        return jnp.asarray(grad.detach().cpu().numpy(), dtype=like.dtype)


MODEL = KerasJaxModel
