"""The method x layer sweep: every protocol on every map, baselines alongside, bootstrap CIs.

>>> ev = evaluate(model, "data/", methods="all", layers="auto")
>>> ev.table          # one row per (method, layer), each metric with a 95 % bootstrap CI
>>> ev.best()         # the (method, layer) the evidence favours, and by how much
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..cam import GRADIENT_METHODS, METHODS, default_layer, make_method
from ..cam.core import cam_pass, target_layers
from ..cam.maps import normalize_maps
from ..cam.metrics import _average_drop_increase, _deletion_insertion
from ..cam.sanity import _SEED_BASE, _groups
from ..errors import ConvlensError, ModelError
from ..models import load_model
from ..models.base import LayerInfo, Model
from ..progress import progress_bar
from .data import Dataset, class_indices, resolve_source
from .protocols import BASELINES, make_mosaics, pointing_game, road, spearman_rows

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["METRICS", "Best", "Evaluation", "auto_layers", "evaluate"]

#: Every metric and whether higher is better.
METRICS: dict[str, bool] = {
    "pointing": True,
    "deletion_auc": False,
    "insertion_auc": True,
    "road_morf": False,
    "road_lerf": True,
    "avg_drop": False,
    "increase": True,
    "randomization_rank_corr": False,
}
#: The protocols, by name: each fills the metrics listed.
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "pointing": ("pointing",),
    "deletion": ("deletion_auc", "insertion_auc"),
    "road": ("road_morf", "road_lerf"),
    "drop": ("avg_drop", "increase"),
    "randomization": ("randomization_rank_corr",),
}
#: Options that keep the one-forward-pass-per-channel methods affordable: each method's
#: ``quick_options`` (Faster Score-CAM's top 32 channels; Ablation-CAM's copies in batches of
#: 64, so that a busy machine's noisy timings cannot tune it down to one copy per pass).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    name: dict(cls.quick_options) for name, cls in METHODS.items() if cls.quick_options
}


# -- layers and methods ----------------------------------------------------------------------
def auto_layers(model: Model) -> list[LayerInfo]:
    """The default CAM layer and its neighbours, in forward order.

    The default layer (of every method); the spatial layers just before and after the last
    activation (the pre-activation output and the activation itself); and the outputs of the
    last two stages (the last two blocks of the shallowest level that has two).
    """
    spatial = [info for info in model.layers(include_blocks=True) if info.spatial]
    chosen = {default_layer(model, method).name for method in [None, *METHODS]}
    leaves = [info for info in spatial if info.is_leaf]
    activations = [k for k, info in enumerate(leaves) if info.kind == "activation"]
    if activations:
        last = activations[-1]
        chosen.update(info.name for info in leaves[max(0, last - 1) : last + 2])
    blocks: dict[int, list[LayerInfo]] = {}
    for info in spatial:
        if not info.is_leaf:
            blocks.setdefault(info.module_name.count("."), []).append(info)
    if blocks:
        level = min((d for d, found in blocks.items() if len(found) >= 2), default=min(blocks))
        chosen.update(info.name for info in blocks[level][-2:])
    return [info for info in spatial if info.name in chosen]


def _layers(model: Model, layers: Any) -> list[LayerInfo]:
    if layers == "auto":
        return auto_layers(model)
    if layers == "all":
        return [info for info in model.layers(include_blocks=True) if info.spatial]
    wanted = [layers] if isinstance(layers, str) else list(layers)
    found: dict[str, LayerInfo] = {}
    for selector in wanted:
        for info in target_layers(model, selector):
            found[info.name] = info
    if not found:
        raise ModelError("no layers to evaluate; pass 'auto', 'all' or layer names")
    return sorted(found.values(), key=lambda info: info.order)


def _methods(methods: Any) -> list[str]:
    if methods == "all":
        return list(METHODS)
    if methods == "gradient":
        return list(GRADIENT_METHODS)
    names = [methods] if isinstance(methods, str) else list(methods)
    if not names:
        raise ModelError("no methods to evaluate; pass 'all', 'gradient' or method names")
    return list(dict.fromkeys(make_method(name, {}).name for name in names))


# -- results ---------------------------------------------------------------------------------
@dataclass
class Best:
    """The (method, layer) with the best mean rank over the metrics, and how sure that is."""

    method: str
    layer: str
    mean_rank: float
    runner_up: tuple[str, str]
    runner_up_rank: float
    share_first: float  # share of bootstrap resamples in which it ranks first
    differences: dict[str, tuple[float, float, float]]  # metric → (best − runner-up, lo, hi)

    def __str__(self) -> str:
        diffs = ", ".join(
            f"{metric} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            for metric, (d, lo, hi) in self.differences.items()
        )
        return (
            f"{self.method} at {self.layer}: mean rank {self.mean_rank:.2f} vs "
            f"{self.runner_up_rank:.2f} for {self.runner_up[0]} at {self.runner_up[1]}; first "
            f"in {self.share_first:.0%} of bootstrap resamples; vs the runner-up: {diffs}"
        )


@dataclass
class Evaluation:
    """The sweep's result: ``table`` (a DataFrame), per-image values, and the example mosaic."""

    table: pd.DataFrame
    per_image: dict[tuple[str, str], dict[str, np.ndarray]]
    settings: dict[str, Any]
    images: list[str]
    targets: list[int]
    mosaic: np.ndarray | None = None  # (H, W, 3) uint8, the first mosaic
    mosaic_targets: list[str] = field(default_factory=list)  # its 4 cells' class names
    mosaic_maps: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)  # (4, H, W)
    resampled: np.ndarray | None = field(default=None, repr=False)  # (rows, metrics, B)

    def best(self) -> Best:
        """The (method, layer) with the best mean rank over the metrics (baselines excluded).

        Each metric ranks the candidates (1 = best, by its direction); the mean over the
        metrics that were measured is the score. ``share_first`` is how often the winner
        also wins on the bootstrap resamples of the images and mosaics (paired).
        """
        table = self.table
        rows = np.flatnonzero(~table["baseline"].to_numpy())
        if rows.size == 0:
            raise ModelError("the evaluation has no method rows (only baselines)")
        names = list(METRICS)
        means = table[names].to_numpy(dtype=np.float64)[rows]
        ranks = _mean_ranks(means[..., None])[:, 0]
        order = np.argsort(ranks, kind="stable")
        first = rows[order[0]]
        second = rows[order[1]] if rows.size > 1 else first
        share, differences = 1.0, {}
        if self.resampled is not None:
            boot = self.resampled[rows]  # (candidates, metrics, B)
            boot_ranks = _mean_ranks(boot)
            share = float(np.mean(np.argmin(boot_ranks, axis=0) == order[0]))
            for m, metric in enumerate(names):
                diff = self.resampled[first, m] - self.resampled[second, m]
                if np.isfinite(diff).all():
                    d = float(means[order[0], m] - means[order[1] if rows.size > 1 else 0, m])
                    lo, hi = np.percentile(diff, [2.5, 97.5])
                    differences[metric] = (d, float(lo), float(hi))
        return Best(
            method=str(table["method"].iloc[first]), layer=str(table["layer"].iloc[first]),
            mean_rank=float(ranks[order[0]]),
            runner_up=(str(table["method"].iloc[second]), str(table["layer"].iloc[second])),
            runner_up_rank=float(ranks[order[1]] if rows.size > 1 else ranks[order[0]]),
            share_first=share, differences=differences,
        )

    def save(self, out: str | Path) -> Path:
        """Write ``evaluation.parquet`` and ``evaluation.csv`` into ``out``; returns the folder."""
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        self.table.to_parquet(folder / "evaluation.parquet", index=False)
        self.table.to_csv(folder / "evaluation.csv", index=False, float_format="%.6g")
        return folder

    def __repr__(self) -> str:
        return (f"<Evaluation of {self.settings.get('model')}: {len(self.table)} rows, "
                f"{len(self.images)} images>")


