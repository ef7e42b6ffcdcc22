"""Result files written atomically: readers never see a half-written CSV or JSONL."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path


class AtomicResultWriter:
    """Collects rows into a temporary file beside the target; `commit()` renames it into place.

    Used as a context manager, an exception discards the temporary file and leaves any earlier
    output untouched.
    """

    def __init__(self, path: str | os.PathLike, columns: list[str]):
        self.path = Path(path)
        self.columns = columns
        self.format = "jsonl" if self.path.suffix.lower() == ".jsonl" else "csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._file = os.fdopen(fd, "w", newline="", encoding="utf-8", errors="surrogateescape")
        if self.format == "csv":
            self._csv = csv.DictWriter(self._file, fieldnames=columns, extrasaction="raise")
            self._csv.writeheader()

    def write(self, row: dict) -> None:
        if self.format == "csv":
            self._csv.writerow({k: "" if row.get(k) is None else row[k] for k in self.columns})
        else:
            self._file.write(json.dumps({k: row.get(k) for k in self.columns}, ensure_ascii=False) + "\n")

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

    def __enter__(self) -> "AtomicResultWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
