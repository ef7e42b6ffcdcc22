"""Shards on a Ray cluster: whole shards handed to actors, each writing its shard's own output.

    from iqart.engine.distributed_shards import score_shards_distributed
    summary = score_shards_distributed(["s3://b/{00000..00999}.tar"], "s3://b/scores", "qualiclip",
                                       address="auto", gpus_per_actor=1, backend="onnxruntime")

Why this shape:
- The unit of work is the shard: a tar cannot be listed without reading it, nor reopened member
  by member, so an actor streams one shard front to back (iqart.engine.sources.shard_scoring)
  and writes its output to the output folder (a shared disk or object storage) when the shard
  is complete (iqart.engine.results.shard_outputs). Only counts travel back to the driver.
- A shard's output appears whole or not at all, so an actor that dies mid-shard leaves nothing:
  Ray restarts it and the shard is done again (up to BLOCK_RETRIES times; then it is reported
  as given up and `--resume` retries it).
- `--resume` is decided on the driver before any work: shards whose output exists, written by
  the same model and weights, are not handed out; outputs of other weights are refused.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

try:
    import pyarrow as pa
    import ray
    import ray.data
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"distributed scoring needs Ray Data: pip install 'iqart[ray]' ({exc})") from None

from iqart.engine.artifact_cache import weights_sha256
from iqart.engine.distributed import _bounded_retries, _signal_handlers_kept, default_actors
from iqart.engine.results.shard_outputs import PerShardOutputs
from iqart.engine.sources.samples import SampleFormat
from iqart.engine.sources.shard_locations import list_shards
from iqart.engine.sources.shard_reader import ParquetColumns
from iqart.engine.sources.shard_scoring import score_shards
from iqart.train.models.zoo import get_card


class ShardScoringActor:
    """One Ray Data actor: a Scorer built once; each block it gets is one shard, scored and
    written to the shard's own output."""

    def __init__(self, model: str, scorer_options: dict, outputs: dict, threads: int | None, pipeline: dict):
        from iqart.engine.scorer import Scorer

        if threads:
            import torch

            torch.set_num_threads(threads)
            scorer_options = {"workers": threads, "threads": threads, **scorer_options}
        self.scorer = Scorer(model, **scorer_options)
        self.outputs = outputs
        self.pipeline = pipeline

    def __call__(self, block: pa.Table) -> pa.Table:
        counts = {"shard": [], "scored": [], "failed": []}
        for shard in block.column("shard").to_pylist():
            scored = failed = 0
            options = self.outputs
            with PerShardOutputs(
                options["out_dir"],
                [shard],
                options["out_format"],
                self.scorer.name,
                options["weights_sha256"],
                self.scorer.task,
                options["fmt"].keep_fields,
                resume=options["resume"],
                attributes=options["attributes"],
            ) as sink:
                rows = score_shards(
                    self.scorer,
                    [shard],
                    sink,
                    options["fmt"],
                    options["columns"],
                    explain=bool(options["attributes"]),
                    **self.pipeline,
                )
                for row in rows:
                    scored, failed = scored + row.ok, failed + (not row.ok)
            counts["shard"].append(shard)
            counts["scored"].append(scored)
            counts["failed"].append(failed)
        return pa.table(counts)


@dataclass
class ShardSummary:
    shards: int
    skipped: int = 0
    scored: int = 0
    failed: int = 0
    actors: int = 0
    wall_s: float = 0.0
    given_up: list[str] = field(default_factory=list)  # shards no actor finished: --resume retries them
    stopped: str | None = None

    @property
    def images_per_s(self) -> float:
        return (self.scored + self.failed) / self.wall_s if self.wall_s else 0.0


def score_shards_distributed(
    shards: Sequence[str],
    out_dir: str,
    model: str = "qualiclip",
    *,
    fmt: SampleFormat | None = None,
    columns: ParquetColumns | None = None,
    out_format: str = "parquet",
    resume: bool = False,
    address: str | None = None,
    actors: int | None = None,
    cpus_per_actor: float = 1,
    gpus_per_actor: float = 0,
    decode: str = "iqart",
    decode_timeout: float | None = 60.0,
    decode_device: str | None = None,
    actor_class: type = ShardScoringActor,
    attributes: Sequence[str] = (),
    **scorer_options,
) -> ShardSummary:
    """Score every shard `shards` name (paths, globs, brace ranges, URLs) on Ray, one output per
    shard in `out_dir`; see the module docstring. A subclass of ShardScoringActor may be passed
    as `actor_class` for per-actor setup."""
    card = get_card(model)
    fmt = fmt or SampleFormat()
    urls = list_shards(list(shards))
    digest = weights_sha256(card.name, scorer_options.get("weights"))
    started = time.perf_counter()
    with PerShardOutputs(
        out_dir, urls, out_format, card.name, digest, card.task, fmt.keep_fields, resume, tuple(attributes)
    ) as plan:
        todo = [url for url in urls if not plan.is_shard_done(url)]
    summary = ShardSummary(shards=len(urls), skipped=len(urls) - len(todo))
    if not todo:
        return summary
    if not ray.is_initialized():
        with _signal_handlers_kept():
            ray.init(address=address)
    summary.actors = min(actors or default_actors(cpus_per_actor, gpus_per_actor), len(todo))
    threads = None if gpus_per_actor else max(1, math.floor(cpus_per_actor))
    outputs = {
        "out_dir": out_dir,
        "out_format": out_format,
        "weights_sha256": digest,
        "fmt": fmt,
        "columns": columns or ParquetColumns(),
        "resume": resume,
        "attributes": tuple(attributes),
    }
    pipeline = {"decode": decode, "decode_timeout": decode_timeout, "decode_device": decode_device}
    context = ray.data.DataContext.get_current()
    errored_blocks, context.max_errored_blocks = context.max_errored_blocks, -1
    finished: set[str] = set()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            dataset = ray.data.from_items([{"shard": url} for url in todo], override_num_blocks=len(todo)).map_batches(
                actor_class,
                fn_constructor_kwargs={
                    "model": card.name,
                    "scorer_options": scorer_options,
                    "outputs": outputs,
                    "threads": threads,
                    "pipeline": pipeline,
                },
                batch_size=None,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=summary.actors, max_tasks_in_flight_per_actor=1),
                num_cpus=cpus_per_actor,
                num_gpus=gpus_per_actor or None,
                **_bounded_retries(),
            )
        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            for shard, scored, failed in zip(
                *(table.column(c).to_pylist() for c in ("shard", "scored", "failed")), strict=True
            ):
                if shard in finished:
                    continue  # a retried block reported twice
                finished.add(shard)
                summary.scored += scored
                summary.failed += failed
    except KeyboardInterrupt:
        summary.stopped = "interrupted"
    except ray.exceptions.RayError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        summary.stopped = f"Ray gave up: {type(exc).__name__}: {first_line}"
    finally:
        context.max_errored_blocks = errored_blocks
    summary.given_up = [url for url in todo if url not in finished]
    summary.wall_s = time.perf_counter() - started
    return summary
