"""Keras on TensorFlow or JAX: layer taps, and a bridge that lets torch autograd reach the backend.

A tap replaces a layer instance's ``call`` for the duration of a pass (Keras's ``Layer.__call__``
looks ``self.call`` up on the instance), so it sees every call of every layer of Sequential,
functional, nested and subclassed models alike. The network runs eagerly, ``training=False``,
on its own weights.

Gradients: the backend records the pass (``tf.GradientTape`` / ``jax.vjp``) from its sources (the
``grad_from`` layers' outputs, or the input with ``autograd=True``); :class:`BackendFunction`
puts the result into torch's graph, and its backward calls the backend's vector-Jacobian product.
So ``torch.autograd.grad`` works on what ``capture`` returns exactly as on a torch model.
"""

from __future__ import annotations

import functools
import threading
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..hooks import StopForward
from ..layers import LayerCall, LayerInfo
from . import KerasModel
from .callhooks import tap_target

__all__ = ["BackendFunction", "EagerKerasModel", "Pass", "TapCapture", "Taps"]

#: what a tap does with one layer call's output: ``fn(info, output) -> output``
OnOutput = Callable[[LayerInfo, Any], Any]


def _first(output: Any) -> Any:
    return output[0] if isinstance(output, (list, tuple)) else output


def _with_first(output: Any, value: Any) -> Any:
    if isinstance(output, (list, tuple)):
        return type(output)([value, *output[1:]])
    return value


class Taps:
    """Within this block, the calls in ``infos`` go through ``on_output`` (then ``stop``).

    ``stop_after``: raise :class:`StopForward` once every call in ``infos`` has been seen.
    The layers' own ``call`` is put back on exit, whatever happened.
    """

    def __init__(self, infos: Sequence[LayerInfo], on_output: OnOutput, stop_after: bool = False):
        self.infos = list(infos)
        self.on_output = on_output
        self.stop_after = stop_after
        self._by_layer: dict[int, dict[int, LayerInfo]] = defaultdict(dict)
        for info in self.infos:
            self._by_layer[id(info.module)][info.call] = info
        self._calls: dict[int, int] = defaultdict(int)
        self._seen = 0
        self._saved: list[tuple[Any, Any]] = []

    def reset(self) -> None:
        """Start counting calls afresh (one forward pass)."""
        self._calls.clear()
        self._seen = 0

    def _wrap(self, layer: Any, original: Callable[..., Any]) -> Callable[..., Any]:
        key = id(layer)

        def call(*args: Any, **kwargs: Any) -> Any:
            output = original(*args, **kwargs)
            index = self._calls[key]
            self._calls[key] = index + 1
            info = self._by_layer[key].get(index)
            if info is None:
                return output
            output = _with_first(output, self.on_output(info, _first(output)))
            self._seen += 1
            if self.stop_after and self._seen == len(self.infos):
                raise StopForward
            return output

        return call

    def __enter__(self) -> Taps:
        self.reset()
        layers = {id(info.module): info.module for info in self.infos}
        for layer in layers.values():
            self._tap(layer)
        return self

    def _tap(self, layer: Any) -> None:
        owner = tap_target(layer)  # a layer, or an op node's operation
        self._saved.append((owner, owner.__dict__.get("call", _MISSING)))
        object.__setattr__(owner, "call", self._wrap(layer, owner.call))

    def __exit__(self, *exc: object) -> None:
        for layer, saved in reversed(self._saved):
            if saved is _MISSING:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", saved)
        self._saved.clear()


_MISSING = object()


@dataclass
class Pass:
    """One forward pass on the backend: captured outputs, the network output, the pullback.

    ``pullback(cotangents)`` takes one torch tensor (or None) per ``targets`` entry and returns
    one torch gradient (or None) per source.
    """

    captured: dict[str, Any]
    output: Any
    targets: list[Any] = field(default_factory=list)
    pullback: Callable[[Sequence[torch.Tensor | None]], list[torch.Tensor | None]] | None = None


