"""Image lists kept as files: the way large scoring jobs name their inputs, since a folder walk
over millions of files (or object-store mounts) is slow and a manifest usually exists already.

A list is a text file (one path per line; blank lines and lines starting with `#` are skipped),
or one column of a CSV or Parquet file. Relative paths are resolved against the list's folder,
as with `--pairs`, so a list travels with its images.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

LIST_FORMATS = (".txt", ".lst", ".csv", ".parquet")


def read_path_list(list_path: str | os.PathLike, column: str = "path") -> list[Path]:
    """The image paths a list names, in list order; ValueError naming the file if it has none
    or lacks `column` (CSV and Parquet only)."""
    base = Path(list_path).parent
    return [base / entry for entry in read_list_entries(list_path, column)]  # an absolute entry replaces the base


def read_list_entries(list_path: str | os.PathLike, column: str = "path") -> list[str]:
    """The entries of a list as written (paths, or URLs of shards), in list order."""
    list_path = Path(list_path)
    suffix = list_path.suffix.lower()
    if suffix == ".parquet":
        entries = _parquet_column(list_path, column)
    elif suffix == ".csv":
        entries = _csv_column(list_path, column)
    else:
        with open(list_path, encoding="utf-8", errors="surrogateescape") as f:
            entries = [line.strip() for line in f]
        entries = [entry for entry in entries if entry and not entry.startswith("#")]
    if not entries:
        raise ValueError(f"{list_path}: lists no image paths")
    return entries


def _csv_column(list_path: Path, column: str) -> list[str]:
    with open(list_path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or []):
            raise ValueError(f"{list_path}: no column {column!r} (columns: {', '.join(reader.fieldnames or [])})")
        return [value.strip() for row in reader if (value := row[column] or "").strip()]


def _parquet_column(list_path: Path, column: str) -> list[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"{list_path}: reading Parquet needs pyarrow (pip install 'iqart[ray]')") from None
    names = pq.read_schema(list_path).names
    if column not in names:
        raise ValueError(f"{list_path}: no column {column!r} (columns: {', '.join(names)})")
    values = pq.read_table(list_path, columns=[column]).column(column).to_pylist()
    return [os.fsdecode(value).strip() for value in values if value is not None and os.fsdecode(value).strip()]
