"""Transformation robustness (Lucid's standard transforms), drawn independently for each image.

Each random transform is a sampling map (output pixel → source pixel, 3x3, offsets from the image
centre). A :class:`Augmentation` pads the images, composes the maps of its transforms, and warps
the whole batch with one ``affine_grid`` / ``grid_sample`` call (one interpolation, on the device).
All random numbers of a run are drawn up front, per image, from that image's generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "Augmentation", "RandomTransform", "jitter", "random_rotate", "random_scale",
    "standard_transforms",
]


@dataclass(frozen=True)
class RandomTransform:
    """A random geometric transform: ``draws`` uniforms per image and step → a 3x3 sampling map.

    ``crop`` is how many pixels of the view it costs (a jitter of ``d`` crops ``d`` pixels, as a
    Lucid jitter does).
    """

    name: str
    draws: int
    sampling_map: Callable[[torch.Tensor], torch.Tensor]
    crop: int = 0


def _eye(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    return torch.eye(3, device=like.device, dtype=like.dtype).expand(*shape, 3, 3).clone()


def _choose(values: Sequence[float], u: torch.Tensor) -> torch.Tensor:
    table = torch.tensor(list(values), device=u.device, dtype=u.dtype)
    index = (u * len(values)).long().clamp(max=len(values) - 1)
    return table[index]


def jitter(d: int) -> RandomTransform:
    """A random shift by a whole number of pixels in [0, d) - (d - 1) / 2, on each axis."""

    def sampling_map(u: torch.Tensor) -> torch.Tensor:
        shift = (u * d).floor().clamp(max=d - 1) - (d - 1) / 2
        m = _eye(u.shape[:-1], u)
        m[..., 0, 2] = shift[..., 0]
        m[..., 1, 2] = shift[..., 1]
        return m

    return RandomTransform(f"jitter({d})", 2, sampling_map, crop=d)


def random_scale(scales: Sequence[float]) -> RandomTransform:
    """A zoom by one of ``scales`` (> 1 enlarges), about the centre."""

    def sampling_map(u: torch.Tensor) -> torch.Tensor:
        s = _choose(scales, u[..., 0])
        m = _eye(u.shape[:-1], u)
        m[..., 0, 0] = 1 / s
        m[..., 1, 1] = 1 / s
        return m

    return RandomTransform(f"random_scale({min(scales):g}..{max(scales):g})", 1, sampling_map)


def random_rotate(degrees: Sequence[float]) -> RandomTransform:
    """A rotation by one of ``degrees`` about the centre."""

    def sampling_map(u: torch.Tensor) -> torch.Tensor:
        angle = _choose(degrees, u[..., 0]) * (math.pi / 180)
        cos, sin = angle.cos(), angle.sin()
        m = _eye(u.shape[:-1], u)
        m[..., 0, 0], m[..., 0, 1] = cos, -sin
        m[..., 1, 0], m[..., 1, 1] = sin, cos
        return m

    return RandomTransform(f"random_rotate({min(degrees):g}..{max(degrees):g})", 1, sampling_map)


def standard_transforms() -> tuple[RandomTransform, ...]:
    """Lucid's: jitter 8, scale 0.9..1.1, rotate -10..10 degrees (0 more often), jitter 4."""
    return (
        jitter(8),
        random_scale([1 + (i - 5) / 50 for i in range(11)]),
        random_rotate([*range(-10, 11), *[0] * 5]),
        jitter(4),
    )


class Augmentation:
    """Pad, then random transforms drawn per image and step, resampled to the network's size.

    Args:
        transforms: applied in order (the first one acts on the padded image).
        pad: pixels of constant ``pad_value`` added on every side first (Lucid: 12, 0.5).
    """

    def __init__(
        self, transforms: Sequence[RandomTransform], pad: int = 12, pad_value: float = 0.5
    ):
        self.transforms = tuple(transforms)
        self.pad = pad
        self.pad_value = pad_value
        self.draws = sum(t.draws for t in self.transforms)
        self.crop = sum(t.crop for t in self.transforms)

    def sampling_maps(self, generators: Sequence[torch.Generator], steps: int,
                      device: torch.device) -> torch.Tensor:
        """(K, steps, 3, 3) sampling maps in pixel offsets, from each image's generator."""
        u = torch.stack([
            torch.rand((steps, self.draws), generator=g, device=device, dtype=torch.float32)
            for g in generators
        ])
        total = _eye(u.shape[:-1], u)
        start = 0
        for transform in self.transforms:
            total = total @ transform.sampling_map(u[..., start : start + transform.draws])
            start += transform.draws
        return total

    def thetas(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``affine_grid`` matrices (..., 2, 3) for square images of side ``size[0]`` (unpadded)."""
        padded = size[0] + 2 * self.pad
        view = padded - self.crop
        to_pixels = torch.diag(maps.new_tensor([view / 2, view / 2, 1.0]))
        to_normalized = torch.diag(maps.new_tensor([2 / padded, 2 / padded, 1.0]))
        return (to_normalized @ maps @ to_pixels)[..., :2, :]

    def __call__(self, images: torch.Tensor, theta: torch.Tensor,
                 out_size: tuple[int, int]) -> torch.Tensor:
        """Warp (K, C, S, S) images with per-image ``theta`` (K, 2, 3) to (K, C, *out_size)."""
        if self.pad:
            images = F.pad(images, [self.pad] * 4, mode="constant", value=self.pad_value)
        grid = F.affine_grid(
            theta.to(images.dtype), [images.shape[0], images.shape[1], *out_size],
            align_corners=False,
        )
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)
