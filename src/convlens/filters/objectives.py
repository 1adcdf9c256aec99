"""What filter visualization maximizes: small objectives that compose.

An :class:`Objective` scores each image of a batch (a (K,) tensor, higher is better) from the
captured outputs of some layers, NCHW whatever the framework, and optionally the class logits.
Objectives add, subtract, negate and scale by numbers::

    channel("_blocks.8._bn0", 12) - 0.5 * channel("_blocks.8._bn0", 3)
    channel("layer3", 7) + 100 * diversity("layer3")      # several different images of one channel

Per-image parameters (a channel per image, a class per image) take a sequence of K values;
``rows`` (a slice of the full request) tells an objective which images a chunk holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING

import torch

from ..errors import ModelError

if TYPE_CHECKING:
    from ..models import Model

__all__ = [
    "Captured", "Objective", "channel", "class_logit", "diversity", "layer_objective", "neuron",
]

#: One index for every image, or one index per image of the request.
Index = int | Sequence[int]
Check = Callable[["Model", int], None]
Score = Callable[["Captured", slice], torch.Tensor]


@dataclass(frozen=True)
class Captured:
    """What one forward pass gave the objectives: layer outputs (NCHW views) and logits."""

    layers: Mapping[str, torch.Tensor]
    logits: torch.Tensor | None = None

    def __getitem__(self, layer: str) -> torch.Tensor:
        return self.layers[layer]


class Objective:
    """A per-image score of captured outputs; compose with ``+``, ``-`` and scalar ``*``.

    Args:
        score: ``score(captured, rows) -> (K,)`` for the images ``rows`` of the request.
        layers: the layer names it reads.
        needs_logits: it reads the class scores (the whole network runs).
        coupled: images influence each other's score (the batch cannot be split into chunks).
        checks: ``check(model, count)`` run before any work, raising a clear error.
        description: how it prints.
    """

    def __init__(
        self,
        score: Score,
        *,
        layers: Sequence[str] = (),
        needs_logits: bool = False,
        coupled: bool = False,
        checks: Sequence[Check] = (),
        description: str = "objective",
    ):
        self.score = score
        self.layers = tuple(dict.fromkeys(layers))
        self.needs_logits = needs_logits
        self.coupled = coupled
        self.checks = tuple(checks)
        self.description = description

    def __call__(self, captured: Captured, rows: slice = slice(None)) -> torch.Tensor:
        return self.score(captured, rows)

    def check(self, model: Model, count: int) -> None:
        """Raise a clear error if this objective cannot run on ``model`` for ``count`` images."""
        for check in self.checks:
            check(model, count)

    # -- composition -------------------------------------------------------------------------
    def _combine(self, other: Objective, op: Callable, symbol: str) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(
            lambda c, rows: op(self(c, rows), other(c, rows)),
            layers=self.layers + other.layers,
            needs_logits=self.needs_logits or other.needs_logits,
            coupled=self.coupled or other.coupled,
            checks=self.checks + other.checks,
            description=f"{self} {symbol} {other}",
        )

    def _scale(self, factor: float, text: str) -> Objective:
        if not isinstance(factor, Real):
            return NotImplemented
        return Objective(
            lambda c, rows: self(c, rows) * float(factor),
            layers=self.layers, needs_logits=self.needs_logits, coupled=self.coupled,
            checks=self.checks, description=text,
        )

    def __add__(self, other: Objective) -> Objective:
        return self._combine(other, torch.add, "+")

    def __sub__(self, other: Objective) -> Objective:
        return self._combine(other, torch.sub, "-")

    def __mul__(self, factor: float) -> Objective:
        return self._scale(factor, f"{factor:g} * ({self})")

    __rmul__ = __mul__

    def __truediv__(self, factor: float) -> Objective:
        if not isinstance(factor, Real):
            return NotImplemented
        return self._scale(1.0 / float(factor), f"({self}) / {factor:g}")

    def __neg__(self) -> Objective:
        return self._scale(-1.0, f"-({self})")

    def __repr__(self) -> str:
        return self.description


# -- helpers -----------------------------------------------------------------------------------
def _per_image(index: Index, rows: slice, count: int, device: torch.device) -> torch.Tensor | int:
    """The index for each image of a chunk (an int when it is the same for all)."""
    if isinstance(index, int):
        return index
    picked = list(index)[rows]
    if len(picked) != count:
        raise ModelError(
            f"{len(picked)} per-image indices for a chunk of {count} images; give one index per "
            "image (as many as channels requested) or a single int"
        )
    return torch.as_tensor(picked, device=device)


def _pick(x: torch.Tensor, index: torch.Tensor | int) -> torch.Tensor:
    """x[i, index[i]] for every image i (or x[:, index])."""
    if isinstance(index, int):
        return x[:, index]
    return x[torch.arange(x.shape[0], device=x.device), index]


def _indices(index: Index) -> list[int]:
    return [index] if isinstance(index, int) else [int(i) for i in index]


def _text(index: Index) -> str:
    if isinstance(index, int):
        return str(index)
    values = list(index)
    return str(values) if len(values) <= 6 else f"[{values[0]}..{values[-1]}] ({len(values)})"


def _check_layer(layer: str, index: Index | None, *, spatial: bool, what: str) -> Check:
    """A check that ``layer`` exists, has the needed shape, and that ``index`` fits it."""

    def check(model: Model, count: int) -> None:
        info = model.layer(layer)
        shape = info.output_shape
        if spatial and not info.spatial:
            raise ModelError(
                f"layer {info.name!r} has no spatial output (shape {shape}); a {what} objective "
                "needs a layer with a (N, H, W, C) map: pick a conv/pool layer from "
                "model.layers(), or use class_logit / layer_objective"
            )
        if index is None:
            return
        if not isinstance(index, int) and len(list(index)) != count:
            raise ModelError(
                f"{what} objective on {info.name!r}: {len(list(index))} indices for {count} "
                "images; give one per image or a single int"
            )
        channels = info.channels or 0
        bad = [i for i in _indices(index) if not 0 <= i < channels]
        if bad:
            raise ModelError(
                f"channel {bad[0]} is out of range: layer {info.name!r} has {channels} channels "
                f"(0..{channels - 1}); pick channels below {channels}"
            )

    return check


def without_border(maps: torch.Tensor, border: int, layer: str = "") -> torch.Tensor:
    """Maps (..., H, W) without ``border`` positions on each side (the book's ``2:-2``)."""
    h, w = maps.shape[-2:]
    if min(h, w) <= 2 * border:
        raise ModelError(
            f"layer {layer!r} gives {h}x{w} maps, too small for a {border}-position border; "
            "use a larger image size or border=0"
        )
    return maps[..., border : h - border, border : w - border]


# -- the objectives ----------------------------------------------------------------------------
def channel(layer: str, index: Index, border: int = 0) -> Objective:
    """Mean activation of one channel (per image: a sequence), ``border`` positions left out.

    ``border=2`` is Deep Learning with Python's loss (``activation[:, 2:-2, 2:-2, k]``).
    """
    if border < 0:
        raise ModelError(f"border must be >= 0, not {border}")

    def score(c: Captured, rows: slice) -> torch.Tensor:
        x = c[layer]
        maps = _pick(x, _per_image(index, rows, x.shape[0], x.device))
        return without_border(maps, border, layer).mean(dim=(-2, -1))

    return Objective(
        score, layers=[layer], checks=[_check_layer(layer, index, spatial=True, what="channel")],
        description=f"channel({layer!r}, {_text(index)})",
    )


def neuron(layer: str, index: Index, y: int | None = None, x: int | None = None) -> Objective:
    """One channel's activation at one position (default: the centre of the map)."""

    def score(c: Captured, rows: slice) -> torch.Tensor:
        t = c[layer]
        h, w = t.shape[-2:]
        yy = h // 2 if y is None else y
        xx = w // 2 if x is None else x
        if not (0 <= yy < h and 0 <= xx < w):
            raise ModelError(
                f"position ({yy}, {xx}) is outside layer {layer!r}'s {h}x{w} map; pick y < {h}, "
                f"x < {w}"
            )
        return _pick(t, _per_image(index, rows, t.shape[0], t.device))[:, yy, xx]

    return Objective(
        score, layers=[layer], checks=[_check_layer(layer, index, spatial=True, what="neuron")],
        description=f"neuron({layer!r}, {_text(index)}, y={y}, x={x})",
    )


def layer_objective(layer: str) -> Objective:
    """DeepDream: the mean of the squared activations of the whole layer."""

    def score(c: Captured, rows: slice) -> torch.Tensor:
        t = c[layer]
        return t.square().flatten(1).mean(dim=1)

    return Objective(
        score, layers=[layer], checks=[_check_layer(layer, None, spatial=False, what="layer")],
        description=f"layer_objective({layer!r})",
    )


def class_logit(index: Index) -> Objective:
    """The score (pre-softmax / pre-sigmoid logit) of a class; the whole network runs."""

    def score(c: Captured, rows: slice) -> torch.Tensor:
        logits = c.logits
        if logits is None or logits.ndim != 2:
            shape = None if logits is None else tuple(logits.shape)
            raise ModelError(
                f"class_logit needs a (N, classes) model output, got {shape}; use a channel "
                "objective for this model"
            )
        return _pick(logits, _per_image(index, rows, logits.shape[0], logits.device))

    def check(model: Model, count: int) -> None:
        classes = len(model.class_names) if model.class_names else None
        bad = [i for i in _indices(index) if i < 0 or (classes is not None and i >= classes)]
        if bad:
            raise ModelError(
                f"class {bad[0]} is out of range for {model.name} ({classes} classes)"
            )

    return Objective(
        score, needs_logits=True, checks=[check], description=f"class_logit({_text(index)})"
    )


def diversity(layer: str) -> Objective:
    """Lucid's diversity: minus the cosine similarity of each image's Gram matrix to the others'.

    Summed over the batch it equals Lucid's term (divided by the batch size); add it with a
    positive weight to make several images of one objective differ. The batch is not split.
    """

    def score(c: Captured, rows: slice) -> torch.Tensor:
        t = c[layer]
        n = t.shape[0]
        flat = t.flatten(2)
        grams = torch.nn.functional.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
        similarity = grams @ grams.T
        return -(similarity.sum(dim=1) - similarity.diagonal()) / n

    return Objective(
        score, layers=[layer], coupled=True,
        checks=[_check_layer(layer, None, spatial=True, what="diversity")],
        description=f"diversity({layer!r})",
    )
