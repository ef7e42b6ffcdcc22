"""`iqart quantize ARTIFACT`: add the CPU INT8 graph to an artifact and print its parity report.

    iqart quantize artifacts/qualiclip [--calibration DIR|skimage[:names]] [--parity SOURCE] [--keep-fp32 REGEX]

Writes model.int8.onnx (static QDQ, per-channel weights) and int8.json, and exits 1 when the int8
scores rank the parity images differently from fp32 (SRCC < 0.99) where that test means anything.
`iqart export --int8` does the same right after exporting; `iqart score --precision int8` and
`iqart bench --backends onnxruntime-int8` calibrate with the defaults on first use.
"""

from __future__ import annotations

import argparse
import os
import re
import time

from iqart.engine.cli.usage import require_existing
from iqart.export.quality_images import DEFAULT_PARITY_SOURCE, default_calibration_source


def add_int8_arguments(p: argparse.ArgumentParser) -> None:
    """The options `iqart quantize` and `iqart export --int8` share."""
    p.add_argument(
        "--calibration",
        metavar="SOURCE",
        help="calibration images: a folder or skimage[:name,...] "
        f"(default: {default_calibration_source()}), each also degraded",
    )
    p.add_argument(
        "--parity",
        default=DEFAULT_PARITY_SOURCE,
        metavar="SOURCE",
        help=f"parity images, a folder or skimage[:name,...] (default: {DEFAULT_PARITY_SOURCE}); "
        "'none' skips the report",
    )
    p.add_argument(
        "--keep-fp32",
        action="append",
        default=[],
        metavar="REGEX",
        type=regex,
        help="keep the nodes whose name (as in model.onnx) matches in fp32, e.g. '^/layer4/' (repeatable; "
        "default: nothing for NR models, '^/layer4/' for FR models)",
    )


def regex(text: str) -> str:
    """argparse type: a pattern re can compile (checked before any work)."""
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: {text!r} ({exc})") from None
    return text


def check_image_sources(args: argparse.Namespace) -> None:
    """A --calibration or --parity folder must exist (skimage[:names] and 'none' are not paths)."""
    require_existing(
        *(
            (option, source)
            for option, source in (("--calibration", args.calibration), ("--parity", args.parity))
            if source and not source.startswith("skimage") and source.lower() != "none"
        )
    )


def add_quantize_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "quantize",
        help="add a static INT8 graph (CPU) to an artifact, with its parity report",
        description="Add model.int8.onnx (static QDQ, per-channel weights) and int8.json to an "
        "artifact, calibrated on real images and degraded copies, and print how "
        "closely int8 ranks the parity images as fp32 does; exit 1 when it does not "
        "(SRCC < 0.99).",
    )
    p.add_argument("artifact", help="artifact directory written by `iqart export`")
    add_int8_arguments(p)
    p.set_defaults(run=run_quantize)


def quantize_and_report(artifact: str | os.PathLike, args: argparse.Namespace) -> int:
    """Quantise `artifact` as `args` say, print what was done and the parity table; the exit code."""
    from iqart.export.int8_artifact import add_int8_graph
    from iqart.export.int8_parity import parity_rows
    from iqart.export.validate import format_table

    require_existing((None, artifact))
    check_image_sources(args)
    started = time.perf_counter()
    parity = None if args.parity.lower() == "none" else args.parity
    report = add_int8_graph(artifact, args.calibration, parity, args.keep_fp32)
    counts = ", ".join(f"{n} {op}" for op, n in report.quantised.items() if n)
    print(
        f"{artifact}: model.int8.onnx in {time.perf_counter() - started:.1f} s; quantised {counts}; "
        f"{len(report.fp32_convs)} Conv left in fp32; calibrated on {report.calibration_images} images "
        f"({report.calibration_source} and degraded copies)"
    )
    if report.parity is None:
        print(f"no parity report: {report.parity_skipped or 'skipped (--parity none)'}")
        return 0
    rows = parity_rows(report.parity)
    if report.parity_openvino is not None:
        rows += parity_rows(report.parity_openvino)
    print(f"parity on {report.parity_source} and degraded copies:")
    print(format_table(rows))
    return 1 if any(row.passed is False for row in rows) else 0


def run_quantize(args: argparse.Namespace) -> int:
    return quantize_and_report(args.artifact, args)
