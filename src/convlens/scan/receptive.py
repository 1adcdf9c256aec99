"""Receptive fields: which input pixels a position of a layer's output can see.

For a chain of convolutions and poolings (the seed's model, VGG, EfficientNet's main path: global
squeeze-excitation vectors and residual additions do not widen it) the field is worked out from the
layers' kernels, strides, paddings and dilations. Where the chain does not explain a layer's
output size (a ResNet's downsampling branch), the box is the support of the gradient of the
layer's central position with respect to the input (on a few random images), moved by the
layer's stride to each position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from ..models import LayerInfo, Model

Box = tuple[int, int, int, int]  # x0, y0, x1, y1, corners included


@dataclass(frozen=True)
class Axis:
    """Along one axis, output position i sees input [i * jump + start, ... + size - 1]."""

    jump: int = 1
    start: int = 0
    size: int = 1

    def then(self, kernel: int, stride: int, pad: int, dilation: int) -> Axis:
        extent = dilation * (kernel - 1) + 1
        return Axis(
            self.jump * stride, self.start - pad * self.jump, self.size + (extent - 1) * self.jump
        )


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return (int(value[0]), int(value[-1]))
    return (int(value), int(value))


def _geometry(module: Any) -> tuple[tuple[int, int], tuple[int, int], Any, tuple[int, int]] | None:
    """(kernel, stride, padding, dilation) of a spatial conv / pooling layer, else None."""
    kernel = getattr(module, "kernel_size", None) or getattr(module, "pool_size", None)
    if kernel is None:
        return None
    stride = getattr(module, "stride", None) or getattr(module, "strides", None) or kernel
    dilation = getattr(module, "dilation", None) or getattr(module, "dilation_rate", None) or 1
    padding = getattr(module, "padding", 0)
    return _pair(kernel), _pair(stride), padding, _pair(dilation)


def _padding(padding: Any, size_in: int, size_out: int, kernel: int, stride: int,
             dilation: int, axis: int) -> int:
    """Padding before the first pixel along one axis (torch ints/'same'/'valid', Keras strings)."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0
        extent = dilation * (kernel - 1) + 1
        total = max((size_out - 1) * stride + extent - size_in, 0)
        return total // 2
    return _pair(padding)[axis]


def chain_fields(model: Model, layers: list[LayerInfo]) -> dict[str, tuple[Axis, Axis] | None]:
    """Each layer's (rows, columns) geometry from the chain of spatial layers before it, or None
    where the chain does not reproduce the layer's output size."""
    wanted = {info.name for info in layers}
    size = tuple(model.input_size)
    rows, cols = Axis(), Axis()
    broken = False
    out: dict[str, tuple[Axis, Axis] | None] = {}
    for info in model.layers():
        shape = info.output_shape
        if shape is not None and len(shape) == 4 and shape[1] * shape[2] == 1:
            continue  # a global vector (squeeze-excitation, global pooling): off the spatial path
        geometry = _geometry(info.module) if info.kind in ("conv", "pool") else None
        if geometry is not None and shape is not None and len(shape) == 4 and not broken:
            (kh, kw), (sh, sw), padding, (dh, dw) = geometry
            out_size = (shape[1], shape[2])
            ph = _padding(padding, size[0], out_size[0], kh, sh, dh, 0)
            pw = _padding(padding, size[1], out_size[1], kw, sw, dw, 1)
            if _out_size(size, (ph, pw), (kh, kw), (sh, sw), (dh, dw)) != out_size:
                # TF-style "same" padding computed at run time (Conv2dSame, ported models)
                ph = _padding("same", size[0], out_size[0], kh, sh, dh, 0)
                pw = _padding("same", size[1], out_size[1], kw, sw, dw, 1)
                same = (-(-size[0] // sh), -(-size[1] // sw))  # "same": ceil(size / stride)
                if same != out_size and not _ceil_mode(info.module, size, out_size):
                    broken = True
            rows, cols = rows.then(kh, sh, ph, dh), cols.then(kw, sw, pw, dw)
            size = out_size
        elif shape is not None and len(shape) == 4 and tuple(shape[1:3]) != size:
            broken = True  # the spatial size changed without a known kernel
        if info.name in wanted:
            out[info.name] = None if broken else (rows, cols)
    return out


def _out_size(size: tuple[int, ...], pad: tuple[int, int], kernel: tuple[int, int],
              stride: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    return tuple(  # type: ignore[return-value]
        (size[i] + 2 * pad[i] - (dilation[i] * (kernel[i] - 1) + 1)) // stride[i] + 1
        for i in (0, 1)
    )


def _ceil_mode(module: Any, size: tuple[int, ...], out_size: tuple[int, int]) -> bool:
    return bool(getattr(module, "ceil_mode", False))


def field_box(geometry: tuple[Axis, Axis], y: Any, x: Any, input_size: tuple[int, int]) -> Any:
    """The input box (x0, y0, x1, y1) of output position (y, x), clipped to the image; ``y`` and
    ``x`` may be arrays (then an (P, 4) array)."""
    rows, cols = geometry
    y0 = np.asarray(y) * rows.jump + rows.start
    x0 = np.asarray(x) * cols.jump + cols.start
    h, w = input_size
    box = np.stack([
        np.maximum(x0, 0), np.maximum(y0, 0), np.minimum(x0 + cols.size - 1, w - 1),
        np.minimum(y0 + rows.size - 1, h - 1),
    ], axis=-1)
    return tuple(int(v) for v in box) if box.ndim == 1 else box


def gradient_box(
    model: Model, info: LayerInfo, y: int, x: int, *, trials: int = 4, seed: int = 0
) -> Box:
    """The bounding box of the input pixels whose gradient reaches position (y, x) of ``info``
    (every channel), on ``trials`` random images: the support of the receptive field."""
    generator = torch.Generator().manual_seed(seed)
    h, w = model.input_size
    pixels = (torch.rand(trials, h, w, 3, generator=generator) * 255).to(
        device=model.device, dtype=model.dtype
    )
    pixels.requires_grad_(True)
    with model.capture([info], stop_early=True, autograd=True) as cap:
        cap.run(model.prepare(pixels))
        point = model.nchw(cap.outputs[info.name])[:, :, y, x]
        (grad,) = torch.autograd.grad(point.abs().sum(), pixels)
    support = grad.abs().sum(dim=(0, 3)).cpu().numpy() > 0
    ys, xs = np.nonzero(support)
    if not len(ys):
        return (0, 0, w - 1, h - 1)
    return (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def boxes(
    model: Model, layers: list[LayerInfo], positions: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Input boxes (P, 4) of the (P, 2) (y, x) positions of each layer.

    Where the layer geometry does not explain a layer, its box is the gradient's support at the
    central position, moved by the layer's stride (input size / output size) to each position.
    """
    fields = chain_fields(model, layers)
    h, w = model.input_size
    by_name = {info.name: info for info in layers}
    out = {}
    for name, yx in positions.items():
        geometry = fields.get(name)
        if geometry is None:
            info = by_name[name]
            _, oh, ow, _ = info.output_shape
            cy, cx = oh // 2, ow // 2
            x0, y0, x1, y1 = gradient_box(model, info, cy, cx)
            jy, jx = max(1, round(h / oh)), max(1, round(w / ow))
            geometry = (Axis(jy, y0 - cy * jy, y1 - y0 + 1), Axis(jx, x0 - cx * jx, x1 - x0 + 1))
        out[name] = field_box(geometry, yx[:, 0], yx[:, 1], (h, w)).astype(np.int32)
    return out
