"""`iqart report SCORES -o report.png|.html`: histogram, lowest and highest images, errors by reason."""

from __future__ import annotations

import argparse
from pathlib import Path

from iqart.engine.cli.usage import UsageError, positive_int, require_existing, require_output_folder
from iqart.engine.results.quality_report import write_report

REPORT_FORMATS = (".png", ".html")  # as write_report draws them


def add_report_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="a PNG or HTML page of a scores file: histogram, lowest and highest "
        "scored images as thumbnails, errors by reason",
        description="Summarise a result file of `iqart score` as a PNG chart or an HTML page: the "
        "score histogram, the lowest and highest scored images as thumbnails, and "
        "the errors counted by reason.",
    )
    p.add_argument("scores", help="a result file of `iqart score` (.csv, .jsonl or .parquet)")
    p.add_argument(
        "-o", "--out", default="report.html", metavar="FILE", help="report file, .png or .html (default: report.html)"
    )
    p.add_argument(
        "-n",
        "--count",
        type=positive_int,
        default=8,
        metavar="N",
        help="how many lowest and highest images to show (default 8)",
    )
    p.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    require_existing((None, args.scores))
    if Path(args.out).suffix.lower() not in REPORT_FORMATS:
        raise UsageError(
            f"--out {args.out}: the report is {' or '.join(REPORT_FORMATS)}, not {Path(args.out).suffix or 'no suffix'}"
        )
    require_output_folder(args.out, "--out")
    summary = write_report(args.scores, args.out, args.count)
    print(
        f"{args.scores}: {summary.rows} rows, {len(summary.scores)} scored, {sum(summary.errors.values())} failed "
        f"-> {args.out}"
    )
    return 0
