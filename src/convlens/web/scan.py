"""A scan served by the explorer: its atlas pages, strips and filter pictures (``serve --scan``).

The pages are :class:`~convlens.report.atlas.AtlasPages`' (the offline atlas's, with the
explorer's links); strips are drawn on request and cached; filter pictures are drawn by a job
on the scan's model (its slot's private copy), for the channels a layer's page asks for.
"""

from __future__ import annotations

import threading
from typing import Any

from ..render import to_png_bytes
from ..report.atlas import AtlasLinks, AtlasPages, filter_pictures
from .slots import ModelSlot, _number
from .store import LRU

__all__ = ["WEB_LINKS", "ScanView"]

#: The atlas's links in the explorer.
WEB_LINKS = AtlasLinks(
    "/scan/", lambda i: f"/scan/layers/{i}.html",
    lambda i, c: f"/api/scan/layers/{i}/channels/{c}/strip.jpg",
    lambda i, c: f"/api/scan/layers/{i}/channels/{c}/filter.jpg",
)


class ScanView:
    """The served scan: ``pages``, the slot of its model (None: no filter pictures, ``note``
    says why)."""

    def __init__(self, pages: AtlasPages, slot: ModelSlot | None, note: str = ""):
        self.pages = pages
        self.slot = slot
        self.note = note or ("" if slot is not None else "no filter pictures: no model")
        self._index: str | None = None
        self._strips: LRU[tuple[int, int], bytes] = LRU(4096)
        self._filters: dict[tuple[int, int], bytes] = {}
        self._lock = threading.Lock()

    def index_html(self) -> str:
        if self._index is None:  # mistakes and class CAMs are drawn once
            self._index = self.pages.index_html(WEB_LINKS, model_note=self.note)
        return self._index

    def drawn(self, index: int) -> list[int]:
        with self._lock:
            return sorted(c for i, c in self._filters if i == index)

    def layer_html(self, index: int, count: int) -> str:
        live = None
        if self.slot is not None:
            live = {"start": f"/api/scan/layers/{index}/filters?count={count}", "count": count}
        note = self.note or (
            f"filter pictures: drawn on request, for the {count} most firing channels"
        )
        return self.pages.layer_html(index, WEB_LINKS, filters=self.drawn(index),
                                     filter_note=note, live=live)

    def strip(self, index: int, channel: int) -> bytes | None:
        found = self._strips.get((index, channel))
        if found is None:
            found = self.pages.strip(index, channel)
            if found is not None:
                self._strips.put((index, channel), found)
        return found

    def filter_jpeg(self, index: int, channel: int) -> bytes | None:
        with self._lock:
            return self._filters.get((index, channel))

    def draw_filters(
        self, index: int, channels: list[int], progress: Any
    ) -> tuple[dict[str, Any], bytes]:
        """The job's work: the filters of ``channels`` of layer ``index`` (on the slot's private
        copy of the model); their facts and gallery PNG."""
        from ..filters.grid import FILTERS_PER_ROW, filter_grid

        assert self.slot is not None
        model, lock = self.slot.heavy()
        layer = self.pages.layer_name(index)
        with lock:
            result, pictures = filter_pictures(model, layer, channels, progress=progress)
        with self._lock:
            self._filters.update({(index, c): data for c, data in pictures.items()})
        facts = {
            "layer": layer, "recipe": result.recipe, "channels": list(result.channels),
            "size": list(result.images.shape[1:3]), "per_row": FILTERS_PER_ROW,
            "activation": [_number(v) for v in result.activation],
            "quality": [_number(v) for v in result.quality],
        }
        return facts, to_png_bytes(filter_grid(result.images, per_row=FILTERS_PER_ROW))
