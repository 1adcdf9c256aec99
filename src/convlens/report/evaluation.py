"""The evaluation page: one chart per metric (method x layer, 95 % CIs) and the example mosaic.

:func:`save_evaluation` writes ``evaluation.parquet``, ``evaluation.csv`` and
``evaluation.html`` (one self-contained file, PNG charts embedded).
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..render import data_uri, jpeg_bytes, overlay

if TYPE_CHECKING:
    from ..evaluate import Evaluation

__all__ = ["evaluation_html", "metric_chart", "save_evaluation"]

_LABELS = {
    "pointing": "grid pointing game (share in the target's cell) ↑",
    "deletion_auc": "deletion AUC ↓",
    "insertion_auc": "insertion AUC ↑",
    "road_morf": "ROAD, most relevant first ↓",
    "road_lerf": "ROAD, least relevant first ↑",
    "avg_drop": "Average Drop % ↓",
    "increase": "Increase in Confidence % ↑",
    "randomization_rank_corr": "rank correlation with a randomized model ↓",
    "ms_per_image": "milliseconds per image ↓",
}


def metric_chart(ev: Evaluation, metric: str) -> bytes:
    """A PNG bar chart of one metric: a group of bars per layer, one bar per method, 95 % CIs;
    the baselines as dashed horizontal lines."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    table = ev.table
    methods = list(dict.fromkeys(table.loc[~table["baseline"], "method"]))
    layers = list(dict.fromkeys(table.loc[~table["baseline"], "layer"]))
    figure = Figure(figsize=(max(5.0, 1.1 * len(layers) * max(1, len(methods)) / 3), 3.2))
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(methods))
    colors = matplotlib.colormaps["tab10"]
    for k, method in enumerate(methods):
        rows = table[(table["method"] == method) & ~table["baseline"]].set_index("layer")
        rows = rows.reindex(layers)
        x = np.arange(len(layers)) + (k - (len(methods) - 1) / 2) * width
        mean = rows[metric].to_numpy(dtype=float)
        error = np.abs(np.stack([mean - rows[f"{metric}_lo"], rows[f"{metric}_hi"] - mean]))
        axes.bar(x, mean, width, yerr=error, label=method, color=colors(k % 10), capsize=2)
    styles = iter([(0, (4, 2)), (0, (1, 1)), (0, (6, 2, 1, 2))])
    for _, row in table[table["baseline"]].iterrows():
        if np.isfinite(row[metric]):
            axes.axhline(row[metric], color="0.3", linewidth=1, linestyle=next(styles, "--"),
                         label=f"baseline: {row['method']}")
    axes.set_xticks(np.arange(len(layers)), layers, rotation=20, fontsize=8)
    axes.set_title(_LABELS.get(metric, metric), fontsize=10)
    axes.legend(fontsize=6, ncol=2, loc="best")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _mosaic_rows(ev: Evaluation) -> str:
    if ev.mosaic is None:
        return "<p>No mosaic: too few confidently classified images of distinct classes.</p>"
    header = "".join(f"<th>{html.escape(name)}</th>" for name in ev.mosaic_targets)
    lines = [f"<table class='mosaics'><tr><th>map</th>{header}</tr>"]
    step = max(1, ev.mosaic.shape[0] // 160)  # thumbnails: a page stays a few MB
    mosaic = ev.mosaic[::step, ::step]
    for (method, layer), maps in ev.mosaic_maps.items():
        pictures = [jpeg_bytes(overlay(mosaic, m[::step, ::step].astype(np.float32)))
                    for m in maps]
        cells = "".join(f"<td><img src='{data_uri(p)}' width='160'></td>" for p in pictures)
        label = f"{method}" + (f" @ {layer}" if layer else " (baseline)")
        lines.append(f"<tr><th>{html.escape(label)}</th>{cells}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def evaluation_html(ev: Evaluation) -> str:
    """The whole page as one HTML string (charts and mosaics embedded as data URIs)."""
    from ..evaluate import METRICS

    best = ev.best() if (~ev.table["baseline"]).any() else None
    charts = "\n".join(
        f"<figure><img src='{data_uri(metric_chart(ev, metric))}' alt='{metric}'></figure>"
        for metric in [*METRICS, "ms_per_image"]
        if np.isfinite(ev.table[metric].to_numpy(dtype=float)).any()
    )
    shown = ev.table.drop(columns=[c for c in ev.table if c.endswith(("_lo", "_hi"))])
    settings = ", ".join(f"{k}={v}" for k, v in ev.settings.items() if k != "method_options")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>convlens evaluation: {html.escape(ev.settings['model'])}
</title><style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
figure {{ display: inline-block; margin: 0.5em; }}
table {{ border-collapse: collapse; font-size: 0.85em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; }}
.mosaics img {{ display: block; }}
</style></head><body>
<h1>Which map shows what {html.escape(ev.settings['model'])} used?</h1>
<p>{html.escape(settings)}</p>
<p><b>Best:</b> {html.escape(str(best)) if best else 'no method rows'}</p>
{shown.to_html(index=False, float_format=lambda v: f'{v:.3f}')}
<h2>One chart per metric (95 % bootstrap CIs; dashed: baselines)</h2>
{charts}
<h2>The first mosaic, explained for each of its four classes</h2>
{_mosaic_rows(ev)}
</body></html>
"""


def save_evaluation(ev: Evaluation, out: str | Path) -> Path:
    """Write the tables (Parquet, CSV) and ``evaluation.html`` into ``out``; the page's path."""
    folder = ev.save(out)
    path = folder / "evaluation.html"
    path.write_text(evaluation_html(ev), encoding="utf-8")
    return path
