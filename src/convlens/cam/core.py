"""The shared CAM core: target layers, the method base classes and their registry, ``explain``.

A method is a small subclass of :class:`CamMethod` that turns one layer's activations (and, for
gradient methods, the gradients of the target score) into a raw map, registered with
:func:`register` (as timm registers models): the method list, the CLI's choices, the report and the
explorer read :data:`METHODS`. :class:`WeightedCam` methods only compute weights ``w`` for the
``sum_k w_k A_k`` step that the base owns; :class:`GradientCam` methods compute them from the
gradients, which the core (:mod:`convlens.gradients`) obtains from one forward pass.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ..errors import ModelError
from ..gradients import layer_gradients, repeat_rows
from ..targets import Target, TargetPlan, as_logits, resolve_targets, score_rows

if TYPE_CHECKING:
    from ..models import LayerInfo, Model

__all__ = [
    "METHODS", "CamContext", "CamMethod", "GradientCam", "WeightedCam", "cam_pass",
    "default_layer", "explain", "method_class", "register", "target_layers",
]


# -- layers ----------------------------------------------------------------------------------
def default_layer(model: Model, method: str | None = None) -> LayerInfo:
    """The last layer call, in forward order, whose output is a spatial (N, H, W, C) map.

    Found from the model's trace (blocks included): for a ResNet that is ``layer4``, for the
    seed's Keras convnet ``conv2d_4``. A network may name its own in a ``default_cam_layer``
    attribute (a name, or {method: name} with None for the others); the default model's were
    chosen by ``convlens evaluate`` (see README).
    """
    preferred = getattr(model.network, "default_cam_layer", None)
    if isinstance(preferred, dict):
        preferred = preferred.get(method, preferred.get(None))
    if preferred is not None:
        return model.layer(preferred)
    spatial = [info for info in model.layers(include_blocks=True) if info.spatial]
    if not spatial:
        raise ModelError(
            f"{model.name} has no layer with a spatial (N, H, W, C) output; CAM needs a "
            "convolutional network"
        )
    return spatial[-1]


def _check_spatial(model: Model, info: LayerInfo) -> LayerInfo:
    if info.spatial:
        return info
    shape = info.output_shape
    described = "no tensor" if shape is None else "(" + ", ".join(["N", *map(str, shape[1:])]) + ")"
    choices = [i.name for i in model.layers(include_blocks=True) if i.spatial][-4:]
    raise ModelError(
        f"layer {info.name!r} outputs {described}; CAM needs a spatial (N, H, W, C) map; "
        f"pick one of {', '.join(choices)} (or leave layer=None for the last one)"
    )


def target_layers(model: Model, layer: Any = None, method: str | None = None) -> list[LayerInfo]:
    """The layer(s) to explain: ``None`` (default layer), a name, a glob, or a list (fused)."""
    if layer is None:
        return [default_layer(model, method)]
    if hasattr(layer, "module") and hasattr(layer, "order"):  # a LayerInfo
        return [_check_spatial(model, layer)]
    if isinstance(layer, str) and not any(ch in layer for ch in "*?["):
        from ..models import KINDS

        found = model.resolve(layer) if layer in KINDS else [model.layer(layer)]
    else:
        found = model.resolve(layer)
    return [_check_spatial(model, info) for info in found]


# -- what a method sees ----------------------------------------------------------------------
@dataclass
class CamContext:
    """The batch being explained, shared by every layer of one call.

    Rows are image-major: with ``k`` targets per image, row ``i * k + r`` is image i's r-th target.
    """

    model: Model
    pixels: torch.Tensor  # (N, H, W, 3) 0..255, on the model's device
    net_input: torch.Tensor  # the network's input for those pixels
    logits: torch.Tensor  # (N, classes), logit space, detached
    plan: TargetPlan
    scores: torch.Tensor  # (R,) float32: each row's target score on the unperturbed image
    progress: bool = False

    def forward_logits(self, net_input: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of network inputs, without autograd."""
        with torch.no_grad(), self.model.logit_outputs():
            return as_logits(self.model, self.model.forward(net_input))

    def row_targets(self, image: int) -> list[tuple[int, Target]]:
        """(row, target) of every row explaining ``image``."""
        k = self.plan.k
        return [(image * k + r, t) for r, t in enumerate(self.plan.targets[image])]


# -- methods ---------------------------------------------------------------------------------
class CamMethod:
    """One CAM method: turns a layer's activations (and gradients) into a raw map per row.

    Subclasses set ``name``, ``title``, ``reference`` (and ``aliases``), take their options as
    keyword arguments, implement :meth:`layer_map`, and are registered with :func:`register`.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    #: other spellings users type (compared lower-case, without '-', '_', ' ' and '+')
    aliases: ClassVar[tuple[str, ...]] = ()
    needs_gradients: ClassVar[bool] = False
    #: options that keep the method fast in the report and the explorer (e.g. Score-CAM top_k)
    quick_options: ClassVar[dict[str, Any]] = {}

    def layer_map(
        self, ctx: CamContext, info: LayerInfo, activations: torch.Tensor,
        gradients: torch.Tensor | None,
    ) -> torch.Tensor:
        """(R, C, h, w) float32 activations (and gradients) of one layer → (R, h, w) raw map."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.title or type(self).__name__}>"


