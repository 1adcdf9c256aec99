"""Filter visualization end to end: recipes, batching, seeds, objectives, errors, frameworks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import convlens as cl
from convlens.errors import LayerNotFoundError, ModelError
from convlens.filters import FilterResult, filter_grid, visualize_filters
from convlens.filters.objectives import Objective, channel, class_logit, diversity

from .conftest import tiny_convnet

pytestmark = pytest.mark.usefixtures("one_thread")


FAST = {"chollet": {"size": 32, "steps": 8}, "lucid": {"size": 32, "steps": 12}}


@pytest.fixture
def edge_model() -> cl.Model:
    """Channel 0 detects vertical edges in red (left dark, right bright), channel 1 horizontal."""
    conv = nn.Conv2d(3, 2, 3, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = torch.tensor([[-1.0, 0.0, 1.0]] * 3)
        conv.weight[1, 0] = conv.weight[0, 0].T
    head = nn.Linear(2, 2)  # class 0: more vertical than horizontal edges; class 1: the reverse
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
        head.bias.zero_()
    net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)
    return cl.load_model(net.eval(), input_size=(32, 32), preprocess="unit")


@pytest.fixture(scope="module")
def keras_model() -> cl.Model:
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    net = keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.Rescaling(1 / 255),
        layers.Conv2D(8, 3, activation="relu", name="c1"),
        layers.MaxPooling2D(name="p1"),
        layers.Conv2D(6, 3, activation="relu", name="c2"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(3, name="head"),
    ])
    return cl.load_model(net)


def _gradient_energy(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per colour channel: mean squared difference along x (vertical edges) and along y."""
    x = image.astype(np.float64)
    return (np.diff(x, axis=1) ** 2).mean(axis=(0, 1)), (np.diff(x, axis=0) ** 2).mean(axis=(0, 1))


def _no_hooks(model: cl.Model) -> bool:
    return all(not m._forward_hooks for m in model.network.modules())


# -- the chollet recipe ------------------------------------------------------------------------
def test_chollet_batched_equals_one_by_one(tiny_model: cl.Model) -> None:
    batched = tiny_model.filters("3", channels=range(5), **FAST["chollet"])
    singles = [tiny_model.filters("3", channels=[c], **FAST["chollet"]) for c in range(5)]
    assert np.array_equal(batched.images, np.concatenate([s.images for s in singles]))
    np.testing.assert_allclose(
        batched.activation, np.concatenate([s.activation for s in singles]), rtol=1e-5, atol=1e-6
    )
    chunked = tiny_model.filters("3", channels=range(5), batch_size=2, **FAST["chollet"])
    assert np.array_equal(chunked.images, batched.images)


def test_chollet_result_shapes_and_book_crop(tiny_model: cl.Model) -> None:
    fv = tiny_model.filters("3", channels=[1, 4, 2], size=48, steps=3)
    assert isinstance(fv, FilterResult)
    assert fv.images.shape == (3, 48 - 2 * 6, 48 - 2 * 6, 3) and fv.images.dtype == np.uint8
    assert fv.activation.shape == fv.quality.shape == (3,)
    assert fv.channels == [1, 4, 2] and fv.layer == "3" and fv.recipe == "chollet"
    # standardized, x64 + 128: the mean grey level sits near 128
    assert abs(float(fv.images.mean()) - 128) < 12
    assert fv._repr_png_().startswith(b"\x89PNG")


def test_chollet_default_size_is_the_books(tiny_model: cl.Model) -> None:
    fv = tiny_model.filters("0", channels=[0], steps=1)
    assert fv.images.shape == (1, 150, 150, 3)  # 200 px, 25 px cropped on each side


def test_chollet_finds_vertical_red_edges(edge_model: cl.Model) -> None:
    fv = edge_model.filters("1", channels=[0, 1], size=48)
    dx, dy = _gradient_energy(fv.images[0])
    others = [dy[0], *dx[1:], *dy[1:]]
    assert dx[0] > 5 * max(others)
    dx, dy = _gradient_energy(fv.images[1])  # the horizontal detector: the other way round
    assert dy[0] > 5 * max([dx[0], *dx[1:], *dy[1:]])


def test_gradient_ascent_raises_the_activation(tiny_model: cl.Model) -> None:
    short = tiny_model.filters("3", channels=range(4), size=32, steps=1)
    long = tiny_model.filters("3", channels=range(4), size=32, steps=20)
    assert (long.activation > short.activation).sum() >= 3


# -- the lucid recipe --------------------------------------------------------------------------
def test_lucid_finds_vertical_red_edges(edge_model: cl.Model) -> None:
    fv = edge_model.filters("1", channels=[0], recipe="lucid", size=32, steps=48)
    assert fv.images.shape == (1, 32, 32, 3)
    dx, dy = _gradient_energy(fv.images[0])
    assert dx[0] > 1.5 * max([dy[0], *dx[1:], *dy[1:]])
    assert fv.quality[0] > 1


