"""Parquet tables of encoded images, as img2dataset's `parquet` output lays them out: one row a
sample, the encoded image in one column (`jpg`), the sample key in another (`key`), metadata in
the rest. Read a few hundred rows at a time, never whole; only the columns needed are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from iqart.engine.sources.samples import Sample

ROWS_PER_READ = 256


class ParquetLayoutError(ValueError):
    """The table lacks a column the run needs."""


def iter_parquet_samples(
    stream: BinaryIO,
    shard: str,
    image_column: str = "jpg",
    key_column: str = "key",
    keep_fields: tuple[str, ...] = (),
    reference_column: str | None = None,
) -> Iterator[Sample]:
    """One Sample per row: members {image_column: bytes} (and the reference column's; a null cell
    is no member), the kept fields as its columns. A row whose key is empty is keyed by its row
    number."""
    import pyarrow.parquet as pq

    table = pq.ParquetFile(stream)
    names = set(table.schema_arrow.names)
    for what, column in (("--image-column", image_column), ("--key-column", key_column)):
        if column not in names:
            raise ParquetLayoutError(f"no column {column!r} ({what}); its columns: {', '.join(sorted(names))}")
    if reference_column is not None and reference_column not in names:
        raise ParquetLayoutError(f"no reference column {reference_column!r}; its columns: {', '.join(sorted(names))}")
    wanted = [image_column, key_column, *(c for c in keep_fields if c in names)]
    if reference_column is not None:
        wanted.append(reference_column)
    row_number = 0
    for batch in table.iter_batches(batch_size=ROWS_PER_READ, columns=list(dict.fromkeys(wanted))):
        for row in batch.to_pylist():
            key = row.get(key_column)
            members = {c: row[c] for c in (image_column, reference_column) if c is not None and row[c] is not None}
            columns = {name: row.get(name) for name in keep_fields}
            yield Sample(shard, str(key) if key not in (None, "") else str(row_number), members, columns)
            row_number += 1
