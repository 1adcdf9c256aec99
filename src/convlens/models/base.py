"""One model wrapper, one interface, whatever the framework: the adapter layer's contract.

A :class:`Model` knows its layers (found by tracing one forward pass), how to turn images into the
tensor its network takes, and how to run it with taps on chosen layers (``capture``) or with a
layer's output replaced (``replace_output``). Those taps, the copy / re-initialization operations
and the layout helpers are everything the views need; each framework implements them in its own
subclass (``TorchModel``; ``KerasModel``). Tensors leave the adapter as torch tensors.

The views (activations, CAM, filters) attach themselves through :mod:`convlens.models.views`, so
this layer never imports them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ..errors import ModelError
from ..images import ImageLike, check_pixels, load_image, resize
from .layers import LayerCall, LayerInfo, label_calls, select
from .preprocess import Preprocess
from .views import ViewMethods

__all__ = ["Images", "LayerCapture", "Model", "Prediction"]

Images = ImageLike | Sequence[ImageLike] | torch.Tensor
class LayerCapture(Protocol):
    """What ``Model.capture`` returns: a context manager that taps one forward pass at a time.

    ``run(inputs)`` runs the network on prepared inputs and returns its output (None when the
    pass was stopped early); ``outputs`` then maps each captured layer's name to its output in the
    network's layout. Outputs of ``grad_from`` layers are autograd leaves (everything before the
    first of them ran without autograd), so ``torch.autograd.grad(score, outputs[name])`` costs
    about the rest of the forward pass; with ``autograd=True`` the whole pass is differentiable
    with respect to the inputs. All taps are removed on exit, whatever happened.
    """

    outputs: dict[str, torch.Tensor]

    def run(self, inputs: torch.Tensor) -> torch.Tensor | None: ...

    def __enter__(self) -> LayerCapture: ...

    def __exit__(self, *exc: object) -> None: ...


@dataclass(frozen=True)
class Prediction:
    """One class of a model's top-k answer."""

    index: int
    name: str
    probability: float

    def __str__(self) -> str:
        return f"{self.name} ({self.index}): {self.probability:.1%}"


class Model(ViewMethods, ABC):
    """A trained convnet, wrapped. Build one with :func:`convlens.load_model`.

    Images go in as float pixels 0..255, (H, W, 3) or (N, H, W, 3), paths, or PIL images;
    activations come out channels-last whatever the framework.
    """

    framework: str = ""
    #: memory layout of the network's 4-D tensors: "NCHW" (torch) or "NHWC" (Keras).
    layout: str = "NCHW"

    def __init__(
        self,
        network: Any,
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

    # -- what each framework implements ------------------------------------------------------
    @abstractmethod
    def _trace_calls(self, inputs: torch.Tensor) -> list[LayerCall]:
        """Every layer call of one forward pass on ``inputs``, in order."""

    @abstractmethod
    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Run the network on prepared inputs (as ``prepare`` makes them), in inference mode."""

    @abstractmethod
    def to_network_layout(self, x: torch.Tensor) -> torch.Tensor:
        """Channels-last (N, H, W, 3) → the layout the network takes."""

    @abstractmethod
    def capture(
        self, layers: Sequence[LayerInfo], *, stop_early: bool = False,
        grad_from: Iterable[LayerInfo] = (), autograd: bool = False,
    ) -> LayerCapture:
        """Taps on ``layers`` for forward passes (see :class:`LayerCapture`).

        ``stop_early`` ends each pass once the last tapped layer has run.
        """

    @abstractmethod
    def replace_output(
        self, info: LayerInfo, replace: Callable[[torch.Tensor], torch.Tensor]
    ) -> AbstractContextManager[None]:
        """Within this block, the call ``info`` outputs ``replace(its output)``."""

    @contextmanager
    def logit_outputs(self) -> Iterator[None]:
        """Within this block ``forward`` returns pre-activation scores (logits) if it can."""
        yield

    @property
    def logit_space(self) -> bool:
        """Whether ``forward`` inside ``logit_outputs()`` returns logits."""
        return self.output == "logits"

    @abstractmethod
    def copy(self, **options: Any) -> Model:
        """An independent copy of the model (its own weights), with ``options`` changed."""

    @abstractmethod
    def weighted_layers(self) -> list[str]:
        """Names of the layers that own trainable weights (their ``module_name``)."""

    @abstractmethod
    def reinitialize(self, names: Sequence[str], seed: int) -> None:
        """Draw new weights for these layers with their own initializers (deterministic)."""

    @abstractmethod
    def layer_state(self, name: str) -> Any:
        """A snapshot of one layer's weights, for :meth:`load_layer_state`."""

    @abstractmethod
    def load_layer_state(self, name: str, state: Any) -> None:
        """Put back a snapshot taken by :meth:`layer_state`."""

    @abstractmethod
    def weight_bytes(self) -> Iterator[tuple[str, bytes]]:
        """Every weight and buffer of the network: (name, its raw bytes), in a fixed order."""

    @abstractmethod
    def parameter_count(self) -> int:
        """How many weights the network has."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the model's tensors live."""

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype:
        """The floating-point type of the model's inputs."""

    # -- layouts -----------------------------------------------------------------------------
    @property
    def channel_axis(self) -> int:
        """The channel axis of a 4-D tensor in the network's layout."""
        return 3 if self.layout == "NHWC" else 1

    def nchw(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor in the network's layout as NCHW (a view; non-4-D tensors unchanged)."""
        return tensor.permute(0, 3, 1, 2) if self.layout == "NHWC" and tensor.ndim == 4 else tensor

    def nhwc(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor in the network's layout as NHWC (a view; non-4-D tensors unchanged)."""
        return tensor.permute(0, 2, 3, 1) if self.layout == "NCHW" and tensor.ndim == 4 else tensor

    # -- inputs ------------------------------------------------------------------------------
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
        return self.to_network_layout(self.preprocess(pixels))

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
        dummy = torch.zeros(1, *self.input_size, 3, device=self.device, dtype=self.dtype)
        try:
            with torch.no_grad():
                calls = self._trace_calls(self.prepare(dummy))
        except ModelError:
            raise
        except Exception as err:
            raise ModelError(
                f"could not run {self.name} on a {self.input_size} image to list its layers: "
                f"{type(err).__name__}: {err}. Pass input_size=(H, W) to load_model if it "
                "expects another size"
            ) from err
        if not calls:
            raise ModelError(f"{self.name} has no layers to look at")
        return label_calls(calls)

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
        spatial conv and pooling layers (the book's choice).
        """
        return select(self.layers(include_blocks=True), selector, self.name)

    # -- predictions -------------------------------------------------------------------------
    def logits(self, images: Images) -> torch.Tensor:
        """The network's output for the images (no autograd)."""
        with torch.no_grad():
            return self.forward(self.inputs(images))

    def probabilities(self, images: Images) -> torch.Tensor:
        """Class probabilities (N, classes); a sigmoid model gives (N, 2): [1 - p, p]."""
        return self.output_probabilities(self.logits(images))

    def output_probabilities(self, out: torch.Tensor) -> torch.Tensor:
        """The network's output (as ``forward`` returns it) → class probabilities (N, classes)."""
        out = out.float()
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

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r}: {self.framework}, input {self.input_size}, "
            f"{self.parameter_count():,} parameters, on {self.device}>"
        )
