"""Grad-CAM family on the embedded EfficientNet-Lite0: does the map land on the object?

The boxes were drawn by looking at the 224x224 pictures (16-pixel grid): in chelsea the cat's
face (eyes, nose, muzzle) spans x 40..185, y 40..223 (right of x 190 is the pale background);
in coffee the cup and its espresso span x 64..156, y 0..125 (the saucer is larger).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convlens as cl
from convlens.cam import GRADIENT_METHODS
from convlens.cam.sanity import randomization_check

CAT_FACE = (40, 40, 185, 223)
CUP = (64, 0, 156, 125)


def _peak(heatmap: np.ndarray) -> tuple[int, int]:
    y, x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    return int(x), int(y)


def _inside(point: tuple[int, int], box: tuple[int, int, int, int]) -> bool:
    x, y = point
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def test_default_layer_and_top_classes(default_model, cat_224, coffee_224):
    cams = default_model.cam([cat_224, coffee_224])
    assert cams.layers == ["_bn1"] and cams.raw.shape == (2, 7, 7)  # chosen by evaluate
    assert cams.heatmap.shape == (2, 224, 224)
    assert cams.target == [285, 967] and cams.target_names == ["Egyptian Mau", "espresso"]
    probabilities = default_model.probabilities([cat_224, coffee_224]).numpy()
    np.testing.assert_allclose(cams.probability, probabilities[[0, 1], [285, 967]], rtol=1e-4)
    logits = default_model.logits([cat_224, coffee_224]).numpy()
    np.testing.assert_allclose(cams.score, logits[[0, 1], [285, 967]], rtol=1e-4)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_peak_is_on_the_cat_and_on_the_cup(default_model, cat_224, coffee_224, method):
    cams = default_model.cam([cat_224, coffee_224], method=method)
    assert _inside(_peak(cams.heatmap[0]), CAT_FACE)
    assert _inside(_peak(cams.heatmap[1]), CUP)
    # and the map is not flat: the pale background right of the cat gets less than the face
    face = cams.heatmap[0, 40:224, 40:186].mean()
    assert cams.heatmap[0, :, 200:].mean() < 0.6 * face


def test_slower_methods_agree_on_the_cup(default_model, coffee_224):
    for method, options in (("scorecam", {"top_k": 24}), ("eigencam", {})):
        cams = default_model.cam(coffee_224, method=method, **options)
        assert _inside(_peak(cams.heatmap[0]), CUP), method


def test_each_class_of_a_side_by_side_image_lights_up_its_own_half(
    default_model, cat_224, coffee_224
):
    both = np.concatenate([cat_224, coffee_224], axis=1)  # 224 x 448: cat | coffee
    cams = default_model.cam(
        [both, both, both], target=["Egyptian Mau", "tiger cat", "espresso"]
    )
    assert cams.target == [285, 282, 967]
    left = cams.heatmap[:, :, :224].sum(axis=(1, 2)) / cams.heatmap.sum(axis=(1, 2))
    assert left[0] > 0.8 and left[1] > 0.8  # the cat classes: left half
    assert left[2] < 0.2  # espresso: right half
    assert cams.boxes[2][0] >= 180 and cams.boxes[0][2] < 300


def test_class_name_targets_and_their_errors(default_model, cat_224):
    cams = default_model.cam(cat_224, target="Tiger Cat")
    assert cams.target == [282] and cams.target_names == ["tiger cat"]
    with pytest.raises(cl.ModelError, match="did you mean 'tiger cat'"):
        default_model.cam(cat_224, target="tigre cat")
    with pytest.raises(cl.ModelError, match=r"out of range.*1000 classes"):
        default_model.cam(cat_224, target=1000)
    with pytest.raises(cl.ModelError, match="2 targets for 1 image"):
        default_model.cam(cat_224, target=[1, 2])


def test_gradcam_equals_the_textbook_implementation(default_model, cat_224, coffee_224):
    """Full autograd graph, ``backward()``, hook on the layer, ``F.interpolate``: same heatmaps."""
    images = np.stack([cat_224, coffee_224])
    layer = default_model.layer("_bn1")
    kept = []
    handle = layer.module.register_forward_hook(lambda m, a, out: kept.append(out) or None)
    try:
        out = default_model.network(default_model.inputs(images))
        kept[layer.call].retain_grad()
        out.gather(1, out.argmax(dim=1, keepdim=True)).sum().backward()
    finally:
        handle.remove()
        default_model.network.zero_grad(set_to_none=True)
    acts, grads = kept[layer.call].detach(), kept[layer.call].grad
    cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=(224, 224), mode="bilinear")[:, 0]
    expected = (cam / cam.amax(dim=(1, 2), keepdim=True)).numpy()
    np.testing.assert_allclose(default_model.cam(images).heatmap, expected, atol=1e-5)


def test_class_targets_equal_the_same_logits_as_functions(default_model, cat_224, coffee_224):
    images = np.stack([cat_224, coffee_224])
    by_class = default_model.cam(images, target=[285, 967], method="hirescam")
    by_function = default_model.cam(
        images, target=[lambda out: out[285], lambda out: out[967]], method="hirescam"
    )
    np.testing.assert_allclose(by_class.raw, by_function.raw, rtol=1e-6, atol=1e-9)


def test_non_spatial_layer_is_a_clear_error(default_model, cat_224):
    with pytest.raises(cl.ModelError) as err:
        default_model.cam(cat_224, layer="_fc")
    message = str(err.value)
    assert "'_fc' outputs (N, 1000); CAM needs a spatial (N, H, W, C) map" in message
    assert "_swish#2" in message and "\n" not in message
    with pytest.raises(cl.LayerNotFoundError, match="_conv_head"):
        default_model.cam(cat_224, layer="_conv_haed")


def test_randomization_sanity_check_passes_for_gradcam(default_model):
    images = [cl.load_image(name, size=(224, 224), interpolation="bilinear") for name in cl.SAMPLES]
    result = randomization_check(default_model, images, method="gradcam", stages=3)
    assert result.correlations.shape == (3, 4)
    assert result.passed and result.mean[-1] < 0.5
    assert result.stages[-1] == "_conv_stem"  # the last stage randomizes everything
    # the model itself is untouched
    assert default_model.cam(images[0]).target == [285]
