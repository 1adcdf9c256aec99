"""Evaluation protocols that convlens.cam does not already have, and the baseline maps.

- :func:`pointing_game` — the grid pointing game of Böhle, Fritz and Schiele, "B-cos Networks:
  Alignment is All We Need for Interpretability", CVPR 2022 (after Rao, Böhle and Schiele,
  "Towards Better Understanding Attribution Methods", CVPR 2022): images the model classifies
  confidently alone, of distinct classes, are tiled into a 2x2 mosaic; explaining the class of
  one cell, the score is the share of the positive attribution that falls inside that cell.
  :func:`make_mosaics` builds the mosaics (every image visits every cell).
- :func:`road` — ROAD, Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent and Efficient
  Evaluation Strategy for Attribution Methods", ICML 2022: remove a fraction of the pixels, most
  relevant first (MoRF) or least relevant first (LeRF), fill them by *noisy linear imputation*
  (each removed pixel the weighted mean of its 8 neighbours, 1/6 direct and 1/12 diagonal, one
  sparse linear system per image: :func:`road_impute` solves it exactly with ``scipy.sparse``,
  :func:`road_impute_batch` a batch at once with torch, as :func:`road` does; plus Gaussian
  noise), and track
  the target's probability. A faithful map makes MoRF fall fast (low) and LeRF stay high.
- Deletion / insertion AUC (Petsiuk et al. 2018), Average Drop / Increase (Chattopadhay et al.
  2018) and the parameter randomization check (Adebayo et al. 2018) are reused from
  :mod:`convlens.cam.metrics` and :mod:`convlens.cam.sanity`.

Baselines (:data:`BASELINES`): a seeded uniform random map, a centred Gaussian, and the Sobel
edge magnitude of the image. A method that does not beat them shows nothing about the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..batching import BatchSizer, max_batch
from ..errors import ModelError
from ..models.base import Model

__all__ = [
    "BASELINES", "centre_gaussian", "make_mosaics", "mosaic_cells", "pointing_game",
    "random_map", "road", "road_impute", "road_impute_batch", "sobel_map",
]

GRID = 2  # a 2x2 mosaic: cells 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right


# -- the grid pointing game ------------------------------------------------------------------
def mosaic_cells(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """(4, H, W) bool: the pixels of each cell of a 2x2 mosaic of that size."""
    half_h, half_w = height // GRID, width // GRID
    ys = torch.arange(height, device=device)[:, None] >= half_h
    xs = torch.arange(width, device=device)[None, :] >= half_w
    return torch.stack([~ys & ~xs, ~ys & xs, ys & ~xs, ys & xs])


def pointing_game(heatmaps: torch.Tensor | np.ndarray, cells: Sequence[int]) -> np.ndarray:
    """Share of each map's positive attribution inside its target's cell: (R,) in [0, 1].

    ``heatmaps`` (R, H, W) of 2x2 mosaics; ``cells[r]`` is the cell (0..3, row-major) holding
    the class map r explains. A map with no positive attribution scores 0.
    """
    heat = torch.as_tensor(heatmaps, dtype=torch.float32).clamp_min(0)
    if heat.ndim != 3 or heat.shape[0] != len(cells):
        raise ModelError(f"{len(cells)} cells for heatmaps of shape {tuple(heat.shape)}")
    masks = mosaic_cells(heat.shape[1], heat.shape[2], heat.device)
    inside = (heat * masks[torch.as_tensor(list(cells), device=heat.device)]).sum(dim=(1, 2))
    total = heat.sum(dim=(1, 2))
    return torch.where(total > 0, inside / total.clamp_min(1e-30), 0.0).cpu().numpy()


def make_mosaics(
    pixels: torch.Tensor, groups: Sequence[Sequence[int]], shrink: bool = False
) -> tuple[torch.Tensor, list[list[int]]]:
    """2x2 mosaics of ``pixels`` (N, H, W, 3): each group of 4 images in its 4 cyclic orders.

    As in the papers, the images keep their size (a 2H x 2W mosaic); with ``shrink`` (a model
    that takes only one input size) each is shrunk (bilinear, antialiased) into an H/2 x W/2
    cell. Every image visits every cell once. Returns the (4 * groups, ...) mosaics and, for
    each, the image index in cells 0..3.
    """
    h, w = pixels.shape[1:3]
    if not shrink:
        h, w = 2 * h, 2 * w
    half_h, half_w = h // GRID, w // GRID
    sizes = [(half_h, half_w), (half_h, w - half_w), (h - half_h, half_w), (h - half_h, w - half_w)]
    layouts = [[group[(cell + shift) % 4] for cell in range(4)]
               for group in groups for shift in range(4)]
    mosaics = pixels.new_empty((len(layouts), h, w, 3))
    if not layouts:
        return mosaics, layouts
    nchw = pixels.permute(0, 3, 1, 2).float()
    shrunk = {
        size: pixels if size == tuple(pixels.shape[1:3]) else F.interpolate(
            nchw, size=size, mode="bilinear", align_corners=False, antialias=True,
        ).permute(0, 2, 3, 1).to(pixels.dtype)
        for size in dict.fromkeys(sizes)
    }
    origins = [(0, 0), (0, half_w), (half_h, 0), (half_h, half_w)]
    for m, layout in enumerate(layouts):
        for cell, image in enumerate(layout):
            (y, x), (ch, cw) = origins[cell], sizes[cell]
            mosaics[m, y : y + ch, x : x + cw] = shrunk[(ch, cw)][image]
    return mosaics, layouts


# -- ROAD: noisy linear imputation -----------------------------------------------------------
#: (dy, dx, weight): the 8 neighbours of ROAD's imputation; the weights sum to 1.
NEIGHBOURS = tuple(
    (dy, dx, 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
    for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx
)


def road_impute(
    image: np.ndarray, removed: np.ndarray, noise: float = 0.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """ROAD's noisy linear imputation of one (H, W, C) image where ``removed`` (H, W) is True.

    Each removed pixel equals the weighted mean of its neighbours inside the image (known or
    removed): ``sum_j w_j (x_i - x_j) = 0``, a sparse symmetric system over the removed pixels
    (one factorization, a right-hand side per channel). Then Gaussian noise of standard
    deviation ``noise`` is added to the imputed pixels.
    """
    h, w, channels = image.shape
    flat = image.reshape(-1, channels).astype(np.float64)
    unknown = np.flatnonzero(removed.ravel())
    out = flat.copy()
    n = unknown.size
    if n == 0:
        return out.reshape(image.shape).astype(image.dtype)
    if n == h * w:
        raise ModelError("ROAD cannot impute an image with every pixel removed (fraction < 1)")
    position = np.full(h * w, -1)
    position[unknown] = np.arange(n)
    ys, xs = np.divmod(unknown, w)
    diagonal = np.zeros(n)
    rhs = np.zeros((n, channels))
    rows, cols, values = [], [], []
    for dy, dx, weight in NEIGHBOURS:
        y, x = ys + dy, xs + dx
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        diagonal[inside] += weight
        rows_in = np.flatnonzero(inside)
        neighbour = y[inside] * w + x[inside]
        free = position[neighbour] >= 0
        rows.append(rows_in[free])
        cols.append(position[neighbour[free]])
        values.append(np.full(int(free.sum()), -weight))
        np.add.at(rhs, rows_in[~free], weight * flat[neighbour[~free]])
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    values.append(diagonal)
    import scipy.sparse as sparse  # imported when ROAD first runs
    from scipy.sparse.linalg import splu

    matrix = sparse.csc_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    solved = splu(matrix, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                  options={"SymmetricMode": True}).solve(rhs)
    if noise > 0:
        solved = solved + (rng or np.random.default_rng(0)).normal(0.0, noise, solved.shape)
    out[unknown] = solved
    return out.reshape(image.shape).astype(image.dtype)


class _Grid:
    """One level of the imputation system: the free (removed) pixels, its diagonal, the stencil.

    Tensors are (B, C, h, w) in channels-last memory (the pixels' own layout), where the
    depthwise convolutions and the elementwise steps are fastest on a CPU.
    """

    def __init__(self, free: torch.Tensor):
        self.free = free  # 1.0 where removed, else 0.0
        channels, (h, w) = free.shape[1], free.shape[-2:]
        kernel = torch.zeros(3, 3, dtype=free.dtype, device=free.device)
        for dy, dx, weight in NEIGHBOURS:
            kernel[dy + 1, dx + 1] = weight
        self.channels = channels
        self.stencil = kernel.expand(channels, 1, 3, 3).contiguous()
        ones = torch.ones(1, 1, h, w, dtype=free.dtype, device=free.device)
        diagonal = F.conv2d(ones, kernel[None, None], padding=1)  # weight inside the image
        self.diagonal = free * diagonal
        self.inverse = free / diagonal

    def apply(self, p: torch.Tensor) -> torch.Tensor:
        """The system's matrix times ``p`` (zero on known pixels): ``D p - K p`` on free ones."""
        neighbours = F.conv2d(p, self.stencil, padding=1, groups=self.channels)
        return torch.addcmul(self.diagonal * p, self.free, neighbours, value=-1.0)


class _Multigrid:
    """A symmetric V-cycle: the preconditioner of :func:`road_impute_batch`'s conjugate gradient.

    Coarse grids by 2 x 2 blocks (a coarse pixel is free when its 4 fine pixels are), full
    weighting down and its transpose (bilinear) up, one Jacobi sweep before and after, Jacobi
    sweeps on the coarsest grid.
    """

    def __init__(self, free: torch.Tensor, coarsest: int = 4, sweeps: int = 16):
        self.grids = [_Grid(free)]
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=free.dtype, device=free.device) / 4
        channels = free.shape[1]
        self.kernel = (taps[:, None] * taps[None, :]).expand(channels, 1, 4, 4).contiguous()
        while min(self.grids[-1].free.shape[-2:]) >= 2 * coarsest:
            coarse = F.avg_pool2d(self.grids[-1].free, 2) >= 1
            self.grids.append(_Grid(coarse.to(free.dtype).contiguous(
                memory_format=torch.channels_last)))
        self.sweeps = sweeps

    def __call__(self, r: torch.Tensor, level: int = 0) -> torch.Tensor:
        grid = self.grids[level]
        x = grid.inverse * r
        if level == len(self.grids) - 1:
            for _ in range(self.sweeps - 1):
                x.addcmul_(grid.inverse, r - grid.apply(x))
            return x
        coarse = self.grids[level + 1]
        down = F.conv2d(r - grid.apply(x), self.kernel, stride=2, padding=1,
                        groups=grid.channels)
        correction = self(coarse.free * down, level + 1)
        h, w = r.shape[-2:]
        up = F.conv_transpose2d(
            correction, self.kernel, stride=2, padding=1, groups=grid.channels,
            output_padding=(h - 2 * correction.shape[-2], w - 2 * correction.shape[-1]),
        )
        x.addcmul_(grid.free, up)
        return x.addcmul_(grid.inverse, r - grid.apply(x))


