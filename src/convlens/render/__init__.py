"""Turning arrays into pictures: colormaps, PNG output, heatmap overlays and annotations."""

from .color import colorize, colormap_lut, save_png, to_png_bytes, upscale_nearest
from .overlay import draw_box, draw_label, overlay

__all__ = [
    "colorize",
    "colormap_lut",
    "draw_box",
    "draw_label",
    "overlay",
    "save_png",
    "to_png_bytes",
    "upscale_nearest",
]
