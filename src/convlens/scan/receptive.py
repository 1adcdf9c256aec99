"""Receptive fields: which input pixels a position of a layer's output can see.

For a chain of convolutions and poolings (the seed's model, VGG, EfficientNet's main path: global
squeeze-excitation vectors and residual additions do not widen it) the field is worked out from the
layers' kernels, strides, paddings and dilations. A PyTorch network's branches (a ResNet's
shortcuts, a DenseNet's concatenations) are read from the autograd graph of one forward pass
instead: its convolution, pooling and padding nodes carry their geometry, and where branches meet
(an addition, a channel concatenation) the field is their union. Where neither explains a layer
(an operation that moves pixels in a way not known here: resizing, reshaping), the box is the
support of the gradient of the layer's central position with respect to the input (on a few
random images), moved by the layer's stride to each position.
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


#: the autograd nodes that keep every pixel where it is (pointwise, per channel, copies)
_POINTWISE = frozenset(f"{name}Backward{n}" for name, n in (
    ("Add", 0), ("Add", 1), ("Sub", 0), ("Sub", 1), ("Mul", 0), ("Mul", 1), ("Div", 0),
    ("Div", 1), ("Neg", 0), ("Relu", 0), ("Hardtanh", 0), ("Sigmoid", 0), ("Silu", 0),
    ("Gelu", 0), ("Tanh", 0), ("Elu", 0), ("LeakyRelu", 0), ("Hardswish", 0),
    ("Hardsigmoid", 0), ("Mish", 0), ("Softplus", 0), ("Clamp", 0), ("Clamp", 1),
    ("ClampMin", 0), ("ClampMax", 0), ("Threshold", 0), ("Clone", 0), ("ToCopy", 0),
    ("Alias", 0), ("NativeBatchNorm", 0), ("CudnnBatchNorm", 0), ("MiopenBatchNorm", 0),
))
#: the nodes that can reduce over the positions (a global vector when their output has none)
_REDUCING = frozenset({
    "MeanBackward0", "MeanBackward1", "SumBackward0", "SumBackward1", "AmaxBackward0",
    "MaxBackward1", "AdaptiveAvgPool2DBackward0", "AdaptiveMaxPool2DBackward0",
})
#: the fields of a global vector (the whole image: multiplied back onto a map, as
#: squeeze-excitation does, it does not widen the map's field) and of an unknown operation
_GLOBAL, _UNKNOWN = "global", "unknown"


def graph_fields(model: Model, layers: list[LayerInfo]) -> dict[str, tuple[Axis, Axis] | None]:
    """Each layer's (rows, columns) geometry read from the autograd graph of one forward pass of
    a PyTorch (NCHW) network, or None where the graph holds an operation not known here."""
    h, w = model.input_size
    if model.layout != "NCHW" or not layers:
        return {info.name: None for info in layers}
    pixels = torch.zeros(1, h, w, 3, device=model.device, dtype=model.dtype)
    with torch.enable_grad():
        start = model.prepare(pixels).detach().requires_grad_(True)
        if start.ndim != 4 or tuple(start.shape[2:]) != (h, w):
            return {info.name: None for info in layers}
        with model.capture(layers, stop_early=True, autograd=True) as cap:
            cap.run(start)
            nodes = {name: out.grad_fn for name, out in cap.outputs.items()}
    walked: dict[Any, Any] = {}
    out: dict[str, tuple[Axis, Axis] | None] = {}
    for info in layers:
        node = nodes.get(info.name)
        field = _walk(node, start, walked) if node is not None else None
        if field == _GLOBAL:
            field = (Axis(0, 0, h), Axis(0, 0, w))
        out[info.name] = field if isinstance(field, tuple) else None
    return out


def _walk(root: Any, start: torch.Tensor, walked: dict[Any, Any]) -> Any:
    """The field of the output of autograd node ``root`` (children first, without recursion;
    ``walked`` keeps every node's field): (rows, columns), _GLOBAL, _UNKNOWN or None (it does not
    depend on ``start``)."""
    stack = [(root, False)]
    while stack:
        node, ready = stack.pop()
        if node in walked:
            continue
        children = [child for child, _ in node.next_functions]
        if not ready:
            stack.append((node, True))
            stack += [(c, False) for c in children if c is not None and c not in walked]
            continue
        inputs = [walked[c] if c is not None else None for c in children]
        try:
            walked[node] = _node_field(node, inputs, start)
        except AttributeError:  # a node without the saved fields this torch had: not known
            walked[node] = _UNKNOWN
    return walked[root]


def _node_field(node: Any, inputs: list[Any], start: torch.Tensor) -> Any:
    name = node.name()
    if name.endswith("AccumulateGrad"):
        return (Axis(), Axis()) if node.variable is start else None
    connected = [field for field in inputs if field is not None]
    if not connected:
        return None
    if _UNKNOWN in connected:
        return _UNKNOWN
    if all(field == _GLOBAL for field in connected):
        return _GLOBAL  # whatever is computed from global vectors
    if name in _REDUCING:
        shape = node._input_metadata[0].shape
        return _GLOBAL if len(shape) <= 2 or (len(shape) == 4 and shape[2] * shape[3] == 1) \
            else _UNKNOWN
    if name in ("ConvolutionBackward0", "MaxPool2DWithIndicesBackward0", "AvgPool2DBackward0"):
        return _through(node, name, inputs[0])
    if name == "ConstantPadNdBackward0":
        pad = [*node._saved_pad, 0, 0, 0]
        if not isinstance(inputs[0], tuple) or len(node._saved_pad) > 4:
            return _UNKNOWN
        rows, cols = inputs[0]
        return rows.then(1, 1, pad[2], 1), cols.then(1, 1, pad[0], 1)
    if name in _POINTWISE or (name == "CatBackward0" and node._saved_dim in (1, -3)):
        return _union(inputs)
    return _UNKNOWN


def _through(node: Any, name: str, field: Any) -> Any:
    """The field after a convolution or pooling node (``field``: its input's)."""
    if field == _GLOBAL or not isinstance(field, tuple):
        return _UNKNOWN if field is None else field
    if name == "ConvolutionBackward0":
        if node._saved_transposed:
            return _UNKNOWN
        kernel = tuple(node._saved_weight.shape[2:])
        dilation = tuple(node._saved_dilation)
    else:
        kernel = tuple(node._saved_kernel_size)
        dilation = tuple(getattr(node, "_saved_dilation", (1, 1)))
    stride, padding = tuple(node._saved_stride) or kernel, tuple(node._saved_padding)
    if not len(kernel) == len(stride) == len(padding) == len(dilation) == 2:
        return _UNKNOWN  # 1-D or 3-D
    rows, cols = field
    return (rows.then(kernel[0], stride[0], padding[0], dilation[0]),
            cols.then(kernel[1], stride[1], padding[1], dilation[1]))


def _union(inputs: list[Any]) -> Any:
    """Where branches meet: the union of their fields (global vectors do not widen them)."""
    fields = [f for f in inputs if isinstance(f, tuple)]
    if not fields:
        return _GLOBAL
    out = []
    for axes in zip(*fields):
        if len({a.jump for a in axes}) > 1:
            return _UNKNOWN
        first = min(a.start for a in axes)
        last = max(a.start + a.size for a in axes)
        out.append(Axis(axes[0].jump, first, last - first))
    return tuple(out)


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


def receptive_fields(model: Model, layers: list[LayerInfo]) -> dict[str, tuple[Axis, Axis]]:
    """Each layer's (rows, columns) geometry: output position (y, x) sees the input box
    :func:`field_box` gives.

    Read from the autograd graph (PyTorch), else from the chain of layers (the chain takes a
    branch that keeps the map's size for the next layer of the main path); where neither
    explains a layer, the gradient's support at its central position, moved by the layer's
    stride (input size / output size) to each position.
    """
    fields = graph_fields(model, layers)
    if any(field is None for field in fields.values()):
        chain = chain_fields(model, layers)
        fields = {k: chain[k] if v is None else v for k, v in fields.items()}
    h, w = model.input_size
    out = {}
    for info in layers:
        geometry = fields[info.name]
        if geometry is None:
            _, oh, ow, _ = info.output_shape
            cy, cx = oh // 2, ow // 2
            x0, y0, x1, y1 = gradient_box(model, info, cy, cx)
            jy, jx = max(1, round(h / oh)), max(1, round(w / ow))
            geometry = (Axis(jy, y0 - cy * jy, y1 - y0 + 1), Axis(jx, x0 - cx * jx, x1 - x0 + 1))
        out[info.name] = geometry
    return out


def boxes(fields: dict[str, tuple[Axis, Axis]], positions: dict[str, np.ndarray],
          input_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Input boxes (P, 4) of the (P, 2) (y, x) positions of each layer (``fields``: its
    :func:`receptive_fields`)."""
    return {name: field_box(fields[name], yx[:, 0], yx[:, 1], input_size).astype(np.int32)
            for name, yx in positions.items()}
