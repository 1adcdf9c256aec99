"""The vectorized activation grid against the seed's loop (bit for bit)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from convlens.activations import (
    ActivationShapeError,
    activation_grid,
    book_activation_grid,
    channel_image,
    standardize_channels,
)


def relu_like(shape, seed=0, scale=1.0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return (np.maximum(rng.standard_normal(shape), 0) * scale).astype(dtype)


def seed_uint8(acts, images_per_row=16):
    return book_activation_grid(acts, images_per_row).astype(np.uint8)


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


@pytest.mark.parametrize(
    "shape",
    [(1, 178, 178, 32), (1, 7, 7, 256), (1, 13, 13, 48), (1, 91, 91, 16), (1, 3, 3, 16)],
)
@pytest.mark.parametrize("scale", [1.0, 37.5, 1e-3])
def test_relu_like_grid_equals_seed(shape, scale):
    acts = relu_like(shape, seed=shape[1], scale=scale)
    grid = activation_grid(acts)
    expected = seed_uint8(acts)
    assert grid.dtype == np.uint8
    assert grid.shape == expected.shape
    np.testing.assert_array_equal(grid, expected)


@pytest.mark.parametrize("shape", [(1, 178, 178, 16), (1, 7, 7, 64), (1, 30, 30, 32)])
def test_signed_and_skewed_data_equals_seed(shape):
    rng = np.random.default_rng(1)
    signed = rng.standard_normal(shape).astype(np.float32) * 5 + 2
    skewed = np.exp(3 * rng.standard_normal(shape)).astype(np.float32)
    for acts in (signed, skewed):
        np.testing.assert_array_equal(activation_grid(acts), seed_uint8(acts))


def test_float64_input_equals_seed():
    acts = relu_like((1, 19, 19, 32), dtype=np.float64)
    np.testing.assert_array_equal(activation_grid(acts), seed_uint8(acts))


def test_per_row_reductions_match_single_channel_reductions():
    """The premise of bit-exactness: numpy reduces a row of (C, N) like one contiguous channel."""
    acts = relu_like((178, 178, 8), seed=3, scale=3.7)
    x = np.ascontiguousarray(acts.reshape(-1, 8).T)
    mean = x.mean(axis=1)
    z = x - mean[:, None]
    std = z.std(axis=1)
    for k in range(8):
        ch = acts[:, :, k].copy()
        m = ch.mean()
        ch -= m
        assert mean[k] == m
        assert std[k] == ch.std()


def test_images_per_row_other_than_16():
    acts = relu_like((1, 11, 11, 32))
    np.testing.assert_array_equal(activation_grid(acts, 8), seed_uint8(acts, 8))


def test_remainder_channels_are_shown():
    size = 13
    acts = relu_like((1, size, size, 40), seed=5)
    grid = activation_grid(acts)
    assert grid.shape == (3 * (size + 1) - 1, 16 * (size + 1) - 1)
    seed = seed_uint8(acts)  # the seed drops channels 32..39
    assert seed.shape == (2 * (size + 1) - 1, 16 * (size + 1) - 1)
    np.testing.assert_array_equal(grid[: seed.shape[0]], seed)
    cells = standardize_channels(acts)
    top = 2 * (size + 1)
    assert not grid[top - 1].any()  # separator row
    for j in range(16):
        cell = grid[top : top + size, j * (size + 1) : j * (size + 1) + size]
        expected = cells[32 + j] if j < 8 else np.zeros((size, size), np.uint8)
        np.testing.assert_array_equal(cell, expected)


def test_fewer_channels_than_a_row():
    acts = relu_like((1, 6, 6, 5))
    grid = activation_grid(acts)
    assert grid.shape == (6, 5 * 7 - 1)
    cells = standardize_channels(acts)
    for j in range(5):
        np.testing.assert_array_equal(grid[:, j * 7 : j * 7 + 6], cells[j])


def test_constant_channel_is_mid_gray(no_warnings):
    acts = relu_like((1, 178, 178, 16))
    acts[..., 3] = 0.1  # its float32 mean is not exactly 0.1: the seed gives 64 or 192 here
    acts[..., 4] = 7.0
    cells = standardize_channels(acts)
    assert (cells[3] == 128).all() and (cells[4] == 128).all()
    others = [k for k in range(16) if k not in (3, 4)]
    np.testing.assert_array_equal(cells[others], standardize_channels(acts[..., others]))


def test_nearly_constant_channel_matches_seed():
    rng = np.random.default_rng(2)
    acts = 1000 + rng.standard_normal((1, 33, 33, 16)).astype(np.float32) * 1e-3
    np.testing.assert_array_equal(activation_grid(acts), seed_uint8(acts))


def test_one_pixel_channels(no_warnings):
    acts = relu_like((1, 1, 1, 32))  # std is 0: the seed gives NaN garbage for non-zero pixels
    cells = standardize_channels(acts)
    np.testing.assert_array_equal(cells[:, 0, 0], np.where(acts[0, 0, 0] > 0, 128, 0))


def test_all_zero_channel_is_untouched(no_warnings):
    acts = relu_like((1, 20, 20, 32))
    acts[..., 7] = 0
    grid = activation_grid(acts)
    np.testing.assert_array_equal(grid, seed_uint8(acts))
    assert not grid[:20, 7 * 21 : 7 * 21 + 20].any()
    signed = np.random.default_rng(0).standard_normal((1, 9, 9, 16)).astype(np.float32)
    signed[..., 2] = 0
    assert not standardize_channels(signed)[2].any()


def test_non_finite_values_do_not_leak(no_warnings):
    acts = relu_like((1, 10, 10, 16))
    acts[0, 0, 0, 1] = np.nan
    acts[0, 1, 1, 2] = np.inf
    acts[..., 3] = np.float32(3e38)  # constant, but its sum overflows
    acts[0, :5, :, 4] = np.float32(3e38)  # not constant, sum overflows
    cells = standardize_channels(acts)
    assert cells[1, 0, 0] == 0 and cells[2, 1, 1] == 255
    assert (cells[3] == 128).all()
    assert set(np.unique(cells[4])) == {64, 192}
    np.testing.assert_array_equal(cells[5:], standardize_channels(acts[..., 5:]))


def test_underflowing_variance_is_handled(no_warnings):
    acts = np.zeros((1, 4, 4, 16), np.float32)
    acts[0, :2, :, 0] = np.float32(1e-30)  # squares underflow to 0 in float32
    cell = standardize_channels(acts)[0]
    assert set(np.unique(cell)) == {64, 192}


def test_input_layouts_and_torch():
    acts = relu_like((1, 12, 12, 32))
    expected = activation_grid(acts)
    np.testing.assert_array_equal(activation_grid(acts[0]), expected)
    np.testing.assert_array_equal(activation_grid(torch.from_numpy(acts)), expected)
    nchw = torch.from_numpy(acts).permute(0, 3, 1, 2).contiguous().requires_grad_()
    np.testing.assert_array_equal(activation_grid(nchw.permute(0, 2, 3, 1)), expected)
    np.testing.assert_array_equal(activation_grid(torch.from_numpy(acts[0])), expected)


def test_input_is_not_modified():
    acts = relu_like((1, 9, 9, 16))
    before = acts.copy()
    activation_grid(acts)
    activation_grid(np.moveaxis(np.ascontiguousarray(np.moveaxis(acts, 3, 1)), 1, 3))
    np.testing.assert_array_equal(acts, before)


def test_batch_of_two_raises():
    acts = relu_like((2, 8, 8, 16))
    with pytest.raises(ValueError, match=r"acts\[i\]"):
        activation_grid(acts)
    with pytest.raises(ActivationShapeError):
        activation_grid(torch.from_numpy(acts))
    with pytest.raises(ValueError):
        activation_grid(np.zeros((8, 8)))


def test_non_square_cells():
    acts = relu_like((1, 5, 9, 20))
    grid = activation_grid(acts, images_per_row=8)
    assert grid.shape == (3 * 6 - 1, 8 * 10 - 1)
    cells = standardize_channels(acts)
    assert cells.shape == (20, 5, 9)
    np.testing.assert_array_equal(grid[6:11, 30:39], cells[8 + 3])


def test_separator_width_and_value():
    acts = relu_like((1, 4, 4, 6))
    grid = activation_grid(acts, images_per_row=3, sep=2, sep_value=255)
    assert grid.shape == (2 * 6 - 2, 3 * 6 - 2)
    assert (grid[4:6] == 255).all() and (grid[:, 4:6] == 255).all()
    np.testing.assert_array_equal(grid[6:10, 12:16], standardize_channels(acts)[5])
    assert activation_grid(acts, images_per_row=3, sep=0).shape == (8, 12)


def test_standardize_channels_shape_and_dtype():
    acts = relu_like((1, 7, 7, 10))
    cells = standardize_channels(acts)
    assert cells.shape == (10, 7, 7) and cells.dtype == np.uint8


def test_channel_image():
    acts = relu_like((1, 6, 7, 8))
    np.testing.assert_array_equal(channel_image(acts, 5), acts[0, :, :, 5])
    np.testing.assert_array_equal(channel_image(acts[0], -1), acts[0, :, :, 7])
    np.testing.assert_array_equal(channel_image(torch.from_numpy(acts), 2), acts[0, :, :, 2])
    assert channel_image(acts, 5).dtype == np.float32
    with pytest.raises(IndexError):
        channel_image(acts, 8)
    with pytest.raises(ValueError):
        channel_image(np.zeros((2, 6, 7, 8), np.float32), 0)
