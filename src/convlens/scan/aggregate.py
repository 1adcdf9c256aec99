"""The per-batch function and its mergeable partial aggregates.

``Scanner.batch(pixels, ids, labels)`` runs the model once on a batch (capturing the chosen
layers) and returns a :class:`Partial`: per (layer, channel) the image count, firing count, the
Chan/Welford mean and M2 of the spatial mean, the max, class sums, and a bounded top-k (by spatial
max, or spatial mean) with the argmax position; per image the prediction, score and label; per
class the summed Grad-CAM of the true class; the misclassified images with both CAMs.

``merge(a, b)`` is associative, and the top-k is a total order (value, then image id), so any
split of the data gives the same top-k; moments are merged in a fixed (shard) order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..gradients import largest_output_bytes, output_bytes
from ..runtime import host_chunk
from ..targets import as_logits, resolve_targets, score_rows
from .reduce import NO_IMAGE, batch_top, empty_top, merge_tops, spatial_stats

if TYPE_CHECKING:
    from ..models import LayerInfo, Model

__all__ = ["NO_IMAGE", "LayerPartial", "Partial", "Scanner"]


@dataclass
class LayerPartial:
    """Per-channel statistics of one layer over some images."""

    count: int
    fire: np.ndarray  # (C,) int64: images whose spatial max > 0
    mean: np.ndarray  # (C,) float64: mean of the spatial mean
    m2: np.ndarray  # (C,) float64: sum of squared deviations of the spatial mean
    max: np.ndarray  # (C,) float64: the largest activation
    class_sum: np.ndarray  # (K, C) float64: sum of the spatial mean per class of Partial.classes
    top_value: np.ndarray  # (k, C) float64, descending
    top_id: np.ndarray  # (k, C) int64
    top_y: np.ndarray  # (k, C) int32: argmax row of the channel's map
    top_x: np.ndarray  # (k, C) int32

    @classmethod
    def empty(cls, channels: int, k: int, classes: int = 0) -> LayerPartial:
        return cls(
            0, np.zeros(channels, np.int64), np.zeros(channels), np.zeros(channels),
            np.full(channels, -np.inf), np.zeros((classes, channels)), *empty_top(k, channels),
        )


def _merge_layer(
    a: LayerPartial, b: LayerPartial, class_sum: np.ndarray | None = None
) -> LayerPartial:
    """``class_sum``: the merged class sums when the two cover different classes."""
    n = a.count + b.count
    if class_sum is None:
        class_sum = a.class_sum + b.class_sum
    delta = b.mean - a.mean
    mean = a.mean + delta * (b.count / n) if n else a.mean
    m2 = a.m2 + b.m2 + delta * delta * (a.count * b.count / n) if n else a.m2
    value, ids, top_y, top_x = merge_tops(
        (a.top_value, a.top_id, a.top_y, a.top_x), (b.top_value, b.top_id, b.top_y, b.top_x)
    )
    return LayerPartial(
        n, a.fire + b.fire, mean, m2, np.maximum(a.max, b.max), class_sum, value, ids, top_y,
        top_x,
    )


@dataclass
class Partial:
    """Everything a scan learns from some images; ``merge`` two of them in data order."""

    layers: dict[str, LayerPartial]
    image_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    label: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    prediction: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    #: the labels seen (sorted): the rows of every class_sum, cam_sum and cam_count
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    cam_sum: np.ndarray | None = None  # (K, h, w) float64: Grad-CAM of the true class, summed
    cam_count: np.ndarray | None = None  # (K,) int64
    mistake_id: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    mistake_cam: np.ndarray | None = None  # (M, 2, H, W) uint8: true class, predicted class
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (id, path, reason)

    def merge(self, other: Partial) -> Partial:
        classes = np.union1d(self.classes, other.classes).astype(np.int64)
        mine = np.searchsorted(classes, self.classes)
        theirs = np.searchsorted(classes, other.classes)

        def spread(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            """Rows of ``a`` (self's classes) and ``b`` (other's) added into rows of classes."""
            if a is None or b is None:
                one, rows = (b, theirs) if a is None else (a, mine)
                if one is None:
                    return None
                out = np.zeros((len(classes), *one.shape[1:]), one.dtype)
                out[rows] = one
                return out
            out = np.zeros((len(classes), *a.shape[1:]), np.result_type(a, b))
            out[mine] += a
            out[theirs] += b
            return out

        names = list(self.layers)
        mine_joined, theirs_joined = _joined_layers(self.layers, names), _joined_layers(
            other.layers, names)
        merged = _merge_layer(mine_joined, theirs_joined,
                              spread(mine_joined.class_sum, theirs_joined.class_sum))
        layers = _split(merged, names, [self.layers[n].fire.shape[0] for n in names])
        return Partial(
            layers,
            np.concatenate([self.image_id, other.image_id]),
            np.concatenate([self.label, other.label]),
            np.concatenate([self.prediction, other.prediction]),
            np.concatenate([self.score, other.score]),
            classes,
            spread(self.cam_sum, other.cam_sum),
            spread(self.cam_count, other.cam_count),
            np.concatenate([self.mistake_id, other.mistake_id]),
            _cat(self.mistake_cam, other.mistake_cam),
            self.skipped + other.skipped,
        )

    # -- shard files -------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat named arrays (for ``np.savez``; no pickles): the layers side by side, one array
        per field (a dozen members, not nine per layer: a batch of EfficientNet-Lite0's 49
        layers packs in 3 ms, not 14)."""
        names = list(self.layers)
        joined = _joined_layers(self.layers, names)
        out: dict[str, np.ndarray] = {
            "layers.names": np.array(names, dtype=str),
            "layers.channels": np.array([self.layers[n].fire.shape[0] for n in names], np.int64),
            "layers.count": np.array(joined.count, np.int64),
        }
        for key in _FIELDS:
            out[f"layers.{key}"] = getattr(joined, key)
        for key in ("image_id", "label", "prediction", "score", "classes", "mistake_id"):
            out[key] = getattr(self, key)
        for key in ("cam_sum", "cam_count", "mistake_cam"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out["skipped_id"] = np.array([s[0] for s in self.skipped], np.int64)
        out["skipped_path"] = np.array([s[1] for s in self.skipped], dtype=str)
        out["skipped_reason"] = np.array([s[2] for s in self.skipped], dtype=str)
        return out

    @classmethod
    def from_arrays(cls, data: dict[str, np.ndarray]) -> Partial:
        if "layers.names" in data:
            joined = LayerPartial(int(data["layers.count"]),
                                  *(data[f"layers.{key}"] for key in _FIELDS))
            layers = _split(joined, [str(n) for n in data["layers.names"]],
                            [int(c) for c in data["layers.channels"]])
        else:  # the earlier format (shards of a scan to resume): one set of arrays per layer
            layers, i = {}, 0
            while f"L{i}.name" in data:
                layers[str(data[f"L{i}.name"])] = LayerPartial(
                    int(data[f"L{i}.count"]), *(data[f"L{i}.{key}"] for key in _FIELDS)
                )
                i += 1
        skipped = [
            (int(a), str(b), str(c))
            for a, b, c in zip(data["skipped_id"], data["skipped_path"], data["skipped_reason"])
        ]
        return cls(
            layers, data["image_id"], data["label"], data["prediction"], data["score"],
            data["classes"], data.get("cam_sum"), data.get("cam_count"), data["mistake_id"],
            data.get("mistake_cam"), skipped,
        )


_FIELDS = ("fire", "mean", "m2", "max", "class_sum", "top_value", "top_id", "top_y", "top_x")


def _cat_columns(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=-1)


def _joined(parts: list[LayerPartial]) -> LayerPartial:
    """Layers side by side as one (their channels concatenated): merged with one set of NumPy
    calls instead of one per layer (49 layers: 20 ms a batch → 2 ms)."""
    if len(parts) == 1:
        return parts[0]
    return LayerPartial(parts[0].count, *(
        _cat_columns([getattr(p, key) for p in parts]) for key in _FIELDS
    ))


class _SplitLayers(dict):
    """Layers split from one joined partial (views of its arrays), which a merge takes back
    whole instead of joining the layers again."""

    def __init__(self, joined: LayerPartial, layers: dict[str, LayerPartial]):
        super().__init__(layers)
        self.joined = joined
        self.parts = tuple(layers.values())  # the split's own layers: an entry replaced since
        # (``part.layers[name] = ...``) is not in ``joined``


def _joined_layers(layers: dict[str, LayerPartial], names: list[str]) -> LayerPartial:
    """``layers`` in the order of ``names`` side by side (:func:`_joined`)."""
    if (isinstance(layers, _SplitLayers) and list(layers) == names
            and all(a is b for a, b in zip(layers.values(), layers.parts))):
        return layers.joined
    return _joined([layers[n] for n in names])


def _split(joined: LayerPartial, names: list[str], channels: list[int]) -> dict[str, LayerPartial]:
    """The layers of a :func:`_joined` partial (views of its arrays)."""
    out = {}
    start = 0
    for name, c in zip(names, channels):
        out[name] = LayerPartial(joined.count, *(
            getattr(joined, key)[..., start:start + c] for key in _FIELDS
        ))
        start += c
    return _SplitLayers(joined, out)


def _cat(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None or b is None:
        return b if a is None else a
    return np.concatenate([a, b])


def _from_logits(model: Model, logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities from logits (``targets.as_logits``), as ``Model.probabilities``."""
    logits = logits.float()
    if model.output == "sigmoid":
        p = torch.sigmoid(logits[:, :1] if logits.shape[1] == 1 else logits)
        return torch.cat([1 - p, p], dim=1)
    return logits.softmax(dim=1)


class Scanner:
    """The per-batch function of a scan: ``batch(pixels, ids, labels) → Partial``.

    Args:
        model: the wrapped model.
        layers: the layers to summarize (``LayerInfo`` from ``model.resolve``).
        top_k: images kept per channel.
        rank: ``"max"`` (spatial max, as NetDissect) or ``"mean"`` (spatial mean, as CLIP-Dissect).
        classes: the number of classes (the model's outputs, or more labels).
        cam: compute the per-class mean Grad-CAM and the mistakes' CAMs (labelled images only).
        cam_layer: the CAM layer (``None``: the model's default CAM layer).
    """

    def __init__(
        self, model: Model, layers: list[LayerInfo], *, top_k: int, rank: str, classes: int,
        cam: bool, cam_layer: str | None = None,
    ):
        self.model = model
        self.layers = layers
        self.top_k = top_k
        self.rank = rank
        self.classes = classes
        self.cam = cam
        self.cam_layer = cam_layer
        #: the (k, all channels) values and ids of the best images seen so far, for ``batch``
        self._best: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict:  # a copy (e.g. a Ray actor's) starts with nothing seen
        return {**self.__dict__, "_best": None}

    def reset(self) -> None:
        """Forget the images seen: a run starts here (its partials are merged with each other
        and with committed shards only, never with an earlier run's lost ones)."""
        self._best = None

    def empty(self) -> Partial:
        return Partial({
            info.name: LayerPartial.empty(info.channels or 0, self.top_k) for info in self.layers
        })

    def batch(self, pixels: torch.Tensor, ids: np.ndarray, labels: np.ndarray) -> Partial:
        """One forward pass over ``pixels`` (N, H, W, 3, on the model's device) → a Partial.

        The scanner remembers the top-k of every batch it ran (values and ids): a batch's
        partial holds only the images that beat it, so most (image, channel) pairs are rejected
        by one comparison and argmax positions are looked up only for the maps that enter.
        Merged with the partials of the earlier batches (in any order), the top-k is exact.

        With CAMs, the same pass records the layers and starts autograd at the CAM layer: the
        Grad-CAM of the true class (and of the predicted one, for mistakes) costs only the
        backward passes through the head.
        """
        model = self.model
        labels = np.asarray(labels, np.int64)
        n = pixels.shape[0]
        cam = self.cam and bool((labels >= 0).any())
        infos = self.layers
        if cam:
            cam_info = self._cam_info()
            infos = [*self.layers, *([] if cam_info in self.layers else [cam_info])]
        # the recorded outputs stay until the pass ends: their heap is reserved with the chunk's
        size = host_chunk(n, largest_output_bytes(model), pixels.device,
                          kept_bytes=output_bytes(model, infos))
        if size < n:  # passes in chunks that fit glibc's heap (runtime.host_chunk)
            part = self.batch(pixels[:size], ids[:size], labels[:size])
            for start in range(size, n, size):
                stop = start + size
                part = part.merge(self.batch(pixels[start:stop], ids[start:stop],
                                             labels[start:stop]))
            return part
        if cam:
            with model.logit_outputs(), model.capture(infos, grad_from=[cam_info]) as cap:
                output = cap.run(model.prepare(pixels))
                outputs = dict(cap.outputs)
            with torch.enable_grad():
                logits = as_logits(model, output)
            probs = _from_logits(model, logits.detach())
        else:
            with model.capture(self.layers) as cap:
                out = cap.run(model.prepare(pixels))
                outputs = dict(cap.outputs)
            probs = model.output_probabilities(out)
        score, prediction = probs.max(dim=1)
        classes, rows = np.unique(labels, return_inverse=True)
        known = classes >= 0
        rows = np.where(labels >= 0, rows - (~known).sum(), -1)  # row in classes[known], or -1
        layers = self._layers(outputs, ids, rows, int(known.sum()))
        part = Partial(
            layers, np.asarray(ids, np.int64), labels, prediction.cpu().numpy().astype(np.int64),
            score.cpu().numpy().astype(np.float32), classes[known],
        )
        if self.cam:
            size = _kept_size(tuple(pixels.shape[1:3]))
            part.cam_sum = np.zeros((len(part.classes), *size))
            part.cam_count = np.zeros(len(part.classes), np.int64)
            part.mistake_cam = np.zeros((0, 2, *size), np.uint8)
            if cam:
                self._cams(part, logits, outputs[cam_info.name], tuple(pixels.shape[1:3]))
        return part

    def _cam_info(self) -> LayerInfo:
        from ..cam import target_layers

        return target_layers(self.model, self.cam_layer)[0]

    def _layers(
        self, outputs: dict[str, torch.Tensor], ids: np.ndarray, rows: np.ndarray, classes: int,
    ) -> dict[str, LayerPartial]:
        """Every layer's statistics of one batch: the spatial max with its position (the first
        maximum, as ``argmax``) and the mean of every map (:func:`~.reduce.spatial_stats`, one
        read of each map); everything after that runs once over all layers' channels side by
        side (one set of NumPy calls and one top-k loop, not one per layer)."""
        k = self.top_k
        maps = [self.model.nchw(outputs[info.name].detach()) for info in self.layers]
        channels = [t.shape[1] for t in maps]
        smax, where, smean = spatial_stats(maps)  # (N, all channels); where: h * W + w
        width = np.concatenate([np.full(t.shape[1], t.shape[3], np.int64) for t in maps])
        n, total = smax.shape
        mean = smean.mean(axis=0)
        onehot = np.zeros((classes, n))  # class sums as one product (np.add.at: 7 ms)
        known = np.nonzero(rows >= 0)[0]
        onehot[rows[known], known] = 1.0
        class_sum = onehot @ smean
        names = [info.name for info in self.layers]
        # the top-k: an image enters only if it beats the k-th entry of everything this scanner
        # has seen (one comparison rejects most); the final merge would drop the others anyway
        if self._best is None:
            self._best = empty_top(k, total)[:2]
        top = batch_top(smax if self.rank == "max" else smean, np.asarray(ids, np.int64), where,
                        width, *self._best)
        part = LayerPartial(
            n, (smax > 0).sum(axis=0), mean, ((smean - mean) ** 2).sum(axis=0), smax.max(axis=0),
            class_sum, *top,
        )
        return _split(part, names, channels)

    def _cams(
        self, part: Partial, logits: torch.Tensor, leaf: torch.Tensor, size: tuple[int, int]
    ) -> None:
        """Grad-CAM of the true class of the labelled images, and of the predicted class of the
        misclassified ones, from the batch's graph (``leaf``: the CAM layer's output)."""
        known = np.nonzero(part.label >= 0)[0]
        labels = part.label[known]
        wrong = np.nonzero(part.prediction[known] != labels)[0]
        true_heat = self._heatmap(logits, leaf, known, labels, size, keep=len(wrong) > 0)
        rows = np.searchsorted(part.classes, labels)
        np.add.at(part.cam_sum, rows, true_heat)
        np.add.at(part.cam_count, rows, 1)
        if len(wrong):
            predicted = part.prediction[known][wrong]
            pred_heat = self._heatmap(logits, leaf, known[wrong], predicted, size, keep=False)
            both = np.stack([true_heat[wrong], pred_heat], axis=1)
            part.mistake_id = part.image_id[known[wrong]]
            part.mistake_cam = np.round(both * 255).astype(np.uint8)

    def _heatmap(
        self, logits: torch.Tensor, leaf: torch.Tensor, rows: np.ndarray, targets: np.ndarray,
        size: tuple[int, int], keep: bool,
    ) -> np.ndarray:
        """Grad-CAM heatmaps (as ``model.cam``) of ``rows`` for their ``targets``."""
        from ..cam import GradCAM
        from ..cam.maps import normalize_maps

        model = self.model
        index = torch.as_tensor(rows, device=logits.device)
        chosen = logits.index_select(0, index)
        plan = resolve_targets(model, [int(t) for t in targets], chosen)
        with torch.enable_grad():
            score = score_rows(plan.round(0), chosen)
            (grad,) = torch.autograd.grad(score.sum(), leaf, retain_graph=keep)
        acts = model.nchw(leaf.detach()).float().index_select(0, index)
        grads = model.nchw(grad).float().index_select(0, index)
        raw = GradCAM().layer_map(None, None, acts, grads)  # type: ignore[arg-type]
        heat, _ = normalize_maps([raw], size)
        kept = _kept_size(size)
        if kept != size:
            heat = torch.nn.functional.interpolate(heat[:, None], size=kept, mode="area")[:, 0]
        return heat.double().cpu().numpy()


#: CAMs are kept at most this many pixels high and wide (a class mean of 1,000 classes stays small)
CAM_LIMIT = 64


def _kept_size(size: tuple[int, int]) -> tuple[int, int]:
    h, w = size
    scale = min(1.0, CAM_LIMIT / max(h, w))
    return (max(1, round(h * scale)), max(1, round(w * scale)))
