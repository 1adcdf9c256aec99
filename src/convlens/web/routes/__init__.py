"""The explorer's JSON API, one router per resource: models, images, views, jobs."""

from __future__ import annotations

from . import images, jobs, models, views

#: Every router, in the order the app includes them.
ROUTERS = (models.router, images.router, views.router, jobs.router)

__all__ = ["ROUTERS"]
