"""Result files by suffix: CSV and JSONL (iqart.engine.results.text_writers) or Parquet, written atomically and read
back for `--resume`.

Parquet is what data pipelines that score millions of images read next (Spark, DuckDB, pandas),
and it needs pyarrow, which comes with the `ray` extra. Its text columns are UTF-8: a path that
is not valid UTF-8 is stored with its undecodable bytes escaped (\\xNN), so unlike CSV and JSONL
such a row does not name its file byte for byte and `--resume` scores it again.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from iqart.engine.results.text_writers import AtomicResultWriter, CommitOnSuccess, read_results
from iqart.train.storage import honour_umask

ROW_GROUP = 8192  # rows buffered before a Parquet row group is written: flat memory, few groups


def is_parquet(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ".parquet"


def open_result_writer(path: str | os.PathLike, columns: list[str], numeric: tuple[str, ...] = ("score",)):
    """An atomic writer for `path`'s format (.parquet, .jsonl, else CSV); `numeric` columns are
    float64 in Parquet (the score and any attributes), the rest text."""
    return ParquetResultWriter(path, columns, numeric) if is_parquet(path) else AtomicResultWriter(path, columns)


def read_result_file(path: str | os.PathLike) -> list[dict]:
    """Rows of a result file in any format, as iqart.engine.results.text_writers.read_results gives them."""
    return read_parquet_results(path) if is_parquet(path) else read_results(path)


class ParquetResultWriter(CommitOnSuccess):
    """AtomicResultWriter's contract for Parquet: rows go to a temporary file beside the target,
    `commit()` renames it into place, an exception inside `with` leaves earlier output alone."""

    def __init__(self, path: str | os.PathLike, columns: list[str], numeric: tuple[str, ...] = ("score",)):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.columns = columns
        self.numeric = set(numeric)
        self.format = "parquet"
        self._schema = pa.schema([(c, pa.float64() if c in self.numeric else pa.string()) for c in columns])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        honour_umask(fd)
        os.close(fd)
        self._writer = pq.ParquetWriter(self._tmp, self._schema)
        self._rows: list[dict] = []

    def write(self, row: dict) -> None:
        self._rows.append({k: _number(row.get(k)) if k in self.numeric else _text(row.get(k)) for k in self.columns})
        if len(self._rows) >= ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self._schema))
            self._rows = []

    def commit(self) -> None:
        self._flush()
        self._writer.close()
        with open(self._tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self._tmp, self.path)

    def discard(self) -> None:
        if self._writer.is_open:
            self._writer.close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)


def read_parquet_results(path: str | os.PathLike) -> list[dict]:
    """The rows of a Parquet result file; ValueError naming the file if it is not one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        rows = pq.read_table(path).to_pylist()
    except pa.ArrowException as exc:
        raise ValueError(f"{path}: not a Parquet result file ({exc})") from None
    if rows and not ("score" in rows[0] and ("path" in rows[0] or "shard" in rows[0])):
        raise ValueError(f"{path}: not an iqart result (needs path or shard, and score columns)")
    for row in rows:
        row["error"] = row.get("error") or None
        if "shard" in row:
            row["key"] = row.get("key") or None
        else:
            row["reference"] = row.get("reference") or None
    return rows


def _number(value: object) -> float | None:
    """A float cell; a CSV read back for --resume holds its numbers as text."""
    return None if value in (None, "") else float(value)


def _text(value: object) -> str | None:
    """A text cell; a kept metadata field that is a number is stored as its text."""
    if value is None:
        return None
    return (value if isinstance(value, str) else str(value)).encode("utf-8", "backslashreplace").decode("utf-8")
