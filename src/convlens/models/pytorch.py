"""PyTorch adapter: any ``nn.Module`` that takes (N, 3, H, W) images.

A module's kind is what it is (``isinstance`` of torch's base classes), not where it sits: an
``nn.Conv2d`` subclass that pads through a child module (``efficientnet_pytorch``'s
``Conv2dStaticSamePadding``) is one conv layer. Children that only pad, quantize or
re-parameterize an op are part of it and are not listed.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.overrides import TorchFunctionMode

from ..errors import ConvlensError, ModelError
from ..runtime import prefers_channels_last
from .hooks import HookedModel, first_tensor
from .inputs import not_one_image
from .layers import LayerCall, LayerInfo
from .preprocess import Preprocess, resolve_preprocess

_CONV = (nn.modules.conv._ConvNd,)
_PAD = (
    nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd, nn.modules.padding._CircularPadNd,
)
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
    ((nn.Flatten, nn.Unflatten, nn.Identity, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle,
      nn.ChannelShuffle, *_PAD), "reshape"),
)
#: Parameter-free activation modules that libraries write themselves (``efficientnet_pytorch``'s
#: ``MemoryEfficientSwish``, ``Swish``, ``HardSwish``...), known by their class name's ending.
_ACTIVATION_NAMES = ("swish", "silu", "relu", "relu6", "gelu", "mish", "sigmoid", "hsigmoid",
                     "hswish", "hardswish", "hardsigmoid", "tanh", "elu")
#: Helpers of quantization that wrap or observe an op (by class name, to keep torch.ao unimported),
#: and the pass-through modules libraries write themselves (``efficientnet-lite-pytorch``'s).
_QUANT_HELPERS = {"QuantStub", "DeQuantStub", "FakeQuantizeBase", "ObserverBase"}
_PASS_THROUGH = {"Identity", *_QUANT_HELPERS}
#: Convolutions torch runs as functions (what ``nn.Conv2d`` calls inside its ``forward``).
_CONV_FUNCTIONS = (
    torch.conv1d, torch.conv2d, torch.conv3d,
    torch.conv_transpose1d, torch.conv_transpose2d, torch.conv_transpose3d,
)


def _class_names(module: nn.Module) -> set[str]:
    return {cls.__name__ for cls in type(module).__mro__}


def _auxiliary(module: nn.Module) -> bool:
    """True for a module that only pads, passes through or quantizes its op's input or output."""
    if isinstance(module, _PAD):
        return True
    return bool(_class_names(module) & _PASS_THROUGH) and not any(True for _ in module.parameters())


def _typed_kind(module: nn.Module) -> str | None:
    for classes, kind in _KINDS:
        if isinstance(module, classes):
            return kind
    if _auxiliary(module) and not any(True for _ in module.children()):
        return "reshape"  # a library's own Identity, or a quant stub (the identity in float)
    name = type(module).__name__.lower()
    if (
        name.endswith(_ACTIVATION_NAMES)
        and not any(True for _ in module.parameters())
        and not any(True for _ in module.children())
    ):
        return "activation"
    return None


def _hidden_children(module: nn.Module) -> set[str]:
    """Children that are part of ``module`` itself, never layers of their own.

    Parametrizations (``torch.nn.utils.parametrize``: weight norm, spectral norm...) compute a
    weight, not an output; observers and fake quantizers only watch or round a tensor; and the
    padding / identity / quant-stub children of a typed op (conv, pool, ...) are that op's.
    """
    hidden = {"parametrizations"} if hasattr(module, "parametrizations") else set()
    typed = _typed_kind(module) is not None
    for name, child in module.named_children():
        if name in hidden:
            continue
        quant = bool(_class_names(child) & {"FakeQuantizeBase", "ObserverBase"})
        if quant or (typed and _auxiliary(child)):
            hidden.add(name)
    return hidden


def _own_tensors(module: nn.Module, buffers: bool = True) -> list[torch.Tensor]:
    """A layer's own parameters (and buffers), with those of its hidden children
    (parametrizations, padding...), in a fixed order."""
    own = [*module.parameters(recurse=False), *(module.buffers(recurse=False) if buffers else ())]
    children = dict(module.named_children())
    for name in sorted(_hidden_children(module)):
        child = children[name]
        own += [*child.parameters(), *(child.buffers() if buffers else ())]
    return own


