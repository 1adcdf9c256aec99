"""Score-CAM: each channel weighted by the model's confidence in the image masked by it.

Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks",
CVPR Workshops 2020 (eq. 3-7, Algorithm 1). For each channel k, its activation map is upsampled
to the image size (bilinear) and min-max normalized to ``H_k`` in [0, 1]; the *image* is masked,
``X (.) H_k``; the weight is the target's softmax probability on the masked image (as the
authors' implementation does, without subtracting a baseline image's score, which would only add
``-b sum_k A_k``); ``L = ReLU(sum_k w_k A_k)``. ``channel_softmax=True`` follows Algorithm 1
instead: the target's logits on the masked images, softmaxed over channels.

Masks multiply the network's input (after preprocessing), as the authors' implementation does:
a masked-out pixel becomes 0 there, i.e. the mean colour for a mean/std-normalized model, black
for a model that rescales its pixels inside the network (the book's Keras convnet).

Faster Score-CAM (``top_k``): only the ``top_k`` channels with the largest spatial variance are
scored (Wang et al.'s follow-up in the Score-CAM repository); the others get weight 0.

Masked images are run in batches without autograd; the batch size is tuned for speed within a
memory budget (see :mod:`convlens.cam.batching`), or fixed with ``batch_size``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from ...batching import BatchSizer, max_batch
from ...errors import ModelError
from ...progress import progress_bar
from ...targets import score_rows, target_probabilities
from ..core import CamContext, WeightedCam, register
from ..maps import upsample

if TYPE_CHECKING:
    from ...models import LayerInfo


def min_max(maps: torch.Tensor) -> torch.Tensor:
    """Each (H, W) map of a (B, H, W) stack scaled to [0, 1], in place; a constant map becomes 0."""
    low, high = torch.aminmax(maps.flatten(1), dim=1)
    span = (high - low).masked_fill_(high <= low, torch.inf)
    return maps.sub_(low[:, None, None]).div_(span[:, None, None])


def top_variance_channels(activations: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """(N, K) channel indices per image: all, or the ``top_k`` of largest spatial variance."""
    n, c = activations.shape[:2]
    if top_k is None or top_k >= c:
        return torch.arange(c, device=activations.device).expand(n, c)
    return activations.flatten(2).var(dim=2).topk(top_k, dim=1).indices


@register
class ScoreCAM(WeightedCam):
    """Score-CAM (Wang et al. 2020); ``top_k`` gives Faster Score-CAM."""

    name = "scorecam"
    title = "Score-CAM"
    reference = "Wang et al., CVPR Workshops 2020, arXiv:1910.01279"
    aliases = ("fasterscorecam",)
    quick_options: ClassVar[dict[str, Any]] = {"top_k": 32}

    def __init__(
        self, top_k: int | None = None, batch_size: int | None = None,
        memory_budget: int | None = None, channel_softmax: bool = False,
    ):
        if top_k is not None and top_k < 1:
            raise ModelError(f"top_k must be at least 1 (or None for every channel), not {top_k}")
        self.top_k = top_k
        self.batch_size = batch_size
        self.memory_budget = memory_budget
        self.channel_softmax = channel_softmax

    def weights(
        self, ctx: CamContext, info: LayerInfo, activations: torch.Tensor,
        gradients: torch.Tensor | None,
    ) -> torch.Tensor:
        k = ctx.plan.k
        acts = activations[::k]  # masks depend on the image, not on the target
        n, c = acts.shape[:2]
        chosen = top_variance_channels(acts, self.top_k)
        per_image = chosen.shape[1]
        images = torch.arange(n, device=acts.device).repeat_interleave(per_image)
        channels = chosen.reshape(-1)
        fill = -torch.inf if self.channel_softmax else 0.0
        scores = torch.full((n * k, c), fill, device=acts.device, dtype=torch.float32)
        size = tuple(ctx.pixels.shape[1:3])
        mask_dim = ctx.model.channel_axis
        limit = max_batch(ctx.model, size, self.memory_budget)
        sizer = BatchSizer(len(channels), limit, acts.device, self.batch_size)
        with progress_bar(f"{self.title} {info.name}", len(channels), ctx.progress) as advance:
            for start, stop in sizer:
                img, ch = images[start:stop], channels[start:stop]
                masks = min_max(upsample(acts[img, ch], size)).to(ctx.net_input.dtype)
                inputs = ctx.net_input if n == 1 else ctx.net_input[img]  # one image: broadcast
                logits = ctx.forward_logits(inputs * masks.unsqueeze(mask_dim))
                batch_images = [j // per_image for j in range(start, stop)]  # as `images`
                for r in range(k):  # the r-th target of each masked image's own image
                    targets = [ctx.plan.targets[i][r] for i in batch_images]
                    value = (score_rows(targets, logits) if self.channel_softmax
                             else target_probabilities(targets, logits))
                    scores[img * k + r, ch] = value.float()
                advance(stop - start)
        if self.channel_softmax:
            return scores.softmax(dim=1)
        return scores
