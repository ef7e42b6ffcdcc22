"""A look at a scoring run: the score histogram, the lowest and highest scored images as
thumbnails, and the error rows counted by reason, as one PNG or one self-contained HTML page.

Curating data means looking at the worst images first; this puts them on one page. When the run
wrote attributes (`iqart score --explain`), each of the lowest images also shows the attributes
that pulled it down: those furthest below their median over the run. Shard samples' thumbnails
are read back from their shards.
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

from iqart.engine.pipeline.images import EncodedImage, ImageError, open_image
from iqart.engine.results.formats import read_result_file
from iqart.train.models.prompts import attribute_names

THUMB_SIDE = 160
PULLED_DOWN = 3  # attributes named per low image


@dataclass
class RunSummary:
    scores: np.ndarray  # every finite score, in file order
    lowest: list[dict]  # rows, lowest score first
    highest: list[dict]  # rows, highest score first
    errors: Counter  # reason -> count
    rows: int
    medians: dict[str, float] | None = None  # attribute -> its median over the scored rows (--explain runs)


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
        _medians(scored),
    )


def _medians(rows: list[dict]) -> dict[str, float] | None:
    """The median of each attribute column the rows hold (--explain), or None without any."""
    if not rows:
        return None
    known = {name for family in ("qualiclip", "bpclip") for name in attribute_names(family)}
    columns = [name for name in rows[0] if name in known and not name.startswith("adj_")]
    if not columns:
        return None
    return {
        name: float(np.median([float(row[name]) for row in rows if row.get(name) not in (None, "")]))
        for name in columns
    }


def pulled_down(row: dict, medians: dict[str, float] | None) -> list[tuple[str, float, float]]:
    """(attribute, its value, the run's median) for the attributes furthest below their median."""
    if not medians:
        return []
    values = {name: float(row[name]) for name in medians if row.get(name) not in (None, "")}
    below = sorted(values, key=lambda name: values[name] - medians[name])
    return [(name, values[name], medians[name]) for name in below[:PULLED_DOWN] if values[name] < medians[name]]


def label(row: dict) -> str:
    """The row's file, or its shard and key."""
    return row["path"] if row.get("path") else f"{row.get('shard')} [{row.get('key')}]"


def error_reason(message: str) -> str:
    """The kind of an error, without the details that differ per file (sizes, offsets)."""
    return message.split(":", 1)[0].strip() or message


def thumbnail(source: str | EncodedImage | None) -> Image.Image | None:
    """A small copy decoded as scoring decodes (upright, sRGB, regular files only: a FIFO in a
    scores file must not hang the report), or None when the file cannot be read now."""
    if source is None:
        return None
    try:
        image = open_image(source, reduce_for=(THUMB_SIDE, THUMB_SIDE))
    except ImageError:
        return None
    image.thumbnail((THUMB_SIDE, THUMB_SIDE))
    return image


def thumbnails(rows: list[dict]) -> list[Image.Image | None]:
    """Each row's thumbnail: its file, or its sample read back from its shard (each shard
    streamed once, up to its last wanted sample)."""
    from iqart.engine.sources.samples import IMAGE_EXTENSIONS, SampleFormat
    from iqart.engine.sources.shard_reader import read_samples

    wanted: dict[str, set[str]] = {}
    for row in rows:
        if not row.get("path") and row.get("shard") and row.get("key"):
            wanted.setdefault(row["shard"], set()).add(row["key"])
    found: dict[tuple[str, str], EncodedImage] = {}
    for shard, keys in wanted.items():
        try:
            for sample in read_samples(shard, SampleFormat()):
                if sample.key in keys:
                    ext = next((e for e in sample.members if e.lower() in (*IMAGE_EXTENSIONS, "jpg")), None)
                    if ext is not None:
                        found[shard, sample.key] = EncodedImage(f"{sample.key}.{ext}", sample.members[ext])
                    keys.discard(sample.key)
                    if not keys:
                        break
        except Exception:  # a shard that cannot be read now: its thumbnails are left out, not the report
            continue
    return [
        thumbnail(row["path"]) if row.get("path") else thumbnail(found.get((row.get("shard"), row.get("key"))))
        for row in rows
    ]


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
    for row_index, (kind, rows) in enumerate((("lowest", summary.lowest), ("highest", summary.highest)), start=1):
        images = thumbnails(rows)
        for column in range(columns):
            ax = fig.add_subplot(grid[row_index, column])
            ax.set_axis_off()
            if column >= len(rows):
                continue
            row = rows[column]
            if images[column] is not None:
                ax.imshow(np.asarray(images[column]))
            why = "".join(f"\n{name} {value:.2f}" for name, value, _ in pulled_down(row, summary.medians)[:2])
            title = f"{kind} {column + 1}: {row['score']:.4f}\n{Path(label(row)).name[:24]}"
            ax.set_title(title + (why if kind == "lowest" else ""), fontsize=7)
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

    def gallery(title: str, rows: list[dict], explain: bool) -> str:
        cells = []
        for row, image in zip(rows, thumbnails(rows), strict=True):
            picture = f'<img src="{_data_uri(image)}">' if image is not None else "<div>(unreadable now)</div>"
            why = ""
            if explain:
                why = "".join(
                    f"<br>{html.escape(name)} {value:.3f} (median {median:.3f})"
                    for name, value, median in pulled_down(row, summary.medians)
                )
            cells.append(
                f"<figure>{picture}<figcaption>{row['score']:.4f}<br>{html.escape(label(row))}{why}</figcaption></figure>"
            )
        return f"<h2>{title}</h2><div class=gallery>{''.join(cells)}</div>"

    errors = "".join(
        f"<tr><td>{html.escape(reason)}</td><td>{n}</td></tr>" for reason, n in summary.errors.most_common()
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(name)}</title><style>
body{{font-family:sans-serif;margin:2em}} .gallery{{display:flex;flex-wrap:wrap;gap:1em}}
figure{{margin:0;width:{THUMB_SIDE}px;font-size:11px;word-break:break-all}} td{{padding:0 1em 0 0}}
</style></head><body><h1>{html.escape(_title(summary, name))}</h1><img src="{histogram}">
{gallery("Lowest scored", summary.lowest, True)}{gallery("Highest scored", summary.highest, False)}
<h2>Errors by reason</h2><table>{errors or "<tr><td>none</td></tr>"}</table></body></html>
"""