class BackendFunction(torch.autograd.Function):
    """Torch outputs computed by the backend: forward hands them over, backward pulls back."""

    @staticmethod
    def forward(ctx: Any, pullback: Any, results: tuple[torch.Tensor, ...],  # type: ignore[override]
                *sources: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.pullback = pullback
        ctx.set_materialize_grads(False)
        return results

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[Any, ...]:  # type: ignore[override]
        if all(g is None for g in grads):
            return (None, None, *([None] * len(ctx.needs_input_grad[2:])))
        return (None, None, *ctx.pullback(grads))


class TapCapture:
    """``Model.capture`` for Keras on TensorFlow / JAX (see :class:`~..base.LayerCapture`)."""

    def __init__(
        self, model: EagerKerasModel, layers: Sequence[LayerInfo], *, stop_early: bool,
        grad_from: Iterable[LayerInfo], autograd: bool,
    ):
        self.model = model
        self.layers = list(layers)
        names = {info.name for info in self.layers}
        self.grad_layers = [info.name for info in grad_from]
        for name in self.grad_layers:
            if name not in names:
                raise ValueError(f"gradient layer {name!r} is not among the captured layers")
        self.stop_early = stop_early
        self.autograd = autograd
        self.outputs: dict[str, torch.Tensor] = {}

    def __enter__(self) -> TapCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # taps live for one pass only: nothing stays attached between passes

    def run(self, inputs: torch.Tensor) -> torch.Tensor | None:
        """One forward pass; returns the network output, or None when stopped early."""
        model = self.model
        x = inputs.detach().cpu().numpy()
        mode = "input" if self.autograd else "layers" if self.grad_layers else "plain"
        done = model._run_pass(x, self.layers, self.grad_layers, mode, self.stop_early)
        missing = [info.name for info in self.layers if info.name not in done.captured]
        if missing:
            raise RuntimeError(
                f"layers {missing} produced no output in this forward pass; "
                "is the input the kind this model expects?"
            )
        to_torch = model._to_torch
        if mode == "plain":
            self.outputs = {name: to_torch(v) for name, v in done.captured.items()}
            return None if done.output is None else to_torch(done.output)
        with torch.enable_grad():
            if mode == "layers":
                self.outputs = {
                    name: to_torch(v).requires_grad_(name in self.grad_layers)
                    for name, v in done.captured.items()
                }
                sources = [self.outputs[name] for name in self.grad_layers]
                if done.output is None:
                    return None
                (output,) = BackendFunction.apply(
                    done.pullback, (to_torch(done.output),), *sources
                )
                return output
            results = BackendFunction.apply(
                done.pullback, tuple(to_torch(t) for t in done.targets), inputs
            )
        names = [info.name for info in self.layers]
        self.outputs = dict(zip(names, results))
        return results[len(names)] if done.output is not None else None


class EagerKerasModel(KerasModel):
    """Keras on a backend whose layers are not torch modules: TensorFlow or JAX."""

    backend = ""

    # -- what each backend implements --------------------------------------------------------
    @abstractmethod
    def _to_backend(self, array: np.ndarray) -> Any:
        """A NumPy array as the backend's tensor."""

    @abstractmethod
    def _to_torch(self, tensor: Any) -> torch.Tensor:
        """A backend tensor as a torch CPU tensor (shared memory where the backend allows)."""

    @abstractmethod
    def _run_pass(
        self, x: np.ndarray, layers: Sequence[LayerInfo], grad_layers: Sequence[str], mode: str,
        stop_early: bool,
    ) -> Pass:
        """One pass capturing ``layers``. ``mode``: "plain" (no gradients), "layers" (sources:
        the ``grad_layers`` outputs; target: the network output) or "input" (source: ``x``;
        targets: every captured output, in ``layers`` order, then the network output)."""

    # -- shared ------------------------------------------------------------------------------
    def _view(self, name: str) -> Callable[..., Any]:
        """A view, run with one torch thread: torch only post-processes small maps here, and
        its thread pool must not fight the backend's (a 7x7 → 180x180 upsampling right after a
        TensorFlow pass takes 90 ms with two torch threads on two busy cores, 0.2 ms with one)."""
        view = super()._view(name)

        @functools.wraps(view)
        def run(*args: Any, **kwargs: Any) -> Any:
            with _one_torch_thread():
                return view(*args, **kwargs)

        return run

    def _call(self, x: Any) -> Any:
        """The network on ``x``, inference mode; None when a tap ended the pass."""
        try:
            return _first(self.network(x, training=False))
        except StopForward:
            return None

    def _record(self, stop_early: bool, layers: Sequence[LayerInfo],
                edit: OnOutput | None = None) -> tuple[dict[str, Any], Taps]:
        """Taps that keep each output of ``layers`` (after ``edit``) in the returned dict."""
        captured: dict[str, Any] = {}

        def keep(info: LayerInfo, value: Any) -> Any:
            if edit is not None:
                value = edit(info, value)
            captured[info.name] = value
            return value

        return captured, Taps(layers, keep, stop_after=stop_early)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self._to_backend(inputs.detach().cpu().numpy())
        return self._to_torch(_first(self.network(x, training=False)))

    def capture(
        self, layers: Sequence[LayerInfo], *, stop_early: bool = False,
        grad_from: Iterable[LayerInfo] = (), autograd: bool = False,
    ) -> TapCapture:
        return TapCapture(
            self, layers, stop_early=stop_early, grad_from=grad_from, autograd=autograd
        )

    @contextmanager
    def replace_output(
        self, info: LayerInfo, replace: Callable[[torch.Tensor], torch.Tensor]
    ) -> Iterator[None]:
        def swap(_: LayerInfo, value: Any) -> Any:
            with torch.no_grad():
                new = replace(self._to_torch(value))
            return self._to_backend(new.detach().cpu().numpy())

        with Taps([info], swap):
            yield

    def _trace_calls(self, inputs: torch.Tensor) -> list[LayerCall]:
        if not self.network.built:  # a subclassed model's first call also builds it
            self.forward(inputs)
        walked = list(self._walk())
        calls: list[LayerCall] = []
        names = {id(layer): (name, leaf) for name, layer, leaf in walked}

        def record(info: LayerInfo, value: Any) -> Any:
            name, leaf = names[id(info.module)]
            shape = getattr(value, "shape", None)
            calls.append(LayerCall(
                name=name, module=info.module, is_leaf=leaf, kind=self._kind(info.module),
                output_shape=None if shape is None else tuple(int(d) for d in shape),
            ))
            return value

        # every call of every layer: a tap per layer with no call number limit
        taps = _AllCalls([layer for _, layer, _ in walked], record)
        with taps:
            self.network(self._to_backend(inputs.detach().cpu().numpy()), training=False)
        self._require(calls)
        return calls

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64 if self.network.compute_dtype == "float64" else torch.float32

    def parameter_count(self) -> int:
        return int(sum(np.prod(w.shape) for w in self.network.weights))

    def weight_bytes(self) -> Iterator[tuple[str, bytes]]:
        for weight in self.network.weights:
            yield weight.path, np.ascontiguousarray(weight.numpy()).tobytes()


_THREADS_LOCK = threading.Lock()
_THREADS_SAVED: list[int] = []  # the user's setting while views run (one entry per active view)


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """torch runs on one thread in this block; the user's setting comes back after the last one."""
    with _THREADS_LOCK:
        _THREADS_SAVED.append(torch.get_num_threads())
        torch.set_num_threads(1)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            saved = _THREADS_SAVED.pop()
            if not _THREADS_SAVED:
                torch.set_num_threads(saved)


class _AllCalls(Taps):
    """Taps on every call of ``layers`` (for the trace), whatever its number."""

    def __init__(self, layers: Sequence[Any], on_output: OnOutput):
        super().__init__([], on_output)
        self._layers = layers

    def _wrap(self, layer: Any, original: Callable[..., Any]) -> Callable[..., Any]:
        info = LayerInfo(name="", kind="", type="", output_shape=None, module=layer)

        def call(*args: Any, **kwargs: Any) -> Any:
            output = original(*args, **kwargs)
            self.on_output(info, _first(output))
            return output

        return call

    def __enter__(self) -> _AllCalls:
        for layer in {id(layer): layer for layer in self._layers}.values():
            self._tap(layer)
        return self
