"""Batch scoring of image files: decode in a thread pool while the backend runs, group
same-size images into batches, score, and report one row per job.

Why this shape:
- Decoding (PIL releases the GIL) runs in worker threads, a bounded number of jobs ahead of the
  backend, so the backend rarely waits and memory stays flat however many files there are.
- Native-resolution models take images of any size, but a batch needs one size: images wait
  in per-size buckets until one is full. At most `4 x batch_size` images wait in all; beyond
  that the oldest bucket goes as a partial batch, so a folder where every image has its own
  size still streams.
- A batch is bounded by pixels as well as by count (PIXEL_BUDGET, and waiting images by four
  budgets): the backend's memory grows with batch x resolution, so a folder of 12-megapixel
  photos at native resolution goes one photo per batch and peaks near what one photo needs,
  while small images still fill whole batches.
- One broken image never stops a batch: a decode failure is a row with its reason; a batch the
  backend rejects is retried image by image, so only the image at fault gets the error.
- A decode that does not finish within `decode_timeout` seconds (a hung network mount, a stuck
  decoder) becomes an error row and its thread is abandoned (iqart.engine.pipeline.decode_workers):
  the run goes on, and Ctrl-C or the end of the run never waits for it.
- With a GPU decoder (`gpu`, iqart.engine.pipeline.gpu_decode) the threads read files and parse
  their headers only; JPEGs the GPU decodes as the CPU path would wait until a batch's worth is
  read, then nvJPEG decodes them in one call and they are oriented and resized on the GPU. The
  rest, and any file nvJPEG rejects, are decoded by the threads as without it. A backend that
  takes CUDA tensors (`takes_cuda_tensors`) gets the batch on the GPU; others get a host array.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from iqart.engine.hardware import default_workers
from iqart.engine.pipeline.decode_workers import DecodeWorkers, Task
from iqart.engine.pipeline.gpu_decode import GPU_DECODE_PIXELS, GpuDecoder, GpuJob, prepare_job
from iqart.engine.pipeline.images import DECODERS, ImageError, as_array, open_image, source_name
from iqart.engine.pipeline.jobs import ScoreJob, ScoreRow
from iqart.train.models.zoo import ResizePolicy

Backend = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]
Decoded = tuple[ScoreJob, "np.ndarray | torch.Tensor", "np.ndarray | torch.Tensor | None"]

PIXEL_BUDGET = 16_000_000  # pixels per batch (one 12-megapixel photo; 20 images of 1024x768)
DECODE_TIMEOUT_S = 60.0


@dataclass
class PipelineStats:
    """Where the time went. `decode_s` sums the workers' busy time (it can exceed the wall
    time); `starved_s` is how long the backend side waited for decoded images."""

    jobs: int = 0
    batches: int = 0
    decode_s: float = 0.0
    inference_s: float = 0.0
    starved_s: float = 0.0
    wall_s: float = 0.0
    gpu_decoded: int = 0  # jobs decoded by nvJPEG (with a GPU decoder)
    gpu_rejected: int = 0  # jobs nvJPEG failed on, decoded by the CPU path instead

    @property
    def backend_busy(self) -> float:
        """Fraction of the wall time the backend was running."""
        return self.inference_s / self.wall_s if self.wall_s else 0.0


def decode_job(job: ScoreJob, policy: ResizePolicy, decode: str = "iqart") -> tuple[np.ndarray, np.ndarray | None]:
    """The job's image (and reference) as model input, or ImageError naming what is wrong.
    A pair must match in size as decoded: resizing both to the model's size would hide a
    reference that does not belong to the image. `decode`: "iqart" or "official" (see
    iqart.engine.pipeline.images.open_image). A no-reference JPEG bound for a fixed size is
    decoded reduced (images.draft_size); pairs are decoded in full so that their sizes compare."""
    if job.problem is not None:
        raise ImageError(job.problem)
    if job.reference is None:
        reduce_for = tuple(policy.size) if policy.kind == "fixed" and decode == "iqart" else None
        return as_array(open_image(job.path, decode, reduce_for=reduce_for), policy), None
    image = open_image(job.path, decode)
    try:
        reference = open_image(job.reference, decode)
    except ImageError as exc:
        raise ImageError(f"reference {source_name(job.reference)}: {exc}") from None
    if reference.size != image.size:
        raise ImageError(
            f"image {image.width}x{image.height} and reference {reference.width}x{reference.height} differ in size"
        )
    return as_array(image, policy), as_array(reference, policy)


class SizeBuckets:
    """Decoded images grouped by shape; hands out a bucket when it holds `batch_size` images or
    one more would take it over `pixel_budget` pixels (a batch is at least one image), and the oldest partial bucket
    whenever
    more than `max_pending` images or `4 x pixel_budget` pixels are waiting."""

    def __init__(self, batch_size: int, max_pending: int, pixel_budget: int = PIXEL_BUDGET):
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.pixel_budget = pixel_budget
        self._buckets: dict[tuple[int, ...], list[Decoded]] = {}  # insertion order = age
        self.pending = 0
        self.pending_pixels = 0

    def add(self, item: Decoded) -> list[list[Decoded]]:
        shape = item[1].shape
        bucket = self._buckets.setdefault(shape, [])
        bucket.append(item)
        self.pending += 1
        self.pending_pixels += _pixels(item)
        ready = []
        if len(bucket) == self.batch_size or (len(bucket) + 1) * _pixels(item) > self.pixel_budget:
            ready.append(self._pop(shape))
        while self.pending > self.max_pending or self.pending_pixels > 4 * self.pixel_budget:
            ready.append(self._pop(next(iter(self._buckets))))
        return ready

    def drain(self) -> list[list[Decoded]]:
        return [self._pop(shape) for shape in list(self._buckets)]

    def _pop(self, shape: tuple[int, ...]) -> list[Decoded]:
        bucket = self._buckets.pop(shape)
        self.pending -= len(bucket)
        self.pending_pixels -= sum(_pixels(item) for item in bucket)
        return bucket


def _pixels(item: Decoded) -> int:
    """Pixels an item brings to a batch (a full-reference pair counts twice)."""
    height, width = item[1].shape[:2]
    return height * width * (1 if item[2] is None else 2)


def score_jobs(
    jobs: Iterable[ScoreJob],
    backend: Backend,
    policy: ResizePolicy,
    batch_size: int,
    workers: int | None = None,
    stats: PipelineStats | None = None,
    *,
    decode: str = "iqart",
    decode_timeout: float | None = DECODE_TIMEOUT_S,
    pixel_budget: int = PIXEL_BUDGET,
    gpu: GpuDecoder | None = None,
    explain: Sequence[str] | None = None,
) -> Iterator[ScoreRow]:
    """One row per job, in batch order (not input order), as soon as each batch is scored.
    `decode_timeout=None` waits for ever. `gpu`: decode what JPEGs it can with it (module
    docstring); None decodes every file on the CPU. `explain`: the backend's attribute names;
    given, each row also holds the attributes by name (Backend.explain)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    workers = workers or default_workers()
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if decode not in DECODERS:
        raise ValueError(f"decode must be one of {', '.join(DECODERS)}, not {decode!r}")
    if decode_timeout is not None and decode_timeout <= 0:
        raise ValueError(f"the decode timeout must be positive, not {decode_timeout}")
    stats = stats if stats is not None else PipelineStats()
    buckets = SizeBuckets(batch_size, max_pending=4 * batch_size, pixel_budget=pixel_budget)
    started = time.perf_counter()
    pool = DecodeWorkers(workers)
    in_flight: deque[tuple[ScoreJob, Task]] = deque()
    on_gpu = gpu is not None and decode == "iqart"
    waiting: list[GpuJob] = []  # read and parsed, for the next nvJPEG call

    def take(job: ScoreJob, outcome) -> Iterator[ScoreRow]:
        if isinstance(outcome, ImageError):
            yield _row(job, error=str(outcome))
            return
        for batch in buckets.add((job, *outcome)):
            yield from _run(batch, backend, stats, explain)

    def decode_waiting() -> Iterator[ScoreRow]:
        if not waiting:
            return
        decoded = list(gpu.decode_jobs(waiting, policy))
        waiting.clear()
        # what nvJPEG could not decode goes to the CPU path (which decodes it, or names what is wrong), in parallel
        fallbacks = {
            index: pool.submit(_timed_decode, job, policy, decode, False)
            for index, (job, outcome) in enumerate(decoded)
            if outcome is None
        }
        stats.gpu_rejected += len(fallbacks)
        stats.gpu_decoded += len(decoded) - len(fallbacks)
        for index, (job, outcome) in enumerate(decoded):
            if index in fallbacks:
                outcome = _collect(pool, fallbacks[index], decode_timeout, stats)
            yield from take(job, outcome)

    try:
        decoded = _decode_ahead(
            pool, in_flight, jobs, (policy, decode, on_gpu), max(batch_size, 2 * workers), decode_timeout, stats
        )
        for job, outcome in decoded:
            stats.jobs += 1
            if isinstance(outcome, GpuJob):
                waiting.append(outcome)
                if len(waiting) >= batch_size or sum(w.pixels for w in waiting) >= GPU_DECODE_PIXELS:
                    yield from decode_waiting()
                continue
            yield from take(job, outcome)
        yield from decode_waiting()
        for batch in buckets.drain():
            yield from _run(batch, backend, stats, explain)
    finally:
        pool.shutdown([task for _, task in in_flight])  # never waits for a stuck decode
        stats.wall_s += time.perf_counter() - started


