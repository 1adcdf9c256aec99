"""Faithfulness metrics and the randomization sanity check, against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

import convlens as cl
from convlens.cam import CamMethod
from convlens.cam.metrics import average_drop_increase, deletion_insertion, gaussian_blur
from convlens.cam.sanity import randomization_check


class LeftRed(nn.Module):
    """logits = [10 * mean red of the left half / 255 - 5, 0]: only the left half matters."""

    def __init__(self):
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        red = x[:, 0, :, : x.shape[3] // 2].mean(dim=(1, 2))
        return torch.stack([10 * red / 255 - 5, torch.zeros_like(red)], dim=1)


def _probability(image: np.ndarray) -> float:
    z = 10 * image[:, :4, 0].mean() / 255 - 5
    return float(np.exp(z) / (np.exp(z) + 1))


@pytest.fixture
def left_model() -> cl.Model:
    return cl.load_model(LeftRed(), input_size=(8, 8), preprocess="raw")


@pytest.fixture
def photo() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (8, 8, 3)).astype(np.float32)


def _maps() -> tuple[np.ndarray, np.ndarray]:
    ties = np.random.default_rng(1).permutation(64).reshape(8, 8) / 1000  # no equal values
    left = np.zeros((8, 8))
    left[:, :4] = 1
    return (left + ties).astype(np.float32), (1 - left + ties).astype(np.float32)


def _expected_curves(image: np.ndarray, heat: np.ndarray, steps: int) -> tuple[list, list]:
    blurred = ndimage.gaussian_filter(image, sigma=(5, 5, 0), truncate=1.0, mode="mirror")
    order = np.argsort(-heat.ravel())
    per_step = int(np.ceil(64 / steps))
    deletion, insertion = [], []
    for s in range(steps + 1):
        changed = np.zeros(64, bool)
        changed[order[: s * per_step]] = True
        changed = changed.reshape(8, 8, 1)
        deletion.append(_probability(np.where(changed, 0.0, image)))
        insertion.append(_probability(np.where(changed, image, blurred)))
    return deletion, insertion


def test_gaussian_blur_matches_scipy(photo):
    ours = gaussian_blur(torch.tensor(photo)[None])[0].numpy()
    theirs = ndimage.gaussian_filter(photo, sigma=(5, 5, 0), truncate=1.0, mode="mirror")
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-3)


def test_deletion_and_insertion_curves_and_aucs(left_model, photo):
    good, bad = _maps()
    steps = 8
    result = deletion_insertion(
        left_model, np.stack([photo, photo]), np.stack([good, bad]), target=0, steps=steps,
        batch_size=5,
    )
    fractions = np.arange(steps + 1) / steps
    np.testing.assert_allclose(result["fractions"], fractions, rtol=1e-6)
    for row, heat in enumerate((good, bad)):
        deletion, insertion = _expected_curves(photo, heat, steps)
        np.testing.assert_allclose(result["deletion_curve"][row], deletion, rtol=1e-4)
        np.testing.assert_allclose(result["insertion_curve"][row], insertion, rtol=1e-4)
        auc = np.trapezoid([deletion, insertion], fractions, axis=1)
        np.testing.assert_allclose([result["deletion"][row], result["insertion"][row]], auc,
                                   rtol=1e-4)
    assert result["deletion"][0] < result["deletion"][1]  # the faithful map deletes faster
    assert result["insertion"][0] > result["insertion"][1]


def test_tuned_and_fixed_batches_agree(left_model, photo):
    good, _ = _maps()
    tuned = deletion_insertion(left_model, photo, good, target=0, steps=16)
    fixed = deletion_insertion(left_model, photo, good, target=0, steps=16, batch_size=3)
    np.testing.assert_allclose(tuned["deletion_curve"], fixed["deletion_curve"], rtol=1e-6)
    blur = deletion_insertion(left_model, photo, good, target=0, steps=16, substrate="blur")
    assert blur["deletion_curve"][0, -1] == pytest.approx(blur["insertion_curve"][0, 0])


def test_average_drop_and_increase(left_model, photo):
    half = np.full((8, 8), 0.5, np.float32)
    result = average_drop_increase(
        left_model, np.stack([photo, photo]), np.stack([half, np.ones((8, 8), np.float32)]),
        target=[0, 1],
    )
    y0, o0 = _probability(photo), _probability(photo * 0.5)
    y1 = 1 - _probability(photo)  # class 1 of the same image, whole-image map: no change
    np.testing.assert_allclose(result["confidence"], [y0, y1], rtol=1e-5)
    np.testing.assert_allclose(result["explanation_confidence"], [o0, y1], rtol=1e-5)
    np.testing.assert_allclose(result["drop"], [max(0.0, y0 - o0) / y0, 0.0], atol=1e-6)
    assert result["average_drop"] == pytest.approx(50 * max(0.0, y0 - o0) / y0, rel=1e-4)
    assert result["increase_in_confidence"] == 0.0
    # class 1 gains when the left half is dimmed: an increase in confidence
    other = average_drop_increase(left_model, photo, half, target=1)
    assert other["increase_in_confidence"] == 100.0 and other["average_drop"] == 0.0


def test_metrics_take_a_cam_result(tiny_model):
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    cams = tiny_model.cam(images)
    direct = deletion_insertion(tiny_model, cams, steps=4)
    spelled = deletion_insertion(tiny_model, images, cams.heatmap, cams.target, steps=4)
    np.testing.assert_allclose(direct["deletion"], spelled["deletion"], rtol=1e-6)
    assert direct["target"] == cams.target
    with pytest.raises(cl.ModelError, match="do not match 2 image"):
        deletion_insertion(tiny_model, images, cams.heatmap[:1], cams.target)


# -- sanity check --------------------------------------------------------------------------------
class Brightness(CamMethod):
    """A "saliency method" that ignores the model: it must fail the randomization check."""

    name = "brightness"
    title = "brightness"

    def layer_map(self, ctx, info, activations, gradients):
        gray = ctx.pixels.float().mean(dim=-1)[:, None]
        pooled = F.adaptive_avg_pool2d(gray, activations.shape[2:])[:, 0]
        return pooled.repeat_interleave(ctx.plan.k, dim=0)


def test_a_model_independent_map_fails_the_sanity_check(tiny_model):
    images = np.random.default_rng(3).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    result = randomization_check(tiny_model, images, method=Brightness, stages=None)
    assert not result.passed
    np.testing.assert_allclose(result.correlations, 1.0)
    assert result.stages == ["7", "3", "0"]  # the weighted layers, from the output down


def test_gradcam_maps_change_when_tiny_model_layers_are_randomized(tiny_model):
    images = np.random.default_rng(4).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    before = [p.detach().clone() for p in tiny_model.network.parameters()]
    result = randomization_check(tiny_model, images, method="gradcam", mode="independent",
                                 stages=None)
    assert result.correlations.shape == (3, 3)
    assert result.mean[0] < 0.5  # a new head alone changes the map
    for p, q in zip(before, tiny_model.network.parameters()):
        assert torch.equal(p, q)  # the model itself is untouched


def test_sanity_check_on_the_keras_seed_model(seed_keras_path):
    model = cl.load_model(seed_keras_path)
    weights = [w.copy() for w in model.network.get_weights()]
    image = cl.load_image("chelsea", size=(180, 180))
    result = randomization_check(model, image, method="gradcam", target=1, stages=2)
    assert result.correlations.shape == (2, 1) and result.stages[-1] == "conv2d"
    for a, b in zip(weights, model.network.get_weights()):
        np.testing.assert_array_equal(a, b)
