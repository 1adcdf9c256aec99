"""The two recipes, as data: how images start, reach the network, are optimized and come out.

- ``chollet``: Deep Learning with Python (2nd ed., ch. 9). The network's own input tensor starts
  as uniform noise in [0.4, 0.6]; 30 steps of plain gradient ascent, learning rate 10, with the
  gradient L2-normalized per image; the loss is the channel mean without a 2-position border;
  out come standardized images (x 64 + 128, clipped, uint8) cropped by 1/8 (25 px at 200 px).
- ``lucid``: Lucid / Lucent. A Fourier-space image (1/f spectrum), decorrelated colours and a
  sigmoid give pixels in [0, 1], which pass random pad/jitter/scale/rotate/jitter transforms
  and the model's own preprocessing; Adam at 0.05 for 512 steps, 128 px images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

from ..errors import ModelError
from .param import fft_image, to_valid_rgb
from .transforms import Augmentation, standard_transforms

if TYPE_CHECKING:
    from ..models import Model

__all__ = [
    "CHOLLET", "LUCID", "RECIPES", "ImageBatch", "NormalizedAscent", "Recipe", "get_recipe",
]

Size = tuple[int, int]


class ImageBatch(Protocol):
    """The images of one chunk being optimized, as a recipe represents them."""

    params: list[torch.Tensor]

    def network_input(self, step: int) -> torch.Tensor:
        """What the network gets at ``step`` (in the autograd graph of ``params``)."""

    def final_input(self) -> torch.Tensor:
        """What the network gets for the finished images (no random transforms)."""

    def pictures(self) -> torch.Tensor:
        """The finished images, (K, h, w, 3) uint8 on the model's device."""


@dataclass(frozen=True)
class Recipe:
    """A filter-visualization recipe; ``ascent.ascend`` runs any of them."""

    name: str
    steps: int
    #: positions left out at the border of the channel objective
    border: int
    #: (model, requested size or None) → the optimized image's (height, width)
    image_size: Callable[[Model, int | None], Size]
    #: (model, image size) → the size the network sees
    network_size: Callable[[Model, Size], Size]
    #: (model, per-image generators, image size, steps) → the chunk's images
    start: Callable[[Model, Sequence[torch.Generator], Size, int], ImageBatch]
    #: params → optimizer (it minimizes minus the objective)
    optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer]


def _param_dtype(model: Model) -> torch.dtype:
    """Optimize in the model's dtype, but never below float32."""
    return model.dtype if model.dtype in (torch.float32, torch.float64) else torch.float32


