"""The HTML report: everything convlens shows about a model on some images, in one file.

>>> report = build_report(model, ["chelsea", "coffee"])     # facts + pictures
>>> report.save("out/report", write_json=True)             # out/report/index.html (+ report.json)
"""

from .builder import Report, ReportOptions, build_report, image_label
from .html import render_html

__all__ = ["Report", "ReportOptions", "build_report", "image_label", "render_html"]