class WeightedCam(CamMethod):
    """Methods whose map is ``sum_k w_k A_k``: they only compute the weights ``w``.

    ``w`` is (R, C) (one weight per channel) or (R, C, h, w) (one per position and channel).
    """

    def weights(
        self, ctx: CamContext, info: LayerInfo, activations: torch.Tensor,
        gradients: torch.Tensor | None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def layer_map(
        self, ctx: CamContext, info: LayerInfo, activations: torch.Tensor,
        gradients: torch.Tensor | None,
    ) -> torch.Tensor:
        w = self.weights(ctx, info, activations, gradients)
        if w.ndim == 4:
            return (w * activations).sum(dim=1)
        # one batched matmul; ``reshape`` is a view for NCHW and channels-last maps alike
        r, c, h, width = activations.shape
        return torch.bmm(w[:, None, :], activations.reshape(r, c, h * width)).reshape(r, h, width)


class GradientCam(WeightedCam):
    """Weights from the gradients of the target score (one forward pass, one backward)."""

    needs_gradients = True

    def gradient_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        """(R, C) or (R, C, h, w) weights from (R, C, h, w) activations and gradients."""
        raise NotImplementedError

    def weights(
        self, ctx: CamContext, info: LayerInfo, activations: torch.Tensor,
        gradients: torch.Tensor | None,
    ) -> torch.Tensor:
        assert gradients is not None, "the core passes gradients to gradient methods"
        return self.gradient_weights(activations, gradients)


#: Every registered method by name, in registration order (Grad-CAM first).
METHODS: dict[str, type[CamMethod]] = {}
_SPELLINGS: dict[str, str] = {}


def _spelling(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch not in "-_ +") + "+" * text.count("+")


def register(cls: type[CamMethod]) -> type[CamMethod]:
    """Class decorator: add a method to :data:`METHODS` under its name and aliases."""
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"a CAM method needs a new, non-empty name (got {cls.name!r})")
    METHODS[cls.name] = cls
    for spelling in (cls.name, cls.title, *cls.aliases):
        _SPELLINGS[_spelling(spelling)] = cls.name
    return cls


def method_class(method: str) -> type[CamMethod]:
    """The method a user's spelling names: ``"gradcam"``, ``"Grad-CAM"``, ``"grad_cam"``..."""
    key = _SPELLINGS.get(_spelling(method))
    if key is not None:
        return METHODS[key]
    close = difflib.get_close_matches(_spelling(method), list(_SPELLINGS), n=3, cutoff=0.5)
    names = list(dict.fromkeys(_SPELLINGS[c] for c in close))
    hint = f"; did you mean {', '.join(map(repr, names))}?" if names else ""
    raise ModelError(f"unknown CAM method {method!r}{hint} (methods: {', '.join(METHODS)})")


# -- running a method ------------------------------------------------------------------------
def _plain_pass(
    model: Model, net_input: torch.Tensor, infos: Sequence[LayerInfo], target: Any
) -> tuple[dict[str, torch.Tensor], torch.Tensor, TargetPlan, torch.Tensor]:
    with torch.no_grad(), model.capture(infos) as cap:
        logits = as_logits(model, cap.run(net_input))
    plan = resolve_targets(model, target, logits)
    scores = torch.stack(
        [score_rows(plan.round(r), logits).float() for r in range(plan.k)], dim=1
    ).reshape(-1)
    acts = {
        name: repeat_rows(model.nchw(t).float(), plan.k) for name, t in cap.outputs.items()
    }
    return acts, logits, plan, scores


def cam_pass(
    model: Model, pixels: torch.Tensor, infos: Sequence[LayerInfo], target: Any = None,
    gradients: bool = True, progress: bool = False,
) -> tuple[CamContext, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The pass every method of a batch starts from: the context, activations and gradients.

    One forward pass (and backward, with ``gradients``) gives what every method needs at each
    of ``infos``, so several methods and layers share it (``convlens.evaluate`` does).
    """
    net_input = model.prepare(pixels)
    grads: dict[str, torch.Tensor] = {}
    with model.logit_outputs():
        if gradients:
            acts, grads, logits, plan, scores = layer_gradients(model, net_input, infos, target)
        else:
            acts, logits, plan, scores = _plain_pass(model, net_input, infos, target)
    return CamContext(model, pixels, net_input, logits, plan, scores, progress), acts, grads


def explain(
    method: CamMethod, model: Model, pixels: torch.Tensor, infos: Sequence[LayerInfo],
    target: Any = None, progress: bool = False,
) -> tuple[CamContext, list[torch.Tensor]]:
    """Run ``method`` on a batch of pixels: the context and one (R, h, w) raw map per layer."""
    ctx, acts, grads = cam_pass(model, pixels, infos, target, method.needs_gradients, progress)
    raws = [
        method.layer_map(ctx, info, acts[info.name], grads.get(info.name)) for info in infos
    ]
    return ctx, raws
