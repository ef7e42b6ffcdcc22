"""Benchmark records and their three forms: JSON (for tools), a markdown table (for RESULTS.md)
and a PNG chart (images/s per backend, one panel per model and input size)."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

from iqart.engine.hardware import usable_cpus
from iqart.train.storage import write_json_atomic


@dataclass
class BenchRecord:
    backend: str
    model: str
    batch_size: int
    size: int | str  # input size in pixels: the side of a square, else "WxH"
    images_per_s: float
    p50_ms: float  # per batch
    p95_ms: float
    peak_rss_mb: float  # process peak during this backend's calls (all loaded backends included)
    working_mb: float  # that peak minus the resident set before the call: the call's own memory
    speedup_vs_torch: float | None  # images/s over torch eager fp32 in the same run; None without it
    gflop_per_image: float
    gflops_per_s: float  # achieved: model FLOPs x images/s
    peak_gflops_per_s: float  # measured fp32 matmul peak of the device
    fraction_of_peak: float  # achieved / fp32 peak (int8 can pass 1: its arithmetic is not fp32)
    spread: float  # stdev / mean of the call times
    calls: int
    device: str
    threads: int
    weights: str  # "random" or the weight file
    end_to_end: bool
    peak_gpu_mb: float | None = None
    machine: str = ""
    date: str = ""
    load_average: float | None = None  # 1-minute load average at the start: other work on the machine


def machine_description(device: str) -> str:
    """CPU model and core count, plus the GPU name on CUDA: what a figure was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {len(usable_cpus())} CPUs"
    if device.startswith("cuda"):
        import torch

        text += f", {torch.cuda.get_device_name(torch.device(device))}"
    return text


def write_json(records: list[BenchRecord], path: str | os.PathLike) -> None:
    write_json_atomic(path, [asdict(r) for r in records])


def read_json(path: str | os.PathLike) -> list[BenchRecord]:
    return [BenchRecord(**row) for row in json.loads(Path(path).read_text())]


def markdown_table(records: list[BenchRecord]) -> str:
    lines = [
        "| model | size | batch | backend | images/s | x torch | p50 ms | p95 ms | GFLOP/s | of peak "
        "| peak RSS MiB | call MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        speedup = f"{r.speedup_vs_torch:.2f}" if r.speedup_vs_torch is not None else "-"
        mode = " (e2e)" if r.end_to_end else ""
        lines.append(
            f"| {r.model} | {r.size} | {r.batch_size} | {r.backend}{mode} | {r.images_per_s:.1f} | {speedup} "
            f"| {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.gflops_per_s:.0f} | {r.fraction_of_peak:.0%} "
            f"| {r.peak_rss_mb:.0f} | {r.working_mb:.0f} |"
        )
    return "\n".join(lines)


def plot(records: list[BenchRecord], path: str | os.PathLike) -> None:
    """Grouped bars: x = batch size, one bar per backend, one panel per (model, size, mode)."""
    import matplotlib  # here, not at import: `iqart` starts without it

    matplotlib.use("Agg")  # files only: no display on CI machines
    import matplotlib.pyplot as plt

    panels = sorted({(r.model, r.size, r.end_to_end) for r in records}, key=str)
    backends = list(dict.fromkeys(r.backend for r in records))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), squeeze=False)
    width = 0.8 / len(backends)
    for ax, (model, size, e2e) in zip(axes[0], panels, strict=True):
        rows = [r for r in records if (r.model, r.size, r.end_to_end) == (model, size, e2e)]
        batches = sorted({r.batch_size for r in rows})
        for index, backend in enumerate(backends):
            by_batch = {r.batch_size: r.images_per_s for r in rows if r.backend == backend}
            xs = [i + (index - (len(backends) - 1) / 2) * width for i, b in enumerate(batches) if b in by_batch]
            ax.bar(xs, [by_batch[b] for b in batches if b in by_batch], width, label=backend)
        ax.set_xticks(range(len(batches)), [str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel("images/s")
        side = f"{size}x{size}" if isinstance(size, int) else size
        ax.set_title(f"{model} {side}{' end-to-end' if e2e else ''}", fontsize=10)
    axes[0][0].legend(fontsize=8)
    if records:
        fig.suptitle(f"{records[0].machine} ({records[0].date})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