def _mean_ranks(values: np.ndarray) -> np.ndarray:
    """(rows, metrics, B) means → (rows, B) mean rank over the metrics (1 = best; NaN skipped)."""
    from scipy.stats import rankdata

    signed = np.where(np.asarray(list(METRICS.values()))[None, :, None], -values, values)
    ranks = rankdata(signed, axis=0, method="average", nan_policy="omit")
    ranks = np.where(np.isnan(values), np.nan, ranks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(ranks, axis=1)
    return np.nan_to_num(mean, nan=np.inf)


# -- the sweep -------------------------------------------------------------------------------
def _confident_groups(
    targets: list[int], top1: list[int], confidence: np.ndarray, min_confidence: float,
    seed: int,
) -> list[list[int]]:
    """Groups of 4 images of distinct classes, each classified alone as its target with at
    least ``min_confidence``; images in a seeded random order, greedily grouped."""
    confident = [i for i in range(len(targets))
                 if top1[i] == targets[i] and confidence[i] >= min_confidence]
    order = np.random.default_rng(seed).permutation(len(confident))
    open_groups: list[list[int]] = []
    for k in order:
        image = confident[int(k)]
        for group in open_groups:
            if len(group) < 4 and all(targets[j] != targets[image] for j in group):
                group.append(image)
                break
        else:
            open_groups.append([image])
    return [sorted(g) for g in open_groups if len(g) == 4]


def _randomized(model: Model, seed: int) -> Model:
    """A copy of the model with every weighted layer re-initialized: the last stage of Adebayo
    et al.'s cascading randomization, as ``randomization_check(..., stages=1)`` draws it."""
    copy_model = model.copy(name=f"{model.name} (randomized)")
    weighted = set(copy_model.weighted_layers())
    names = [info.module_name for info in copy_model.layers(include_blocks=True)
             if info.module_name in weighted]
    copy_model.reinitialize(_groups(list(dict.fromkeys(names)), 1)[0], _SEED_BASE + seed)
    return copy_model


def _chunks(n: int, size: int) -> list[range]:
    return [range(s, min(n, s + size)) for s in range(0, n, size)]


def _bootstrap(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(B,) means of ``values`` over the resampled ``index`` (B, n); NaN when no values."""
    if values.size == 0:
        return np.full(index.shape[0], np.nan)
    return values[index].mean(axis=1)


def evaluate(
    model: Any = None,
    source: Any = None,
    methods: Any = "all",
    layers: Any = "auto",
    *,
    labels: Sequence[Any] | None = None,
    baselines: bool = True,
    steps: int = 20,
    road_fractions: Sequence[float] = (0.2, 0.4, 0.6, 0.8),
    road_noise: float = 2.55,
    min_confidence: float = 0.5,
    protocols: Sequence[str] = tuple(PROTOCOLS),
    bootstrap: int = 1000,
    seed: int = 0,
    chunk: int = 16,
    method_options: dict[str, dict[str, Any]] | None = None,
    batch_size: int | None = None,
    memory_budget: int | None = None,
    progress: bool = True,
) -> Evaluation:
    """Run every protocol for every (method, layer), with the three baselines, and tabulate.

    Args:
        model: a Model or anything ``load_model`` takes (default: the embedded model).
        source: a folder (ImageFolder: one sub-folder per class, named by class name or index;
            or flat), image paths / sample names / arrays, or None (the bundled photos).
        methods: ``"all"``, ``"gradient"`` or a list of CAM method names.
        layers: ``"auto"`` (:func:`auto_layers`), ``"all"`` (every spatial layer), names, or
            ``"default"`` (each method at the layer ``cam(layer=None)`` uses for it).
        labels: one class (index or name) per image; default: the folder's, else the top-1.
        steps: deletion / insertion steps. road_fractions, road_noise: ROAD's removal fractions
            and imputation noise (pixel units). min_confidence: the least probability an
            image needs (alone) to enter the pointing game's mosaics.
        protocols: which of :data:`PROTOCOLS` to run (the others' columns stay NaN);
            "randomization" runs the maps on a fully re-initialized copy of the model.
        bootstrap: resamples for the 95 % CIs; seed: seeds the mosaics, the random baseline,
            ROAD's noise and the resamples: the same call gives the same table.
        chunk: images per batch of CAM calls; method_options: per-method options (default:
            each method's ``quick_options``); batch_size / memory_budget: the perturbed batches.
    """
    try:
        import pandas as pd  # the optional dependency (convlens[evaluate]), checked first
    except ImportError:
        raise ConvlensError(
            "evaluate needs pandas and pyarrow: pip install 'convlens[evaluate]'"
        ) from None

    model = model if isinstance(model, Model) else load_model(model)
    method_names = _methods(methods)
    options = {**DEFAULT_OPTIONS, **(method_options or {})}
    for name in method_names:
        make_method(name, options.get(name, {}))
    if layers == "default":  # each method at its own default layer
        pairs = [(method, default_layer(model, method).name) for method in method_names]
    else:
        pairs = [(method, info.name) for info in _layers(model, layers) for method in method_names]
    if steps < 1 or chunk < 1 or bootstrap < 1:
        raise ModelError("steps, chunk and bootstrap must be at least 1")
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ModelError(f"unknown protocol {unknown[0]!r}; use some of {', '.join(PROTOCOLS)}")
    run = set(protocols)
    if not 0.0 <= min_confidence <= 1.0:
        raise ModelError(f"min_confidence is a probability in [0, 1], not {min_confidence}")
    data: Dataset = resolve_source(source, labels)
    wanted = class_indices(model, data.labels) if data.labels is not None else None

    pixels = model.to_pixels(data.items)
    n = pixels.shape[0]
    probabilities = torch.cat([model.probabilities(pixels[c.start : c.stop]).float()
                               for c in _chunks(n, max(chunk, 32))])
    classes = probabilities.shape[1]
    if wanted is not None and not all(0 <= t < classes for t in wanted):
        raise ModelError(f"labels must be class indices in 0..{classes - 1}")
    top1 = probabilities.argmax(dim=1).tolist()
    targets = wanted if wanted is not None else top1
    confidence = probabilities[torch.arange(n), torch.tensor(targets)].cpu().numpy()
    groups = _confident_groups(targets, top1, confidence, min_confidence, seed)
    mosaics, layouts = make_mosaics(pixels, groups, shrink=model.fixed_input_size)
    cells = [cell for _ in layouts for cell in range(4)]
    mosaic_targets = [targets[layout[cell]] for layout in layouts for cell in range(4)]
    if not groups and "pointing" in run:
        warnings.warn(
            f"no 4 images of distinct classes are classified with probability >= "
            f"{min_confidence}: the pointing game is left out (NaN)", RuntimeWarning, stacklevel=2,
        )
    randomized = _randomized(model, seed) if "randomization" in run else None

    rows: list[tuple[str, str]] = [(b, "") for b in BASELINES] if baselines else []
    rows += pairs
    if "pointing" not in run:
        mosaic_targets, cells, layouts = [], [], []
    image_chunks, mosaic_rows = _chunks(n, chunk), len(mosaic_targets)
    mosaic_chunks = _chunks(mosaic_rows, chunk)
    per_image: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    seconds: dict[tuple[str, str], list[float]] = {}
    example: dict[tuple[str, str], np.ndarray] = {}

    cam_rows = [row for row in rows if row[1]]
    layer_names = list(dict.fromkeys(layer for _, layer in cam_rows))
    gradients = any(make_method(m, {}).needs_gradients for m, _ in cam_rows)

    def maps(net: Model, x: torch.Tensor, target: list[int], ids: Sequence[int]
             ) -> tuple[dict[tuple[str, str], torch.Tensor], dict[tuple[str, str], float]]:
        """Every row's maps of a batch, and the seconds each took. The CAM rows share one
        forward (+ backward) pass that captures all their layers (as each method's own
        ``compute_cam`` call would compute it); a row's time is that pass plus its own work."""
        heat: dict[tuple[str, str], torch.Tensor] = {}
        spent: dict[tuple[str, str], float] = {}
        for row in rows:
            if not row[1]:
                started = time.perf_counter()
                heat[row] = BASELINES[row[0]](x, ids, seed)
                spent[row] = time.perf_counter() - started
        if not cam_rows:
            return heat, spent
        infos = {name: target_layers(net, name)[0] for name in layer_names}  # net's own modules
        size = tuple(x.shape[1:3])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-zero maps: scored as they are
            started = time.perf_counter()
            ctx, acts, grads = cam_pass(net, x, list(infos.values()), target, gradients)
            shared = time.perf_counter() - started
            for method, layer in cam_rows:
                started = time.perf_counter()
                algorithm = make_method(method, options.get(method, {}))
                raw = algorithm.layer_map(ctx, infos[layer], acts[layer], grads.get(layer))
                heat[method, layer] = normalize_maps([raw], size)[0]
                spent[method, layer] = shared + time.perf_counter() - started
        return heat, spent

    def stacked(found: dict[tuple[str, str], torch.Tensor]) -> torch.Tensor:
        return torch.cat([found[row] for row in rows])

    with progress_bar("evaluate", len(image_chunks) + len(mosaic_chunks), progress) as advance:
        values: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {
            row: {m: [] for m in METRICS} for row in rows}
        for row in rows:
            seconds[row] = []
        for part in image_chunks:
            x, ids = pixels[part.start : part.stop], list(part)
            target = [targets[i] for i in ids]
            found, spent = maps(model, x, target, ids)
            for row in rows:
                seconds[row].append(spent[row] / len(ids))
            # every row's maps of this chunk in one batch: row-major, image-minor
            heat, count = stacked(found), len(ids)
            index = [i for _ in rows for i in range(count)]
            every = target * len(rows)
            measured: dict[str, np.ndarray] = {}
            if "deletion" in run:
                rise = _deletion_insertion(model, x, heat, every, steps, "black", batch_size,
                                           memory_budget, False, image_index=index)
                measured["deletion_auc"], measured["insertion_auc"] = (
                    rise["deletion"], rise["insertion"])
            if "drop" in run:
                drops = _average_drop_increase(model, x, heat, every, batch_size,
                                               memory_budget, image_index=index)
                measured["avg_drop"] = 100 * drops["drop"]
                measured["increase"] = 100 * (
                    drops["explanation_confidence"] > drops["confidence"])
            if "road" in run:
                roads = road(model, x, heat, every, fractions=road_fractions, noise=road_noise,
                             seed=seed, image_ids=ids, image_index=index,
                             batch_size=batch_size, memory_budget=memory_budget)
                measured["road_morf"], measured["road_lerf"] = roads["morf"], roads["lerf"]
            if randomized is not None:
                again = stacked(maps(randomized, x, target, ids)[0])
                measured["randomization_rank_corr"] = spearman_rows(
                    heat.cpu().numpy(), again.cpu().numpy())
            for r, row in enumerate(rows):
                for metric, found_values in measured.items():
                    values[row][metric].append(
                        np.asarray(found_values)[r * count : (r + 1) * count])
            advance(1)
        for part in mosaic_chunks:
            ids = [n + i for i in part]
            found, _ = maps(model, mosaics[[i // 4 for i in part]],
                            [mosaic_targets[i] for i in part], ids)
            for row in rows:
                values[row]["pointing"].append(
                    pointing_game(found[row], [cells[i] for i in part]))
                if part.start == 0:
                    example[row] = found[row][:4].cpu().numpy().astype(np.float16)
            advance(1)
        for row in rows:
            per_image[row] = {
                m: np.concatenate(v).astype(np.float64) if v else np.zeros(0)
                for m, v in values[row].items()
            }

    rng = np.random.default_rng(seed)
    image_index = rng.integers(0, n, (bootstrap, n))
    mosaic_index = rng.integers(0, max(1, mosaic_rows), (bootstrap, mosaic_rows))
    records, resampled = [], []
    for row in rows:
        record: dict[str, Any] = {"method": row[0], "layer": row[1], "baseline": not row[1]}
        boots = []
        for metric in METRICS:
            v = per_image[row][metric]
            index = mosaic_index if metric == "pointing" else image_index
            boot = _bootstrap(v, index)
            boots.append(boot)
            record[metric] = float(v.mean()) if v.size else np.nan
            lo, hi = np.percentile(boot, [2.5, 97.5]) if v.size else (np.nan, np.nan)
            record[f"{metric}_lo"], record[f"{metric}_hi"] = float(lo), float(hi)
        ms = 1000 * np.asarray(seconds[row])
        weights = np.asarray([len(c) for c in image_chunks], dtype=np.float64)
        record["ms_per_image"] = float(np.average(ms, weights=weights))
        chunk_boot = rng.integers(0, len(ms), (bootstrap, len(ms)))
        ms_boot = (ms[chunk_boot] * weights[chunk_boot]).sum(1) / weights[chunk_boot].sum(1)
        lo, hi = np.percentile(ms_boot, [2.5, 97.5])
        record["ms_per_image_lo"], record["ms_per_image_hi"] = float(lo), float(hi)
        records.append(record)
        resampled.append(np.stack(boots))
    table = pd.DataFrame.from_records(records)
    _mark_baselines(table)
    first = layouts[0] if layouts else None
    return Evaluation(
        table=table, per_image=per_image,
        settings={
            "model": model.name, "methods": method_names,
            "layers": list(dict.fromkeys(layer for _, layer in pairs)),
            "steps": steps, "road_fractions": list(road_fractions), "road_noise": road_noise,
            "min_confidence": min_confidence, "bootstrap": bootstrap, "seed": seed,
            "images": n, "mosaics": len(layouts), "method_options": options,
        },
        images=data.names, targets=list(targets),
        mosaic=None if first is None else mosaics[0].clamp(0, 255).round().byte().cpu().numpy(),
        mosaic_targets=[] if first is None else [model.class_name(targets[i]) for i in first],
        mosaic_maps=example, resampled=np.stack(resampled) if resampled else None,
    )


def _mark_baselines(table: pd.DataFrame) -> None:
    """``beats_baselines``: better than every baseline on every metric measured;
    ``not_beaten``: the metrics where it is not (comma-separated)."""
    baseline = table[table["baseline"]]
    beats, missing = [], []
    for _, row in table.iterrows():
        lost = []
        for metric, higher in METRICS.items():
            mine, theirs = row[metric], baseline[metric].to_numpy(dtype=np.float64)
            theirs = theirs[np.isfinite(theirs)]
            if not np.isfinite(mine) or theirs.size == 0:
                continue
            if (mine <= theirs.max()) if higher else (mine >= theirs.min()):
                lost.append(metric)
        missing.append(",".join(lost))
        beats.append(not lost and not row["baseline"])
    table["beats_baselines"] = beats
    table["not_beaten"] = missing
