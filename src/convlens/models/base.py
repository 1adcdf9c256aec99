"""One model wrapper, one interface, whatever the framework.

A :class:`Model` knows its layers (found by tracing one forward pass), how to turn images into the
tensor its network takes, and how to run it. The views (activations, CAM, filters) are built on it.
Framework specifics live in two small subclasses: ``TorchModel`` and ``KerasModel``.
"""

from __future__ import annotations

import fnmatch
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..activations.result import Activations
from ..capture import Capture, first_tensor
from ..errors import LayerNotFoundError, ModelError
from ..images import ImageLike, check_pixels, load_image, resize

if TYPE_CHECKING:
    from ..cam import CamResult
    from ..filters import FilterResult

#: Layer kinds, as ``Model.layers()`` reports them.
KINDS = (
    "conv", "pool", "linear", "norm", "activation", "dropout", "reshape", "merge",
    "preprocess", "augment", "block", "other",
)
#: What ``activations()`` captures by default: the seed's Conv2D and MaxPooling2D layers.
DEFAULT_ACTIVATION_KINDS = ("conv", "pool")

Images = ImageLike | Sequence[ImageLike] | torch.Tensor


@dataclass(frozen=True)
class LayerInfo:
    """One call of one layer in the forward pass.

    ``name`` is the layer's path in the model (``"layer4.1.conv1"``, Keras: ``"conv2d_1"``);
    a module called several times in one pass gets one entry per call, ``name#1``, ``name#2``...
    ``output_shape`` is channels-last, as ``activations()`` returns it (batch dimension 1).
    """

    name: str
    kind: str
    type: str
    output_shape: tuple[int, ...] | None
    module: Any = field(repr=False, compare=False)
    module_name: str = ""
    call: int = 0
    is_leaf: bool = True
    order: int = 0
    #: a later op modifies this output in place (an in-place ReLU): captures must copy it.
    overwritten: bool = False

    @property
    def spatial(self) -> bool:
        """True when the output is a 4-D (N, H, W, C) map with more than one position."""
        s = self.output_shape
        return s is not None and len(s) == 4 and s[1] * s[2] > 1

    @property
    def channels(self) -> int | None:
        return None if self.output_shape is None else self.output_shape[-1]


@dataclass(frozen=True)
class Prediction:
    """One class of a model's top-k answer."""

    index: int
    name: str
    probability: float

    def __str__(self) -> str:
        return f"{self.name} ({self.index}): {self.probability:.1%}"


Preprocess = Callable[[torch.Tensor], torch.Tensor]


def _imagenet(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406], device=x.device, dtype=x.dtype)
    std = torch.tensor([0.229, 0.224, 0.225], device=x.device, dtype=x.dtype)
    return (x / 255.0 - mean) / std


#: Named preprocessings; each takes float pixels 0..255, channels-last (N, H, W, 3).
PREPROCESSING: dict[str, Preprocess] = {
    "raw": lambda x: x,
    "unit": lambda x: x / 255.0,
    "symmetric": lambda x: (x / 255.0 - 0.5) / 0.5,  # EfficientNet-Lite's: -1..1
    "imagenet": _imagenet,
}


def resolve_preprocess(preprocess: str | Preprocess | None, default: str) -> Preprocess:
    if preprocess is None:
        preprocess = default
    if callable(preprocess):
        return preprocess
    try:
        return PREPROCESSING[preprocess]
    except KeyError:
        raise ModelError(
            f"unknown preprocessing {preprocess!r}; use one of {', '.join(PREPROCESSING)} "
            "or a function of a (N, H, W, 3) 0..255 tensor"
        ) from None


