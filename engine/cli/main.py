"""The `iqart` command line: `iqart score PATH... --model NAME --out FILE` and friends.

Each group of subcommands lives in its own module; this one builds the parser and turns the
errors a user can fix into one line and exit code 2, a bug into its traceback and exit code 70,
and a stop signal (SIGINT, SIGTERM, SIGHUP) into its conventional exit code (130, 143, 129;
iqart.engine.cli.signals). iqart.engine.cli.exits says which is which.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from importlib.metadata import PackageNotFoundError, version

from iqart.engine.cli import exits
from iqart.engine.cli.artifact import add_build_parser, add_export_parser, add_validate_parser
from iqart.engine.cli.bench import add_bench_parser
from iqart.engine.cli.explain import add_explain_parser
from iqart.engine.cli.filter import add_filter_parser
from iqart.engine.cli.models import add_list_parser
from iqart.engine.cli.quantize import add_quantize_parser
from iqart.engine.cli.report import add_report_parser
from iqart.engine.cli.score import add_score_parser
from iqart.engine.cli.signals import exit_code, stop_on_signals
from iqart.engine.cli.usage import UsageError
from iqart.train.cli import add_training_parsers


def package_version() -> str:
    """The installed distribution's version (what pip reports), not a copy kept in the source."""
    try:
        return version("iqart")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iqart",
        description="CLIP-based image quality: QualiCLIP and BPCLIP",
        epilog=exits.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-V",
        "--version",
        action="version",
        version=f"%(prog)s {package_version()}",
        help="print the version of iqart and exit",
    )
    subparsers = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands", help="`iqart COMMAND --help` describes each"
    )
    add_score_parser(subparsers)
    add_filter_parser(subparsers)
    add_list_parser(subparsers)
    add_report_parser(subparsers)
    add_explain_parser(subparsers)
    add_export_parser(subparsers)
    add_validate_parser(subparsers)
    add_build_parser(subparsers)
    add_quantize_parser(subparsers)
    add_bench_parser(subparsers)
    add_training_parsers(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        with stop_on_signals():
            return args.run(args)
    except KeyboardInterrupt as exc:  # stopped before the command could finish cleanly
        print(f"iqart: stopped ({exc or 'SIGINT'})", file=sys.stderr)
        return exit_code(exc)
    except Exception as exc:
        if not exits.is_users(exc, argv):
            traceback.print_exc()
            print(
                f"iqart: internal error (exit code {exits.SOFTWARE}): please report it with the traceback above",
                file=sys.stderr,
            )
            return exits.SOFTWARE
        prefix = "iqart: error: " if isinstance(exc, (UsageError, ValueError, OSError)) else "iqart: "
        print(prefix + str(exc), file=sys.stderr)
        return exits.USAGE


if __name__ == "__main__":
    sys.exit(main())
