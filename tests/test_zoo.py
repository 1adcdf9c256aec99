"""Tests for the embedded EfficientNet-Lite0 model and ImageNet class names."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

from convlens.models.zoo import IMAGENET_CLASSES, efficientnet_lite0, efficientnet_preprocess
from convlens.models.zoo.efficientnet_lite import Conv2dSame, EfficientNetLite, _weights_path


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return efficientnet_lite0(pretrained=True)


def _photo(a: np.ndarray) -> torch.Tensor:
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    a = np.asarray(Image.fromarray(a).resize((224, 224), Image.BILINEAR), dtype=np.float32)
    return efficientnet_preprocess(torch.from_numpy(a).permute(2, 0, 1).unsqueeze(0))


def _probs(model: nn.Module, a: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(_photo(a)).softmax(dim=-1)[0]


def test_loads_offline_in_eval_mode(model: nn.Module) -> None:
    assert isinstance(model, EfficientNetLite)
    assert not model.training
    assert len(model._blocks) == 16
    assert not hasattr(model._blocks[0], "_expand_conv")
    assert all(hasattr(b, "_expand_conv") for b in model._blocks[1:])


def test_state_dict_matches_checkpoint_strictly() -> None:
    sd = torch.load(_weights_path(), map_location="cpu", weights_only=True)
    fresh = EfficientNetLite()
    assert set(fresh.state_dict()) == set(sd)
    result = fresh.load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


def test_parameter_count(model: nn.Module) -> None:
    n = sum(p.numel() for p in model.parameters())
    assert n == 4_652_008  # ~4.65M


def test_conv_same_padding_shapes() -> None:
    for size in (223, 224, 225, 17):
        for k, s in ((3, 2), (5, 2), (5, 1), (1, 1)):
            conv = Conv2dSame(2, 2, k, stride=s)
            out = conv(torch.zeros(1, 2, size, size + 1))
            assert out.shape[-2:] == (math.ceil(size / s), math.ceil((size + 1) / s))


def test_shared_activation_called_more_than_once(model: nn.Module) -> None:
    calls: dict[str, int] = {}
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ReLU6):
            assert not mod.inplace
            handles.append(
                mod.register_forward_hook(
                    lambda _m, _i, _o, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)
                )
            )
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, 64, 64))
    finally:
        for h in handles:
            h.remove()
    assert out.shape == (1, 1000)
    assert calls["_swish"] == 2
    assert calls["_blocks.0._swish"] == 1
    assert all(calls[f"_blocks.{i}._swish"] == 2 for i in range(1, 16))


def test_preprocess_range() -> None:
    x = torch.tensor([0.0, 127.5, 255.0])
    assert torch.allclose(efficientnet_preprocess(x), torch.tensor([-1.0, 0.0, 1.0]))


def test_predicts_cat(model: nn.Module) -> None:
    top1 = int(_probs(model, data.chelsea()).argmax())
    assert 281 <= top1 <= 285, IMAGENET_CLASSES[top1]


def test_predicts_espresso(model: nn.Module) -> None:
    top1 = int(_probs(model, data.coffee()).argmax())
    assert top1 == 967, IMAGENET_CLASSES[top1]


def test_predicts_tripod_and_moped(model: nn.Module) -> None:
    assert 872 in _probs(model, data.camera()).topk(3).indices.tolist()  # tripod
    assert 665 in _probs(model, data.stereo_motorcycle()[0]).topk(3).indices.tolist()  # moped


def test_class_names() -> None:
    assert len(IMAGENET_CLASSES) == 1000
    assert len(set(IMAGENET_CLASSES)) == 1000
    assert "cat" in IMAGENET_CLASSES[281]
    assert IMAGENET_CLASSES[967] == "espresso"
    assert all(isinstance(n, str) and n for n in IMAGENET_CLASSES)
