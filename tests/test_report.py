"""`iqart report`: the lowest and highest scored images, the histogram and the errors of a run."""

from __future__ import annotations

import csv
import shutil
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from iqart.engine.cli.main import main
from iqart.engine.results.quality_report import error_reason, summarise
from tests.helpers import EXAMPLE_IMAGES


@pytest.fixture(scope="module")
def scores_file(tmp_path_factory, iqart_home):
    """Scores of the example images plus two files that cannot be scored."""
    folder = tmp_path_factory.mktemp("photos")
    for path in EXAMPLE_IMAGES.glob("*.png"):
        shutil.copy(path, folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "empty.jpg").write_bytes(b"")
    out = folder.parent / "scores.csv"
    assert main(["score", str(folder), "-m", "qualiclip-tiny", "-o", str(out)]) == 0
    return out


def test_summary_orders_scores_and_counts_errors_by_reason(scores_file):
    with open(scores_file, newline="") as f:
        rows = list(csv.DictReader(f))
    scored = sorted(float(row["score"]) for row in rows if row["score"])
    summary = summarise(scores_file, count=3)
    assert [row["score"] for row in summary.lowest] == pytest.approx(scored[:3])
    assert [row["score"] for row in summary.highest] == pytest.approx(scored[::-1][:3])
    assert len(summary.scores) == len(scored) == len(list(EXAMPLE_IMAGES.glob("*.png")))
    assert summary.errors == Counter(error_reason(row["error"]) for row in rows if row["error"])
    assert sum(summary.errors.values()) == 2


def test_png_report(scores_file, tmp_path):
    out = tmp_path / "report.png"
    assert main(["report", str(scores_file), "-o", str(out), "-n", "4"]) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width >= 800 and image.height >= 600
        assert len(np.unique(np.asarray(image.convert("L")))) > 50  # thumbnails drawn, not an empty canvas


def test_html_report_shows_lowest_first_and_errors(scores_file, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(scores_file), "-o", str(out)]) == 0
    page = out.read_text()
    summary = summarise(scores_file)
    lowest, highest = summary.lowest[0]["path"], summary.highest[0]["path"]
    assert page.index("Lowest scored") < page.index(lowest) < page.index("Highest scored") < page.rindex(highest)
    assert page.count("data:image/jpeg;base64,") == len(summary.lowest) + len(summary.highest)
    for reason, count in summary.errors.items():
        assert f"<td>{reason}</td><td>{count}</td>" in page


def test_report_refuses_an_unknown_format(scores_file, tmp_path):
    assert main(["report", str(scores_file), "-o", str(tmp_path / "report.pdf")]) == 2
