"""The one optimization loop behind both recipes: batched, chunked, deterministic.

All requested images are optimized together, in chunks sized to a memory budget. Each image has
its own generator (seeded from the seed and its channel) for its starting noise and its random
transforms, and images never mix (eval-mode network, per-image scores, per-image updates), so how
the images are chunked does not change them, up to floating-point rounding of batched kernels
(the chollet recipe gives bit-identical images on CPU). The forward pass stops at the deepest
layer the objective reads, unless it needs class logits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..batching import max_batch
from ..errors import ModelError
from ..progress import Advance, progress_bar
from .objectives import Captured, Objective
from .recipes import Recipe

if TYPE_CHECKING:
    from ..models import LayerInfo, Model

__all__ = ["Ascent", "ascend", "chunk_rows"]



@dataclass
class Ascent:
    """Images and what they reach: ``scores`` of the objective, ``extra`` of other objectives."""

    pictures: torch.Tensor  # (K, h, w, 3) uint8
    scores: torch.Tensor  # (K,)
    extra: list[torch.Tensor]  # one (K,) per objective of ``measure``


def chunk_rows(count: int, chunk: int) -> list[slice]:
    """``count`` images in near-equal chunks of at most ``chunk``."""
    chunks = max(1, math.ceil(count / max(1, chunk)))
    bounds = [round(i * count / chunks) for i in range(chunks + 1)]
    return [slice(a, b) for a, b in itertools.pairwise(bounds)]


@contextmanager
def _capturing(model: Model, wanted: dict[str, LayerInfo], *, needs_logits: bool,
               autograd: bool) -> Iterator[Callable[[torch.Tensor], Captured]]:
    """A forward function giving a :class:`Captured` (stopping early when logits are not needed).

    ``wanted`` maps the names the objectives use to the layers they resolve to.
    """
    infos = list({i.name: i for i in wanted.values()}.values())
    stop_early = not needs_logits and bool(infos)
    with ExitStack() as stack:
        cap = stack.enter_context(
            model.capture(infos, stop_early=stop_early, autograd=autograd)
        )
        if needs_logits:
            stack.enter_context(model.logit_outputs())

        def forward(net_input: torch.Tensor) -> Captured:
            out = cap.run(net_input)
            layers = {
                name: model.nchw(cap.outputs[info.name]) for name, info in wanted.items()
            }
            return Captured(layers, out if needs_logits else None)

        yield forward


def _run_network(forward: Callable[[torch.Tensor], Captured], net_input: torch.Tensor,
                 size: tuple[int, int]) -> Captured:
    try:
        return forward(net_input)
    except RuntimeError as err:
        if "produced no output" in str(err):
            raise
        raise ModelError(
            f"the network failed on {size[0]}x{size[1]} inputs ({type(err).__name__}: "
            f"{str(err).splitlines()[0]}); if it needs another input size, pass size="
        ) from err


def ascend(
    model: Model,
    objective: Objective,
    recipe: Recipe,
    seeds: Sequence[int],
    *,
    steps: int,
    size: tuple[int, int],
    measure: Sequence[Objective] = (),
    batch_size: int | None = None,
    memory_budget: int | None = None,
    progress: bool | Advance | None = None,
    title: str = "filters",
) -> Ascent:
    """Optimize ``len(seeds)`` images for ``objective`` with ``recipe``.

    ``measure``: more objectives evaluated (no gradients) on the finished images.
    ``progress``: True for a bar titled ``title`` (steps x chunks), or an ``advance(n)`` callback
    called after every step of every chunk.
    """
    count = len(seeds)
    objective.check(model, count)
    for extra in measure:
        extra.check(model, count)
    rows = chunk_rows(count, plan_chunk(
        model, objective, count, recipe.network_size(model, size), batch_size, memory_budget
    ))
    with progress_bar(title, steps * len(rows), progress is True) as bar:
        advance = progress if callable(progress) else bar
        return _ascend_rows(
            model, objective, recipe, seeds, rows, steps, size, measure, advance
        )


def _ascend_rows(
    model: Model, objective: Objective, recipe: Recipe, seeds: Sequence[int],
    rows: list[slice], steps: int, size: tuple[int, int], measure: Sequence[Objective],
    advance: Advance,
) -> Ascent:
    infos = _layer_infos(model, objective.layers)
    all_infos = _layer_infos(model, [*objective.layers, *(n for m in measure for n in m.layers)])
    needs_logits = objective.needs_logits or any(m.needs_logits for m in measure)
    net_size = recipe.network_size(model, size)
    pictures, scores, extra = [], [], []
    for part in rows:
        generators = [
            torch.Generator(device=model.device).manual_seed(int(s)) for s in seeds[part]
        ]
        run = recipe.start(model, generators, size, steps)
        optimizer = recipe.optimizer(run.params)
        with _capturing(model, infos, needs_logits=objective.needs_logits, autograd=True) as fwd:
            for step in range(steps):
                captured = _run_network(fwd, run.network_input(step), net_size)
                loss = -objective(captured, part).sum()
                grads = torch.autograd.grad(loss, run.params)
                for p, g in zip(run.params, grads):
                    p.grad = g
                optimizer.step()
                advance(1)
        with torch.no_grad(), _capturing(
            model, all_infos, needs_logits=needs_logits, autograd=False
        ) as fwd:
            captured = _run_network(fwd, run.final_input(), net_size)
            scores.append(objective(captured, part).float())
            extra.append([m(captured, part).float() for m in measure])
            pictures.append(run.pictures())
    return Ascent(
        pictures=torch.cat(pictures),
        scores=torch.cat(scores),
        extra=[torch.cat([e[i] for e in extra]) for i in range(len(measure))],
    )


def plan_chunk(model: Model, objective: Objective, count: int, network_size: tuple[int, int],
               batch_size: int | None = None, memory_budget: int | None = None) -> int:
    """How many images one chunk holds: all if the objective couples them, else what fits."""
    if batch_size is not None and batch_size < 1:
        raise ModelError(f"batch_size must be a positive number, not {batch_size}")
    if objective.coupled:
        return count
    if batch_size is not None:
        return min(batch_size, count)
    infos = list(_layer_infos(model, objective.layers).values())
    deepest = None if objective.needs_logits or not infos else max(infos, key=lambda i: i.order)
    fits = max_batch(model, network_size, memory_budget, backward=True, upto=deepest)
    return max(1, min(count, fits))


def _layer_infos(model: Model, names: Sequence[str]) -> dict[str, LayerInfo]:
    """The layer each name (as the objectives spell it) resolves to."""
    return {name: model.layer(name) for name in dict.fromkeys(names)}
