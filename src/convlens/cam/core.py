"""The one hook/gradient core every CAM method runs on.

A method is a small subclass of :class:`CamMethod` that turns one layer's activations (and, for
gradient methods, the gradients of the target score) into a raw map; :class:`WeightedCam`
methods only compute channel weights. Everything else lives here, once:

- choosing the target layer(s) (by a trace of the forward pass, not by names);
- one forward pass through :class:`~convlens.capture.Capture`: with gradients, the part of the
  network before the target layer runs without autograd and the layer's output becomes the
  graph's leaf, so ``torch.autograd.grad(score, leaf)`` costs about the rest of the forward
  pass, and no weight gradient is ever computed; a class score of a linear head is
  back-propagated as a sparse one-hot gradient (only the class's weight row is read);
- resolving targets from that pass's output, and ReLU, upsampling (bilinear, on the device) and
  normalization of the maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from ..capture import Capture, first_tensor
from ..errors import ModelError
from .targets import (
    Target,
    TargetPlan,
    as_logits,
    one_hot_gradient,
    resolve_targets,
    score_rows,
)

if TYPE_CHECKING:
    from ..models.base import LayerInfo, Model

__all__ = [
    "CamContext", "CamMethod", "WeightedCam", "default_layer", "explain", "normalize_maps",
    "target_layers",
]


# -- layers ----------------------------------------------------------------------------------
def default_layer(model: Model) -> LayerInfo:
    """The last layer call, in forward order, whose output is a spatial (N, H, W, C) map.

    Found from the model's trace (blocks included): for a ResNet that is ``layer4``, for the
    seed's Keras convnet ``conv2d_4``. A network may name its own with a ``default_cam_layer``
    attribute: the default model's is ``_bn1``, chosen by ``convlens evaluate`` (see README).
    """
    preferred = getattr(model.network, "default_cam_layer", None)
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


def target_layers(model: Model, layer: Any = None) -> list[LayerInfo]:
    """The layer(s) to explain: ``None`` (default layer), a name, a glob, or a list (fused)."""
    if layer is None:
        return [default_layer(model)]
    if hasattr(layer, "module") and hasattr(layer, "order"):  # a LayerInfo
        return [_check_spatial(model, layer)]
    if isinstance(layer, str) and not any(ch in layer for ch in "*?["):
        from ..models.base import KINDS

        found = model.resolve(layer) if layer in KINDS else [model.layer(layer)]
    else:
        found = model.resolve(layer)
    return [_check_spatial(model, info) for info in found]


def channels_first(model: Model, tensor: torch.Tensor) -> torch.Tensor:
    """A 4-D tensor in the network's layout as (N, C, H, W) (a view, no copy)."""
    return tensor.permute(0, 3, 1, 2) if model.layout == "NHWC" else tensor


def channel_dim(model: Model) -> int:
    return 3 if model.layout == "NHWC" else 1


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
            return as_logits(self.model, first_tensor(self.model.forward(net_input)))

    def row_targets(self, image: int) -> list[tuple[int, Target]]:
        """(row, target) of every row explaining ``image``."""
        k = self.plan.k
        return [(image * k + r, t) for r, t in enumerate(self.plan.targets[image])]


class CamMethod:
    """One CAM method: turns a layer's activations (and gradients) into a raw map per row.

    Subclasses set ``name``, ``title``, ``reference`` and ``needs_gradients``, take their options
    as keyword arguments, and implement :meth:`layer_map`.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    needs_gradients: ClassVar[bool] = False

    def layer_map(
        self, ctx: CamContext, info: LayerInfo, activations: torch.Tensor,
        gradients: torch.Tensor | None,
    ) -> torch.Tensor:
        """(R, C, h, w) float32 activations (and gradients) of one layer → (R, h, w) raw map."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.title or type(self).__name__}>"


class WeightedCam(CamMethod):
    """Methods whose map is ``sum_k w_k A_k``: they only compute the channel weights w."""

    def channel_weights(
        self, ctx: CamContext, info: LayerInfo, activations: torch.Tensor,
        gradients: torch.Tensor | None,
    ) -> torch.Tensor:
        """(R, C) channel weights."""
        raise NotImplementedError

    def layer_map(
        self, ctx: CamContext, info: LayerInfo, activations: torch.Tensor,
        gradients: torch.Tensor | None,
    ) -> torch.Tensor:
        weights = self.channel_weights(ctx, info, activations, gradients)
        return weighted_sum(weights, activations)


