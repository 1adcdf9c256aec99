"""Turning arrays into pictures: colormaps, PNG/JPEG bytes, heatmap overlays and annotations.

Pure NumPy / Pillow / matplotlib: nothing here imports the rest of convlens, so views (their results
draw themselves) and presentation (report, explorer, CLI, notebook) both use it.
"""

from .color import colorize, colormap_lut, save_png, to_png_bytes, upscale_nearest
from .encode import data_uri, grid_png, jpeg_bytes, photo_bytes
from .overlay import draw_box, draw_label, overlay

__all__ = [
    "colorize",
    "colormap_lut",
    "data_uri",
    "draw_box",
    "draw_label",
    "grid_png",
    "jpeg_bytes",
    "overlay",
    "photo_bytes",
    "save_png",
    "to_png_bytes",
    "upscale_nearest",
]