def road_impute_batch(
    images: torch.Tensor, removed: torch.Tensor, *, tol: float = 3e-5, max_iter: int = 40,
) -> torch.Tensor:
    """:func:`road_impute` (without noise) of a batch, on the images' device: (B, H, W, C).

    The same linear system, ``sum_j w_j (x_i - x_j) = 0`` over the removed pixels, solved for
    every image and channel at once by conjugate gradients, preconditioned by a multigrid
    V-cycle (the 8-neighbour stencil is a depthwise convolution), until each system's residual
    is below ``tol`` times its right-hand side (3e-5: within ~0.1 of the exact solve, in pixel
    units, on 128 px photos, where ROAD then adds noise of 2.55). Runs in float32 (or the
    images' dtype, if wider), at most ``max_iter`` iterations (a float32 residual can stall
    above ``tol``; a typical batch needs 10-16). ``removed`` is (B, H, W) bool.
    """
    dtype = torch.promote_types(images.dtype, torch.float32)
    pixels = images.to(dtype).permute(0, 3, 1, 2)  # (B, C, H, W), channels-last in memory
    if pixels.shape[0] == 0:
        return images.clone()
    if bool(removed.flatten(1).all(dim=1).any()):
        raise ModelError("ROAD cannot impute an image with every pixel removed (fraction < 1)")
    free = torch.empty_like(pixels).copy_(removed[:, None].expand(pixels.shape))
    known = pixels * (1 - free)
    multigrid = _Multigrid(free)
    grid = multigrid.grids[0]
    rhs = grid.free * F.conv2d(known, grid.stencil, padding=1, groups=grid.channels)
    tiny = torch.finfo(dtype).tiny
    scale = torch.linalg.vector_norm(rhs, dim=(2, 3)).clamp_min(tiny)
    x = torch.zeros_like(rhs)
    r, z = rhs, multigrid(rhs)
    p, rz = z, (rhs * z).sum(dim=(2, 3))
    for _ in range(max_iter):
        q = grid.apply(p)
        alpha = (rz / (p * q).sum(dim=(2, 3)).clamp_min(tiny))[..., None, None]
        x.addcmul_(alpha, p)
        r = r - alpha * q
        if float((torch.linalg.vector_norm(r, dim=(2, 3)) / scale).max()) <= tol:
            break
        z = multigrid(r)
        rz_next = (r * z).sum(dim=(2, 3))
        p = z.addcmul_((rz_next / rz.clamp_min(tiny))[..., None, None], p)
        rz = rz_next
    return (known + x).permute(0, 2, 3, 1).to(images.dtype)


