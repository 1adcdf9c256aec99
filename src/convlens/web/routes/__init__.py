"""The explorer's JSON API, one router per resource: models, images, views, jobs, scan."""

from __future__ import annotations

from . import images, jobs, models, scan, views

#: Every router, in the order the app includes them.
ROUTERS = (models.router, images.router, views.router, jobs.router, scan.router)

__all__ = ["ROUTERS"]
