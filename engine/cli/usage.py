"""The one exception every `iqart` subcommand raises for a mistake in its command line, and the
checks of named paths that every subcommand makes before any work."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


class UsageError(Exception):
    """A mistake in the command line; reported without a traceback (exit code 2)."""


@contextlib.contextmanager
def user_input() -> Iterator[None]:
    """Within the block, a ValueError or OSError is about what the command line named (a list of
    paths, an artifact, a model name): it becomes a UsageError. Only for calls that do no more
    than read and check such input, so that a bug elsewhere keeps its traceback."""
    try:
        yield
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from exc


def require_existing(*named: tuple[str | None, str | os.PathLike | None]) -> None:
    """UsageError naming every path that does not exist, as `ls` and `cp` refuse one, before any
    work. `named`: (option, path) pairs, option None for positional paths, path None when not given."""
    missing = [
        f"{option} {path}" if option else str(path)
        for option, path in named
        if path is not None and not os.path.exists(path)
    ]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")


def require_output_folder(path: str | os.PathLike, option: str) -> None:
    """UsageError unless `path` (a file or folder to write) can be made: its nearest existing
    ancestor must be a writable folder."""
    ancestor = Path(os.path.abspath(path)).parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{option} {path}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: the folder {ancestor} is not writable")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (argparse reports anything else as a usage error)."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    return _int_at_least(text, 0)


def _int_at_least(text: str, floor: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < floor:
        raise argparse.ArgumentTypeError(f"must be at least {floor}, not {value}")
    return value
