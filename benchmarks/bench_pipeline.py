"""Pipeline benchmark: score a folder of many small images and report memory and where time goes.

    python3 benchmarks/bench_pipeline.py [--count 1000] [--model qualiclip-tiny] [--weights FILE]

Writes `--count` JPEGs of a few sizes (native-resolution models then batch through the size
buckets) into a temporary folder, exports the model (random weights unless --weights: speed does
not depend on the values) and scores the folder with the onnxruntime backend through the same
pipeline as `iqart score`. Reports images/s, the decode workers' busy time against the backend's,
how long the backend waited for images, and resident memory: before scoring, sampled as the
run goes (steady means flat), and the peak during scoring (VmHWM, reset before the run where
Linux allows it; otherwise the process peak, which includes the export).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from iqart.engine.backends.onnxruntime_backend import OnnxRuntimeBackend
from iqart.engine.hardware import default_workers, physical_cores
from iqart.engine.pipeline.batch_scoring import PipelineStats, score_jobs
from iqart.engine.pipeline.images import find_images
from iqart.engine.pipeline.jobs import ScoreJob
from iqart.export.artifact import export_artifact
from iqart.train.models.zoo import build_model, get_card

SIZES = [(256, 256), (320, 240), (240, 320), (300, 200)]  # (width, height)


def write_images(folder: Path, count: int, seed: int = 0) -> None:
    """Smooth colour fields with noise: content that differs per image, JPEG-compressed."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        width, height = SIZES[i % len(SIZES)]
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"img_{i:05d}.jpg", quality=90)


def memory_kib(field: str) -> int:
    """VmRSS (current) or VmHWM (peak) of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def reset_peak_memory() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--model", default="qualiclip-tiny")
    parser.add_argument("--weights", help="weight file (default: random weights)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args()
    card = get_card(args.model)
    if card.task != "nr":
        parser.error("the pipeline benchmark scores no-reference models")

    with tempfile.TemporaryDirectory(prefix="iqart-bench-") as tmp:
        folder, artifact = Path(tmp) / "images", Path(tmp) / "artifact"
        folder.mkdir()
        started = time.perf_counter()
        write_images(folder, args.count)
        print(
            f"wrote {args.count} JPEGs ({', '.join(f'{w}x{h}' for w, h in SIZES)}) "
            f"in {time.perf_counter() - started:.1f} s"
        )
        model = None if args.weights else build_model(args.model, seed=0)
        export_artifact(args.model, artifact, args.weights, model=model)
        backend = OnnxRuntimeBackend(artifact, "cpu")
        jobs = [ScoreJob(path) for path, _ in find_images([folder])]

        before = memory_kib("VmRSS")
        peak_reset = reset_peak_memory()
        samples, stats, failed = [], PipelineStats(), 0
        for done, row in enumerate(
            score_jobs(jobs, backend, card.resize, args.batch_size, args.workers, stats), start=1
        ):
            failed += not row.ok
            if done % max(1, len(jobs) // 4) == 0:
                samples.append((done, memory_kib("VmRSS")))
        peak = memory_kib("VmHWM")

    print(
        f"model {args.model} on onnxruntime CPU ({physical_cores()} intra-op threads), batch {args.batch_size}, "
        f"{args.workers} decode workers"
    )
    print(
        f"scored {len(jobs) - failed}, failed {failed} in {stats.wall_s:.1f} s: "
        f"{len(jobs) / stats.wall_s:.1f} images/s, "
        f"{stats.batches} batches"
    )
    print(
        f"decode busy {stats.decode_s:.1f} s (summed over workers), inference {stats.inference_s:.1f} s "
        f"(backend busy {stats.backend_busy:.0%} of wall), backend waiting for images {stats.starved_s:.1f} s"
    )
    print(f"RSS before scoring {mib(before)}; during: " + ", ".join(f"{n} images {mib(kib)}" for n, kib in samples))
    print(f"peak RSS {'during scoring' if peak_reset else 'of the process (includes export)'}: {mib(peak)}")


if __name__ == "__main__":
    main()
