"""CAM methods against values worked out by hand on tiny models whose weights are set here.

The target layer is a 1x1 convolution with identity weights, so its activations A are the input
pixels themselves (preprocess "raw"): three 2x2 channels chosen below. The heads are a global
average pool + linear layer (the gradient is then w_c / (h*w) everywhere) and a nonlinear one
(ReLU before the pooling, so the gradient varies over the map and the methods disagree).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import convlens as cl
from convlens.cam import METHODS, GradCAM, GradCAMPlusPlus, bounding_boxes, target_layers

A0 = [[1.0, 2.0], [3.0, 4.0]]
A1 = [[4.0, 0.0], [0.0, 0.0]]
A2 = [[0.0, 0.0], [0.0, 1.0]]


def _image(*channels) -> np.ndarray:
    return np.stack(channels, axis=-1).astype(np.float32)  # (2, 2, 3): the activations


def _identity_conv() -> nn.Conv2d:
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3)[:, :, None, None])
    return conv


def linear_head_model() -> cl.Model:
    """logits = W @ mean(A): W = [[2, -4, 8], [1, 1, 1]]."""
    head = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[2.0, -4.0, 8.0], [1.0, 1.0, 1.0]]))
    net = nn.Sequential(_identity_conv(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    return cl.load_model(net, input_size=(2, 2), preprocess="raw")


V = np.array([1.0, -1.0, 0.5])
BIAS = -0.5


def relu_head_model() -> cl.Model:
    """logit 0 = mean_ij ReLU(sum_k V_k A_k^ij + BIAS); logit 1 = minus that."""
    mix = nn.Conv2d(3, 1, 1)
    head = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        mix.weight.copy_(torch.tensor(V, dtype=torch.float32)[None, :, None, None])
        mix.bias.fill_(BIAS)
        head.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    net = nn.Sequential(
        _identity_conv(), mix, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head
    )
    return cl.load_model(net, input_size=(2, 2), preprocess="raw")


# -- linear head: every number below is worked out by hand -----------------------------------
# logit 0 = 2*2.5 - 4*1 + 8*0.25 = 3;  gradient g = W[0] / 4 = [0.5, -1, 2] at every position.
GRADCAM_RAW = [[-3.5, 1.0], [1.5, 4.0]]  # 0.5*A0 - A1 + 2*A2
EXPECTED_LINEAR = {
    "gradcam": GRADCAM_RAW,
    "hirescam": GRADCAM_RAW,  # sum_k g_k A_k with constant g: the same
    "xgradcam": GRADCAM_RAW,  # sum(A g) / sum(A) = g
    "layercam": [[0.5, 1.0], [1.5, 4.0]],  # 0.5*A0 + 2*A2
    # alpha_k = 1 / (2 + sum(A_k) g_k) = [1/7, -1/2, 1/4]; w = 4 alpha relu(g) = [2/7, 0, 2]
    "gradcam++": [[2 / 7, 4 / 7], [6 / 7, 8 / 7 + 2]],
    # y^k = 3 - W_k mean(A_k) = [-2, 7, 1]; w = (3 - y^k) / 3 = [5/3, -4/3, 2/3]
    "ablationcam": [[5 / 3 - 16 / 3, 10 / 3], [5.0, 20 / 3 + 2 / 3]],
}


@pytest.mark.parametrize("method", sorted(EXPECTED_LINEAR))
def test_linear_head_maps_equal_hand_computed(method):
    model = linear_head_model()
    cams = model.cam(_image(A0, A1, A2), method=method, target=0, layer="0")
    expected = np.array(EXPECTED_LINEAR[method], dtype=np.float32)
    np.testing.assert_allclose(cams.raw[0], expected, rtol=1e-5, atol=1e-6)
    relu = np.maximum(expected, 0)
    np.testing.assert_allclose(cams.heatmap[0], relu / relu.max(), rtol=1e-5, atol=1e-6)
    assert cams.target == [0] and cams.layers == ["0"]
    assert cams.score[0] == pytest.approx(3.0)
    assert cams.probability[0] == pytest.approx(1 / (1 + np.exp(3.75 - 3.0)), rel=1e-5)


def _masked_logits() -> np.ndarray:
    """(C, classes): the linear-head model's logits on the image masked by each channel."""
    acts = np.stack([A0, A1, A2])  # (C, h, w); upsampling 2x2 -> 2x2 is the identity
    w = np.array([[2.0, -4.0, 8.0], [1.0, 1.0, 1.0]])
    masks = [(a - a.min()) / (a.max() - a.min()) for a in acts]
    return np.stack([w @ (acts * mask).mean(axis=(1, 2)) for mask in masks])


