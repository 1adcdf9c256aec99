"""Notebook display: show() draws one image per figure; activations have an HTML view."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

import convlens as cl
from convlens.activations.result import activations_html
from convlens.filters import filter_grid
from convlens.notebook import show

from .conftest import tiny_convnet


@pytest.fixture(scope="module")
def tiny() -> cl.Model:
    return cl.load_model(tiny_convnet(), input_size=(32, 32), preprocess="unit")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)


def shown(fig: Figure) -> np.ndarray:
    """The one picture a figure shows."""
    (ax,) = fig.axes
    (picture,) = ax.get_images()
    return np.asarray(picture.get_array())


def test_show_activations_dict_draws_the_layers_grid(tiny, image):
    acts = tiny.activations(np.stack([image, image[::-1]]))
    fig = show(acts, layer="3", image=1)
    assert isinstance(fig, Figure)
    assert np.array_equal(shown(fig), cl.activation_grid(acts["3"][1]))
    assert fig.axes[0].get_images()[0].get_cmap().name == "viridis"
    assert "3: 16×16×16" in fig.texts[0].get_text()
    assert np.array_equal(shown(show(acts)), cl.activation_grid(acts["0"][0]))  # first layer
    with pytest.raises(KeyError, match="no layer 'x'"):
        show(acts, layer="x")


def test_show_arrays_grids_and_pictures(tiny, image):
    acts = tiny.activations(image, layers=["0"])["0"]
    assert np.array_equal(shown(show(acts)), cl.activation_grid(acts[0]))
    heat = np.linspace(0, 1, 20).reshape(4, 5)
    assert np.array_equal(shown(show(heat)), heat)
    assert np.array_equal(shown(show(image)), image.astype(np.uint8))
    with pytest.raises(TypeError, match="show"):
        show(np.zeros(5))


def test_show_cam_and_filter_results(tiny, image):
    cams = tiny.cam(np.stack([image, image[::-1]]), method="gradcam")
    assert np.array_equal(shown(show(cams)), cams.figure())
    filters = tiny.filters("3", channels=range(2), steps=2, size=32)
    assert np.array_equal(shown(show(filters)), filter_grid(filters))


def test_activations_html_embeds_each_grid(tiny, image):
    acts = tiny.activations(image)
    page = activations_html(acts)
    pictures = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pictures) == len(acts)
    for data, (name, a) in zip(pictures, acts.items()):
        grid = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
        assert np.array_equal(grid, cl.activation_grid(a[0])), name
        assert f"<code>{name}</code>" in page
    short = activations_html(acts, max_layers=1)
    assert short.count("<img") == 1 and "2 more layers" in short
