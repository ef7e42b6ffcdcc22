"""Shards -> jobs for the scoring pipeline: each shard streamed once, in a reader thread.

The reader thread is what keeps a stalled read (an object store that stops answering) inside a
timeout: the pipeline takes samples from a queue, and a shard that sends nothing for
`read_timeout` seconds is given up with an error row (its thread is left to die on its own) and
the next shard goes on. The reader holds at most QUEUE_SAMPLES samples ahead of the pipeline (a
count of free slots it waits on), so memory stays at a few samples whatever the shard's size.
While it is ahead it hands samples on in lists of up to HAND_ON: each hand-over wakes a thread
and passes the GIL, which per sample cost more CPU than reading the sample from the tar did
(benchmarks/bench_shards.py); when the pipeline waits, a sample goes on at once.

What goes wrong costs this much: a sample without an image, one that does not decode or is too
large -> its own error row (naming shard and key); a shard cut short or corrupt part-way -> the
samples before the damage are scored, then one error row for the shard with the byte offset; a
shard that cannot be opened (no such object, access denied, no endpoint) -> one error row for the
shard naming its URL (credentials removed) and the reason.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from iqart.engine.pipeline.jobs import ScoreJob
from iqart.engine.sources.parquet_images import iter_parquet_samples
from iqart.engine.sources.samples import Sample, SampleFormat, sample_job, shard_job
from iqart.engine.sources.shard_locations import open_shard, redact, shard_kind
from iqart.engine.sources.webdataset_tar import ShardDamaged, iter_tar_samples

QUEUE_SAMPLES = 64  # samples read ahead of the pipeline, per shard being read
HAND_ON = 8  # samples handed on at once while the reader is ahead of the pipeline


@dataclass(frozen=True)
class ParquetColumns:
    image: str = "jpg"
    key: str = "key"
    reference: str | None = None


def sample_formats(
    shards: list[str],
    image_extensions: tuple[str, ...],
    reference: str | None,
    keep_fields: tuple[str, ...],
    image_column: str = "jpg",
    key_column: str = "key",
) -> tuple[SampleFormat, ParquetColumns]:
    """How the samples of `shards` are read: a tar sample's image is its first member with one of
    `image_extensions` and its reference the `reference` member; a Parquet row's are the
    `image_column` and the `reference` column. ValueError for tars and tables in one list (one
    run reads one kind, so that these options mean one thing)."""
    kinds = {shard_kind(shard) for shard in shards}
    if len(kinds) > 1:
        raise ValueError("tar shards and Parquet tables in one run: score them separately")
    parquet = kinds == {"parquet"}
    listed = tuple(ext.strip().lstrip(".") for ext in image_extensions if ext.strip())
    extensions = (image_column,) if parquet else listed
    fmt = SampleFormat(extensions, reference, keep_fields)
    return fmt, ParquetColumns(image_column, key_column, reference if parquet else None)


def read_samples(url: str, fmt: SampleFormat, columns: ParquetColumns = ParquetColumns()) -> Iterator[Sample]:
    """The samples of one shard, streamed, named by the shard's URL without credentials.
    Raises what opening or reading it raises."""
    name = redact(url)
    with open_shard(url) as stream:
        if shard_kind(url) == "parquet":
            yield from iter_parquet_samples(
                stream, name, columns.image, columns.key, fmt.keep_fields, columns.reference
            )
        else:
            yield from iter_tar_samples(stream, name)


class _Finished:
    """The reader's last word: None when the shard ended cleanly, else why it stopped."""

    def __init__(self, problem: str | None):
        self.problem = problem


def _hand_on(item, out: queue.Queue, stop: threading.Event) -> bool:
    """Put `item` in the queue unless the pipeline stopped taking (then the reader must end)."""
    if stop.is_set():
        return False
    out.put(item)
    return True


def _take_slot(slots: threading.Semaphore, stop: threading.Event) -> bool:
    """Wait for room to hold one more sample, unless the pipeline stopped taking (then the reader
    must end, not wait for ever holding samples nobody will take)."""
    while not stop.is_set():
        if slots.acquire(timeout=0.5):
            return True
    return False


def _read_into(
    url: str,
    fmt: SampleFormat,
    columns: ParquetColumns,
    out: queue.Queue,
    slots: threading.Semaphore,
    stop: threading.Event,
):
    problem, ahead = None, []
    try:
        for sample in read_samples(url, fmt, columns):
            if not _take_slot(slots, stop):
                return
            ahead.append(sample)
            if len(ahead) >= HAND_ON or out.empty():
                if not _hand_on(ahead, out, stop):
                    return
                ahead = []
    except ShardDamaged as exc:
        problem = f"shard damaged at byte {exc.offset} after {exc.samples} samples: {exc.reason}"
    except FileNotFoundError as exc:  # fsspec's HTTP filesystem says this of any failed request: keep its cause
        cause = f" ({type(exc.__cause__).__name__}: {redact(str(exc.__cause__))})" if exc.__cause__ else ""
        problem = f"cannot read the shard: no such file or object{cause}"
    except PermissionError as exc:
        problem = f"cannot read the shard: access denied ({redact(str(exc))})"
    except Exception as exc:  # an unreachable endpoint, a broken table: the shard's row says which
        problem = f"cannot read the shard: {type(exc).__name__}: {redact(str(exc))}"
    if ahead and not _hand_on(ahead, out, stop):
        return
    _hand_on(_Finished(problem), out, stop)


def shard_jobs(
    shards: list[str],
    fmt: SampleFormat,
    columns: ParquetColumns = ParquetColumns(),
    read_timeout: float | None = 60.0,
    skip: Callable[[str, str], bool] | None = None,
    on_shard_start: Callable[[str], None] | None = None,
    on_shard_end: Callable[[str, int, bool], None] | None = None,
) -> Iterator[ScoreJob]:
    """One job per sample of each shard in turn (samples `skip(shard, key)` says are done are
    left out), plus one job with its problem for a shard that fails. `on_shard_start(shard)` is
    called before a shard is read; `on_shard_end(shard, jobs, clean)` once its last job has been
    handed on, with how many it gave and whether the shard was read to its end. Jobs and
    callbacks name a shard by its URL without credentials (redact)."""
    for url in shards:
        name = redact(url)
        if on_shard_start is not None:
            on_shard_start(name)
        samples: queue.Queue = queue.Queue()  # lists of samples, bounded by the slots
        slots = threading.Semaphore(QUEUE_SAMPLES)
        stop = threading.Event()
        reader = threading.Thread(
            target=_read_into, args=(url, fmt, columns, samples, slots, stop), name="iqart-shard-reader", daemon=True
        )
        reader.start()
        issued = read = 0
        clean = False
        try:
            while True:
                try:
                    item = samples.get(timeout=read_timeout)
                except queue.Empty:
                    stop.set()  # the thread is abandoned: a stalled read cannot be interrupted
                    yield shard_job(name, f"shard read stalled: nothing for {read_timeout:g} s after {read} samples")
                    issued += 1
                    break
                if isinstance(item, _Finished):
                    clean = item.problem is None
                    if not clean:
                        yield shard_job(name, item.problem)
                        issued += 1
                    break
                for sample in item:
                    slots.release()
                    read += 1
                    if skip is not None and skip(name, sample.key):
                        continue
                    yield sample_job(sample, fmt)
                    issued += 1
        finally:
            stop.set()
        if on_shard_end is not None:
            on_shard_end(name, issued, clean)
