"""Forward hooks on ``torch.nn.Module`` layers: how the torch-based adapters tap a forward pass.

This is the capture primitive of :class:`~convlens.models.torch.TorchModel` and of Keras models on
the torch backend (every Keras layer is then an ``nn.Module``); views reach it only through
``Model.capture`` and ``Model.replace_output``.

A :class:`HookCapture` is a context manager. Inside it, ``run(inputs)`` does one forward pass and
fills ``outputs`` (native layout, detached unless gradients are requested). Hooks are removed on
exit, whatever happened.

Three switches keep the cost at the forward pass itself:

- ``stop_early``: the forward pass is cut as soon as the last requested layer has produced its
  output (nothing deeper is computed).
- ``grad_from``: the forward pass runs without autograd until the first of these layers; its
  output becomes a fresh leaf, so the graph (and the backward pass) starts there.
- outputs are copied only when a later in-place op overwrites them (seen in the model's trace).
"""

from __future__ import annotations

from abc import abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from .base import Model
from .layers import LayerCall, LayerInfo

__all__ = ["HookCapture", "StopForward", "first_tensor", "hook_replace_output"]


class StopForward(BaseException):
    """Raised from a hook to end a forward pass once every wanted output is recorded.

    A ``BaseException``, so that a model's own ``except Exception:`` cannot swallow it.
    """


