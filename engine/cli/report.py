"""`iqart report SCORES -o report.png|.html`: histogram, lowest and highest images, errors by reason."""

from __future__ import annotations

import argparse

from iqart.engine.results.report import write_report


def add_report_parser(subparsers) -> None:
    p = subparsers.add_parser("report", help="a PNG or HTML page of a scores file: histogram, lowest and highest "
                                             "scored images as thumbnails, errors by reason")
    p.add_argument("scores", help="a result file of `iqart score` (.csv, .jsonl or .parquet)")
    p.add_argument("-o", "--out", default="report.html", help="report file, .png or .html (default: report.html)")
    p.add_argument("-n", "--count", type=int, default=8, help="how many lowest and highest images to show (default 8)")
    p.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    summary = write_report(args.scores, args.out, args.count)
    print(f"{args.scores}: {summary.rows} rows, {len(summary.scores)} scored, {sum(summary.errors.values())} failed "
          f"-> {args.out}")
    return 0
