"""Ablation-CAM: a channel's weight is the drop in the target score when it is zeroed.

Desai & Ramaswamy, "Ablation-CAM: Visual Explanation for Deep Convolutional Network via
Gradient-free Localization", WACV 2020, eq. 3-4: ``w_k = (y_c - y_c^k) / y_c`` where ``y_c^k`` is
the class score with channel k of the layer set to 0, and ``L = ReLU(sum_k w_k A_k)``. (When
``|y_c| < 1e-6``, the division uses 1e-6 with y_c's sign.)

Speed: the image goes through the part of the network before the layer once per batch, and a
hook replaces the layer's output by a batch of copies, each with one channel zeroed, plus one
untouched copy. That is only right when nothing after the layer reuses tensors from before it
with the batch size of the input; the untouched copy must reproduce the original score, and if it
does not (or the network fails on the bigger batch), the batch is redone the safe way: the image
repeated through the whole network, one channel zeroed in each copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ...batching import BatchSizer, max_batch
from ...progress import progress_bar
from ..core import CamContext, WeightedCam, register

if TYPE_CHECKING:
    from ...models import LayerInfo

_EPS = 1e-6


def _zero_channels(batch: torch.Tensor, rows: torch.Tensor, channels: torch.Tensor,
                   dim: int) -> torch.Tensor:
    """Set ``batch[rows[j], channels[j]]`` (channel axis ``dim``) to zero, in place."""
    if dim == 1:
        batch[rows, channels] = 0
    else:
        batch[rows, :, :, channels] = 0
    return batch


@register
class AblationCAM(WeightedCam):
    """Ablation-CAM (Desai & Ramaswamy 2020)."""

    name = "ablationcam"
    title = "Ablation-CAM"
    reference = "Desai & Ramaswamy, WACV 2020, doi:10.1109/WACV45572.2020.9093360"
    quick_options: ClassVar[dict[str, Any]] = {"batch_size": 64}

    def __init__(self, batch_size: int | None = None, memory_budget: int | None = None):
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        #: whether the last call could expand the batch inside the network (the fast path).
        self.expanded = True

    def _fast(self, ctx: CamContext, info: LayerInfo, image: int,
              channels: torch.Tensor) -> torch.Tensor | None:
        """Logits of (untouched, ablated...) copies, prefix run once; None if not valid here."""
        dim = ctx.model.channel_axis
        count = len(channels)

        def ablate(output: torch.Tensor) -> torch.Tensor:
            batch = output.expand(count + 1, *output.shape[1:]).clone()
            rows = torch.arange(1, count + 1, device=output.device)
            return _zero_channels(batch, rows, channels, dim)

        try:
            with ctx.model.replace_output(info, ablate):
                logits = ctx.forward_logits(ctx.net_input[image : image + 1])
        except (RuntimeError, ValueError, IndexError, TypeError):
            return None
        if logits.shape[0] != count + 1:
            return None
        for row, target in ctx.row_targets(image):
            control = target.scores(logits[:1]).float()[0]
            if not torch.isclose(control, ctx.scores[row], rtol=1e-3, atol=1e-4):
                return None
        return logits[1:]

    def _safe(self, ctx: CamContext, info: LayerInfo, image: int,
              channels: torch.Tensor) -> torch.Tensor:
        dim = ctx.model.channel_axis
        count = len(channels)
        rows = torch.arange(count, device=channels.device)

        def ablate(output: torch.Tensor) -> torch.Tensor:
            return _zero_channels(output.clone(), rows, channels, dim)

        x = ctx.net_input[image : image + 1]
        with ctx.model.replace_output(info, ablate):
            return ctx.forward_logits(x.expand(count, *x.shape[1:]).contiguous())

    def weights(
        self, ctx: CamContext, info: LayerInfo, activations: torch.Tensor,
        gradients: torch.Tensor | None,
    ) -> torch.Tensor:
        k = ctx.plan.k
        n, c = activations.shape[0] // k, activations.shape[1]
        weights = torch.zeros(n * k, c, device=activations.device, dtype=torch.float32)
        base = ctx.scores
        sign = torch.where(base < 0, -1.0, 1.0)
        safe_base = torch.where(base.abs() < _EPS, sign * _EPS, base)
        limit = max_batch(ctx.model, tuple(ctx.pixels.shape[1:3]), self.memory_budget)
        self.expanded = True
        chosen = self.batch_size
        with progress_bar(f"{self.title} {info.name}", n * c, ctx.progress) as advance:
            for image in range(n):
                sizer = BatchSizer(c, limit, activations.device, chosen)
                for start, stop in sizer:
                    channels = torch.arange(start, stop, device=activations.device)
                    logits = self._fast(ctx, info, image, channels) if self.expanded else None
                    if logits is None:
                        self.expanded = False
                        logits = self._safe(ctx, info, image, channels)
                    for row, target in ctx.row_targets(image):
                        ablated = target.scores(logits).float()
                        weights[row, start:stop] = (base[row] - ablated) / safe_base[row]
                    advance(stop - start)
                chosen = sizer.best
        return weights
