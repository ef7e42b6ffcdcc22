"""Timing for `iqart bench`: several runners on the same batch, interleaved, after warm-up.

Why interleaved: on a shared or thermally limited machine the speed drifts over minutes. Timing
backend A for a minute and then backend B puts the drift into the ratio; running one call of
each in turn (in a rotating order, so none always runs after the same neighbour) spreads the
drift over all of them, and the speed-ups of one run can be compared.

Each call is timed on its own (the runners return host arrays, so a GPU call has finished when
it returns): images/s is the batch size over the mean call time, p50/p95 are per-call latencies.
End-to-end mode times whole passes of the scoring pipeline over files instead, decoding included.
Memory: the process's peak resident set during that runner's calls (Linux VmHWM, reset before
each call; it includes every runner loaded in the process), the call's own share of it (that peak
minus the resident set just before the call: activations and scratch) and, on CUDA, the peak of
torch's allocator.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iqart.engine.pipeline.batch_scoring import score_jobs
from iqart.engine.pipeline.jobs import ScoreJob
from iqart.train.models.zoo import ResizePolicy

Runner = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def rss_kib(field_name: str = "VmRSS") -> int | None:
    """VmRSS (current) or VmHWM (peak since the last reset) in KiB; None off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Restart VmHWM from the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


@dataclass
class Timing:
    """Per-call latencies (s) and memory peaks of one runner."""

    batch_size: int
    latencies: list[float] = field(default_factory=list)
    peak_rss_kib: int = 0
    working_kib: int = 0
    peak_gpu_bytes: int | None = None

    @property
    def images_per_s(self) -> float:
        """From the median call: one stalled call on a shared machine must not move the figure."""
        return self.batch_size / statistics.median(self.latencies)

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1e3)

    @property
    def spread(self) -> float:
        """Relative spread of the calls (stdev / mean): how much to trust a close ratio."""
        return statistics.pstdev(self.latencies) / statistics.fmean(self.latencies)


def _gpu_peak_start(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()


def _gpu_peak(cuda: bool) -> int | None:
    if not cuda:
        return None
    import torch

    return int(torch.cuda.max_memory_allocated())


def _measured(timing: Timing, call: Callable[[], object], cuda: bool) -> None:
    """Run `call`, adding its memory peaks to `timing` (its latencies are the caller's to add)."""
    reset_peak_rss()
    before = rss_kib() or 0
    _gpu_peak_start(cuda)
    call()
    peak = rss_kib("VmHWM") or 0
    timing.peak_rss_kib = max(timing.peak_rss_kib, peak)
    timing.working_kib = max(timing.working_kib, peak - before)
    peak_gpu = _gpu_peak(cuda)
    if peak_gpu is not None:
        timing.peak_gpu_bytes = max(timing.peak_gpu_bytes or 0, peak_gpu)


def _rounds(names: list[str], rounds: int) -> Iterator[str]:
    """One of each name per round, the order rotated each round so none always follows the same."""
    for round_index in range(rounds):
        shift = round_index % len(names)
        yield from names[shift:] + names[:shift]


def interleaved_timings(
    runners: dict[str, Runner],
    images: np.ndarray,
    references: np.ndarray | None,
    warmup: int,
    iters: int,
    cuda: bool = False,
) -> dict[str, Timing]:
    """Time `iters` calls of each runner on the same batch, one call of each per round."""
    if warmup < 0 or iters < 1:
        raise ValueError(f"need warmup >= 0 and iters >= 1 (got {warmup}, {iters})")
    for runner in runners.values():
        for _ in range(warmup):
            runner(images, references)
    timings = {name: Timing(len(images)) for name in runners}

    def timed_call(name: str) -> None:
        started = time.perf_counter()
        runners[name](images, references)
        timings[name].latencies.append(time.perf_counter() - started)

    for name in _rounds(list(runners), iters):
        _measured(timings[name], lambda name=name: timed_call(name), cuda)
    return timings


def end_to_end_timings(
    runners: dict[str, Runner],
    jobs: list[ScoreJob],
    policy: ResizePolicy,
    batch: int,
    workers: int,
    warmup: int,
    passes: int,
) -> dict[str, Timing]:
    """Whole scoring-pipeline passes over `jobs` (decoding, resizing, batching, inference), one
    pass of each runner per round. Latency here is the period between batch completions
    (decoding stalls included); images/s is files per wall second."""
    if warmup < 0 or passes < 1:
        raise ValueError(f"need warmup >= 0 and passes >= 1 (got {warmup}, {passes})")

    def one_pass(runner: Runner, job_list: list[ScoreJob], timing: Timing | None) -> None:
        ends = [time.perf_counter()]

        def timed(images, references):
            scores = runner(images, references)
            ends.append(time.perf_counter())
            return scores

        for row in score_jobs(job_list, timed, policy, batch, workers):
            if not row.ok:
                raise RuntimeError(f"{row.path}: {row.error}")
        if timing is not None:
            timing.latencies.extend(np.diff(ends).tolist())

    for runner in runners.values():
        for _ in range(warmup):
            one_pass(runner, jobs[: 2 * batch], None)
    timings = {name: Timing(batch) for name in runners}
    for name in _rounds(list(runners), passes):
        _measured(timings[name], lambda name=name: one_pass(runners[name], jobs, timings[name]), cuda=False)
    for timing in timings.values():  # images/s from files per second, whatever the last batch's size
        timing.batch_size = len(jobs) * passes / len(timing.latencies)
    return timings


def speedup(baseline: Timing, other: Timing) -> float:
    """`other`'s speed over `baseline`'s: the median of per-round ratios when both ran the same
    rounds interleaved (each ratio compares calls made moments apart, so machine noise that hits
    both cancels), else the ratio of their median speeds."""
    if len(baseline.latencies) == len(other.latencies) and baseline.batch_size == other.batch_size:
        return statistics.median(b / o for b, o in zip(baseline.latencies, other.latencies, strict=True))
    return other.images_per_s / baseline.images_per_s