def first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a layer produced (the first one, for layers returning tuples)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _replace_first(output: Any, tensor: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return tensor
    return type(output)([tensor, *output[1:]])


def _tensor_of(info: LayerInfo, output: Any) -> torch.Tensor:
    tensor = first_tensor(output)
    if tensor is None:
        raise TypeError(f"layer {info.name!r} returned {type(output).__name__}, not a tensor")
    return tensor


def _network_layout(info: LayerInfo, tensor: torch.Tensor) -> torch.Tensor:
    """A call's output as the network's other maps are laid out (a view)."""
    return tensor.permute(0, 3, 1, 2) if info.channels_last and tensor.ndim == 4 else tensor


def _own_layout(info: LayerInfo, tensor: torch.Tensor) -> torch.Tensor:
    """Back to the layout the call produced (the inverse of ``_network_layout``)."""
    return tensor.permute(0, 2, 3, 1) if info.channels_last and tensor.ndim == 4 else tensor


@contextmanager
def hook_replace_output(
    model: Model, info: LayerInfo, replace: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """For one forward pass inside this block, ``info``'s call outputs ``replace(output)``.

    The hook is removed on exit, whatever happened.
    """
    calls = [0]

    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        call = calls[0]
        calls[0] += 1
        if call != info.call:
            return None
        new = replace(_network_layout(info, _tensor_of(info, output)))
        return _replace_first(output, _own_layout(info, new))

    handle = info.module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class HookCapture:
    """Record the outputs of ``layers`` (and make gradients w.r.t. them available).

    Args:
        model: the wrapped model.
        layers: the layers to record (see ``Model.resolve``).
        stop_early: stop the forward pass after the last recorded layer.
        grad_from: layers whose outputs need gradients; the graph starts at the first of them and
            the forward pass before it runs under ``torch.no_grad()``.
        autograd: run the whole forward pass with autograd on (gradients w.r.t. the input, as
            filter visualization needs); outputs are then kept in the graph, not detached.
    """

    def __init__(
        self,
        model: Model,
        layers: Sequence[LayerInfo],
        *,
        stop_early: bool = False,
        grad_from: Iterable[LayerInfo] = (),
        autograd: bool = False,
    ):
        self.model = model
        self.layers = list(layers)
        self.grad_layers = {info.name for info in grad_from}
        self.stop_early = stop_early
        self.autograd = autograd
        self.outputs: dict[str, torch.Tensor] = {}
        self._by_module: dict[int, dict[int, LayerInfo]] = defaultdict(dict)
        for info in self.layers:
            self._by_module[id(info.module)][info.call] = info
        for name in self.grad_layers:
            if name not in {info.name for info in self.layers}:
                raise ValueError(f"gradient layer {name!r} is not among the captured layers")
        self._calls: dict[int, int] = defaultdict(int)
        self._handles: list[Any] = []
        self._grad_started = False

    # -- hooks -------------------------------------------------------------------------------
    def _hook(self, module: torch.nn.Module, args: Any, output: Any) -> Any:
        key = id(module)
        call = self._calls[key]
        self._calls[key] = call + 1
        info = self._by_module[key].get(call)
        if info is None:
            return None
        tensor = _network_layout(info, _tensor_of(info, output))
        replaced = None
        if self.autograd or info.name in self.grad_layers:  # kept in the autograd graph
            if not self.autograd and not self._grad_started:
                # The graph starts here: everything before ran without autograd.
                torch.set_grad_enabled(True)
                self._grad_started = True
                tensor = tensor.detach().requires_grad_(True)
                replaced = _replace_first(output, _own_layout(info, tensor))
            self.outputs[info.name] = tensor
            if info.overwritten:  # a later in-place op must not touch `tensor`: give a copy
                replaced = _replace_first(output, _own_layout(info, tensor.clone()))
        else:
            stored = tensor.detach()
            self.outputs[info.name] = stored.clone() if info.overwritten else stored
        if self.stop_early and len(self.outputs) == len(self.layers):
            raise StopForward
        return replaced

    def __enter__(self) -> HookCapture:
        modules = {id(info.module): info.module for info in self.layers}
        try:
            for module in modules.values():
                self._handles.append(module.register_forward_hook(self._hook))
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # -- running -----------------------------------------------------------------------------
    def run(self, inputs: torch.Tensor, forward: Callable[[torch.Tensor], Any] | None = None):
        """One forward pass; returns the model output, or None when stopped early."""
        self.outputs = {}
        self._calls.clear()
        self._grad_started = False
        forward = forward or self.model.forward
        grad_mode = torch.is_grad_enabled()
        try:
            with torch.set_grad_enabled(self.autograd):
                result = forward(inputs)
        except StopForward:
            result = None
        finally:
            torch.set_grad_enabled(grad_mode)
        missing = [info.name for info in self.layers if info.name not in self.outputs]
        if missing:
            raise RuntimeError(
                f"layers {missing} produced no output in this forward pass; "
                "is the input the kind this model expects?"
            )
        return result


def _rearranged(given: torch.Tensor, output: torch.Tensor) -> bool:
    """Whether ``output`` is ``given`` seen with its axes moved (a permute of a square map)."""
    return output.data_ptr() == given.data_ptr() and output.stride() != given.stride()


class _Layouts:
    """Which 4-D outputs of an NCHW network's trace are channels-last.

    A module that works on the last axis as channels (``nn.Linear``, ``nn.LayerNorm``) makes its
    output channels-last, and so is the tensor it was given: whichever calls produced it (a
    ``Permute`` module) and, through calls that keep their input's shape, theirs. A call that
    keeps its input's shape (GELU, dropout), other than by moving its axes, has its input's
    layout; any other is NCHW.
    """

    def __init__(self, active: bool):
        self.active = active
        self._producers: dict[int, list[int]] = {}  # id(output) → calls that returned it
        self._source: dict[int, list[int]] = {}  # call → the calls that produced its input
        self._last: set[int] = set()
        self._keep: list[torch.Tensor] = []  # the outputs stay alive, so their ids stay theirs

    def see(self, index: int, given: torch.Tensor | None, output: torch.Tensor | None,
            last_dim: bool) -> None:
        if not self.active or output is None:
            return
        sources = self._producers.get(id(given), []) if given is not None else []
        if output.ndim == 4 and given is not None and given.ndim == 4:
            if last_dim:
                self._last.add(index)
                self._mark(sources)
            elif given.shape == output.shape and not _rearranged(given, output):
                self._source[index] = sources
                if any(s in self._last for s in sources):
                    self._last.add(index)
        self._producers.setdefault(id(output), []).append(index)
        self._keep.append(output)

    def _mark(self, calls: list[int]) -> None:
        for call in calls:
            if call not in self._last:
                self._last.add(call)
                self._mark(self._source.get(call, []))

    def channels_last(self, index: int) -> bool:
        return index in self._last


class HookedModel(Model):
    """A model whose layers are ``torch.nn.Module`` objects, tapped with forward hooks.

    ``TorchModel`` and ``KerasModel`` on Keras's torch backend. Subclasses list their layers
    (``_walk``) and name their kinds (``_kind``).
    """

    @abstractmethod
    def _walk(self) -> Iterator[tuple[str, torch.nn.Module, bool]]:
        """(name, module, is_leaf) for every layer that can be hooked."""

    @abstractmethod
    def _kind(self, module: torch.nn.Module) -> str:
        """The kind of a layer (one of ``KINDS``)."""

    def _acts_on_last_dim(self, module: torch.nn.Module) -> bool:
        """Whether ``module`` works on the last axis of a 4-D input as channels (``nn.Linear``,
        ``nn.LayerNorm`` over one axis): its input and output are then channels-last."""
        return False

    def _trace_calls(self, inputs: torch.Tensor) -> list[LayerCall]:
        walked = list(self._walk())
        names = {id(m): (n, leaf) for n, m, leaf in walked}
        calls: list[tuple[str, torch.nn.Module, bool, torch.Tensor | None, int]] = []
        layouts = _Layouts(self.layout == "NCHW")

        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            name, leaf = names[id(module)]
            t = first_tensor(output)
            layouts.see(len(calls), first_tensor(args), t, self._acts_on_last_dim(module))
            calls.append((name, module, leaf, t, -1 if t is None else t._version))

        handles = [m.register_forward_hook(hook) for _, m, _ in walked]
        try:
            self.forward(inputs)
        finally:
            for h in handles:
                h.remove()
        result = []
        for index, (name, module, leaf, t, version) in enumerate(calls):
            last = layouts.channels_last(index)
            shape = None if t is None else tuple((t if last else self.nhwc(t)).shape)
            result.append(LayerCall(
                name=name, module=module, is_leaf=leaf, kind=self._kind(module),
                output_shape=shape, overwritten=t is not None and t._version != version,
                channels_last=last,
            ))
        return result

    def capture(
        self, layers: Sequence[LayerInfo], *, stop_early: bool = False,
        grad_from: Iterable[LayerInfo] = (), autograd: bool = False,
    ) -> HookCapture:
        return HookCapture(
            self, layers, stop_early=stop_early, grad_from=grad_from, autograd=autograd
        )

    def replace_output(
        self, info: LayerInfo, replace: Callable[[torch.Tensor], torch.Tensor]
    ) -> Any:
        return hook_replace_output(self, info, replace)

    @property
    def device(self) -> torch.device:
        for p in self.network.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.network.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def weight_bytes(self) -> Iterator[tuple[str, bytes]]:
        for key, tensor in self.network.state_dict().items():
            if not isinstance(tensor, torch.Tensor):
                yield key, b""  # a module's extra state: named, not hashed
                continue
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            yield key, flat.view(torch.uint8).numpy().tobytes()