class Model(ABC):
    """A trained convnet, wrapped. Build one with :func:`convlens.load_model`.

    Images go in as float pixels 0..255, (H, W, 3) or (N, H, W, 3), paths, or PIL images;
    activations come out channels-last whatever the framework.
    """

    framework: str = ""
    #: memory layout of the network's 4-D tensors: "NCHW" (torch) or "NHWC" (Keras).
    layout: str = "NCHW"

    def __init__(
        self,
        network: torch.nn.Module,
        *,
        name: str,
        preprocess: Preprocess,
        input_size: tuple[int, int],
        class_names: Sequence[str] | None = None,
        output: str = "logits",
    ):
        if output not in ("logits", "probabilities", "sigmoid"):
            raise ModelError(
                f"output must be 'logits', 'probabilities' or 'sigmoid', not {output!r}"
            )
        self.network = network
        self.name = name
        self.preprocess = preprocess
        self.input_size = tuple(input_size)
        self.class_names = list(class_names) if class_names is not None else None
        self.output = output
        self._layers: list[LayerInfo] | None = None

    # -- framework adapters ------------------------------------------------------------------
    @abstractmethod
    def _walk(self) -> Iterator[tuple[str, torch.nn.Module, bool]]:
        """(name, module, is_leaf) for every layer that can be hooked."""

    @abstractmethod
    def _kind(self, module: torch.nn.Module) -> str:
        """The kind of a layer (one of ``KINDS``)."""

    @abstractmethod
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Run the network on prepared inputs (as ``prepare`` makes them), in inference mode."""

    @abstractmethod
    def _to_network_layout(self, x: torch.Tensor) -> torch.Tensor:
        """Channels-last (N, H, W, 3) → the layout the network takes."""

    @contextmanager
    def logit_outputs(self) -> Iterator[None]:
        """Within this block ``forward`` returns pre-activation scores (logits)."""
        yield

    # -- devices and inputs ------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.network.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.network.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def to_pixels(self, images: Images) -> torch.Tensor:
        """Images → float pixels 0..255, (N, H, W, 3), on the model's device and dtype.

        Paths are read at the model's input size; arrays are taken as they are, except that a model
        with a fixed input size gets them resized (bilinear).
        """
        if isinstance(images, torch.Tensor):
            check_pixels(images, "the image tensor")
            x = images
            if x.ndim == 3:
                x = x[None]
        elif isinstance(images, np.ndarray) and images.ndim == 4:
            check_pixels(images, "the image batch")
            x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        else:
            items = images if isinstance(images, (list, tuple)) else [images]
            if not items:
                raise ModelError("no images given")
            arrays = [self._read(item) for item in items]
            shapes = {a.shape for a in arrays}
            if len(shapes) > 1:
                arrays = [resize(a, self.input_size, "bilinear") for a in arrays]
            x = torch.from_numpy(np.stack(arrays))
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ModelError(
                f"images must be (H, W, 3) or (N, H, W, 3) RGB pixels; got shape {tuple(x.shape)}"
            )
        if self.fixed_input_size and tuple(x.shape[1:3]) != self.input_size:
            x = torch.nn.functional.interpolate(
                x.permute(0, 3, 1, 2).float(), size=self.input_size, mode="bilinear",
                align_corners=False, antialias=True,
            ).permute(0, 2, 3, 1)
        return x.to(device=self.device, dtype=self.dtype)

    def _read(self, item: ImageLike) -> np.ndarray:
        if isinstance(item, np.ndarray):
            return load_image(item)
        return load_image(item, size=self.input_size)

    @property
    def fixed_input_size(self) -> bool:
        """Whether the network only takes its declared input size."""
        return False

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (N, H, W, 3) 0..255 → the tensor the network takes (preprocessed, its layout)."""
        return self._to_network_layout(self.preprocess(pixels))

    def inputs(self, images: Images) -> torch.Tensor:
        """Images (any accepted form) → the network's input tensor."""
        return self.prepare(self.to_pixels(images))

    # -- layers ------------------------------------------------------------------------------
    def layers(self, *, include_blocks: bool = False) -> list[LayerInfo]:
        """Every layer call in forward order: name, kind, output shape (channels-last)."""
        if self._layers is None:
            self._layers = self._trace()
        if include_blocks:
            return list(self._layers)
        return [info for info in self._layers if info.is_leaf]

    def _trace(self) -> list[LayerInfo]:
        walked = list(self._walk())
        if not walked:
            raise ModelError(f"{self.name} has no layers to look at")
        names = {id(m): (n, leaf) for n, m, leaf in walked}
        calls: list[tuple[str, torch.nn.Module, bool, torch.Tensor | None, int]] = []

        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            name, leaf = names[id(module)]
            t = first_tensor(output)
            calls.append((name, module, leaf, t, -1 if t is None else t._version))

        handles = [m.register_forward_hook(hook) for _, m, _ in walked]
        try:
            dummy = torch.zeros(1, *self.input_size, 3, device=self.device, dtype=self.dtype)
            with torch.no_grad():
                self.forward(self.prepare(dummy))
        except Exception as err:
            raise ModelError(
                f"could not run {self.name} on a {self.input_size} image to list its layers: "
                f"{type(err).__name__}: {err}. Pass input_size=(H, W) to load_model if it "
                "expects another size"
            ) from err
        finally:
            for h in handles:
                h.remove()
        count: dict[str, int] = {}
        for name, *_ in calls:
            count[name] = count.get(name, 0) + 1
        seen: dict[str, int] = {}
        infos = []
        for order, (name, module, leaf, tensor, version) in enumerate(calls):
            call = seen.get(name, 0)
            seen[name] = call + 1
            label = f"{name}#{call + 1}" if count[name] > 1 else name
            shape = None if tensor is None else tuple(tensor.shape)
            infos.append(
                LayerInfo(
                    name=label, kind=self._kind(module), type=type(module).__name__,
                    output_shape=self._channels_last_shape(shape), module=module,
                    module_name=name, call=call, is_leaf=leaf, order=order,
                    overwritten=tensor is not None and tensor._version != version,
                )
            )
        return infos

    def _channels_last_shape(self, shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if shape is not None and len(shape) == 4 and self.layout == "NCHW":
            n, c, h, w = shape
            return (n, h, w, c)
        return shape

    def layer(self, name: str) -> LayerInfo:
        """One layer call by exact name (``"_swish#2"``)."""
        found = self.resolve(name)
        if len(found) > 1:
            raise ModelError(
                f"{name!r} names {len(found)} layer calls ({', '.join(i.name for i in found)}); "
                "pick one of them"
            )
        return found[0]

    def resolve(self, selector: str | Iterable[str] | None = None) -> list[LayerInfo]:
        """Layers by name, glob (``"layer4.*"``), kind (``"conv"``), or a list of these.

        A module called several times matches all its calls by its plain name. ``None`` selects the
        spatial conv and pooling layers (the seed's choice).
        """
        everything = self.layers(include_blocks=True)
        if selector is None:
            wanted = DEFAULT_ACTIVATION_KINDS
            chosen = [i for i in everything if i.is_leaf and i.kind in wanted and i.spatial]
            if not chosen:
                raise ModelError(
                    f"{self.name} has no layer of kind {'/'.join(wanted)} with a spatial output; "
                    "convlens needs a convolutional network (pass layers=... to pick others)"
                )
            return chosen
        selectors = [selector] if isinstance(selector, str) else list(selector)
        picked: dict[str, LayerInfo] = {}
        for sel in selectors:
            if sel in KINDS:
                hits = [i for i in everything if i.kind == sel and i.is_leaf]
            elif any(ch in sel for ch in "*?["):
                hits = [
                    i for i in everything
                    if fnmatch.fnmatchcase(i.name, sel) or fnmatch.fnmatchcase(i.module_name, sel)
                ]
            else:
                hits = [i for i in everything if i.name == sel] or [
                    i for i in everything if i.module_name == sel
                ]
            if not hits:
                raise LayerNotFoundError(sel, self._all_names(), len(everything))
            for info in hits:
                picked[info.name] = info
        return sorted(picked.values(), key=lambda i: i.order)

    def _all_names(self) -> list[str]:
        infos = self.layers(include_blocks=True)
        return list(dict.fromkeys([i.name for i in infos] + [i.module_name for i in infos]))

    # -- the views ---------------------------------------------------------------------------
    def activations(
        self, images: Images, layers: str | Iterable[str] | None = None, *, batch_size: int = 32
    ) -> Activations:
        """Outputs of the chosen layers (default: conv and pooling) in one forward pass.

        Returns ``{layer name: (N, H, W, C) float32 array}`` in forward order. For torch models
        the arrays are channels-last views of the network's own NCHW memory (no copy).
        """
        chosen = self.resolve(layers)
        x = self.to_pixels(images)
        parts: dict[str, list[np.ndarray]] = {i.name: [] for i in chosen}
        with Capture(self, chosen, stop_early=True) as cap:
            for start in range(0, x.shape[0], batch_size):
                cap.run(self.prepare(x[start : start + batch_size]))
                for name, tensor in cap.outputs.items():
                    array = tensor.float().cpu().numpy()
                    if self.layout == "NCHW" and array.ndim == 4:
                        array = array.transpose(0, 2, 3, 1)  # a channels-last view, no copy
                    parts[name].append(array)
        return Activations(
            (name, arrs[0] if len(arrs) == 1 else np.concatenate(arrs))
            for name, arrs in parts.items()
        )

    def logits(self, images: Images) -> torch.Tensor:
        """The network's output for the images (no autograd)."""
        with torch.no_grad():
            return self.forward(self.inputs(images))

    def probabilities(self, images: Images) -> torch.Tensor:
        """Class probabilities (N, classes); a sigmoid model gives (N, 2): [1 - p, p]."""
        out = self.logits(images).float()
        if out.ndim != 2:
            raise ModelError(
                f"{self.name} returns shape {tuple(out.shape)}; predictions need (N, classes)"
            )
        if self.output == "sigmoid":
            p = out[:, :1] if out.shape[1] == 1 else out
            return torch.cat([1 - p, p], dim=1)
        if self.output == "probabilities":
            return out
        return out.softmax(dim=1)

    def class_name(self, index: int) -> str:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return f"class {index}"

    def predict(self, images: Images, top: int = 5) -> list[list[Prediction]]:
        """Top-``top`` classes per image: (index, name, probability)."""
        probs = self.probabilities(images)
        k = min(top, probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        return [
            [Prediction(int(i), self.class_name(int(i)), float(v)) for v, i in zip(vs, ix)]
            for vs, ix in zip(values.tolist(), indices.tolist())
        ]

    def cam(self, images: Images, method: str = "gradcam", **options: Any) -> CamResult:
        """A class activation heatmap; see :func:`convlens.cam.compute_cam`."""
        from ..cam import compute_cam

        return compute_cam(self, images, method=method, **options)

    def filters(self, layer: str, **options: Any) -> FilterResult:
        """Filter visualizations of one layer; see :func:`convlens.filters.visualize_filters`."""
        from ..filters import visualize_filters

        return visualize_filters(self, layer, **options)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r}: {self.framework}, input {self.input_size}, "
            f"{self.parameter_count():,} parameters, on {self.device}>"
        )
