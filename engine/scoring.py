"""Batch scoring of image files: decode, group same-size images into batches, score, report.

One broken image never stops a batch: it becomes a row with its error, and the rest go on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from engine.images import ImageError, load_image
from train.zoo import ResizePolicy

Backend = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]


@dataclass
class ScoreJob:
    """One image to score, with its reference for full-reference models."""

    path: Path
    reference: Path | None = None


@dataclass
class ScoreRow:
    path: str
    score: float | None = None
    error: str | None = None
    reference: str | None = None

    def as_dict(self) -> dict:
        return {"path": self.path, "reference": self.reference, "score": self.score, "error": self.error}


def pair_with_references(files: Iterable[tuple[Path, Path]], ref_dir: str | os.PathLike) -> list[ScoreJob]:
    """Pair each (file, root) with the reference at the same path relative to `ref_dir`."""
    ref_dir = Path(ref_dir)
    return [ScoreJob(path, ref_dir / path.relative_to(root)) for path, root in files]


def _decode(job: ScoreJob, policy: ResizePolicy) -> tuple[np.ndarray, np.ndarray | None]:
    image = load_image(job.path, policy)
    if job.reference is None:
        return image, None
    try:
        reference = load_image(job.reference, policy)
    except ImageError as exc:
        raise ImageError(f"reference {job.reference}: {exc}") from None
    if reference.shape != image.shape:
        raise ImageError(f"image {image.shape[1]}x{image.shape[0]} and reference {reference.shape[1]}x{reference.shape[0]} differ in size")
    return image, reference


def score_jobs(jobs: Iterable[ScoreJob], backend: Backend, policy: ResizePolicy, batch_size: int) -> Iterator[ScoreRow]:
    """Rows for every job; images of equal size are batched together (native resolution varies)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, not {batch_size}")
    buckets: dict[tuple[int, ...], list[tuple[ScoreJob, np.ndarray, np.ndarray | None]]] = {}
    for job in jobs:
        try:
            image, reference = _decode(job, policy)
        except ImageError as exc:
            yield _row(job, error=str(exc))
            continue
        bucket = buckets.setdefault(image.shape, [])
        bucket.append((job, image, reference))
        if len(bucket) == batch_size:
            yield from _run(buckets.pop(image.shape), backend)
    for bucket in buckets.values():
        yield from _run(bucket, backend)


def _run(bucket: list[tuple[ScoreJob, np.ndarray, np.ndarray | None]], backend: Backend) -> Iterator[ScoreRow]:
    images = np.stack([image for _, image, _ in bucket])
    references = None if bucket[0][2] is None else np.stack([ref for _, _, ref in bucket])
    scores = backend(images, references)
    for (job, _, _), score in zip(bucket, scores):
        if np.isfinite(score):
            yield _row(job, score=float(score))
        else:
            yield _row(job, error=f"model returned a non-finite score ({score})")


def _row(job: ScoreJob, score: float | None = None, error: str | None = None) -> ScoreRow:
    reference = None if job.reference is None else os.fsdecode(job.reference)
    return ScoreRow(os.fsdecode(job.path), score, error, reference)
