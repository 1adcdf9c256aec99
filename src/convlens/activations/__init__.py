"""Intermediate activations: channel grids, single channels and blank ("empty") channels."""

from .compute import activations
from .empty import EmptyChannels, empty_channels, empty_channels_table, write_csv, write_json
from .grid import (
    ActivationShapeError,
    activation_grid,
    book_activation_grid,
    channel_image,
    standardize_channels,
)
from .result import Activations

__all__ = [
    "ActivationShapeError",
    "Activations",
    "EmptyChannels",
    "activation_grid",
    "activations",
    "book_activation_grid",
    "channel_image",
    "empty_channels",
    "empty_channels_table",
    "standardize_channels",
    "write_csv",
    "write_json",
]
