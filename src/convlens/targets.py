"""What a class activation map explains: a *target*, one score per image.

A target is a callable on one image's model output (a 1-D tensor of class scores, in logit space)
returning a scalar tensor, like pytorch-grad-cam's ``ClassifierOutputTarget``. The user's
``target=`` argument (an index, a class name, a list, ``"top-k"``, a callable) is resolved into a
:class:`TargetPlan`: ``k`` targets for each of the ``N`` images.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import ModelError

if TYPE_CHECKING:
    from .models import Model

__all__ = [
    "ClassTarget", "SigmoidTarget", "Target", "TargetLike", "TargetPlan", "as_logits",
    "resolve_targets", "row_probabilities", "target_probabilities",
]


class Target:
    """A score to explain. Subclasses define ``__call__`` (one output row → scalar)."""

    #: the class index this target stands for (-1: not a class).
    index: int = -1

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        """Scores of a batch of outputs (B, classes) → (B,)."""
        return torch.stack([self(row) for row in outputs])

    def probability(self, outputs: torch.Tensor) -> torch.Tensor:
        """The target's probability for a batch of logit outputs; the score itself if none."""
        return self.scores(outputs)

    def label(self, model: Model) -> str:
        return getattr(self, "__name__", type(self).__name__)


@dataclass(frozen=True)
class ClassTarget(Target):
    """The logit of class ``index``; its probability is a softmax (or a per-class sigmoid)."""

    index: int
    sigmoid: bool = False

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[self.index]

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[:, self.index]

    def probability(self, outputs: torch.Tensor) -> torch.Tensor:
        if self.sigmoid:
            return outputs[:, self.index].float().sigmoid()
        return outputs.float().softmax(dim=1)[:, self.index]

    def label(self, model: Model) -> str:
        return model.class_name(self.index)


