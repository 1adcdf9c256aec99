"""The views attach themselves to ``Model`` here, so the adapter layer never imports them.

``convlens.activations``, ``convlens.cam`` and ``convlens.filters`` register their entry points
with :func:`register_view` when imported (``import convlens`` imports them all); ``model.cam(...)``
is then ``convlens.cam.compute_cam(model, ...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ..errors import ModelError

__all__ = ["VIEWS", "ViewMethods", "register_view"]

#: Views by name (``"activations"``, ``"cam"``, ``"filters"``...): ``fn(model, *args, **kw)``.
VIEWS: dict[str, Callable[..., Any]] = {}


def register_view(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: make ``fn(model, ...)`` available as ``model.<name>(...)``."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        VIEWS[name] = fn
        return fn

    return register


class ViewMethods:
    """``model.activations()``, ``model.cam()``, ``model.filters()``: the registered views."""

    def _view(self, name: str) -> Callable[..., Any]:
        try:
            return VIEWS[name]
        except KeyError:
            raise ModelError(f"the {name} view is not available; `import convlens` first") from None

    def activations(
        self, images: Any, layers: str | Iterable[str] | None = None, **options: Any
    ) -> Any:
        """Outputs of the chosen layers; see :func:`convlens.activations.activations`."""
        return self._view("activations")(self, images, layers, **options)

    def cam(self, images: Any, method: Any = "gradcam", **options: Any) -> Any:
        """A class activation heatmap; see :func:`convlens.cam.compute_cam`."""
        return self._view("cam")(self, images, method=method, **options)

    def filters(self, layer: str, **options: Any) -> Any:
        """Filter visualizations of one layer; see :func:`convlens.filters.visualize_filters`."""
        return self._view("filters")(self, layer, **options)
