"""Gradients of target scores with respect to layer outputs: the core of every gradient method.

One forward pass through ``Model.capture`` with ``grad_from``: the part of the network before the
first target layer runs without autograd and that layer's output becomes the graph's leaf, so
``torch.autograd.grad(score, leaf)`` costs about the rest of the forward pass, and no weight
gradient is ever computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .targets import TargetPlan, as_logits, resolve_targets, score_rows

if TYPE_CHECKING:
    from .models import LayerInfo, Model

__all__ = ["layer_gradients", "repeat_rows"]


def repeat_rows(tensor: torch.Tensor, k: int) -> torch.Tensor:
    """Each image's row repeated for its ``k`` targets (image-major), as result rows are."""
    return tensor if k == 1 else tensor.repeat_interleave(k, dim=0)


Tensors = dict[str, torch.Tensor]

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
    while pending:
        with model.capture(pending, grad_from=pending) as cap:
            output = cap.run(net_input)
        with torch.enable_grad():
            out = as_logits(model, output)
            if plan is None:
                plan = resolve_targets(model, target, out)
                logits = out.detach()
            leaves = {n: t for n, t in cap.outputs.items() if t.requires_grad}
            names = list(leaves)
            inputs = [leaves[n] for n in names]
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
                    found = (None,) * len(names)
                rounds.append([
                    torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(names, found)
                ])
        if scores is None:
            scores = torch.stack(round_scores, dim=1).reshape(-1)
        for j, name in enumerate(names):
            a = model.nchw(leaves[name].detach()).float()
            acts[name] = repeat_rows(a, plan.k)
            if plan.k == 1:
                grads[name] = model.nchw(rounds[0][j]).float()
            else:  # row i * k + r: image i, round r
                g = torch.stack([model.nchw(rd[j]).float() for rd in rounds], dim=1)
                grads[name] = g.reshape(-1, *g.shape[2:])
        pending = [info for info in pending if info.name not in leaves]
        del cap, output, out, leaves
    assert plan is not None and logits is not None and scores is not None
    return acts, grads, logits, plan, scores


