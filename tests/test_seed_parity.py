"""The first acceptance test: the seed's own code, run on the seed's own model, gives our grids."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import convlens as cl
from convlens.activations import book_activation_grid


@pytest.fixture(scope="module")
def cat_jpg(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("img") / "cat.jpg"
    Image.fromarray(cl.sample_image("chelsea").astype(np.uint8)).save(path, quality=92)
    return str(path)


@pytest.fixture(scope="module")
def seed_run(seed_keras_path, cat_jpg):
    """The seed's code, verbatim in substance: load_img → predict on an activation model."""
    import keras
    from keras import layers

    model = keras.models.load_model(seed_keras_path)
    img = keras.utils.load_img(cat_jpg, target_size=(180, 180))
    img_tensor = np.expand_dims(keras.utils.img_to_array(img), axis=0)
    layer_outputs, layer_names = [], []
    for layer in model.layers:
        if isinstance(layer, (layers.Conv2D, layers.MaxPooling2D)):
            layer_outputs.append(layer.output)
            layer_names.append(layer.name)
    activation_model = keras.Model(inputs=model.input, outputs=layer_outputs)
    activations = activation_model.predict(img_tensor, verbose=0)
    return img_tensor, layer_names, activations


def test_load_image_gives_keras_pixels(cat_jpg, seed_run):
    img_tensor, _, _ = seed_run
    ours = cl.load_image(cat_jpg, size=(180, 180))
    assert ours.dtype == np.float32
    assert np.array_equal(ours, img_tensor[0])


def test_seed_layers_and_shapes(seed_keras_path, cat_jpg, seed_run):
    _, layer_names, _ = seed_run
    model = cl.load_model(seed_keras_path)
    acts = model.activations(cl.load_image(cat_jpg, size=(180, 180)))
    assert list(acts) == layer_names
    assert len(acts) == 9
    first, last = acts[layer_names[0]], acts[layer_names[-1]]
    assert first.shape == (1, 178, 178, 32)
    assert last.shape == (1, 7, 7, 256)


def test_grids_equal_the_seed_loop_on_the_seed_predict_output(seed_keras_path, cat_jpg, seed_run):
    _, layer_names, activations = seed_run
    model = cl.load_model(seed_keras_path)
    acts = model.activations(cat_jpg)
    for name, reference in zip(layer_names, activations):
        np.testing.assert_allclose(acts[name], reference, rtol=1e-5, atol=1e-5)
        seed_grid = book_activation_grid(reference).astype(np.uint8)  # the seed's loop, plainly
        assert np.array_equal(cl.activation_grid(reference), seed_grid), name
        assert np.array_equal(cl.activation_grid(acts[name]), seed_grid), name


def test_augmentation_layers_are_inactive(seed_keras_path, cat_jpg):
    model = cl.load_model(seed_keras_path)
    first = model.activations(cat_jpg)
    second = model.activations(cat_jpg)
    for name in first:
        assert np.array_equal(first[name], second[name])
    kinds = {info.name: info.kind for info in model.layers()}
    assert [k for k in kinds.values() if k == "augment"] == ["augment"] * 3


def test_single_channel_as_in_the_seed(seed_keras_path, cat_jpg, seed_run):
    from convlens.activations import channel_image

    _, layer_names, activations = seed_run
    model = cl.load_model(seed_keras_path)
    acts = model.activations(cat_jpg, layers=layer_names[0])
    assert np.array_equal(channel_image(acts[layer_names[0]], 5), activations[0][0, :, :, 5])
