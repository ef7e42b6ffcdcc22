"""Scoring shards through the one pipeline, with rows routed to wherever the run keeps them.

Rows come back in batch order, not shard order, and several shards may be in flight at once (the
pipeline reads ahead across a shard's end). A shard is complete when it has been read and as
many rows came back as it gave jobs; only then is it marked done (its own output finished, or a
`shard_done` record journaled), so a killed run never counts a shard done that is not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Protocol

from iqart.engine.pipeline.batch_scoring import DECODE_TIMEOUT_S, PipelineStats
from iqart.engine.pipeline.jobs import ScoreRow
from iqart.engine.sources.samples import SampleFormat
from iqart.engine.sources.shard_reader import ParquetColumns, shard_jobs


class ShardSink(Protocol):
    """Where a shard run's rows go: one output file, or one per shard."""

    def is_shard_done(self, shard: str) -> bool: ...
    def start_shard(self, shard: str) -> None: ...
    def is_sample_done(self, shard: str, key: str) -> bool: ...
    def write(self, row: ScoreRow) -> None: ...
    def complete_shard(self, shard: str, clean: bool) -> None: ...


class NoRecord:
    """A sink that keeps nothing: every shard is read, rows only go to the caller."""

    def is_shard_done(self, shard: str) -> bool:
        return False

    def start_shard(self, shard: str) -> None:
        pass

    def is_sample_done(self, shard: str, key: str) -> bool:
        return False

    def write(self, row: ScoreRow) -> None:
        pass

    def complete_shard(self, shard: str, clean: bool) -> None:
        pass


class _Completion:
    """Counts each shard's jobs and rows; says when a shard is complete."""

    def __init__(self, sink: ShardSink):
        self.sink = sink
        self.issued: dict[str, tuple[int, bool]] = {}
        self.received: Counter[str] = Counter()
        self.completed = 0

    def ended(self, shard: str, jobs: int, clean: bool) -> None:
        self.issued[shard] = (jobs, clean)
        self._check(shard)

    def row(self, row: ScoreRow) -> None:
        self.received[row.shard] += 1
        self._check(row.shard)

    def _check(self, shard: str) -> None:
        if shard in self.issued and self.received[shard] == self.issued[shard][0]:
            _, clean = self.issued.pop(shard)
            del self.received[shard]
            self.sink.complete_shard(shard, clean)
            self.completed += 1


def score_shards(
    scorer,
    shards: list[str],
    sink: ShardSink,
    fmt: SampleFormat | None = None,
    columns: ParquetColumns | None = None,
    stats: PipelineStats | None = None,
    *,
    decode: str = "iqart",
    decode_timeout: float | None = DECODE_TIMEOUT_S,
    decode_device: str | None = None,
    explain: bool = False,
) -> Iterator[ScoreRow]:
    """Score every sample of `shards` not already done in `sink`, writing each row to it and
    yielding it. `decode_timeout` also bounds how long a shard's read may stall."""
    todo = [shard for shard in shards if not sink.is_shard_done(shard)]
    completion = _Completion(sink)
    jobs = shard_jobs(
        todo,
        fmt or SampleFormat(),
        columns or ParquetColumns(),
        read_timeout=decode_timeout,
        skip=sink.is_sample_done,
        on_shard_start=sink.start_shard,
        on_shard_end=completion.ended,
    )
    for row in scorer.score_jobs(
        jobs, stats, decode=decode, decode_timeout=decode_timeout, decode_device=decode_device, explain=explain
    ):
        sink.write(row)
        completion.row(row)
        yield row