def _reset_parameters(module: nn.Module) -> None:
    """``module.reset_parameters()``; a parametrized weight (weight norm) is drawn as a plain
    one (on the cached value its initializer sees), then assigned through the parametrization."""
    if not parametrize.is_parametrized(module):
        module.reset_parameters()
        return
    with parametrize.cached(), torch.no_grad():
        module.reset_parameters()
        drawn = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
    with torch.no_grad():
        for name, value in drawn.items():
            setattr(module, name, value)  # through the parametrization's right_inverse


class _TokenInput(Exception):
    """Raised from a hook when an embedding is fed the (float) image itself."""


def _required_inputs(network: nn.Module) -> list[str]:
    """Names of the arguments ``network.forward`` cannot run without."""
    try:
        parameters = inspect.signature(network.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    kinds = (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
    return [p.name for p in parameters if p.kind in kinds and p.default is p.empty]


class _FunctionalConvs(TorchFunctionMode):
    """Records the innermost module that calls a convolution function outside a conv module."""

    def __init__(self, names: dict[int, str]):
        super().__init__()
        self.names = names
        self.stack: list[nn.Module] = []
        self.callers: dict[str, None] = {}

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in _CONV_FUNCTIONS and not (self.stack and isinstance(self.stack[-1], _CONV)):
            self.callers[self.names[id(self.stack[-1])] if self.stack else ""] = None
        return func(*args, **(kwargs or {}))


class TorchModel(HookedModel):
    """A ``torch.nn.Module`` taking NCHW images; it is put in ``eval()`` mode.

    ``channels_last=True`` converts the network's 4-D weights to the channels-last memory format
    (in place) and feeds it channels-last inputs; on a CPU that makes depthwise-separable networks
    such as EfficientNet about 1.5x faster (the built-in model uses it). Results are unchanged.
    ``None`` (the default): both formats are timed once, at first use, and the faster is kept.
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
        channels_last: bool | None = None,
    ):
        required = _required_inputs(network)
        if len(required) > 1:
            raise not_one_image(
                name or type(network).__name__,
                f"{len(required)} inputs ({', '.join(required)})",
                "wrap it in a module whose forward takes the image alone (the other inputs fixed)",
            )
        network.eval()
        self.channels_last = channels_last  # None: measured at first use (runtime.py)
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
        """Modules in definition order; a module is a leaf when no listed child is left."""
        seen: set[int] = set()

        def walk(module: nn.Module, prefix: str) -> Iterator[tuple[str, nn.Module, bool]]:
            hidden = _hidden_children(module)
            children = [(n, c) for n, c in module.named_children() if n not in hidden]
            for name, child in children:
                if id(child) in seen:  # a module registered twice is listed once (its first name)
                    continue
                seen.add(id(child))
                child_hidden = _hidden_children(child)
                leaf = all(n in child_hidden for n, _ in child.named_children())
                yield prefix + name, child, leaf
                yield from walk(child, prefix + name + ".")

        yield from walk(self.network, "")

    def _kind(self, module: nn.Module) -> str:
        kind = _typed_kind(module)
        if kind is not None:
            return kind
        hidden = _hidden_children(module)
        return "block" if any(n not in hidden for n, _ in module.named_children()) else "other"

    def _acts_on_last_dim(self, module: nn.Module) -> bool:
        if isinstance(module, nn.Linear):
            return True
        return (  # a subclass with its own forward (LayerNorm2d) may permute for itself
            isinstance(module, nn.LayerNorm) and type(module).forward is nn.LayerNorm.forward
            and len(module.normalized_shape) == 1
        )

    def _trace_calls(self, inputs: torch.Tensor) -> list[LayerCall]:
        def refuse_pixels(module: nn.Module, args: Any) -> None:
            if args and isinstance(args[0], torch.Tensor) and args[0].is_floating_point():
                raise _TokenInput(module)

        with ExitStack() as hooks:
            for module in self.network.modules():
                if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
                    hooks.callback(module.register_forward_pre_hook(refuse_pixels).remove)
            try:
                return super()._trace_calls(inputs)
            except _TokenInput as err:
                names = {id(m): n for n, m in self.network.named_modules()}
                embedding = names[id(err.args[0])]
                raise not_one_image(
                    self.name, f"token ids (its {embedding!r} is an nn.Embedding of the input)",
                    "pass the part of the network that takes images",
                ) from None

    def resolve(self, selector: str | Iterable[str] | None = None) -> list[LayerInfo]:
        try:
            return super().resolve(selector)
        except ConvlensError:
            if selector is None or selector == "conv":
                self._explain_functional_convs()
            raise

    def _explain_functional_convs(self) -> None:
        """Raise a clear error when the network's convolutions are function calls, not modules."""
        names = {id(m): n for n, m in self.network.named_modules()}
        watch = _FunctionalConvs(names)

        def enter(module: nn.Module, args: Any) -> None:
            watch.stack.append(module)

        def leave(module: nn.Module, args: Any, output: Any) -> None:
            watch.stack.pop()

        with ExitStack() as hooks:
            for module in self.network.modules():
                pre = module.register_forward_pre_hook(enter)
                post = module.register_forward_hook(leave)
                hooks.callback(pre.remove)
                hooks.callback(post.remove)
            dummy = torch.zeros(1, *self.input_size, 3, device=self.device, dtype=self.dtype)
            try:
                with torch.no_grad(), watch:
                    self.forward(self.prepare(dummy))
            except Exception:
                pass  # the trace already ran this input; whatever was seen is enough
        callers = [n for n in watch.callers if n]
        if callers:
            listed = ", ".join(repr(n) for n in callers[:4])
            raise ModelError(
                f"{self.name} has no conv module: its convolutions are function calls "
                f"(F.conv2d) in the forward of {listed}; use their output instead "
                f"(layers={callers[:4]!r}), or make the convolutions nn.Conv2d modules"
            )
        if watch.callers:
            raise ModelError(
                f"{self.name} has no conv module: its convolutions are function calls "
                f"(F.conv2d) in {type(self.network).__name__}.forward itself, with no module "
                "output to look at; make them nn.Conv2d modules"
            )

    def to_network_layout(self, x: torch.Tensor) -> torch.Tensor:
        # (N, H, W, C) permuted to NCHW already has channels-last strides: no copy then.
        if self.channels_last is None:
            self.channels_last = prefers_channels_last(self.network, x.permute(0, 3, 1, 2))
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
        """The listed layers (names as ``layers()`` shows them) that own floating-point weights,
        their parametrizations' (weight norm...) included."""
        return [
            name for name, module, _ in self._walk()
            if any(t.is_floating_point() for t in _own_tensors(module, buffers=False))
        ]

    def reinitialize(self, names: Sequence[str], seed: int) -> None:
        """Each layer's weights from a twin of the network re-drawn by ``reset_parameters()``.

        The twin is drawn once per seed, every module in order, under ``torch.manual_seed``
        (the global random state is restored afterwards). A parametrized weight (weight norm) is
        drawn as a plain one and assigned through its parametrization.
        """
        if seed not in self._fresh:
            fresh = copy.deepcopy(self.network)
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                for module in fresh.modules():
                    if hasattr(module, "reset_parameters"):
                        _reset_parameters(module)
            self._fresh[seed] = fresh
        mine, theirs = self._modules(), dict(self._fresh[seed].named_modules())
        with torch.no_grad():
            for name in names:
                for a, b in zip(_own_tensors(mine[name]), _own_tensors(theirs[name])):
                    a.copy_(b)

    def layer_state(self, name: str) -> Any:
        return copy.deepcopy(self._modules()[name].state_dict())

    def load_layer_state(self, name: str, state: Any) -> None:
        self._modules()[name].load_state_dict(state)

    def to(self, device: str | torch.device) -> TorchModel:
        """Move the network to ``device`` (the views follow it)."""
        self.network.to(device)
        return self
