"""Keras ops of a functional graph (``inputs + x``, ``keras.ops.multiply``...) as layer calls.

In a functional model every ``keras.ops`` call made on symbolic tensors becomes an ``Operation``
node of ``model.operations`` that runs through ``Operation.__call__`` → ``self.call`` like a layer
does, but it is no layer (on the torch backend, no ``nn.Module``): nothing lists or hooks it. A
residual sum the head pools (ConvNeXt's ``inputs + x``) is then invisible, and the default CAM
layer lands inside the last block. :class:`OpCall` wraps one such node so that it is listed and
tapped like a layer: the TensorFlow / JAX taps replace its node's ``call`` (``tap_target``), and
it takes torch-style forward hooks (what the torch backend's captures use).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["OpCall", "graph_members", "op_kind", "tap_target"]

#: op class → kind (the rest are "other")
_OP_KINDS = {
    **dict.fromkeys(("Add", "Subtract", "Multiply", "Divide", "TrueDivide", "Maximum",
                     "Minimum"), "merge"),
    **dict.fromkeys(("Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu", "Gelu",
                     "Tanh", "Softmax", "Elu", "Selu", "LeakyRelu"), "activation"),
    **dict.fromkeys(("Reshape", "Transpose", "Concatenate", "ExpandDims", "Squeeze"), "reshape"),
}
_MISSING = object()
#: one wrapper per op node, held no longer than the node (it holds the node weakly)
_WRAPPERS: weakref.WeakKeyDictionary[Any, OpCall] = weakref.WeakKeyDictionary()


class _Handle:
    def __init__(self, owner: OpCall, table: dict[int, Callable[..., Any]], key: int):
        self._owner, self._table, self._key = owner, table, key

    def remove(self) -> None:
        if self._table.pop(self._key, None) is not None:
            self._owner._uninstall_if_idle()


class OpCall:
    """One op node of a functional Keras model, tappable like a layer (one wrapper per node)."""

    def __new__(cls, operation: Any) -> OpCall:
        wrapper = _WRAPPERS.get(operation)
        if wrapper is None:
            wrapper = super().__new__(cls)
            wrapper._operation = weakref.ref(operation)
            wrapper._pre: dict[int, Callable[..., Any]] = {}
            wrapper._post: dict[int, Callable[..., Any]] = {}
            wrapper._next = 0
            wrapper._saved = _MISSING
            _WRAPPERS[operation] = wrapper
        return wrapper

    @property
    def operation(self) -> Any:
        """The op node (an ``Operation`` of ``model.operations``)."""
        operation = self._operation()
        if operation is None:
            raise ReferenceError("the model of this op node is gone")
        return operation

    @property
    def name(self) -> str:
        return self.operation.name

    @property
    def layer_type(self) -> str:
        """The op's class (``Add``), shown as the layer's type."""
        return type(self.operation).__name__

    # -- torch-style hooks (the torch backend) -----------------------------------------------
    def register_forward_pre_hook(self, hook: Callable[..., Any]) -> _Handle:
        """``hook(self, args)`` before each call; the handle's ``remove()`` takes it off."""
        return self._add(self._pre, hook)

    def register_forward_hook(self, hook: Callable[..., Any]) -> _Handle:
        """``hook(self, args, output)`` after each call; a non-None result replaces the output."""
        return self._add(self._post, hook)

    def _add(self, table: dict[int, Callable[..., Any]], hook: Callable[..., Any]) -> _Handle:
        if self._saved is _MISSING:
            self._install()
        self._next += 1
        table[self._next] = hook
        return _Handle(self, table, self._next)

    def _install(self) -> None:
        op = self.operation
        self._saved = op.__dict__.get("call", None)
        original = op.call

        def call(*args: Any, **kwargs: Any) -> Any:
            for pre in list(self._pre.values()):
                pre(self, args)
            output = original(*args, **kwargs)
            for post in list(self._post.values()):
                replaced = post(self, args, output)
                if replaced is not None:
                    output = replaced
            return output

        op.__dict__["call"] = call

    def _uninstall_if_idle(self) -> None:
        if self._pre or self._post or self._saved is _MISSING:
            return
        if self._saved is None:
            self.operation.__dict__.pop("call", None)
        else:
            self.operation.__dict__["call"] = self._saved
        self._saved = _MISSING

    def __repr__(self) -> str:
        return f"<OpCall {self.name} ({self.layer_type})>"


def _is_layer(operation: Any) -> bool:
    from keras.src.layers.layer import Layer

    return isinstance(operation, Layer)


def graph_members(model: Any) -> list[Any] | None:
    """A functional model's layers and op nodes (as :class:`OpCall`) in graph order; None for
    anything else (Sequential models and custom layers list their layers only)."""
    from keras.src.models.functional import Functional
    from keras.src.models.sequential import Sequential

    if not isinstance(model, Functional) or isinstance(model, Sequential):
        return None
    return [op if _is_layer(op) else OpCall(op) for op in model.operations]


def op_kind(call: OpCall) -> str:
    """The kind of an op node: merge (``+``, ``*``...), activation, reshape, or other."""
    for cls in type(call.operation).__mro__:
        if cls.__name__ in _OP_KINDS:
            return _OP_KINDS[cls.__name__]
    return "other"


def tap_target(layer: Any) -> Any:
    """The object whose ``call`` a tap replaces: a layer itself, or an op node's operation."""
    return layer.operation if isinstance(layer, OpCall) else layer