@dataclass(frozen=True)
class SigmoidTarget(Target):
    """A binary model's single logit ``z`` (class 1), or ``-z`` (class 0: ``positive=False``).

    ``sigmoid(-z) = 1 - sigmoid(z)``, so the negated logit is the logit of the other class.
    """

    positive: bool = True

    @property
    def index(self) -> int:  # type: ignore[override]
        return int(self.positive)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[0] if self.positive else -output[0]

    def scores(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[:, 0] if self.positive else -outputs[:, 0]

    def probability(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.scores(outputs).float().sigmoid()

    def label(self, model: Model) -> str:
        return model.class_name(self.index)


class _CallableTarget(Target):
    """A user's function of one output row."""

    def __init__(self, fn: Callable[[torch.Tensor], Any]):
        self.fn = fn

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        value = self.fn(output)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            got = type(value).__name__ if not isinstance(value, torch.Tensor) else (
                f"tensor of shape {tuple(value.shape)}")
            raise ModelError(
                f"the target function {self.label(None)} returned a {got}; it must return a "
                "scalar torch tensor computed from the output row"
            )
        return value.reshape(())

    def label(self, model: Model | None) -> str:
        return getattr(self.fn, "__name__", type(self.fn).__name__)


TargetLike = int | str | Target | Callable[[torch.Tensor], Any] | None


@dataclass
class TargetPlan:
    """``targets[i][r]``: the r-th target of image i (``k`` per image)."""

    targets: list[list[Target]]

    @property
    def k(self) -> int:
        return len(self.targets[0])

    @property
    def rows(self) -> list[tuple[int, Target]]:
        """(image index, target) per result row, image-major."""
        return [(i, t) for i, per_image in enumerate(self.targets) for t in per_image]

    def round(self, r: int) -> list[Target]:
        """The r-th target of every image."""
        return [per_image[r] for per_image in self.targets]


# -- logit space -----------------------------------------------------------------------------
def as_logits(model: Model, output: torch.Tensor) -> torch.Tensor:
    """A (N, classes) output, run inside ``logit_outputs()``, as logits.

    A torch network that ends in a sigmoid gives probabilities p: ``logit(p)`` is exactly its
    pre-sigmoid score (same gradient). One that ends in a softmax gives log-probabilities.
    """
    if output.ndim != 2:
        raise ModelError(
            f"{model.name} returns shape {tuple(output.shape)}; CAM needs (N, classes) scores "
            "(pass a callable target to explain another output)"
        )
    if model.logit_space:
        return output
    eps = 1e-7
    if model.output == "sigmoid":
        return torch.logit(output.clamp(eps, 1 - eps))
    return output.clamp_min(eps).log()


# -- resolving the user's argument -----------------------------------------------------------
def _binary(model: Model, logits: torch.Tensor) -> bool:
    return model.output == "sigmoid" and logits.shape[1] == 1


def _class_count(model: Model, logits: torch.Tensor) -> int:
    return 2 if _binary(model, logits) else logits.shape[1]


def _for_index(model: Model, logits: torch.Tensor, index: int) -> Target:
    count = _class_count(model, logits)
    if not 0 <= index < count:
        raise ModelError(
            f"target class {index} is out of range: {model.name} has {count} classes; "
            f"pass an index in 0..{count - 1}"
        )
    if _binary(model, logits):
        return SigmoidTarget(positive=bool(index))
    return ClassTarget(index, sigmoid=model.output == "sigmoid")


def _for_name(model: Model, logits: torch.Tensor, name: str) -> Target:
    names = model.class_names
    if _binary(model, logits) and names is None:
        names = ["class 0", "class 1"]
    if not names:
        raise ModelError(
            f"target {name!r} is a class name, but {model.name} has no class names; "
            "pass a class index, or load the model with class_names=[...]"
        )
    lowered = [n.lower() for n in names]
    if name.lower() in lowered:
        return _for_index(model, logits, lowered.index(name.lower()))
    close = difflib.get_close_matches(name.lower(), lowered, n=4, cutoff=0.6)
    suggestions = ", ".join(repr(names[lowered.index(c)]) for c in close)
    hint = f"; did you mean {suggestions}?" if close else ""
    raise ModelError(f"{model.name} has no class named {name!r}{hint} (or pass a class index)")


def _top(logits: torch.Tensor, binary: bool, k: int) -> list[list[int]]:
    if binary:
        positive = (logits[:, 0] > 0).long()
        order = torch.stack([positive, 1 - positive], dim=1)
    else:
        order = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return order[:, :k].tolist()


_TOP = re.compile(r"^top-?(\d+)$")


def _one(model: Model, logits: torch.Tensor, spec: TargetLike, image: int) -> Target:
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, bool):
        raise ModelError(f"target {spec!r} is not a class; pass an index, a name or 'top-k'")
    if isinstance(spec, int) or (hasattr(spec, "__index__") and not callable(spec)):
        return _for_index(model, logits, int(spec))  # type: ignore[arg-type]
    if spec is None:
        best = _top(logits[image : image + 1], _binary(model, logits), 1)[0][0]
        return _for_index(model, logits, best)
    if isinstance(spec, str):
        if spec.strip().lstrip("-").isdigit():
            return _for_index(model, logits, int(spec))
        return _for_name(model, logits, spec)
    if callable(spec):
        return _CallableTarget(spec)
    raise ModelError(
        f"cannot use a {type(spec).__name__} as a target; pass a class index, a class name, "
        "'top-k', a list with one per image, or a function of the output"
    )


def resolve_targets(model: Model, target: Any, logits: torch.Tensor) -> TargetPlan:
    """Resolve ``target`` for a batch whose logits are ``logits`` (N, classes).

    ``None``: each image's top-1 class. An int / class name / callable: the same for all images.
    ``"top-k"``: the k best classes of each image (k rows per image). A list: one per image.
    """
    n = logits.shape[0]
    logits = logits.detach()
    top = _TOP.match(target.strip().lower()) if isinstance(target, str) else None
    if top:
        k = int(top.group(1))
        count = _class_count(model, logits)
        if not 1 <= k <= count:
            raise ModelError(f"target {target!r}: k must be between 1 and {count}")
        tops = _top(logits, _binary(model, logits), k)
        return TargetPlan([[_for_index(model, logits, c) for c in row] for row in tops])
    if isinstance(target, (list, tuple)) or (
        isinstance(target, (torch.Tensor, np.ndarray)) and target.ndim == 1
    ):
        specs: Sequence[Any] = target if isinstance(target, (list, tuple)) else target.tolist()
        if len(specs) != n:
            raise ModelError(
                f"{len(specs)} targets for {n} image(s); pass one target per image "
                "(or one target for all, or 'top-k' for several classes per image)"
            )
        return TargetPlan([[_one(model, logits, spec, i)] for i, spec in enumerate(specs)])
    if target is None:  # every image's top-1 class, found in one call
        tops = _top(logits, _binary(model, logits), 1)
        return TargetPlan([[_for_index(model, logits, row[0])] for row in tops])
    return TargetPlan([[_one(model, logits, target, i)] for i in range(n)])


def target_probabilities(targets: Sequence[Target], outputs: torch.Tensor) -> torch.Tensor:
    """(B,) float32: the probability of ``targets[i]`` on row i of ``outputs`` (logits).

    Class targets take one softmax and one gather; others ask each target.
    """
    if all(type(t) is ClassTarget and not t.sigmoid for t in targets):
        index = torch.tensor([t.index for t in targets], device=outputs.device)
        return outputs.float().softmax(dim=1).gather(1, index[:, None])[:, 0]
    return torch.stack([
        t.probability(row[None]).reshape(-1)[0].float() for t, row in zip(targets, outputs)
    ])


def row_probabilities(plan: TargetPlan, logits: torch.Tensor) -> torch.Tensor:
    """(R,) float32: each result row's target probability on its image's logits."""
    rows = plan.rows
    return target_probabilities([t for _, t in rows], logits[[i for i, _ in rows]])


def score_rows(targets: Sequence[Target], outputs: torch.Tensor) -> torch.Tensor:
    """Score of row i of ``outputs`` under ``targets[i]`` (vectorized for class targets)."""
    first = targets[0]
    if all(t == first for t in targets):
        return first.scores(outputs)
    if all(isinstance(t, ClassTarget) for t in targets):
        index = torch.tensor([t.index for t in targets], device=outputs.device)
        return outputs.gather(1, index[:, None])[:, 0]
    return torch.stack([t(row) for t, row in zip(targets, outputs)])