def test_scorecam_weights_are_softmax_scores_of_masked_images():
    model = linear_head_model()
    acts = np.stack([A0, A1, A2])
    logits = _masked_logits()
    probabilities = np.exp(logits[:, 0]) / np.exp(logits).sum(axis=1)  # softmax over classes
    cams = model.cam(_image(A0, A1, A2), method="scorecam", target=0, layer="0")
    np.testing.assert_allclose(cams.raw[0], np.tensordot(probabilities, acts, axes=1), rtol=1e-5)
    # Algorithm 1 of the paper: the target's logits, softmaxed over the channels
    alpha = np.exp(logits[:, 0]) / np.exp(logits[:, 0]).sum()
    softmaxed = model.cam(
        _image(A0, A1, A2), method="scorecam", target=0, layer="0", channel_softmax=True
    )
    np.testing.assert_allclose(softmaxed.raw[0], np.tensordot(alpha, acts, axes=1), rtol=1e-5)


def test_scorecam_masks_the_network_input_after_preprocessing():
    """With "symmetric" preprocessing the activations are x / 127.5 - 1; masked-out pixels
    become 0 in that space (mid-gray), as in the authors' implementation."""
    head = linear_head_model().network
    model = cl.load_model(head, input_size=(2, 2), preprocess="symmetric")
    pixels = 127.5 + _image(A0, A1, A2) * 30
    acts = np.moveaxis(pixels / 127.5 - 1, -1, 0)  # (C, h, w) = the network's input
    w = np.array([[2.0, -4.0, 8.0], [1.0, 1.0, 1.0]])
    weights = []
    for a in acts:
        logits = w @ (acts * (a - a.min()) / (a.max() - a.min())).mean(axis=(1, 2))
        weights.append(np.exp(logits[0]) / np.exp(logits).sum())
    cams = model.cam(pixels, method="scorecam", target=0, layer="0")
    np.testing.assert_allclose(cams.raw[0], np.tensordot(weights, acts, axes=1), rtol=1e-5)


def test_faster_scorecam_keeps_the_channels_of_largest_variance():
    model = linear_head_model()
    acts = np.stack([A0, A1, A2])
    logits = _masked_logits()
    weights = np.exp(logits[:, 0]) / np.exp(logits).sum(axis=1)
    weights[2] = 0.0  # variances 5/3, 4, 1/4: top 2 keeps A0 and A1
    top2 = model.cam(_image(A0, A1, A2), method="scorecam", target=0, layer="0", top_k=2)
    np.testing.assert_allclose(top2.raw[0], np.tensordot(weights, acts, axes=1), rtol=1e-5)


def test_eigencam_is_the_first_principal_direction():
    model = linear_head_model()
    cams = model.cam(_image(A0, A1, A2), method="eigencam", layer="0")
    matrix = np.stack([A0, A1, A2]).reshape(3, 4).T  # (positions, channels)
    _, _, vh = np.linalg.svd(matrix, full_matrices=False)
    projection = matrix @ vh[0]
    if np.corrcoef(projection, matrix.mean(axis=1))[0, 1] < 0:
        projection = -projection
    np.testing.assert_allclose(cams.raw[0].ravel(), projection, rtol=1e-5, atol=1e-6)
    other = model.cam(_image(A0, A1, A2), method="eigencam", layer="0", target=0)
    np.testing.assert_array_equal(other.raw, cams.raw)  # class-agnostic


# -- a ReLU inside the head: the gradient is V_k / 4 where the ReLU is on, 0 elsewhere ------
B1 = [[4.0, 0.0], [0.0, 1.0]]