def test_lucid_is_deterministic_and_chunk_independent(tiny_model: cl.Model) -> None:
    a = tiny_model.filters("0", channels=[1, 3, 5], recipe="lucid", **FAST["lucid"])
    b = tiny_model.filters("0", channels=[1, 3, 5], recipe="lucid", **FAST["lucid"])
    assert np.array_equal(a.images, b.images)
    assert a.images.shape == (3, 32, 32, 3) and a.images.dtype == np.uint8
    c = tiny_model.filters("0", channels=[1, 3, 5], recipe="lucid", batch_size=1, **FAST["lucid"])
    np.testing.assert_allclose(c.activation, a.activation, rtol=1e-3, atol=1e-4)
    assert np.abs(c.images.astype(int) - a.images).mean() < 0.5


@pytest.mark.parametrize("recipe", ["chollet", "lucid"])
def test_seeds_reproduce(tiny_model: cl.Model, recipe: str) -> None:
    one = tiny_model.filters("0", channels=[2, 6], recipe=recipe, seed=3, **FAST[recipe])
    again = tiny_model.filters("0", channels=[2, 6], recipe=recipe, seed=3, **FAST[recipe])
    other = tiny_model.filters("0", channels=[2, 6], recipe=recipe, seed=4, **FAST[recipe])
    assert np.array_equal(one.images, again.images)
    assert np.array_equal(one.activation, again.activation)
    assert not np.array_equal(one.images, other.images)


# -- objectives in the engine ------------------------------------------------------------------
def test_scaled_objective_gives_the_same_chollet_images(tiny_model: cl.Model) -> None:
    plain = tiny_model.filters("3", channels=[0, 5], **FAST["chollet"])
    doubled = tiny_model.filters(
        "3", channels=[0, 5], objective=channel("3", [0, 5], border=2) * 2, **FAST["chollet"]
    )
    # normalized gradients: the scale does not change the path, only the reported objective
    assert np.array_equal(plain.images, doubled.images)
    np.testing.assert_allclose(doubled.activation, 2 * plain.activation, rtol=1e-5)
    np.testing.assert_allclose(doubled.quality, plain.quality, rtol=1e-5)


def test_composed_objective_is_what_is_maximized(tiny_model: cl.Model) -> None:
    objective = channel("3", 0) - channel("3", 1)
    fv = tiny_model.filters("3", channels=[0, 1], objective=objective, **FAST["chollet"])
    reached = [
        tiny_model.filters("3", channels=[c], objective=channel("3", 0) - channel("3", 1),
                           **FAST["chollet"]).activation[0]
        for c in (0, 1)
    ]
    np.testing.assert_allclose(fv.activation, reached, rtol=1e-5, atol=1e-6)
    start = tiny_model.filters("3", channels=[0, 1], objective=objective, size=32, steps=1)
    assert (fv.activation > start.activation).all()


def test_class_logit_runs_the_whole_network(edge_model: cl.Model) -> None:
    edge_model.layers()  # tracing the layers runs the whole network once
    calls = []
    handle = edge_model.network[4].register_forward_hook(lambda *args: calls.append(1))
    try:
        edge_model.filters("1", channels=[0, 1], **FAST["chollet"])
        assert not calls  # a channel objective stops at its layer
        fv = edge_model.filters(
            "4", channels=[0, 1], objective=class_logit([0, 1]), recipe="lucid", size=32, steps=48
        )
    finally:
        handle.remove()
    assert calls
    assert edge_model.logits(fv.images.astype(np.float32)).argmax(dim=1).tolist() == [0, 1]
    (dx0, dy0), (dx1, dy1) = (_gradient_energy(image) for image in fv.images)
    assert dx0.sum() > 1.5 * dy0.sum() and dy1.sum() > 1.5 * dx1.sum()
    assert np.isnan(fv.quality).all()  # a 2-D output: no channel maps to compare with


def test_diversity_keeps_the_batch_whole(tiny_model: cl.Model) -> None:
    ticks: list[int] = []
    objective = channel("3", [2, 2, 2]) + 10 * diversity("3")
    fv = tiny_model.filters("3", channels=[2, 2, 2], objective=objective, recipe="lucid",
                            size=32, steps=6, batch_size=1, progress=ticks.append)
    assert sum(ticks) == 6  # one chunk, whatever batch_size says
    assert len({fv.images[i].tobytes() for i in range(3)}) == 3  # repeats get their own seeds


def test_progress_counts_steps_times_chunks(tiny_model: cl.Model) -> None:
    ticks: list[int] = []
    tiny_model.filters("0", channels=range(3), size=32, steps=4, batch_size=1,
                       progress=ticks.append)
    assert sum(ticks) == 12