def _timed_decode(job: ScoreJob, policy: ResizePolicy, decode: str, on_gpu: bool):
    """(decoded pair, ImageError or, `on_gpu`, a GpuJob to decode on the GPU; busy seconds)."""
    started = time.perf_counter()
    try:
        outcome = prepare_job(job) if on_gpu else None
        if not isinstance(outcome, GpuJob):  # the CPU path's file
            outcome = decode_job(job, policy, decode)
    except ImageError as exc:
        outcome = exc
    return outcome, time.perf_counter() - started


def _collect(pool: DecodeWorkers, task: Task, timeout: float | None, stats: PipelineStats):
    """The task's outcome, or an ImageError if it overstays `timeout` (then it is abandoned)."""
    waited = time.perf_counter()
    try:
        outcome, busy = task.wait(timeout)
    except TimeoutError:
        pool.abandon(task)
        outcome, busy = (
            ImageError(
                f"decode did not finish within {timeout:g} s (a hung read, e.g. a network "
                "mount, or a stuck decoder); skipped, see --decode-timeout"
            ),
            timeout,
        )
    stats.starved_s += time.perf_counter() - waited
    stats.decode_s += busy
    return outcome


def _decode_ahead(
    pool: DecodeWorkers,
    in_flight: deque,
    jobs: Iterable[ScoreJob],
    how: tuple,
    depth: int,
    timeout: float | None,
    stats: PipelineStats,
) -> Iterator[tuple[ScoreJob, object]]:
    """(job, decoded pair, GpuJob or ImageError) in job order, keeping `depth` decodes in flight;
    a decode that overstays `timeout` is abandoned and becomes an ImageError."""

    def collect() -> tuple[ScoreJob, object]:
        job, task = in_flight[0]
        outcome = _collect(pool, task, timeout, stats)
        in_flight.popleft()
        return job, outcome

    for job in jobs:
        in_flight.append((job, pool.submit(_timed_decode, job, *how)))
        if len(in_flight) >= depth:
            yield collect()
    while in_flight:
        yield collect()