def _relu_head_expectations() -> dict[str, np.ndarray]:
    acts = np.stack([A0, B1, A2])  # (C, h, w)
    z = np.tensordot(V, acts, axes=1) + BIAS  # [[-3.5, 1.5], [2.5, 3.0]]
    on = (z > 0).astype(np.float64)
    grads = V[:, None, None] * on[None] / 4  # d mean(relu(z)) / dA_k
    sums = acts.sum(axis=(1, 2))
    g2, g3 = grads**2, grads**3
    alpha = np.where(grads != 0, g2 / np.where(grads != 0, 2 * g2 + sums[:, None, None] * g3, 1), 0)
    return {
        "gradcam": np.tensordot(grads.mean(axis=(1, 2)), acts, axes=1),
        "hirescam": (grads * acts).sum(axis=0),
        "layercam": (np.maximum(grads, 0) * acts).sum(axis=0),
        "xgradcam": np.tensordot((grads * acts).sum(axis=(1, 2)) / sums, acts, axes=1),
        "gradcam++": np.tensordot((alpha * np.maximum(grads, 0)).sum(axis=(1, 2)), acts, axes=1),
    }


@pytest.mark.parametrize("method", ["gradcam", "hirescam", "layercam", "xgradcam", "gradcam++"])
def test_relu_head_maps_equal_hand_computed(method):
    expected = _relu_head_expectations()
    cams = relu_head_model().cam(_image(A0, B1, A2), method=method, target=0, layer="0")
    np.testing.assert_allclose(cams.raw[0], expected[method], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gradcampp_weights_follow_the_paper_on_random_maps(layout):
    rng = np.random.default_rng(0)
    acts, grads = rng.normal(size=(2, 2, 6, 4, 4)).astype(np.float32)  # signs of both vary
    grads[0, 0] = 0.0
    g2, g3 = grads.astype(np.float64) ** 2, grads.astype(np.float64) ** 3
    sums = acts.sum(axis=(2, 3), keepdims=True)
    denominator = 2 * g2 + sums * g3
    alpha = np.where(grads != 0, g2 / np.where(denominator != 0, denominator, 1), 0)
    expected = (alpha * np.maximum(grads, 0)).sum(axis=(2, 3))
    a, g = (torch.from_numpy(t).contiguous(memory_format=layout) for t in (acts, grads))
    weights = GradCAMPlusPlus().gradient_weights(a, g)
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_gradcampp_undefined_alpha_contributes_nothing():
    acts = torch.full((1, 1, 2, 2), -0.5)  # T = -2, so 2 + T g = 0 where g = 1
    grads = torch.tensor([[[[1.0, 0.5], [0.0, -1.0]]]])
    weights = GradCAMPlusPlus().gradient_weights(acts, grads)
    assert weights.item() == pytest.approx(0.5 / (2 - 2 * 0.5))


def test_relu_head_separates_the_methods():
    expected = _relu_head_expectations()
    names = list(expected)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.allclose(expected[a], expected[b]), (a, b)


def test_negative_class_is_the_negated_map():
    model = relu_head_model()
    pos = model.cam(_image(A0, B1, A2), method="gradcam", target=0, layer="0")
    neg = model.cam(_image(A0, B1, A2), method="gradcam", target=1, layer="0")
    np.testing.assert_allclose(neg.raw, -pos.raw, rtol=1e-6)
    assert neg.score[0] == pytest.approx(-pos.score[0])


# -- the shared core ---------------------------------------------------------------------------
def test_no_autograd_before_the_layer_and_no_weight_gradients():
    model = relu_head_model()
    model.layers()  # the trace runs once, before the hook
    grad_modes = []
    handle = model.network[0].register_forward_pre_hook(
        lambda m, a: grad_modes.append(torch.is_grad_enabled())
    )
    try:
        for method in ("gradcam", "layercam"):
            model.cam(_image(A0, B1, A2), method=method, layer="1")
    finally:
        handle.remove()
    assert grad_modes == [False, False]
    assert all(p.grad is None for p in model.network.parameters())


def test_a_batch_equals_its_images_one_by_one(tiny_model):
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    for method in METHODS:
        batch = tiny_model.cam(images, method=method, target=[0, 1, 2])
        for i in range(3):
            one = tiny_model.cam(images[i], method=method, target=i)
            np.testing.assert_allclose(batch.raw[i], one.raw[0], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(batch.heatmap[i], one.heatmap[0], rtol=1e-4, atol=1e-5)
        assert batch.heatmap.shape == (3, 32, 32) and batch.raw.shape == (3, 16, 16)


def test_top_k_targets_give_k_rows_per_image(tiny_model):
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    cams = tiny_model.cam(images, target="top-2")
    logits = tiny_model.logits(images)
    assert len(cams) == 4 and cams.image_index == [0, 0, 1, 1]
    assert cams.target == logits.topk(2, dim=1).indices.reshape(-1).tolist()
    for row, (image, target) in enumerate(zip(cams.image_index, cams.target)):
        one = tiny_model.cam(images[image], target=target)
        np.testing.assert_allclose(cams.raw[row], one.raw[0], rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(cams.images[row], images[image])


def test_callable_and_object_targets(tiny_model):
    image = np.random.default_rng(2).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    by_index = tiny_model.cam(image, target=1)
    by_callable = tiny_model.cam(image, target=lambda out: out[1] * 2)
    np.testing.assert_allclose(by_callable.raw, 2 * by_index.raw, rtol=1e-5)
    assert by_callable.target == [-1]
    difference = tiny_model.cam(image, target=lambda out: out[1] - out[0])
    first = tiny_model.cam(image, target=0)
    np.testing.assert_allclose(difference.raw, by_index.raw - first.raw, rtol=1e-4, atol=1e-6)


def test_targets_as_a_numpy_array_or_tensor_are_one_per_image(tiny_model):
    images = np.random.default_rng(3).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    expected = tiny_model.cam(images, target=[2, 0, 1])
    for targets in (np.array([2, 0, 1]), torch.tensor([2, 0, 1]), np.array([2, 0, 1], np.int32)):
        cams = tiny_model.cam(images, target=targets)
        assert cams.target == [2, 0, 1]
        np.testing.assert_array_equal(cams.raw, expected.raw)
    with pytest.raises(cl.ModelError, match="2 targets for 3 image"):
        tiny_model.cam(images, target=np.array([0, 1]))
    with pytest.raises(cl.ModelError, match=r"out of range.*0\.\.2"):
        tiny_model.cam(images[:1], target=-1)


def test_default_layer_is_the_last_spatial_call_of_the_trace():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 8, 3, padding=1)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.conv(x) + x)

    class MiniResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.layer4 = nn.Sequential(Block(), Block())
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            return self.fc(self.avgpool(self.layer4(self.stem(x))).flatten(1))

    model = cl.load_model(MiniResNet(), input_size=(16, 16))
    assert [i.name for i in target_layers(model)] == ["layer4"]
    cams = model.cam(np.zeros((16, 16, 3), np.float32) + 100)
    assert cams.layers == ["layer4"] and cams.raw.shape == (1, 8, 8)


def test_fused_layers_average_their_normalized_maps(tiny_model):
    image = np.random.default_rng(3).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    fused = tiny_model.cam(image, layer=["1", "4"], target=0)
    first = tiny_model.cam(image, layer="1", target=0)
    second = tiny_model.cam(image, layer="4", target=0)
    mean = (first.heatmap + second.heatmap) / 2
    np.testing.assert_allclose(fused.heatmap, mean / mean.max(), rtol=1e-5, atol=1e-6)
    assert fused.layers == ["1", "4"] and set(fused.raw_maps) == {"1", "4"}
    np.testing.assert_allclose(fused.raw_maps["1"], first.raw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.raw, second.raw, rtol=1e-5, atol=1e-6)


def test_all_negative_map_stays_zero_with_a_warning():
    model = linear_head_model()
    image = _image(A0, np.full((2, 2), 9.0), np.zeros((2, 2)))  # A1 dominates: -A1 wins
    with pytest.warns(RuntimeWarning, match="all zero"):
        cams = model.cam(image, method="gradcam", target=0, layer="0")
    assert (cams.raw < 0).all()
    assert cams.empty.tolist() == [True] and not cams.heatmap.any()
    assert cams.boxes == [(0, 0, 1, 1)]  # nothing singled out: the whole image


def test_heatmap_is_upsampled_bilinearly_to_the_image():
    model = linear_head_model()
    big = np.repeat(np.repeat(_image(A0, A1, A2), 8, axis=0), 8, axis=1)  # 16x16 input
    cams = model.cam(big, method=GradCAM(), target=0, layer="0")
    assert cams.heatmap.shape == (1, 16, 16) and cams.heatmap.dtype == np.float32
    relu = torch.tensor(np.maximum(cams.raw, 0))
    up = torch.nn.functional.interpolate(relu[:, None], size=(16, 16), mode="bilinear")[:, 0]
    np.testing.assert_allclose(cams.heatmap, (up / up.max()).numpy(), rtol=1e-5, atol=1e-6)
    assert cams.heatmap.max() == pytest.approx(1.0)


# -- localization ------------------------------------------------------------------------------
def test_box_of_the_largest_region_above_15_percent():
    maps = np.zeros((2, 20, 30), np.float32)
    maps[0, 2:5, 3:6] = 1.0  # small, strongest blob
    maps[0, 10:18, 12:25] = 0.2  # larger blob above 15 % of the max
    maps[0, 0, 29] = 0.1  # below the threshold
    maps[1, 5:9, 0:30] = 0.5  # a band across the second image
    assert bounding_boxes(maps) == [(12, 10, 24, 17), (0, 5, 29, 8)]
    assert bounding_boxes(maps, threshold=0.25) == [(3, 2, 5, 4), (0, 5, 29, 8)]


def test_boxes_do_not_join_across_images_and_use_8_connectivity():
    maps = np.zeros((2, 6, 6), np.float32)
    maps[0, 0, 0] = maps[0, 1, 1] = maps[0, 2, 2] = 1.0  # a diagonal: one 8-connected region
    maps[1, 5, 5] = 1.0
    assert bounding_boxes(maps) == [(0, 0, 2, 2), (5, 5, 5, 5)]


def test_boxes_of_a_mixed_stack_empty_one_region_several_regions():
    maps = np.zeros((4, 8, 8), np.float32)  # 0: all zero
    maps[1, 1:3, 1:3] = 1.0  # 1: one region
    maps[2, 0, 0] = 1.0  # 2: three regions, the largest is the bottom band
    maps[2, 0, 7] = 1.0
    maps[2, 6:8, 2:8] = 0.5
    maps[3] = maps[2][::-1]  # 3: several again, after a map with several
    assert bounding_boxes(maps) == [(0, 0, 7, 7), (1, 1, 2, 2), (2, 6, 7, 7), (2, 0, 7, 1)]
    assert bounding_boxes(maps[[2, 0, 1]]) == [(2, 6, 7, 7), (0, 0, 7, 7), (1, 1, 2, 2)]
    pair = np.zeros((2, 8, 8), np.float32)  # as many regions as maps, one map empty
    pair[1, 0, 0] = 1.0
    pair[1, 5:8, 5:8] = 1.0
    assert bounding_boxes(pair) == [(0, 0, 7, 7), (5, 5, 7, 7)]


def test_cam_boxes_follow_its_threshold(tiny_model):
    image = np.random.default_rng(5).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    for threshold in (0.15, 0.6):
        cams = tiny_model.cam(image, threshold=threshold)
        assert cams.boxes == bounding_boxes(cams.heatmap, threshold)
    assert tiny_model.cam(image, threshold=0.6).boxes != tiny_model.cam(image).boxes
    with pytest.raises(cl.ModelError, match="threshold"):
        tiny_model.cam(image, threshold=15)


def test_result_drawing(tiny_model):
    image = np.random.default_rng(4).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    cams = tiny_model.cam(image)
    overlays = cams.overlays()
    assert overlays.shape == (1, 32, 32, 3) and overlays.dtype == np.uint8
    np.testing.assert_array_equal(overlays[0], cl.overlay(image, cams.heatmap[0]))
    assert cams._repr_png_().startswith(b"\x89PNG")
    assert "gradcam" in repr(cams)


def test_a_target_function_must_return_a_scalar(tiny_model):
    image = np.zeros((32, 32, 3), np.float32)
    with pytest.raises(cl.ModelError, match=r"returned a tensor of shape \(3,\); it must return"):
        tiny_model.cam(image, target=lambda out: out * 2)


def test_results_do_not_share_memory_with_the_input(tiny_model):
    rng = np.random.default_rng(5)
    inputs = [
        rng.uniform(0, 255, (1, 32, 32, 3)).astype(np.float32),  # used as it is, no conversion
        rng.uniform(0, 255, (32, 32, 3)).astype(np.float32),
        torch.from_numpy(rng.uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)),
        torch.from_numpy(rng.uniform(0, 255, (32, 32, 3)).astype(np.float32)),
    ]
    for image in inputs:
        cams = tiny_model.cam(image)
        image[:] = 0
        assert cams.images.any()
