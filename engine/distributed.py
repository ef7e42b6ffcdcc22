"""Scoring on a Ray cluster: when one machine is not enough, Ray Data spreads the images over an
actor pool and the driver writes the same result file as `iqart score`.

    from iqart.engine.distributed import score_distributed
    summary = score_distributed(["photos/"], "scores.parquet", "qualiclip", address="auto",
                                gpus_per_actor=1, backend="onnxruntime", batch_size=32)

Why this shape:
- Each actor holds one `engine.Scorer` for its whole life (the model loads once per actor, not
  per batch) and scores its blocks with the single-process pipeline (`Scorer.score_jobs`): the
  same decoding, size buckets and per-image error rows, so a bad file reads the same either way.
- Paths travel as bytes (Arrow strings must be UTF-8; file names need not be) in blocks of a
  few batches: small enough that a lost actor costs little work and actors stay evenly busy.
- An actor that dies is restarted and its block is retried, up to BLOCK_RETRIES times (Ray
  Data's default is unbounded: one file that crashes its decoder would loop forever). A block
  still failing then is given up without stopping the run (max_errored_blocks), and each of its
  jobs gets an error row saying so, as one broken image never stops a single-process batch. An
  actor holds one block at a time, so its death spends no other block's retries. A
  retried block can reach the driver twice, so the driver keeps the first row per (path,
  reference) and counts the rest as duplicates; it lists any job that got no row, which only
  happens when a run stops early (Ctrl-C, or Ray failing as a whole).
- Rows are written on the driver through the same output as without Ray
  (iqart.engine.results.output): locked against a second writer, journaled as they arrive (a
  killed driver loses nothing already written), model and weights recorded, the final file
  atomic, so `--resume` works as it does without Ray and a run that stops early keeps every
  row it has. Ray replaces the driver's SIGTERM handler when it starts; ours is put back.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

try:
    import pyarrow as pa
    import ray
    import ray.data
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"distributed scoring needs Ray Data: pip install 'iqart[ray]' ({exc})") from None

from iqart.engine.artifact_cache import weights_sha256
from iqart.engine.pipeline.batch_scoring import DECODE_TIMEOUT_S
from iqart.engine.pipeline.images import find_images
from iqart.engine.pipeline.jobs import ScoreJob, ScoreRow, pair_with_references
from iqart.engine.results.output import ResultOutput
from iqart.train.models.prompts import attribute_names
from iqart.train.models.zoo import ModelCard, get_card

BLOCK_BATCHES = 4  # rows per Ray block, in batches: lost work on a crash vs. per-block overhead
BLOCK_RETRIES = 3  # retries of a block whose actor died, before its jobs become error rows
GIVEN_UP = (
    f"not scored: the Ray actor scoring this image's block died {BLOCK_RETRIES + 1} times (a file in the "
    "block may crash the decoder or exhaust memory); --resume retries it"
)


class ScoringActor:
    """One Ray Data actor: a Scorer built once, scoring whole blocks of jobs.

    `threads` caps a CPU actor's decoding and inference threads at the CPUs Ray reserved for
    it (ONNX Runtime would otherwise start one thread per core in every actor on the node).
    """

    def __init__(
        self, model: str, scorer_options: dict, threads: int | None = None, pipeline_options: dict | None = None
    ):
        from iqart.engine.scorer import Scorer

        self.pipeline_options = pipeline_options or {}
        if threads:  # a CPU actor: stay within the CPUs Ray reserved for it
            import torch

            torch.set_num_threads(threads)
            scorer_options = {"workers": threads, "threads": threads, **scorer_options}
        self.scorer = Scorer(model, **scorer_options)

    def __call__(self, block: pa.Table) -> pa.Table:
        paths, references = block.column("path").to_pylist(), block.column("reference").to_pylist()
        jobs = [
            ScoreJob(Path(_text(p)), None if r is None else Path(_text(r)))
            for p, r in zip(paths, references, strict=True)
        ]
        return rows_table(list(self.scorer.score_jobs(jobs, **self.pipeline_options)))


@dataclass
class DistributedSummary:
    """What a run did. `missing` holds the (path, reference) keys that got no row: empty unless
    the run stopped early (`stopped` says why); `duplicates` counts rows dropped as repeats;
    `startup_s` is the time to the first block of rows (Ray and actor start, model load), and
    `first_block` its number of rows; `given_up` counts the error rows of blocks Ray gave up on;
    `kept` the jobs whose file already had a score in `out` (--resume)."""

    jobs: int
    kept: int = 0
    scored: int = 0
    failed: int = 0
    duplicates: int = 0
    actors: int = 0
    wall_s: float = 0.0
    startup_s: float = 0.0
    first_block: int = 0
    missing: list[tuple[str, str | None]] = field(default_factory=list)
    stopped: str | None = None
    given_up: int = 0
    signal: int | None = None  # the signal that stopped the run

    @property
    def images_per_s(self) -> float:
        return (self.scored + self.failed) / self.wall_s if self.wall_s else 0.0

    @property
    def steady_images_per_s(self) -> float:
        """The rate after the first block: what each further image costs once actors are up."""
        busy = self.wall_s - self.startup_s
        return (self.scored + self.failed + self.duplicates - self.first_block) / busy if busy > 0 else 0.0


def score_distributed(
    inputs: Sequence[str | os.PathLike | ScoreJob],
    out: str | os.PathLike,
    model: str = "qualiclip",
    *,
    references: str | os.PathLike | None = None,
    resume: bool = False,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float = 1,
    gpus_per_actor: float = 0,
    on_row: Callable[[ScoreRow], None] | None = None,
    decode: str = "iqart",
    decode_timeout: float | None = DECODE_TIMEOUT_S,
    decode_device: str | None = None,
    actor_class: type = ScoringActor,
    attributes: Sequence[str] = (),
    **scorer_options,
) -> DistributedSummary:
    """Score `inputs` (files and folders, or ScoreJobs) on Ray and write `out` (.csv, .jsonl or
    .parquet) atomically, one row per job, error rows included.

    Ray is joined at `address` ("auto", "ray://host:10001", ...) unless this process already
    called ray.init; with neither, a local Ray starts with this machine's cores. Actors default
    to as many as the cluster's GPUs (`gpus_per_actor` > 0) or CPUs allow. `scorer_options` go to
    each actor's engine.Scorer (backend, device, batch_size, weights, precision, ...).
    `resume=True` keeps the rows with a score already in `out` (or in the journal of a killed
    run) and scores the rest; it refuses rows of another model or other weights. `decode`,
    `decode_timeout` and `decode_device` as for Scorer.score_files (the decode device is each
    actor's: "cuda" fails in an actor without a GPU). A subclass of ScoringActor may be passed as
    `actor_class` for per-actor setup. `attributes`: the attribute columns to write (a subset of
    the model's attribute names, in their order; see iqart.engine.cli.attributes).
    """
    card = get_card(model)
    jobs = _jobs(inputs, references, card)
    digest = weights_sha256(card.name, scorer_options.get("weights"))
    written: set[tuple[str, str | None]] = set()
    started = time.perf_counter()
    explain = attribute_names(card.family) if attributes else None
    with ResultOutput(out, card.name, digest, card.task, resume=resume, attributes=tuple(attributes)) as writer:
        todo = [job for job in jobs if not writer.is_done(job.key)]
        summary = DistributedSummary(jobs=len(jobs), kept=len(jobs) - len(todo))
        if todo:
            if not ray.is_initialized():
                with _signal_handlers_kept():  # ray.init makes SIGTERM exit at once: a stop must keep the rows
                    ray.init(address=address)
            blocks = math.ceil(len(todo) / (BLOCK_BATCHES * scorer_options.get("batch_size", 8)))
            summary.actors = min(actors or default_actors(cpus_per_actor, gpus_per_actor), blocks)
            threads = None if gpus_per_actor else max(1, math.floor(cpus_per_actor))
            context = ray.data.DataContext.get_current()  # a dataset copies it when created: set it first
            errored_blocks, context.max_errored_blocks = context.max_errored_blocks, -1  # go on past a lost block
            try:
                with warnings.catch_warnings():  # max_task_retries has no named parameter yet (Ray 2.60)
                    warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
                    dataset = ray.data.from_items(job_items(todo), override_num_blocks=blocks).map_batches(
                        actor_class,
                        fn_constructor_kwargs={
                            "model": card.name,
                            "scorer_options": scorer_options,
                            "threads": threads,
                            "pipeline_options": {
                                "decode": decode,
                                "decode_timeout": decode_timeout,
                                "decode_device": decode_device,
                                "explain": bool(attributes),
                            },
                        },
                        batch_size=None,
                        batch_format="pyarrow",
                        compute=ray.data.ActorPoolStrategy(
                            size=summary.actors, max_tasks_in_flight_per_actor=1
                        ),  # a dying actor takes one block
                        num_cpus=cpus_per_actor,
                        num_gpus=gpus_per_actor or None,
                        **_bounded_retries(),
                    )
                _write_unique(dataset, writer, written, summary, on_row, started, explain or ())
            finally:
                context.max_errored_blocks = errored_blocks
            if summary.stopped is None:
                _write_given_up(todo, writer, written, summary, on_row)
        writer.finish()
    summary.wall_s = time.perf_counter() - started
    summary.missing = [job.key for job in todo if job.key not in written]
    return summary


def _write_unique(
    dataset, writer, written: set, summary: DistributedSummary, on_row, started: float, names: Sequence[str] = ()
) -> None:
    """Write the first row per job as blocks arrive, adding its key to `written`; stop, keeping
    what is written, on Ctrl-C or when Ray gives up on a block."""
    try:
        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            if not summary.startup_s:
                summary.startup_s, summary.first_block = time.perf_counter() - started, table.num_rows
            for row in table_rows(table, names):
                key = (row.path, row.reference)
                if key in written:
                    summary.duplicates += 1
                    continue
                written.add(key)
                writer.write(row.as_dict())
                summary.scored, summary.failed = summary.scored + row.ok, summary.failed + (not row.ok)
                if on_row is not None:
                    on_row(row)
    except KeyboardInterrupt as exc:  # SIGINT, SIGTERM, SIGHUP (iqart.engine.cli.signals)
        summary.stopped, summary.signal = "interrupted", getattr(exc, "signum", signal.SIGINT)
    except ray.exceptions.RayError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        summary.stopped = f"Ray gave up on a block: {type(exc).__name__}: {first_line}"


@contextlib.contextmanager
def _signal_handlers_kept():
    """The SIGTERM, SIGHUP and SIGINT handlers as they were before the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in kept.items():
            if handler is not None:
                signal.signal(signum, handler)


def _bounded_retries() -> dict:
    """map_batches' max_task_retries where this Ray still takes extra remote arguments (2.60
    deprecates them, naming no replacement): without it a block's retries are unbounded."""
    parameters = inspect.signature(ray.data.Dataset.map_batches).parameters.values()
    takes_extra = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    return {"max_task_retries": BLOCK_RETRIES} if takes_extra else {}


def _write_given_up(todo: Sequence[ScoreJob], writer, written: set, summary: DistributedSummary, on_row) -> None:
    """After a run that went to the end, an error row for each job of the blocks Ray gave up on."""
    for job in todo:
        if job.key in written:
            continue
        row = ScoreRow(job.key[0], error=GIVEN_UP, reference=job.key[1])
        written.add(job.key)
        writer.write(row.as_dict())
        summary.failed, summary.given_up = summary.failed + 1, summary.given_up + 1
        if on_row is not None:
            on_row(row)


def default_actors(cpus_per_actor: float, gpus_per_actor: float) -> int:
    """As many actors as the cluster's GPUs (GPU actors) or CPUs (CPU actors) hold, at least one."""
    resources = ray.cluster_resources()
    if gpus_per_actor:
        return max(1, math.floor(resources.get("GPU", 0) / gpus_per_actor))
    return max(1, math.floor(resources.get("CPU", 1) / cpus_per_actor))


def job_items(jobs: Sequence[ScoreJob]) -> list[dict]:
    """The jobs as Ray Data rows, path and reference as bytes."""
    return [
        {"path": _bytes(path), "reference": None if reference is None else _bytes(reference)}
        for path, reference in (job.key for job in jobs)
    ]


def rows_table(rows: Sequence[ScoreRow]) -> pa.Table:
    """Score rows as an Arrow table that survives any file name (text as bytes); attributes (a
    run with explain) as a list column, in the order of the rows' attribute names."""
    return pa.table(
        {
            "path": pa.array([_bytes(r.path) for r in rows], pa.binary()),
            "reference": pa.array([None if r.reference is None else _bytes(r.reference) for r in rows], pa.binary()),
            "score": pa.array([r.score for r in rows], pa.float64()),
            "error": pa.array([None if r.error is None else _bytes(r.error) for r in rows], pa.binary()),
            "attributes": pa.array([list(r.attributes.values()) for r in rows], pa.list_(pa.float64())),
        }
    )


def table_rows(table: pa.Table, attribute_names: Sequence[str] = ()) -> list[ScoreRow]:
    columns = {name: table.column(name).to_pylist() for name in ("path", "reference", "score", "error", "attributes")}
    rows = []
    for path, ref, score, error, values in zip(*columns.values(), strict=True):
        row = ScoreRow(_text(path), score, None if error is None else _text(error), None if ref is None else _text(ref))
        row.attributes = dict(zip(attribute_names, values, strict=True)) if values else {}
        rows.append(row)
    return rows


def _jobs(inputs: Sequence, references, card: ModelCard) -> list[ScoreJob]:
    """Jobs as Scorer.jobs makes them, without building a Scorer on the driver."""
    if inputs and all(isinstance(item, ScoreJob) for item in inputs):
        return list(inputs)
    files = find_images(list(inputs))
    if card.task == "nr":
        if references is not None:
            raise ValueError(f"{card.name} is a no-reference model: references do not apply")
        return [ScoreJob(path) for path, _ in files]
    if references is None:
        raise ValueError(f"{card.name} is a full-reference model: pass references (a folder)")
    return pair_with_references(files, references)


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")
