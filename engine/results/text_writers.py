"""Result files: written atomically (readers never see a half-written CSV or JSONL), and read
back for `--resume`.

Paths that are not valid UTF-8 are kept byte for byte (surrogateescape) both ways, so a row
read back names the same file it was written for. JSONL escapes U+0085, U+2028 and U+2029 (NEXT
LINE, LINE and PARAGRAPH SEPARATOR, all legal in file names): a reader that splits lines with
str.splitlines() (or by JavaScript's line terminators) would otherwise cut such a row in two.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

from iqart.train.storage import honour_umask


class CommitOnSuccess:
    """The result writers' `with` protocol: commit() on a clean exit, discard() on an error,
    so a failed run never replaces an earlier result file with a partial one."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class AtomicResultWriter(CommitOnSuccess):
    """Collects rows into a temporary file beside the target; `commit()` renames it into place.

    Used as a context manager, an exception discards the temporary file and leaves any earlier
    output untouched.
    """

    def __init__(self, path: str | os.PathLike, columns: list[str]):
        self.path = Path(path)
        self.columns = columns
        self.format = result_format(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        honour_umask(fd)
        self._file = os.fdopen(fd, "w", newline="", encoding="utf-8", errors="surrogateescape")
        if self.format == "csv":
            self._csv = csv.DictWriter(self._file, fieldnames=columns, extrasaction="raise")
            self._csv.writeheader()

    def write(self, row: dict) -> None:
        if self.format == "csv":
            self._csv.writerow({k: "" if row.get(k) is None else row[k] for k in self.columns})
        else:
            self._file.write(jsonl_line({k: row.get(k) for k in self.columns}))

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)


LINE_BREAKS_JSON_KEEPS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}  # splitlines() breaks on them


def jsonl_line(row: dict) -> str:
    """One JSONL line: UTF-8 text as is, except the line breaks json.dumps leaves raw (it escapes
    only those below U+0020), written as JSON escapes so the line stays one line for any reader."""
    return json.dumps(row, ensure_ascii=False).translate(LINE_BREAKS_JSON_KEEPS) + "\n"


def result_format(path: str | os.PathLike) -> str:
    return "jsonl" if Path(path).suffix.lower() == ".jsonl" else "csv"


def read_results(path: str | os.PathLike) -> list[dict]:
    """The rows of a result file written by AtomicResultWriter: `score` as float or None,
    empty `error` and `reference` as None. ValueError, naming the file and line, if it is not one."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        if result_format(path) == "jsonl":
            rows = []
            for line_number, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{path}, line {line_number}: not JSON ({exc.msg})") from None
        else:
            rows = list(csv.DictReader(f))
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or not (row.get("path") or row.get("shard")) or "score" not in row:
            raise ValueError(f"{path}: row {number} is not an iqart result (needs path or shard, and score)")
        try:
            row["score"] = None if row["score"] in ("", None) else float(row["score"])
        except (TypeError, ValueError):
            raise ValueError(f"{path}: row {number}: score {row['score']!r} is not a number") from None
        row["error"] = row.get("error") or None
        if "shard" in row:
            row["key"] = row.get("key") or None  # a row about a whole shard has no key
        else:
            row["reference"] = row.get("reference") or None
    return rows
