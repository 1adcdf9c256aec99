"""Filter visualization building blocks: objectives, parameterizations, transforms, grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convlens.errors import ModelError
from convlens.filters import filter_grid, image_seed
from convlens.filters.ascent import chunk_rows
from convlens.filters.objectives import (
    Captured,
    channel,
    class_logit,
    diversity,
    layer_objective,
    neuron,
)
from convlens.filters.param import decorrelate_colors, fft_image, pixel_image, to_valid_rgb
from convlens.filters.recipes import NormalizedAscent
from convlens.filters.transforms import (
    Augmentation,
    jitter,
    random_rotate,
    random_scale,
    standard_transforms,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def captured() -> Captured:
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(3, 4, 6, 6, generator=g)
    logits = torch.randn(3, 5, generator=g)
    return Captured({"a": maps}, logits)


# -- objectives --------------------------------------------------------------------------------
def test_channel_mean_with_border(captured: Captured) -> None:
    maps = captured["a"]
    assert torch.allclose(channel("a", 2)(captured), maps[:, 2].mean(dim=(1, 2)))
    assert torch.allclose(channel("a", 2, border=2)(captured), maps[:, 2, 2:-2, 2:-2].mean((1, 2)))


def test_per_image_channels_follow_rows(captured: Captured) -> None:
    maps = captured["a"]
    obj = channel("a", [3, 0, 1, 2, 2])  # five requested images; this chunk holds images 1..3
    got = obj(captured, slice(1, 4))
    want = torch.stack([maps[0, 0].mean(), maps[1, 1].mean(), maps[2, 2].mean()])
    assert torch.allclose(got, want)
    with pytest.raises(ModelError, match="per-image indices"):
        obj(captured, slice(0, 5))


def test_neuron_layer_and_logit(captured: Captured) -> None:
    maps, logits = captured["a"], captured.logits
    assert torch.equal(neuron("a", 1)(captured), maps[:, 1, 3, 3])
    assert torch.equal(neuron("a", 1, y=0, x=5)(captured), maps[:, 1, 0, 5])
    assert torch.allclose(layer_objective("a")(captured), maps.square().mean(dim=(1, 2, 3)))
    assert torch.equal(class_logit(4)(captured), logits[:, 4])
    assert torch.equal(class_logit([4, 0, 2])(captured), logits[[0, 1, 2], [4, 0, 2]])
    with pytest.raises(ModelError, match="outside"):
        neuron("a", 0, y=6)(captured)


def test_objectives_compose(captured: Captured) -> None:
    a, b = channel("a", 0), neuron("a", 1)
    va, vb = a(captured), b(captured)
    combo = a + 2 * b - layer_objective("a") * 0.5
    want = va + 2 * vb - 0.5 * layer_objective("a")(captured)
    assert torch.allclose(combo(captured), want)
    assert torch.allclose((-a)(captured), -va)
    assert torch.allclose((a / 4)(captured), va / 4)
    assert torch.allclose((a - b)(captured), va - vb)
    total = a + class_logit(1)
    assert total.needs_logits and total.layers == ("a",)
    assert not a.coupled and (a + diversity("a")).coupled
    assert "channel('a', 0)" in repr(combo)
    with pytest.raises(TypeError):
        a + 1.0
    with pytest.raises(TypeError):
        a * a


def test_diversity_is_lucids_term() -> None:
    same = torch.ones(3, 2, 4, 4)
    assert torch.allclose(diversity("x")(Captured({"x": same})), torch.full((3,), -2 / 3))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 5, 5, generator=g)
    flat = x.flatten(2)
    grams = torch.nn.functional.normalize((flat @ flat.transpose(1, 2)).flatten(1), dim=1)
    lucid = -sum(
        (grams[i] * grams[j]).sum() for i in range(4) for j in range(4) if i != j
    ) / 4  # Lucent's diversity
    assert torch.allclose(diversity("x")(Captured({"x": x})).sum(), lucid)


def test_border_too_large_is_a_clear_error(captured: Captured) -> None:
    with pytest.raises(ModelError, match="too small for a 3-position border"):
        channel("a", 0, border=3)(captured)


# -- parameterizations -------------------------------------------------------------------------
def _generators(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_fft_image_is_per_image_deterministic() -> None:
    (p2,), image2 = fft_image(_generators(5, 6), (16, 12), device=torch.device("cpu"))
    _, image1 = fft_image(_generators(6), (16, 12), device=torch.device("cpu"))
    assert p2.shape == (2, 3, 16, 7, 2) and p2.requires_grad
    assert image2().shape == (2, 3, 16, 12)
    assert torch.equal(image2()[1], image1()[0])


def test_fft_spectrum_decays_as_one_over_f() -> None:
    (spectrum,), image = fft_image(_generators(0), (32, 32), device=torch.device("cpu"))
    with torch.no_grad():
        spectrum.fill_(1.0)
        power = torch.fft.rfft2(image()[0, 0], norm="ortho").abs()
    assert power[0, 1] / power[0, 8] == pytest.approx(8.0, rel=1e-4)  # 1/f


def test_colors_decorrelated_then_sigmoid() -> None:
    _, raw = pixel_image(_generators(0), (4, 4), device=torch.device("cpu"))
    image = to_valid_rgb(raw, decorrelate=True)()
    assert image.min() > 0 and image.max() < 1
    basis = decorrelate_colors(torch.eye(3).reshape(3, 3, 1, 1))[..., 0, 0].T  # RGB per axis
    svd_sqrt = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    lucid_norm = np.linalg.norm(svd_sqrt.numpy(), axis=0).max()  # Lucid's normalization
    assert torch.allclose(basis, svd_sqrt / float(lucid_norm))


# -- transforms --------------------------------------------------------------------------------
def test_identity_augmentation_reproduces_the_image() -> None:
    x = torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(0))
    aug = Augmentation([], pad=0)
    maps = aug.sampling_maps(_generators(0, 1), 1, torch.device("cpu"))
    out = aug(x, aug.thetas(maps, (10, 10))[:, 0], (10, 10))
    assert torch.allclose(out, x, atol=1e-5)


def test_jitter_shifts_by_whole_pixels() -> None:
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    aug = Augmentation([jitter(2)], pad=0)
    maps = torch.eye(3)[None, None].clone()
    maps[..., 0, 2] = 1.0  # sample one pixel to the right: the image moves left by one
    out = aug(x, aug.thetas(maps, (12, 12))[:, 0], (10, 10))  # view = 12 - 2 px
    assert torch.allclose(out[..., :, :], x[..., 1:11, 2:12], atol=1e-5)


def test_transforms_are_drawn_per_image_and_reproducible() -> None:
    aug = Augmentation(standard_transforms())
    cpu = torch.device("cpu")
    both = aug.sampling_maps(_generators(3, 4), 50, cpu)
    alone = aug.sampling_maps(_generators(4), 50, cpu)
    assert both.shape == (2, 50, 3, 3)
    assert torch.equal(both[1], alone[0])
    assert not torch.allclose(both[0], both[1])
    scale = both[..., :2, :2].det().sqrt()  # 1 / zoom
    assert scale.min() >= 1 / 1.1 - 1e-4 and scale.max() <= 1 / 0.9 + 1e-4
    angle = torch.atan2(both[..., 1, 0], both[..., 0, 0]).rad2deg()
    assert angle.abs().max() <= 10 + 1e-3 and angle.abs().max() > 5
    shift = both[..., :2, 2].norm(dim=-1)  # jitter 8, then jitter 4 rotated and zoomed
    assert shift.max() <= 2**0.5 * (3.5 + 1.5 / 0.9) + 1e-3 and shift.max() > 3


def test_scale_and_rotation_choices() -> None:
    u = torch.tensor([[0.0], [0.999]])
    assert random_scale([0.5, 2.0]).sampling_map(u)[:, 0, 0].tolist() == [2.0, 0.5]
    m = random_rotate([90.0]).sampling_map(u[:1])
    assert torch.allclose(m[0, :2, :2], torch.tensor([[0.0, -1.0], [1.0, 0.0]]), atol=1e-6)


# -- optimizer, chunks, seeds, grid ------------------------------------------------------------
def test_normalized_ascent_is_the_books_step() -> None:
    x = torch.zeros(2, 3, requires_grad=True)
    x.grad = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    NormalizedAscent([x], lr=10.0).step()
    assert torch.allclose(x.detach(), torch.tensor([[-6.0, -8.0, 0.0], [0.0, 0.0, 0.0]]))


def test_chunks_are_balanced() -> None:
    assert chunk_rows(10, 4) == [slice(0, 3), slice(3, 7), slice(7, 10)]
    assert chunk_rows(3, 8) == [slice(0, 3)]
    assert chunk_rows(2, 1) == [slice(0, 1), slice(1, 2)]


def test_image_seeds_differ_by_channel_and_repeat() -> None:
    seeds = {image_seed(0, c, r) for c in range(50) for r in range(3)}
    assert len(seeds) == 150
    assert image_seed(1, 0) != image_seed(0, 1)
    assert image_seed(7, 3) == image_seed(7, 3)


def test_grid_layout_matches_the_book() -> None:
    labels = np.arange(1, 11, dtype=np.uint8)[:, None, None, None]
    images = np.ones((10, 4, 6, 3), np.uint8) * labels
    grid = filter_grid(images)
    assert grid.shape == (2 * 4 + 5, 8 * 6 + 7 * 5, 3) and grid.dtype == np.uint8
    assert (grid[4:9] == 0).all() and (grid[:, 6:11] == 0).all()  # black 5 px margins
    assert (grid[:4, :6] == 1).all() and (grid[:4, 7 * 11 : 7 * 11 + 6] == 8).all()
    assert (grid[9:, 11:17] == 10).all() and (grid[9:, 22:] == 0).all()  # unfilled cells black
    assert filter_grid(images[:3], per_row=8, margin=2).shape == (4, 3 * 6 + 2 * 2, 3)
    with pytest.raises(ValueError, match=r"\(K, h, w, 3\)"):
        filter_grid(images[0])