def test_quality_compares_with_the_sample_photos(tiny_model: cl.Model) -> None:
    from convlens.filters import photo_activation

    best = photo_activation(tiny_model, "3", border=2).numpy()
    assert best.shape == (16,)
    fv = tiny_model.filters("3", channels=range(16), size=32, steps=20)
    positive = best > 0
    np.testing.assert_array_equal(fv.reference, best)
    np.testing.assert_allclose(fv.quality[positive], fv.activation[positive] / best[positive],
                               rtol=1e-5)
    assert np.isnan(fv.quality[~positive]).all()


def test_model_dtype_is_followed() -> None:
    model = cl.load_model(tiny_convnet().double(), input_size=(32, 32), preprocess="unit")
    for recipe in ("chollet", "lucid"):
        fv = model.filters("3", channels=[0, 1], recipe=recipe, **FAST[recipe])
        assert np.isfinite(fv.activation).all()


# -- errors and hooks --------------------------------------------------------------------------
def test_bad_layer_name(tiny_model: cl.Model) -> None:
    with pytest.raises(LayerNotFoundError, match="no layer named"):
        tiny_model.filters("conv9", channels=[0])


def test_channel_out_of_range(tiny_model: cl.Model) -> None:
    with pytest.raises(ModelError, match=r"channel 8 is out of range: layer '0' has 8 channels"):
        tiny_model.filters("0", channels=[3, 8])


def test_non_spatial_layer_for_a_channel_objective(tiny_model: cl.Model) -> None:
    with pytest.raises(ModelError, match="no spatial output"):
        tiny_model.filters("7", channels=[0])


def test_bad_options_are_clear(tiny_model: cl.Model) -> None:
    with pytest.raises(ModelError, match="unknown recipe"):
        tiny_model.filters("0", recipe="deepdream")
    with pytest.raises(ModelError, match="steps"):
        tiny_model.filters("0", steps=0)
    with pytest.raises(ModelError, match="seed"):
        tiny_model.filters("0", seed=-1)


def test_hooks_removed_when_the_objective_fails(tiny_model: cl.Model) -> None:
    def broken(captured, rows):
        raise RuntimeError("objective exploded")

    bad = Objective(broken, layers=["3"])
    with pytest.raises(RuntimeError, match="exploded"):
        tiny_model.filters("3", channels=[0], objective=bad, size=32, steps=2)
    assert _no_hooks(tiny_model)
    with pytest.raises(RuntimeError, match="exploded"):
        tiny_model.filters("3", channels=[0], objective=channel("3", 0) + class_logit(0) + bad,
                           size=32, steps=2)
    assert _no_hooks(tiny_model)


def test_in_place_ops_cannot_alter_captured_outputs(tiny_model: cl.Model) -> None:
    # layer "0" is followed by an in-place ReLU; with logits the whole network runs after it
    with_logits = channel("0", [0, 1]) + 0 * class_logit(0)
    fv = tiny_model.filters("0", channels=[0, 1], objective=with_logits, **FAST["chollet"])
    plain = tiny_model.filters("0", channels=[0, 1], objective=channel("0", [0, 1]),
                               **FAST["chollet"])
    np.testing.assert_allclose(fv.activation, plain.activation, rtol=1e-5, atol=1e-6)
    assert _no_hooks(tiny_model)


# -- frameworks --------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", ["chollet", "lucid"])
def test_keras_model(keras_model: cl.Model, recipe: str) -> None:
    fv = keras_model.filters("c2", channels=[0, 3], recipe=recipe, **FAST[recipe])
    side = 32 - 2 * 4 if recipe == "chollet" else 32
    assert fv.images.shape == (2, side, side, 3)
    start = keras_model.filters("c2", channels=[0, 3], recipe=recipe, size=32, steps=1)
    assert (fv.activation >= start.activation).all() and (fv.activation > start.activation).any()
    assert _no_hooks(keras_model)


def test_keras_batched_equals_one_by_one(keras_model: cl.Model) -> None:
    batched = keras_model.filters("c1", channels=[1, 2], **FAST["chollet"])
    singles = [keras_model.filters("c1", channels=[c], **FAST["chollet"]) for c in (1, 2)]
    assert np.array_equal(batched.images, np.concatenate([s.images for s in singles]))


def test_fixed_size_keras_model_refuses_another_chollet_size(keras_model: cl.Model) -> None:
    with pytest.raises(ModelError, match="only takes 32x32 inputs"):
        keras_model.filters("c1", channels=[0], size=40, steps=1)


def test_default_model_chollet_beats_the_photos(default_model: cl.Model) -> None:
    fv = default_model.filters("_blocks.8._bn0", channels=[1, 2], size=128)
    assert fv.images.shape == (2, 96, 96, 3)
    assert (fv.quality > 1).all()
    assert filter_grid(fv).shape == (96, 2 * 96 + 5, 3)


def test_visualize_filters_is_the_model_method(tiny_model: cl.Model) -> None:
    a = visualize_filters(tiny_model, "0", channels=[0], size=32, steps=2)
    b = tiny_model.filters("0", channels=[0], size=32, steps=2)
    assert np.array_equal(a.images, b.images)
