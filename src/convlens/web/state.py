"""What the explorer's routes share: the models, images and jobs, and how to look them up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request

from .jobs import JobQueue
from .slots import ModelSlot
from .store import ImageStore, StoredImage
from .workers import Worker

if TYPE_CHECKING:
    from .scan import ScanView

__all__ = ["Explorer", "ExplorerDep"]


@dataclass
class Explorer:
    """The explorer's state: served models (by name), images, the job queue and limits."""

    slots: dict[str, ModelSlot]
    store: ImageStore
    jobs: JobQueue
    #: decodes uploads and encodes photos (a few threads, so a burst of uploads is bounded)
    images: Worker
    max_upload_bytes: int
    max_upload_pixels: int
    #: the scan whose atlas is served (``convlens serve --scan``), or None
    scan: ScanView | None = None

    def slot(self, name: str | None) -> ModelSlot:
        if not self.slots:
            raise HTTPException(404, "the explorer serves no model; start it with --model M")
        if name is None:
            return next(iter(self.slots.values()))
        if name not in self.slots:
            raise HTTPException(
                404, f"no model {name[:100]!r} here; the models are {', '.join(self.slots)}"
            )
        return self.slots[name]

    def image(self, image_id: str) -> StoredImage:
        image = self.store.get(image_id)
        if image is None:
            raise HTTPException(
                404, "unknown image id (the explorer keeps only recent images); upload it again"
            )
        return image

    def close(self, timeout: float = 10.0) -> None:
        """Cancel the jobs and stop the worker threads."""
        self.jobs.close(timeout)
        for slot in self.slots.values():
            slot.worker.close()
        self.images.close()


def _explorer(request: Request) -> Explorer:
    return request.app.state.explorer


#: A route's parameter that receives the explorer's state.
ExplorerDep = Annotated[Explorer, Depends(_explorer)]