def weighted_sum(weights: torch.Tensor, activations: torch.Tensor) -> torch.Tensor:
    """``sum_k w_k A_k``: (R, C) weights and (R, C, h, w) maps → (R, h, w), one batched matmul.

    ``reshape`` is a view for NCHW and for channels-last maps alike (h and w stay mergeable).
    """
    r, c, h, w = activations.shape
    return torch.bmm(weights[:, None, :], activations.reshape(r, c, h * w)).reshape(r, h, w)


# -- running a method ------------------------------------------------------------------------
def repeat_rows(tensor: torch.Tensor, k: int) -> torch.Tensor:
    """Each image's row repeated for its ``k`` targets (image-major), as result rows are."""
    return tensor if k == 1 else tensor.repeat_interleave(k, dim=0)


Tensors = dict[str, torch.Tensor]

#: autograd nodes of a matrix product: their backward takes a sparse output gradient
_MATMUL = frozenset({"AddmmBackward0", "MmBackward0"})
_SPARSE_DTYPES = (torch.float32, torch.float64)
_SPARSE_DEVICES = ("cpu", "cuda")


def _linear_head(out: torch.Tensor) -> bool:
    """Whether ``out`` comes straight from a linear layer (``x W (+ b)``).

    Its backward multiplies the output gradient by W, so a one-hot gradient passed as a sparse
    tensor reads only the target rows of W (a 1000-class head: 5 MB less to read per call).
    Only for float32/64 on CPU and CUDA, where sparse-dense products exist.
    """
    node = out.grad_fn
    if node is None or out.dtype not in _SPARSE_DTYPES or out.device.type not in _SPARSE_DEVICES:
        return False
    if node.name() in _MATMUL:
        return True
    if node.name() != "AddBackward0":  # Keras's Dense: matmul, then + bias
        return False
    parents = [parent.name() for parent, _ in node.next_functions if parent is not None]
    return any(p in _MATMUL for p in parents) and all(
        p in _MATMUL or p.endswith("AccumulateGrad") for p in parents
    )


def _gradient_pass(
    model: Model, net_input: torch.Tensor, infos: Sequence[LayerInfo], target: Any
) -> tuple[Tensors, Tensors, torch.Tensor, TargetPlan, torch.Tensor]:
    """Activations and target-score gradients of ``infos``, from as few passes as possible.

    Usually one pass: the first layer's output is the graph's leaf, deeper layers are in its
    graph. A layer whose output does not depend on the first one (a parallel branch) gets a
    pass of its own.
    """
    acts: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}
    plan: TargetPlan | None = None
    logits = scores = None
    pending = list(infos)
    while pending:
        with Capture(model, pending, grad_from=pending) as cap:
            output = cap.run(net_input)
        with torch.enable_grad():
            out = as_logits(model, first_tensor(output))
            if plan is None:
                plan = resolve_targets(model, target, out)
                logits = out.detach()
            leaves = {n: t for n, t in cap.outputs.items() if t.requires_grad}
            names = list(leaves)
            inputs = [leaves[n] for n in names]
            linear = _linear_head(out)
            rounds: list[list[torch.Tensor]] = []
            round_scores = []
            for r in range(plan.k):
                targets = plan.round(r)
                one_hot = one_hot_gradient(targets, out) if linear else None
                score = score_rows(targets, out.detach() if one_hot is not None else out)
                round_scores.append(score.detach().float())
                keep = r < plan.k - 1
                if one_hot is not None:
                    found = torch.autograd.grad(
                        out, inputs, grad_outputs=one_hot, retain_graph=keep, allow_unused=True
                    )
                elif score.requires_grad:
                    found = torch.autograd.grad(
                        score.sum(), inputs, retain_graph=keep, allow_unused=True
                    )
                else:  # the score does not depend on the layer
                    found = (None,) * len(names)
                rounds.append([
                    torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(names, found)
                ])
        if scores is None:
            scores = torch.stack(round_scores, dim=1).reshape(-1)
        for j, name in enumerate(names):
            a = channels_first(model, leaves[name].detach()).float()
            acts[name] = repeat_rows(a, plan.k)
            if plan.k == 1:
                grads[name] = channels_first(model, rounds[0][j]).float()
            else:  # row i * k + r: image i, round r
                g = torch.stack([channels_first(model, rd[j]).float() for rd in rounds], dim=1)
                grads[name] = g.reshape(-1, *g.shape[2:])
        pending = [info for info in pending if info.name not in leaves]
        del cap, output, out, leaves
    assert plan is not None and logits is not None and scores is not None
    return acts, grads, logits, plan, scores


