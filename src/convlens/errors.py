"""Errors convlens raises: one line that names the problem and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ConvlensError(Exception):
    """Base class of every error convlens raises on purpose."""


class ImageError(ConvlensError, ValueError):
    """An image could not be read or converted."""


class ModelError(ConvlensError, ValueError):
    """A model could not be loaded, or cannot be used for the requested view."""


class LayerNotFoundError(ConvlensError, KeyError):
    """A layer name that the model does not have."""

    def __init__(self, name: str, known: Iterable[str], count: int | None = None):
        known = list(known)
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(
            f"no layer named {name!r} in this model.{hint} "
            f"`convlens layers` (or model.layers()) lists all {count or len(known)} of them."
        )
        self.name = name
        self.close_matches = close

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])
