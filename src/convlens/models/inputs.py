"""The one error for models whose input is not one image (two inputs, token ids, vectors)."""

from __future__ import annotations

from ..errors import ModelError


def not_one_image(name: str, what: str, fix: str) -> ModelError:
    """The error for ``name``, which takes ``what`` ("2 inputs (image, text)"), with a ``fix``."""
    return ModelError(
        f"{name} takes {what}, not one image; every convlens view (layers, activations, cam, "
        f"filters) runs the network on one image batch, so none applies to it as it is: {fix}"
    )