def _stack(items: list, backend: Backend) -> np.ndarray | torch.Tensor:
    """One uint8 NHWC batch: a host array, or a CUDA tensor when GPU-decoded images are in it and
    the backend takes one (CPU-decoded images of the same size join them on the GPU)."""
    on_device = next((item.device for item in items if isinstance(item, torch.Tensor)), None)
    if on_device is None:
        return np.stack(items)
    batch = torch.stack([torch.as_tensor(item, device=on_device) for item in items])
    return batch if on_device.type == "cuda" and backend.takes_cuda_tensors else batch.cpu().numpy()


def _scores(
    batch: list[Decoded], backend: Backend, explain: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    images = _stack([image for _, image, _ in batch], backend)
    references = None if batch[0][2] is None else _stack([ref for _, _, ref in batch], backend)
    if explain is None:
        scores, attributes = np.asarray(backend(images, references)), None
    else:
        scores, attributes = (np.asarray(out) for out in backend.explain(images, references))
        if attributes.shape != (len(batch), len(explain)):
            raise RuntimeError(f"backend returned attributes of shape {attributes.shape} for a batch of {len(batch)}")
    if scores.shape != (len(batch),):
        raise RuntimeError(f"backend returned shape {scores.shape} for a batch of {len(batch)}")
    return scores, attributes


def _run(
    batch: list[Decoded], backend: Backend, stats: PipelineStats, explain: Sequence[str] | None = None
) -> Iterator[ScoreRow]:
    started = time.perf_counter()
    try:
        scores, attributes = _scores(batch, backend, explain)
    except Exception as exc:  # one image the backend cannot take must not end the run
        stats.inference_s += time.perf_counter() - started
        if len(batch) > 1:
            for item in batch:
                yield from _run([item], backend, stats, explain)
        else:
            yield _row(batch[0][0], error=f"backend failed: {type(exc).__name__}: {exc}")
        return
    stats.inference_s += time.perf_counter() - started
    stats.batches += 1
    for index, ((job, _, _), score) in enumerate(zip(batch, scores, strict=True)):
        values = None if attributes is None else attributes[index]
        if not np.isfinite(score):
            yield _row(job, error=f"model returned a non-finite score ({score})")
        elif values is not None and not np.isfinite(values).all():
            yield _row(job, error="model returned non-finite attributes")
        else:
            named = None if values is None else dict(zip(explain, map(float, values), strict=True))
            yield _row(job, score=float(score), attributes=named)


def _row(
    job: ScoreJob, score: float | None = None, error: str | None = None, attributes: dict | None = None
) -> ScoreRow:
    attributes = attributes or {}
    if job.shard is not None:
        return ScoreRow(
            None, score, error, shard=job.shard, key=job.sample, fields=dict(job.fields), attributes=attributes
        )
    path, reference = job.key
    return ScoreRow(path, score, error, reference, attributes=attributes)
