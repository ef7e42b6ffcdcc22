"""A look at a scoring run: the score histogram, the lowest and highest scored images as
thumbnails, and the error rows counted by reason, as one PNG or one self-contained HTML page.

Curating data means looking at the worst images first; this puts them on one page.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from iqart.engine.pipeline.images import ImageError, open_image
from iqart.engine.results.formats import read_result_file

THUMB_SIDE = 160


@dataclass
class RunSummary:
    scores: np.ndarray  # every finite score, in file order
    lowest: list[dict]  # rows, lowest score first
    highest: list[dict]  # rows, highest score first
    errors: Counter  # reason -> count
    rows: int


def summarise(path: str | os.PathLike, count: int = 8) -> RunSummary:
    rows = read_result_file(path)
    scored = [row for row in rows if row["error"] is None and row["score"] is not None and math.isfinite(row["score"])]
    ranked = sorted(scored, key=lambda row: row["score"])
    errors = Counter(error_reason(row["error"]) for row in rows if row["error"] is not None)
    return RunSummary(
        np.array([row["score"] for row in scored], dtype=np.float64),
        ranked[:count],
        ranked[::-1][:count],
        errors,
        len(rows),
    )


def error_reason(message: str) -> str:
    """The kind of an error, without the details that differ per file (sizes, offsets)."""
    return message.split(":", 1)[0].strip() or message


def thumbnail(path: str) -> Image.Image | None:
    """A small copy decoded as scoring decodes (upright, sRGB, regular files only: a FIFO in a
    scores file must not hang the report), or None when the file cannot be read now."""
    try:
        image = open_image(path, reduce_for=(THUMB_SIDE, THUMB_SIDE))
    except ImageError:
        return None
    image.thumbnail((THUMB_SIDE, THUMB_SIDE))
    return image


def write_report(scores_file: str | os.PathLike, out: str | os.PathLike, count: int = 8) -> RunSummary:
    """Writes `out` (.png or .html) for `scores_file` (CSV, JSONL or Parquet); returns the summary."""
    summary = summarise(scores_file, count)
    if not summary.rows:
        raise ValueError(f"{scores_file}: no rows to report")
    suffix = Path(out).suffix.lower()
    if suffix == ".html":
        Path(out).write_text(_html(summary, Path(scores_file).name), encoding="utf-8")
    elif suffix == ".png":
        figure = _figure(summary, Path(scores_file).name)
        figure.savefig(out, dpi=100)
        _pyplot().close(figure)
    else:
        raise ValueError(f"{out}: the report is .png or .html, not {suffix or 'no suffix'}")
    return summary


def _title(summary: RunSummary, name: str) -> str:
    failed = sum(summary.errors.values())
    return f"{name}: {summary.rows} rows, {len(summary.scores)} scored, {failed} failed"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    return plt


def _histogram(ax, scores: np.ndarray) -> None:
    if len(scores):
        ax.hist(scores, bins=min(50, max(5, len(scores) // 2)), color="#4472c4")
    ax.set_xlabel("score")
    ax.set_ylabel("images")


def _figure(summary: RunSummary, name: str):
    columns = max(len(summary.lowest), 1)
    fig = _pyplot().figure(figsize=(max(10, 1.6 * columns), 9))
    grid = fig.add_gridspec(3, columns, height_ratios=[1.3, 1, 1])
    hist = fig.add_subplot(grid[0, :])
    _histogram(hist, summary.scores)
    errors = "; ".join(f"{reason}: {n}" for reason, n in summary.errors.most_common(6)) or "no errors"
    hist.set_title(f"{_title(summary, name)}\nerrors: {errors}", fontsize=9)
    for row_index, (label, rows) in enumerate((("lowest", summary.lowest), ("highest", summary.highest)), start=1):
        for column in range(columns):
            ax = fig.add_subplot(grid[row_index, column])
            ax.set_axis_off()
            if column >= len(rows):
                continue
            row = rows[column]
            image = thumbnail(row["path"])
            if image is not None:
                ax.imshow(np.asarray(image))
            ax.set_title(f"{label} {column + 1}: {row['score']:.4f}\n{Path(row['path']).name[:24]}", fontsize=7)
    fig.tight_layout()
    return fig


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _html(summary: RunSummary, name: str) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3))
    _histogram(ax, summary.scores)
    fig.tight_layout()
    figure = io.BytesIO()
    fig.savefig(figure, format="png", dpi=100)
    plt.close(fig)
    histogram = "data:image/png;base64," + base64.b64encode(figure.getvalue()).decode()

    def gallery(label: str, rows: list[dict]) -> str:
        cells = []
        for row in rows:
            image = thumbnail(row["path"])
            picture = f'<img src="{_data_uri(image)}">' if image is not None else "<div>(unreadable now)</div>"
            cells.append(
                f"<figure>{picture}<figcaption>{row['score']:.4f}<br>{html.escape(row['path'])}</figcaption></figure>"
            )
        return f"<h2>{label}</h2><div class=gallery>{''.join(cells)}</div>"

    errors = "".join(
        f"<tr><td>{html.escape(reason)}</td><td>{n}</td></tr>" for reason, n in summary.errors.most_common()
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(name)}</title><style>
body{{font-family:sans-serif;margin:2em}} .gallery{{display:flex;flex-wrap:wrap;gap:1em}}
figure{{margin:0;width:{THUMB_SIDE}px;font-size:11px;word-break:break-all}} td{{padding:0 1em 0 0}}
</style></head><body><h1>{html.escape(_title(summary, name))}</h1><img src="{histogram}">
{gallery("Lowest scored", summary.lowest)}{gallery("Highest scored", summary.highest)}
<h2>Errors by reason</h2><table>{errors or "<tr><td>none</td></tr>"}</table></body></html>
"""
