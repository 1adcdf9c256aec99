"""PyTorch adapter: any ``nn.Module`` that takes (N, 3, H, W) images."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ModelError
from .hooks import HookedModel, first_tensor
from .preprocess import Preprocess, resolve_preprocess

_CONV = (nn.modules.conv._ConvNd,)
_POOL = (
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
)
_NORM = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
)
_ACTIVATION = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.LogSoftmax,
    nn.Softplus, nn.Hardtanh,
)
_KINDS: tuple[tuple[tuple[type, ...], str], ...] = (
    (_CONV, "conv"),
    (_POOL, "pool"),
    ((nn.Linear, nn.Bilinear), "linear"),
    (_NORM, "norm"),
    (_ACTIVATION, "activation"),
    ((nn.modules.dropout._DropoutNd,), "dropout"),
    ((nn.Flatten, nn.Unflatten, nn.Identity, nn.Upsample, nn.PixelShuffle), "reshape"),
)


class TorchModel(HookedModel):
    """A ``torch.nn.Module`` taking NCHW images; it is put in ``eval()`` mode.

    ``channels_last=True`` converts the network's 4-D weights to the channels-last memory format
    (in place) and feeds it channels-last inputs; on a CPU that makes depthwise-separable networks
    such as EfficientNet about 1.5x faster (the built-in model uses it). Results are unchanged.
    """

    framework = "torch"
    layout = "NCHW"

    def __init__(
        self,
        network: nn.Module,
        *,
        name: str | None = None,
        preprocess: str | Preprocess | None = None,
        input_size: tuple[int, int] = (224, 224),
        class_names: Sequence[str] | None = None,
        output: str = "logits",
        channels_last: bool = False,
    ):
        network.eval()
        self.channels_last = bool(channels_last)
        if self.channels_last:
            network.to(memory_format=torch.channels_last)
        self._fresh: dict[int, nn.Module] = {}
        super().__init__(
            network,
            name=name or type(network).__name__,
            preprocess=resolve_preprocess(preprocess, "imagenet"),
            input_size=input_size,
            class_names=class_names,
            output=output,
        )

    def _walk(self) -> Iterator[tuple[str, nn.Module, bool]]:
        for name, module in self.network.named_modules():
            if name:  # the root is the model itself
                yield name, module, not any(True for _ in module.children())

    def _kind(self, module: nn.Module) -> str:
        for classes, kind in _KINDS:
            if isinstance(module, classes):
                return kind
        return "other" if not any(True for _ in module.children()) else "block"

    def to_network_layout(self, x: torch.Tensor) -> torch.Tensor:
        # (N, H, W, C) permuted to NCHW already has channels-last strides: no copy then.
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.permute(0, 3, 1, 2).contiguous(memory_format=layout)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        output = self.network(inputs)
        tensor = first_tensor(output)
        if tensor is None:
            raise ModelError(
                f"{self.name} returns a {type(output).__name__}, not a tensor; wrap the network "
                "so that forward returns the (N, classes) scores"
            )
        return tensor

    # -- copies and re-initialization (the randomization sanity check) ----------------------
    def copy(self, **options: Any) -> TorchModel:
        settings: dict[str, Any] = dict(
            name=self.name, preprocess=self.preprocess, input_size=self.input_size,
            class_names=self.class_names, output=self.output, channels_last=self.channels_last,
        )
        settings.update(options)
        return TorchModel(copy.deepcopy(self.network), **settings)

    def _modules(self) -> dict[str, nn.Module]:
        return dict(self.network.named_modules())

    def weighted_layers(self) -> list[str]:
        return [
            name for name, m in self.network.named_modules()
            if name and any(p.is_floating_point() for p in m.parameters(recurse=False))
        ]

    def reinitialize(self, names: Sequence[str], seed: int) -> None:
        """Each layer's weights from a twin of the network re-drawn by ``reset_parameters()``.

        The twin is drawn once per seed, every module in order, under ``torch.manual_seed``
        (the global random state is restored afterwards).
        """
        if seed not in self._fresh:
            fresh = copy.deepcopy(self.network)
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                for module in fresh.modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()
            self._fresh[seed] = fresh
        mine, theirs = self._modules(), dict(self._fresh[seed].named_modules())
        with torch.no_grad():
            for name in names:
                pairs = zip(mine[name].parameters(recurse=False),
                            theirs[name].parameters(recurse=False))
                buffers = zip(mine[name].buffers(recurse=False),
                              theirs[name].buffers(recurse=False))
                for a, b in (*pairs, *buffers):
                    a.copy_(b)

    def layer_state(self, name: str) -> Any:
        return copy.deepcopy(self._modules()[name].state_dict())

    def load_layer_state(self, name: str, state: Any) -> None:
        self._modules()[name].load_state_dict(state)

    def to(self, device: str | torch.device) -> TorchModel:
        """Move the network to ``device`` (the views follow it)."""
        self.network.to(device)
        return self
