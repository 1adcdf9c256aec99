"""Render a :class:`~convlens.report.builder.Report` as one self-contained HTML page."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import jinja2

from ..render import data_uri

if TYPE_CHECKING:
    from .builder import Report

__all__ = ["render_html"]


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("convlens.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["seconds"] = _seconds
    env.filters["shape"] = _shape
    env.filters["thousands"] = lambda n: f"{n:,}"
    return env


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _shape(shape: Any) -> str:
    return "×".join(str(s) for s in shape) if shape else "–"


def render_html(report: Report) -> str:
    """The report page: pictures inlined as data URIs, CSS and JS inline, nothing fetched."""
    pictures = report.pictures

    def picture(key: str) -> str:
        return data_uri(pictures[key])

    return _environment().get_template("report.html").render(
        facts=report.facts, picture=picture
    )
