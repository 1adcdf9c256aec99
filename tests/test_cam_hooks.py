"""Hooks never leak, memory does not grow over many calls, bad input gives a clear error."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

import convlens as cl
from convlens.cam import METHODS, AblationCAM

from .conftest import tiny_convnet


def _hook_count(network: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in network.modules()
    )


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_hooks_are_removed_after_every_call(tiny_model, image, method):
    tiny_model.cam(image, method=method, layer=["1", "4"])
    assert _hook_count(tiny_model.network) == 0
    assert torch.is_grad_enabled()


class Failing(nn.Module):
    """Raises from its ``after``-th call on (the trace is call 0)."""

    def __init__(self, after: int):
        super().__init__()
        self.calls = 0
        self.after = after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("boom")
        return x


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("after", [1, 2])
def test_hooks_are_removed_when_a_call_fails(image, method, after):
    net = tiny_convnet()
    net.insert(6, Failing(after))  # after the global pool: every forward pass reaches it
    model = cl.load_model(net, input_size=(32, 32), preprocess="unit")
    model.layers()
    many_passes = method in ("scorecam", "ablationcam")
    if after == 1 or many_passes:
        with pytest.raises(RuntimeError, match="boom"):
            model.cam(image, method=method, layer="4")
    else:  # the one-pass methods never reach a second forward pass
        model.cam(image, method=method, layer="4")
    assert _hook_count(model.network) == 0
    assert torch.is_grad_enabled()


def test_ablation_falls_back_when_the_batch_cannot_grow_inside_the_network(image):
    """A network reusing its input after the layer breaks the expanded batch: safe path."""

    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(4 + 3, 3)

        def forward(self, x):
            features = self.conv(x).relu().mean(dim=(2, 3))
            colour = x.mean(dim=(2, 3))  # from before the layer: batch of the input
            return self.head(torch.cat([features, colour], dim=1))

    torch.manual_seed(0)
    model = cl.load_model(Skip().eval(), input_size=(32, 32), preprocess="unit")
    method = AblationCAM()
    cams = model.cam(image, method=method, target=1, layer="conv")
    assert not method.expanded
    # by hand: zero each channel, run the whole network
    x = model.inputs(image)
    net = model.network
    with torch.no_grad():
        acts = net.conv(x)
        colour = x.mean(dim=(2, 3))
        full = net.head(torch.cat([acts.relu().mean(dim=(2, 3)), colour], 1))[:, 1]
        weights = []
        for k in range(4):
            ablated = acts.clone()
            ablated[:, k] = 0
            y = net.head(torch.cat([ablated.relu().mean(dim=(2, 3)), colour], 1))[:, 1]
            weights.append((full - y) / full)
        expected = torch.einsum("kn,nkhw->nhw", torch.stack(weights), acts)
    np.testing.assert_allclose(cams.raw, expected.numpy(), rtol=1e-4, atol=1e-6)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_many_calls_do_not_grow_memory(tiny_model, image):
    for _ in range(20):  # warm up caches and allocator pools
        tiny_model.cam(image)
    gc.collect()
    rss = _rss()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(200):
        tiny_model.cam(image)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # one call's result alone is ~40 kB of NumPy arrays: 200 kept would be ~8 MB
    assert grown < 200_000, grown
    assert _rss() - rss < 16 * 2**20
    assert _hook_count(tiny_model.network) == 0


def test_bad_input_errors(tiny_model, image):
    with pytest.raises(cl.ModelError, match=r"method 'gradcamm'; did you mean 'gradcam'"):
        tiny_model.cam(image, method="gradcamm")
    with pytest.raises(cl.ModelError, match=r"'5' outputs \(N, 1, 1, 16\); CAM needs a spatial"):
        tiny_model.cam(image, layer="5")
    with pytest.raises(cl.ModelError, match=r"'7' outputs \(N, 3\)"):
        tiny_model.cam(image, layer="7")
    with pytest.raises(cl.LayerNotFoundError, match="no layer named 'conv9'"):
        tiny_model.cam(image, layer="conv9")
    with pytest.raises(cl.ModelError, match=r"out of range: .* 3 classes"):
        tiny_model.cam(image, target=3)
    with pytest.raises(cl.ModelError, match="no class names"):
        tiny_model.cam(image, target="cat")
    with pytest.raises(cl.ModelError, match="Grad-CAM has no option 'top_k'"):
        tiny_model.cam(image, top_k=3)
    with pytest.raises(cl.ModelError, match="top_k must be at least 1"):
        tiny_model.cam(image, method="scorecam", top_k=0)
    with pytest.raises(cl.ModelError, match="k must be between 1 and 3"):
        tiny_model.cam(image, target="top-5")
    assert _hook_count(tiny_model.network) == 0


def test_method_names_are_forgiving(tiny_model, image):
    a = tiny_model.cam(image, method="Grad-CAM++")
    b = tiny_model.cam(image, method="gradcam++")
    assert a.method == b.method == "gradcam++"
    np.testing.assert_array_equal(a.raw, b.raw)