def _plain_pass(
    model: Model, net_input: torch.Tensor, infos: Sequence[LayerInfo], target: Any
) -> tuple[dict[str, torch.Tensor], torch.Tensor, TargetPlan, torch.Tensor]:
    with torch.no_grad(), Capture(model, infos) as cap:
        output = cap.run(net_input)
        logits = as_logits(model, first_tensor(output))
    plan = resolve_targets(model, target, logits)
    scores = torch.stack(
        [score_rows(plan.round(r), logits).float() for r in range(plan.k)], dim=1
    ).reshape(-1)
    acts = {
        name: repeat_rows(channels_first(model, t).float(), plan.k)
        for name, t in cap.outputs.items()
    }
    return acts, logits, plan, scores


def explain(
    method: CamMethod, model: Model, pixels: torch.Tensor, infos: Sequence[LayerInfo],
    target: Any = None, progress: bool = False,
) -> tuple[CamContext, list[torch.Tensor]]:
    """Run ``method`` on a batch of pixels: the context and one (R, h, w) raw map per layer."""
    net_input = model.prepare(pixels)
    grads: dict[str, torch.Tensor] = {}
    with model.logit_outputs():
        if method.needs_gradients:
            acts, grads, logits, plan, scores = _gradient_pass(model, net_input, infos, target)
        else:
            acts, logits, plan, scores = _plain_pass(model, net_input, infos, target)
    ctx = CamContext(model, pixels, net_input, logits, plan, scores, progress)
    raws = [
        method.layer_map(ctx, info, acts[info.name], grads.get(info.name)) for info in infos
    ]
    return ctx, raws


# -- maps → heatmaps -------------------------------------------------------------------------
def _max_normalize(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each map divided by its max, in place (an all-zero map stays 0), and the (R,) maxima."""
    peak = maps.amax(dim=(1, 2), keepdim=True)
    return maps.div_(peak.clamp_min(torch.finfo(maps.dtype).tiny)), peak[:, 0, 0]


@lru_cache(maxsize=64)
def _interpolation_matrix(
    n_in: int, n_out: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """(n_out, n_in): 1-D linear interpolation as ``F.interpolate`` (align_corners=False) does."""
    eye = torch.eye(n_in, device=device, dtype=dtype)[None]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T.contiguous()


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(R, h, w) → (R, H, W), bilinear (align_corners=False), on the maps' device.

    Bilinear interpolation is separable: ``rows @ map @ columns.T`` with the 1-D interpolation
    matrices of ``F.interpolate`` gives its result (to float rounding), several times faster.
    """
    h, w = maps.shape[-2:]
    if (h, w) == tuple(size):
        return maps
    rows = _interpolation_matrix(h, size[0], maps.device, maps.dtype)
    columns = _interpolation_matrix(w, size[1], maps.device, maps.dtype)
    return rows @ maps @ columns.T


def normalize_maps(
    raws: Sequence[torch.Tensor], size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw maps of one or more layers → (R, H, W) heatmaps in [0, 1] and an (R,) empty flag.

    Each map: ReLU, bilinear upsampling to ``size``, division by its per-row max (an all-zero map
    stays zero). Several layers: the mean of their normalized maps, normalized again.
    """
    normalized = [_max_normalize(upsample(raw.float().clamp_min(0), size)) for raw in raws]
    heat, peak = normalized[0]
    if len(normalized) > 1:
        heat, peak = _max_normalize(torch.stack([m for m, _ in normalized]).mean(dim=0))
    return heat, peak <= 0
