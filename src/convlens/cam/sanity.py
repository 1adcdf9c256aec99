"""The model-parameter randomization test (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018, section 3.1).

A saliency method that explains the *model* must give different maps once the model's learned
weights are replaced by random ones. On a copy of the network (the model itself is untouched),
layers are re-initialized either cascading from the top (logits) down, one more group of layers
per stage, or independently (one group at a time, the rest trained). At each stage the maps are
compared with the trained model's by Spearman rank correlation (``scipy.stats.spearmanr``) of
the heatmaps; the check passes when the fully randomized model's maps (cascading) or every
stage's maps (independent) correlate below ``threshold``.

Re-initialization uses each layer's own initializer: ``reset_parameters()`` for torch modules,
the layer's initializers for Keras (a freshly built clone's weights), with a fixed seed.
"""

from __future__ import annotations

import copy
import random
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.stats import spearmanr

from ..errors import ModelError

if TYPE_CHECKING:
    from ..models.base import Images, Model

__all__ = ["SanityResult", "randomization_check"]


@dataclass
class SanityResult:
    """Rank correlations between trained and randomized maps, per stage."""

    method: str
    mode: str
    stages: list[str]  # the layers randomized at each stage (cascading: down to this one)
    correlations: np.ndarray  # (stages, N) Spearman rho per image
    threshold: float
    passed: bool

    @property
    def mean(self) -> np.ndarray:
        return self.correlations.mean(axis=1)

    def table(self) -> list[dict[str, Any]]:
        return [
            {"stage": name, "spearman": round(float(rho), 4)}
            for name, rho in zip(self.stages, self.mean)
        ]

    def __repr__(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"<SanityResult {self.method} {self.mode}: {verdict}, final rho "
            f"{float(self.mean[-1]):.3f} (threshold {self.threshold})>"
        )


# -- copies and layers -----------------------------------------------------------------------
def _torch_layers(network: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in network.named_modules() if name and not any(m.children())}


def _keras_layers(network: Any, prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for layer in network.layers:
        children = getattr(layer, "layers", None)
        if children:
            found.update(_keras_layers(layer, prefix + layer.name + "/"))
        else:
            found[prefix + layer.name] = layer
    return found


def _has_weights(model: Model, layer: Any) -> bool:
    if model.framework == "keras":
        return bool(layer.trainable_weights)
    return any(p.is_floating_point() for p in layer.parameters(recurse=False))


#: Added to the seed, so the re-initialization does not replay a ``manual_seed(0)`` construction.
_SEED_BASE = 20181203


@contextmanager
def _global_seed(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Seed torch, NumPy and ``random`` inside the block; restore their states after it."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = [device.index or 0] if device is not None and device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _copies(model: Model, seed: int) -> tuple[Model, dict[str, Any], dict[str, Any]]:
    """A trained copy of the model, its weighted layers, and a freshly initialized twin's."""
    from ..models import KerasModel, TorchModel
    from ..models.keras import import_keras

    options = dict(
        name=f"{model.name} (randomized)", preprocess=model.preprocess,
        input_size=model.input_size, class_names=model.class_names, output=model.output,
    )
    if model.framework == "keras":
        keras = import_keras()
        trained = keras.models.clone_model(model.network)
        trained.set_weights(model.network.get_weights())
        with _global_seed(_SEED_BASE + seed):
            keras.utils.set_random_seed(_SEED_BASE + seed)
            fresh = keras.models.clone_model(model.network)
        copy_model: Model = KerasModel(trained, **options)
        layers, fresh_layers = _keras_layers(trained), _keras_layers(fresh)
    else:
        trained = copy.deepcopy(model.network)
        fresh = copy.deepcopy(model.network)
        with _global_seed(_SEED_BASE + seed, model.device):
            for module in fresh.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        copy_model = TorchModel(trained, channels_last=model.channels_last, **options)
        layers, fresh_layers = _torch_layers(trained), _torch_layers(fresh)
    weighted = {name: layer for name, layer in layers.items() if _has_weights(copy_model, layer)}
    return copy_model, weighted, fresh_layers


def _randomize(model: Model, layer: Any, fresh: Any) -> None:
    if model.framework == "keras":
        layer.set_weights(fresh.get_weights())
        return
    with torch.no_grad():
        for mine, theirs in zip(layer.parameters(recurse=False), fresh.parameters(recurse=False)):
            mine.copy_(theirs)
        for mine, theirs in zip(layer.buffers(recurse=False), fresh.buffers(recurse=False)):
            mine.copy_(theirs)


def _groups(names: list[str], stages: int | None) -> list[list[str]]:
    """Weighted layers from the output down, split into ``stages`` groups (None: one each)."""
    top_down = names[::-1]
    if stages is None or stages >= len(top_down):
        return [[name] for name in top_down]
    if stages < 1:
        raise ModelError(f"stages must be at least 1, not {stages}")
    return [list(part) for part in np.array_split(np.array(top_down, dtype=object), stages)]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0  # a constant map carries no ranking: nothing of the trained map survives
    return float(spearmanr(a, b).statistic)


def randomization_check(
    model: Model,
    images: Images,
    method: str = "gradcam",
    target: Any = None,
    layer: Any = None,
    *,
    mode: str = "cascading",
    stages: int | None = 6,
    threshold: float = 0.5,
    seed: int = 0,
    **options: Any,
) -> SanityResult:
    """Compare ``method``'s maps on the trained model with maps on randomized copies.

    ``target`` defaults to each image's top-1 class on the trained model, and stays that class
    for the randomized copies. ``stages`` groups the weighted layers (None: one layer per stage).
    """
    if mode not in ("cascading", "independent"):
        raise ModelError(f"mode must be 'cascading' or 'independent', not {mode!r}")
    trained_cams = model.cam(images, method=method, target=target, layer=layer, **options)
    targets = trained_cams.target if target is None or isinstance(target, str) else target
    copy_model, weighted, fresh = _copies(model, seed)
    names = [info.module_name for info in copy_model.layers() if info.module_name in weighted]
    groups = _groups(list(dict.fromkeys(names)), stages)
    independent = mode == "independent"
    saved = {
        name: _snapshot(copy_model, weighted[name]) for group in groups for name in group
    } if independent else {}
    pixels = copy_model.to_pixels(trained_cams.images)  # once, on the device
    rows = []
    restore: list[str] = []
    for group in groups:
        for name in restore:  # independent: only this stage's layers are random
            _restore(copy_model, weighted[name], saved[name])
        for name in group:
            _randomize(copy_model, weighted[name], fresh[name])
        restore = group if independent else []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            cams = copy_model.cam(
                pixels, method=method, target=targets, layer=trained_cams.layers, **options,
            )
        rows.append([
            _spearman(a, b) for a, b in zip(trained_cams.heatmap, cams.heatmap)
        ])
    correlations = np.nan_to_num(np.asarray(rows, dtype=np.float64))
    below = correlations.mean(axis=1) < threshold
    passed = bool(below[-1]) if mode == "cascading" else bool(below.all())
    stage_names = [group[-1] for group in groups]
    return SanityResult(method, mode, stage_names, correlations, threshold, passed)


def _snapshot(model: Model, layer: Any) -> Any:
    if model.framework == "keras":
        return layer.get_weights()
    return copy.deepcopy(layer.state_dict())


def _restore(model: Model, layer: Any, saved: Any) -> None:
    if model.framework == "keras":
        layer.set_weights(saved)
    else:
        layer.load_state_dict(saved)