def _road_noise(
    noise: float, seed: int, image: int, lerf: int, step: int, count: int, channels: int
) -> np.ndarray:
    """ROAD's noise for one (image, order, fraction), as :func:`road_impute` draws it."""
    rng = np.random.default_rng([seed, image, lerf, step])
    return rng.normal(0.0, noise, (count, channels))


def road(
    model: Model, pixels: torch.Tensor, heatmaps: torch.Tensor, classes: Sequence[int], *,
    fractions: Sequence[float] = (0.2, 0.4, 0.6, 0.8), noise: float = 2.55, seed: int = 0,
    image_ids: Sequence[int] | None = None, image_index: Sequence[int] | None = None,
    batch_size: int | None = None, memory_budget: int | None = None, tol: float = 3e-5,
) -> dict[str, np.ndarray]:
    """ROAD scores of each heatmap for its class: ``morf`` and ``lerf`` (R,), and their curves.

    For every fraction p, the p * H * W most (MoRF) or least (LeRF) relevant pixels are removed
    and imputed; the score is the mean target probability over ``fractions`` (MoRF: lower is
    better, LeRF: higher). ``noise`` is in pixel units (0..255; 2.55 = 1 % of the range). Map r
    explains ``pixels[image_index[r]]`` (default: map r, image r), so several maps of the same
    images run in one call; the noise of image i comes from ``(seed, image_ids[i])``, so any
    batching gives the same result. The imputation is :func:`road_impute_batch` (``tol``).
    """
    fractions = [float(f) for f in fractions]
    if not fractions or not all(0.0 < f < 1.0 for f in fractions):
        raise ModelError(f"ROAD fractions must lie strictly between 0 and 1, not {fractions}")
    rows, h, w = heatmaps.shape
    source = list(range(rows)) if image_index is None else [int(i) for i in image_index]
    ids = list(range(pixels.shape[0])) if image_ids is None else [int(i) for i in image_ids]
    if len(source) != rows or len(classes) != rows:
        raise ModelError(f"{rows} heatmaps need one image index and one class each")
    device = pixels.device
    area, channels = h * w, pixels.shape[-1]
    order = heatmaps.reshape(rows, -1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(area, device=order.device).expand(rows, area))
    counts = [min(area - 1, max(1, round(f * area))) for f in fractions]
    k = len(fractions)
    jobs = rows * 2 * k  # map-major; then MoRF (0) / LeRF (1); then fraction
    probabilities = torch.empty(jobs, device=device)
    target = torch.as_tensor(list(classes), device=device)
    draws: dict[tuple[int, int, int], np.ndarray] = {}  # the same for every map of an image

    def drawn(image: int, lerf: int, step: int) -> np.ndarray:
        key = (image, lerf, step)
        if key not in draws:
            draws[key] = _road_noise(noise, seed, ids[image], lerf, step, counts[step], channels)
        return draws[key]

    for start, stop in BatchSizer(jobs, max_batch(model, (h, w), memory_budget), device,
                                  batch_size):
        job = torch.arange(start, stop, device=rank.device)
        row, lerf, step = job // (2 * k), (job // k) % 2, job % k
        limit = torch.as_tensor(counts, device=rank.device)[step][:, None]
        removed = torch.where((lerf == 0)[:, None], rank[row] < limit, rank[row] >= area - limit)
        removed = removed.reshape(-1, h, w)
        image = torch.as_tensor(source, device=device)[row.to(device)]
        batch = road_impute_batch(pixels[image], removed.to(device), tol=tol)
        if noise > 0:
            values = np.concatenate([
                drawn(source[int(j) // (2 * k)], int(j) // k % 2, int(j) % k)
                for j in range(start, stop)
            ])
            extra = torch.zeros(batch.shape, dtype=batch.dtype, device=device)
            extra[removed.to(device)] = torch.from_numpy(values).to(device, batch.dtype)
            batch = batch + extra
        probabilities[start:stop] = model.probabilities(batch).gather(
            1, target[row.to(device)][:, None])[:, 0]
    curves = probabilities.reshape(rows, 2, k).cpu().numpy()
    return {"morf": curves[:, 0].mean(axis=1), "lerf": curves[:, 1].mean(axis=1),
            "morf_curve": curves[:, 0], "lerf_curve": curves[:, 1],
            "fractions": np.asarray(fractions)}


# -- baselines -------------------------------------------------------------------------------
def random_map(pixels: torch.Tensor, image_ids: Sequence[int], seed: int = 0) -> torch.Tensor:
    """A uniform random map per image, from ``(seed, image id)``: (N, H, W) on the device."""
    h, w = pixels.shape[1:3]
    maps = np.stack([
        np.random.default_rng([seed, int(i)]).random((h, w), dtype=np.float32) for i in image_ids
    ]) if len(image_ids) else np.zeros((0, h, w), np.float32)
    return torch.from_numpy(maps).to(pixels.device)


def centre_gaussian(pixels: torch.Tensor, image_ids: Sequence[int] = (), seed: int = 0
                    ) -> torch.Tensor:
    """A Gaussian centred on the image, sigma a quarter of the shorter side: (N, H, W)."""
    n, h, w = pixels.shape[:3]
    sigma = min(h, w) / 4
    y = torch.arange(h, device=pixels.device, dtype=torch.float32) - (h - 1) / 2
    x = torch.arange(w, device=pixels.device, dtype=torch.float32) - (w - 1) / 2
    bump = torch.exp(-(y[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))
    return bump.expand(n, h, w).clone()


def sobel_map(pixels: torch.Tensor, image_ids: Sequence[int] = (), seed: int = 0) -> torch.Tensor:
    """The Sobel gradient magnitude of each image's grey level, max-normalized: (N, H, W)."""
    gray = pixels.float().mean(dim=-1)[:, None]
    gray = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    dx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                      device=pixels.device)
    kernels = torch.stack([dx, dx.T])[:, None]
    edges = F.conv2d(gray, kernels).pow(2).sum(dim=1).sqrt()
    peak = edges.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    return edges / peak


#: name → function of (pixels (N, H, W, 3), image ids, seed) giving (N, H, W) maps.
BASELINES: dict[str, Callable[..., torch.Tensor]] = {
    "random": random_map,
    "centre_gaussian": centre_gaussian,
    "sobel": sobel_map,
}


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps (R, H, W), as the sanity check computes it."""
    from ..cam.sanity import _spearman

    return np.asarray([_spearman(x, y) for x, y in zip(a, b)], dtype=np.float64)

