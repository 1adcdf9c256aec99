"""Shared fixtures: tiny models built here, the embedded default model, the seed's Keras model."""

from __future__ import annotations

import os

# The suite's own process runs Keras on torch (convlens never chooses the backend; the tests do).
# Each other backend is tested in a subprocess of its own (tests/test_keras_backends.py).
os.environ["KERAS_BACKEND"] = "torch"

import numpy as np
import pytest
import torch
from torch import nn

import convlens as cl


def tiny_convnet(classes: int = 3, seed: int = 0) -> nn.Sequential:
    """Conv → ReLU(in place) → pool → conv → ReLU → global pool → linear, random weights."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, classes),
    ).eval()


def save_exported(network: nn.Module, path, size: int = 32) -> str:
    """Save ``network`` as a torch.export program (any batch): a model file that runs no code."""
    dims = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    program = torch.export.export(
        network.eval(), (torch.zeros(2, 3, size, size),), dynamic_shapes=(dims,)
    )
    torch.export.save(program, str(path))
    return str(path)


def seed_keras_model():
    """Chollet's cats-vs-dogs convnet with augmentation (Deep Learning with Python, ch. 8)."""
    import keras
    from keras import layers

    keras.backend.clear_session()  # layer names (conv2d_4, dense) do not depend on earlier tests
    keras.utils.set_random_seed(0)
    augmentation = keras.Sequential(
        [layers.RandomFlip("horizontal"), layers.RandomRotation(0.1), layers.RandomZoom(0.2)]
    )
    inputs = keras.Input(shape=(180, 180, 3))
    x = augmentation(inputs)
    x = layers.Rescaling(1.0 / 255)(x)
    x = layers.Conv2D(filters=32, kernel_size=3, activation="relu")(x)
    x = layers.MaxPooling2D(pool_size=2)(x)
    x = layers.Conv2D(filters=64, kernel_size=3, activation="relu")(x)
    x = layers.MaxPooling2D(pool_size=2)(x)
    x = layers.Conv2D(filters=128, kernel_size=3, activation="relu")(x)
    x = layers.MaxPooling2D(pool_size=2)(x)
    x = layers.Conv2D(filters=256, kernel_size=3, activation="relu")(x)
    x = layers.MaxPooling2D(pool_size=2)(x)
    x = layers.Conv2D(filters=256, kernel_size=3, activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs=inputs, outputs=outputs)


@pytest.fixture
def one_thread():
    """One torch thread: on a busy 2-core machine, two threads wait on each other at every op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_model() -> cl.Model:
    return cl.load_model(tiny_convnet(), input_size=(32, 32), preprocess="unit")


@pytest.fixture(scope="session")
def default_model() -> cl.Model:
    return cl.load_model()


@pytest.fixture(scope="session")
def seed_keras_path(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("keras") / "convnet_from_scratch_with_augmentation.keras"
    seed_keras_model().save(path)
    return str(path)


@pytest.fixture(scope="session")
def cat_224() -> np.ndarray:
    return cl.load_image("chelsea", size=(224, 224), interpolation="bilinear")


@pytest.fixture(scope="session")
def coffee_224() -> np.ndarray:
    return cl.load_image("coffee", size=(224, 224), interpolation="bilinear")