# -- chollet -----------------------------------------------------------------------------------
class NormalizedAscent(torch.optim.Optimizer):
    """Plain steps of ``lr`` along the gradient L2-normalized per image (``tf.math.l2_normalize``).

    Descends the loss (pass minus the objective to ascend it).
    """

    def __init__(self, params: list[torch.Tensor], lr: float = 10.0, epsilon: float = 1e-12):
        super().__init__(params, {"lr": lr, "epsilon": epsilon})

    @torch.no_grad()
    def step(self, closure: Callable | None = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                square_sum = g.square().sum(dim=tuple(range(1, g.ndim)), keepdim=True)
                p.sub_(g * square_sum.clamp(min=group["epsilon"]).rsqrt(), alpha=group["lr"])


class _NetworkInputImages:
    """Chollet's: the network input itself is optimized."""

    def __init__(self, model: Model, generators: Sequence[torch.Generator], size: Size):
        dtype = _param_dtype(model)
        noise = torch.stack([
            torch.rand((*size, 3), generator=g, device=model.device, dtype=torch.float32)
            for g in generators
        ])
        x = (0.4 + 0.2 * noise).to(dtype)  # uniform in [0.4, 0.6], channels-last as in the book
        x = model.to_network_layout(x)
        self.model = model
        self.x = x.requires_grad_(True)
        self.params = [self.x]

    def network_input(self, step: int) -> torch.Tensor:
        return self.x.to(self.model.dtype)

    def final_input(self) -> torch.Tensor:
        return self.x.detach().to(self.model.dtype)

    def pictures(self) -> torch.Tensor:
        x = self.model.nhwc(self.x.detach()).float()
        flat = x.flatten(1)
        mean = flat.mean(dim=1)[:, None, None, None]
        std = flat.std(dim=1, correction=0)[:, None, None, None]
        img = ((x - mean) / std * 64 + 128).clamp(0, 255).to(torch.uint8)
        ch, cw = img.shape[1] // 8, img.shape[2] // 8
        return img[:, ch : img.shape[1] - ch, cw : img.shape[2] - cw]


def _chollet_size(model: Model, size: int | None) -> Size:
    if model.fixed_input_size:
        if size is not None and (size, size) != tuple(model.input_size):
            raise ModelError(
                f"{model.name} only takes {model.input_size[0]}x{model.input_size[1]} inputs, "
                f"and the chollet recipe optimizes the input itself; leave size out (not {size})"
            )
        return tuple(model.input_size)
    return (size or 200, size or 200)


CHOLLET = Recipe(
    name="chollet",
    steps=30,
    border=2,
    image_size=_chollet_size,
    network_size=lambda model, size: size,
    start=lambda model, generators, size, steps: _NetworkInputImages(model, generators, size),
    optimizer=lambda params: NormalizedAscent(params, lr=10.0),
)


# -- lucid -------------------------------------------------------------------------------------
class _FourierImages:
    """Lucid's: a decorrelated Fourier image, transformed, through the model's preprocessing."""

    def __init__(self, model: Model, generators: Sequence[torch.Generator], size: Size,
                 steps: int, out_size: Size, augmentation: Augmentation):
        self.model = model
        self.out_size = out_size
        self.augmentation = augmentation
        dtype = _param_dtype(model)
        self.params, spectrum_image = fft_image(generators, size, device=model.device, dtype=dtype)
        self.image = to_valid_rgb(spectrum_image, decorrelate=True)
        maps = augmentation.sampling_maps(generators, steps, model.device)
        self.thetas = augmentation.thetas(maps, size).to(dtype)

    def _to_network(self, pixels: torch.Tensor) -> torch.Tensor:
        rgb = (pixels * 255.0).to(self.model.dtype).permute(0, 2, 3, 1)
        return self.model.prepare(rgb)

    def network_input(self, step: int) -> torch.Tensor:
        pixels = self.augmentation(self.image(), self.thetas[:, step], self.out_size)
        return self._to_network(pixels)

    def final_input(self) -> torch.Tensor:
        pixels = self.image()
        if tuple(pixels.shape[-2:]) != self.out_size:
            pixels = F.interpolate(pixels, size=self.out_size, mode="bilinear", align_corners=False)
        return self._to_network(pixels)

    def pictures(self) -> torch.Tensor:
        pixels = self.image().detach().permute(0, 2, 3, 1)
        return (pixels.float() * 255.0).round().clamp(0, 255).to(torch.uint8)


def _lucid_network_size(model: Model, size: Size) -> Size:
    """The model's size if it is fixed; else small images are upsampled to it, as Lucent does."""
    if model.fixed_input_size:
        return tuple(model.input_size)
    return (max(size[0], model.input_size[0]), max(size[1], model.input_size[1]))


def _lucid_start(model: Model, generators: Sequence[torch.Generator], size: Size,
                 steps: int) -> _FourierImages:
    augmentation = Augmentation(standard_transforms(), pad=12, pad_value=0.5)
    out_size = _lucid_network_size(model, size)
    return _FourierImages(model, generators, size, steps, out_size, augmentation)


LUCID = Recipe(
    name="lucid",
    steps=512,
    border=0,
    image_size=lambda model, size: (size or 128, size or 128),
    network_size=_lucid_network_size,
    start=_lucid_start,
    optimizer=lambda params: torch.optim.Adam(params, lr=0.05),
)

RECIPES: dict[str, Recipe] = {"chollet": CHOLLET, "lucid": LUCID}


def get_recipe(recipe: str | Recipe) -> Recipe:
    if isinstance(recipe, Recipe):
        return recipe
    try:
        return RECIPES[recipe]
    except KeyError:
        raise ModelError(
            f"unknown recipe {recipe!r}; use one of {', '.join(RECIPES)}"
        ) from None
