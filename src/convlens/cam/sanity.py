"""The model-parameter randomization test (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018, section 3.1).

A saliency method that explains the *model* must give different maps once the model's learned
weights are replaced by random ones. On a copy of the network (the model itself is untouched),
layers are re-initialized either cascading from the top (logits) down, one more group of layers
per stage, or independently (one group at a time, the rest trained). At each stage the maps are
compared with the trained model's by Spearman rank correlation (``scipy.stats.spearmanr``) of
the heatmaps; the check passes when the fully randomized model's maps (cascading) or every
stage's maps (independent) correlate below ``threshold``.

Re-initialization uses each layer's own initializer (``Model.reinitialize``: ``reset_parameters()``
for torch modules, a freshly built clone's weights for Keras), with a fixed seed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelError

if TYPE_CHECKING:
    from ..models import Images, Model

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


#: Added to the seed, so the re-initialization does not replay a ``manual_seed(0)`` construction.
_SEED_BASE = 20181203


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
    from scipy.stats import spearmanr  # 0.4 s to import: only when a check runs

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
    copy_model = model.copy(name=f"{model.name} (randomized)")
    weighted = set(copy_model.weighted_layers())
    names = [info.module_name for info in copy_model.layers(include_blocks=True)
             if info.module_name in weighted]
    groups = _groups(list(dict.fromkeys(names)), stages)
    independent = mode == "independent"
    saved = {
        name: copy_model.layer_state(name) for group in groups for name in group
    } if independent else {}
    pixels = copy_model.to_pixels(trained_cams.images)  # once, on the device
    rows = []
    restore: list[str] = []
    for group in groups:
        for name in restore:  # independent: only this stage's layers are random
            copy_model.load_layer_state(name, saved[name])
        copy_model.reinitialize(group, _SEED_BASE + seed)
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
