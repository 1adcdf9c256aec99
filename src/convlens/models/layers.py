"""Layers as ``Model.layers()`` lists them, and how names, globs and kinds select them."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import LayerNotFoundError, ModelError

__all__ = ["DEFAULT_ACTIVATION_KINDS", "KINDS", "LayerCall", "LayerInfo", "label_calls", "select"]

#: Layer kinds, as ``Model.layers()`` reports them.
KINDS = (
    "conv", "pool", "linear", "norm", "activation", "dropout", "reshape", "merge",
    "preprocess", "augment", "block", "other",
)
#: What ``activations()`` captures by default: the book's Conv2D and MaxPooling2D layers.
DEFAULT_ACTIVATION_KINDS = ("conv", "pool")


@dataclass(frozen=True)
class LayerInfo:
    """One call of one layer in the forward pass.

    ``name`` is the layer's path in the model (``"layer4.1.conv1"``, Keras: ``"conv2d_1"``);
    a module called several times in one pass gets one entry per call, ``name#1``, ``name#2``...
    ``output_shape`` is channels-last, as ``activations()`` returns it (batch dimension 1).
    """

    name: str
    kind: str
    type: str
    output_shape: tuple[int, ...] | None
    module: Any = field(repr=False, compare=False)
    module_name: str = ""
    call: int = 0
    is_leaf: bool = True
    order: int = 0
    #: a later op modifies this output in place (an in-place ReLU): captures must copy it.
    overwritten: bool = False
    #: a 4-D output already channels-last inside an NCHW network (a LayerNorm or Linear between
    #: two permutes, as in ConvNeXt's blocks); captures give it in the network's layout anyway.
    channels_last: bool = False

    @property
    def spatial(self) -> bool:
        """True when the output is a 4-D (N, H, W, C) map with more than one position."""
        s = self.output_shape
        return s is not None and len(s) == 4 and s[1] * s[2] > 1

    @property
    def channels(self) -> int | None:
        return None if self.output_shape is None else self.output_shape[-1]


@dataclass(frozen=True)
class LayerCall:
    """What a trace records of one layer call (before calls are numbered)."""

    name: str
    module: Any
    is_leaf: bool
    kind: str
    #: channels-last output shape, or None when the layer returned no tensor
    output_shape: tuple[int, ...] | None
    overwritten: bool = False
    channels_last: bool = False


def label_calls(calls: Sequence[LayerCall]) -> list[LayerInfo]:
    """Number the calls of modules called more than once (``name#1``, ``name#2``...)."""
    count: dict[str, int] = {}
    for c in calls:
        count[c.name] = count.get(c.name, 0) + 1
    seen: dict[str, int] = {}
    infos = []
    for order, c in enumerate(calls):
        call = seen.get(c.name, 0)
        seen[c.name] = call + 1
        infos.append(LayerInfo(
            name=f"{c.name}#{call + 1}" if count[c.name] > 1 else c.name, kind=c.kind,
            type=getattr(c.module, "layer_type", None) or type(c.module).__name__,
            output_shape=c.output_shape, module=c.module,
            module_name=c.name, call=call, is_leaf=c.is_leaf, order=order,
            overwritten=c.overwritten, channels_last=c.channels_last,
        ))
    return infos


def select(
    everything: Sequence[LayerInfo], selector: str | Iterable[str] | None, model_name: str
) -> list[LayerInfo]:
    """Layers by name, glob (``"layer4.*"``), kind (``"conv"``), or a list of these.

    A module called several times matches all its calls by its plain name. ``None`` selects the
    spatial conv and pooling layers (the book's choice).
    """
    if selector is None:
        wanted = DEFAULT_ACTIVATION_KINDS
        chosen = [i for i in everything if i.is_leaf and i.kind in wanted and i.spatial]
        if not chosen:
            raise ModelError(
                f"{model_name} has no layer of kind {'/'.join(wanted)} with a spatial output; "
                "convlens needs a convolutional network (pass layers=... to pick others)"
            )
        return chosen
    selectors = [selector] if isinstance(selector, str) else list(selector)
    picked: dict[str, LayerInfo] = {}
    for sel in selectors:
        if sel in KINDS:
            hits = [i for i in everything if i.kind == sel and i.is_leaf]
        elif any(ch in sel for ch in "*?["):
            hits = [
                i for i in everything
                if fnmatch.fnmatchcase(i.name, sel) or fnmatch.fnmatchcase(i.module_name, sel)
            ]
        else:
            hits = [i for i in everything if i.name == sel] or [
                i for i in everything if i.module_name == sel
            ]
        if not hits:
            names = list(dict.fromkeys([i.name for i in everything] +
                                       [i.module_name for i in everything]))
            raise LayerNotFoundError(sel, names, len(everything))
        for info in hits:
            picked[info.name] = info
    return sorted(picked.values(), key=lambda i: i.order)
