"""The `iqart` command line: `iqart score PATH... --model NAME --out FILE` and friends.

Each group of subcommands lives in its own module; this one builds the parser and turns the
errors a user can fix into one line and exit code 2, and a stop signal (SIGINT, SIGTERM,
SIGHUP) into its conventional exit code (130, 143, 129; iqart.engine.cli.signals).
"""

from __future__ import annotations

import argparse
import sys

from iqart.engine.backends.plan_cache import PlanMismatchError
from iqart.engine.backends.tensorrt_backend import TensorRTUnavailableError
from iqart.engine.cli.artifact import add_build_parser, add_export_parser, add_validate_parser
from iqart.engine.cli.bench import add_bench_parser
from iqart.engine.cli.models import add_list_parser
from iqart.engine.cli.quantize import add_quantize_parser
from iqart.engine.cli.report import add_report_parser
from iqart.engine.cli.score import add_score_parser
from iqart.engine.cli.signals import exit_code, stop_on_signals
from iqart.engine.cli.usage import UsageError
from iqart.train.checkpoints import CheckpointError
from iqart.train.cli import add_training_parsers
from iqart.train.zoo import MissingWeightsError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iqart", description="CLIP-based image quality: QualiCLIP and BPCLIP")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_score_parser(subparsers)
    add_list_parser(subparsers)
    add_report_parser(subparsers)
    add_export_parser(subparsers)
    add_validate_parser(subparsers)
    add_build_parser(subparsers)
    add_quantize_parser(subparsers)
    add_bench_parser(subparsers)
    add_training_parsers(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with stop_on_signals():
            return args.run(args)
    except KeyboardInterrupt as exc:  # stopped before the command could finish cleanly
        print(f"iqart: stopped ({exc or 'SIGINT'})", file=sys.stderr)
        return exit_code(exc)
    except (MissingWeightsError, PlanMismatchError, TensorRTUnavailableError) as exc:
        print(f"iqart: {exc}", file=sys.stderr)
        return 2
    except (CheckpointError, UsageError, ValueError, OSError) as exc:
        print(f"iqart: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
