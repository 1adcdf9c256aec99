"""Gradients of target scores with respect to layer outputs: the core of every gradient method.

One forward pass through ``Model.capture`` with ``grad_from``: the part of the network before the
first target layer runs without autograd and that layer's output becomes the graph's leaf, so
``torch.autograd.grad(score, leaf)`` costs about the rest of the forward pass, and no weight
gradient is ever computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .runtime import host_chunk
from .targets import TargetPlan, as_logits, resolve_targets, score_rows

if TYPE_CHECKING:
    from .models import LayerInfo, Model

__all__ = ["largest_output_bytes", "layer_gradients", "repeat_rows"]


def repeat_rows(tensor: torch.Tensor, k: int) -> torch.Tensor:
    """Each image's row repeated for its ``k`` targets (image-major), as result rows are."""
    return tensor if k == 1 else tensor.repeat_interleave(k, dim=0)


Tensors = dict[str, torch.Tensor]

def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


def _cat_outputs(outputs: list[Any]) -> Any:
    """The chunks' network outputs as one (a tensor, or a tuple / list of tensors)."""
    first = outputs[0]
    if isinstance(first, (tuple, list)):
        return type(first)(_cat_outputs(list(parts)) for parts in zip(*outputs))
    return torch.cat(outputs)


def largest_output_bytes(model: Model) -> int:
    """The largest layer output of one image, in bytes (0 when the trace lists no shapes)."""
    numel = max((math.prod(i.output_shape[1:]) for i in model.layers() if i.output_shape),
                default=0)
    return numel * torch.empty((), dtype=model.dtype).element_size()


def output_bytes(model: Model, infos: Sequence[LayerInfo]) -> int:
    """The outputs of ``infos`` for one image together, in bytes (those without a shape: 0)."""
    numel = sum(math.prod(i.output_shape[1:]) for i in infos if i.output_shape)
    return numel * torch.empty((), dtype=model.dtype).element_size()


def layer_gradients(
    model: Model, net_input: torch.Tensor, infos: Sequence[LayerInfo], target: Any
) -> tuple[Tensors, Tensors, torch.Tensor, TargetPlan, torch.Tensor]:
    """Activations and target-score gradients of ``infos``, from as few passes as possible.

    Returns (activations, gradients) by layer name as (R, C, h, w) float32 (rows image-major,
    ``k`` targets per image), the logits (N, classes), the target plan and the (R,) scores.

    Usually one pass: the first layer's output is the graph's leaf, deeper layers are in its
    graph. A layer whose output does not depend on the first one (a parallel branch) gets a
    pass of its own.
    """
    acts: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}
    plan: TargetPlan | None = None
    logits = scores = None
    pending = list(infos)
    n = net_input.shape[0]
    size = host_chunk(n, largest_output_bytes(model), net_input.device)
    while pending:
        # the forward in chunks of ``size`` images (see runtime.host_chunk); every chunk's
        # leaves stay in the graph, and the targets are resolved on all rows at once
        chunks: list[dict[str, torch.Tensor]] = []
        outputs = []
        with model.capture(pending, grad_from=pending) as cap:
            for start in range(0, n, size):
                outputs.append(cap.run(net_input[start:start + size]))
                chunks.append(dict(cap.outputs))
        with torch.enable_grad():
            output = outputs[0] if len(outputs) == 1 else _cat_outputs(outputs)
            out = as_logits(model, output)
            if plan is None:
                plan = resolve_targets(model, target, out)
                logits = out.detach()
            names = [name for name, t in chunks[0].items() if t.requires_grad]
            inputs = [chunk[name] for name in names for chunk in chunks]
            rounds: list[list[torch.Tensor]] = []
            round_scores = []
            for r in range(plan.k):
                score = score_rows(plan.round(r), out)
                round_scores.append(score.detach().float())
                keep = r < plan.k - 1
                if score.requires_grad:
                    found = torch.autograd.grad(
                        score.sum(), inputs, retain_graph=keep, allow_unused=True
                    )
                else:  # the score does not depend on the layer
                    found = (None,) * len(inputs)
                found = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, found)]
                per = len(chunks)
                rounds.append([_cat(found[j * per:(j + 1) * per]) for j in range(len(names))])
        if scores is None:
            scores = torch.stack(round_scores, dim=1).reshape(-1)
        for j, name in enumerate(names):
            a = model.nchw(_cat([chunk[name].detach() for chunk in chunks])).float()
            acts[name] = repeat_rows(a, plan.k)
            if plan.k == 1:
                grads[name] = model.nchw(rounds[0][j]).float()
            else:  # row i * k + r: image i, round r
                g = torch.stack([model.nchw(rd[j]).float() for rd in rounds], dim=1)
                grads[name] = g.reshape(-1, *g.shape[2:])
        pending = [info for info in pending if info.name not in names]
        del cap, chunks, outputs, output, out, inputs
    assert plan is not None and logits is not None and scores is not None
    return acts, grads, logits, plan, scores


