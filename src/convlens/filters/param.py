"""Image parameterizations, as in Lucid: ``(params, image_fn)`` pairs.

``image_fn()`` rebuilds the images (K, 3, H, W) from the optimized ``params``. Every image draws
its starting values from its own ``torch.Generator``, so an image does not depend on which other
images share its batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = [
    "COLOR_CORRELATION_SVD_SQRT", "ImageFn", "decorrelate_colors", "fft_image", "pixel_image",
    "to_valid_rgb",
]

ImageFn = Callable[[], torch.Tensor]

#: Lucid's square root of the ImageNet colour correlation matrix (from its SVD).
COLOR_CORRELATION_SVD_SQRT = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)


def _normal(
    generators: Sequence[torch.Generator], shape: tuple[int, ...], sd: float,
    device: torch.device, dtype: torch.dtype,
) -> torch.Tensor:
    noise = torch.stack([
        torch.randn(shape, generator=g, device=device, dtype=torch.float32) for g in generators
    ])
    return (noise * sd).to(dtype)


def pixel_image(
    generators: Sequence[torch.Generator], size: tuple[int, int], *, sd: float = 0.01,
    device: torch.device, dtype: torch.dtype = torch.float32,
) -> tuple[list[torch.Tensor], ImageFn]:
    """Plain pixels (K, 3, H, W), started from N(0, sd)."""
    pixels = _normal(generators, (3, *size), sd, device, dtype).requires_grad_(True)
    return [pixels], lambda: pixels


def _frequencies(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    fy = torch.fft.fftfreq(h, device=device, dtype=dtype)[:, None]
    fx = torch.fft.rfftfreq(w, device=device, dtype=dtype)[None, :]
    return (fx * fx + fy * fy).sqrt()


def fft_image(
    generators: Sequence[torch.Generator], size: tuple[int, int], *, sd: float = 0.01,
    decay_power: float = 1.0, device: torch.device, dtype: torch.dtype = torch.float32,
) -> tuple[list[torch.Tensor], ImageFn]:
    """Lucid's Fourier parameterization: a spectrum scaled by 1/f^decay_power (K, 3, H, W)."""
    h, w = size
    freqs = _frequencies(h, w, device, dtype)
    scale = 1.0 / freqs.clamp(min=1.0 / max(h, w)) ** decay_power
    scale = scale[None, None, :, :, None]
    spectrum = _normal(generators, (3, *freqs.shape, 2), sd, device, dtype).requires_grad_(True)

    def image() -> torch.Tensor:
        complex_spectrum = torch.view_as_complex(scale * spectrum)
        return torch.fft.irfftn(complex_spectrum, s=(h, w), norm="ortho") / 4.0

    return [spectrum], image


def decorrelate_colors(image: torch.Tensor) -> torch.Tensor:
    """Lucid's colour decorrelation of (K, 3, H, W): decorrelated space → RGB (before the mean)."""
    matrix = torch.tensor(COLOR_CORRELATION_SVD_SQRT, device=image.device, dtype=image.dtype)
    matrix = matrix / matrix.norm(dim=0).max()
    return torch.einsum("ij,kjhw->kihw", matrix, image)


def to_valid_rgb(image_fn: ImageFn, *, decorrelate: bool = True) -> ImageFn:
    """Images in [0, 1]: optional colour decorrelation, then a sigmoid."""

    def image() -> torch.Tensor:
        x = image_fn()
        if decorrelate:
            x = decorrelate_colors(x)
        return torch.sigmoid(x)

    return image
