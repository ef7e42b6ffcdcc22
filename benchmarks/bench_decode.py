"""Decoding that keeps up: 12-megapixel JPEGs scored by a 224x224 model (BPCLIP).

    python3 benchmarks/bench_decode.py [--count 32] [--backend openvino --precision int8] [--batch 8]

Makes `--count` 4000x3000 JPEGs (quality 90) from the example photos, then measures, in one run:
1. decode + resize to 224x224 per image, full decode against DCT-reduced decode (PIL `draft`,
   what the pipeline does for fixed-size no-reference models);
2. what the reduction costs in score: bpclip-nr-tiny (demo weights) on both decodes, max |d| and
   SRCC (the examples are photos and their blurred, JPEG and noisy copies);
3. end-to-end images/s from the files (the `iqart score` pipeline, decode workers overlapping
   inference) against pure inference images/s on an already decoded batch, for bpclip-nr (RN50,
   random weights: speed does not depend on them), interleaved pass by pass.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from iqart.engine.bench.runners import bench_weights
from iqart.engine.hardware import default_workers
from iqart.engine.pipeline.batch_scoring import score_jobs
from iqart.engine.pipeline.images import as_array, open_image
from iqart.engine.pipeline.jobs import ScoreJob
from iqart.engine.scorer import Scorer
from iqart.train.metrics import srcc
from iqart.train.models.zoo import ResizePolicy

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
POLICY = ResizePolicy("fixed", (224, 224))
SIZE = (4000, 3000)


def make_photos(folder: Path, count: int) -> list[Path]:
    sources = sorted(EXAMPLES.glob("*.png"))
    paths = []
    for index in range(count):
        path = folder / f"photo{index:03d}.jpg"
        with Image.open(sources[index % len(sources)]) as image:
            image.convert("RGB").resize(SIZE, Image.Resampling.BICUBIC).save(path, quality=90)
        paths.append(path)
    return paths


def decode_times(paths: list[Path], reduced: bool) -> list[float]:
    times = []
    for path in paths:
        started = time.perf_counter()
        as_array(open_image(path, reduce_for=POLICY.size if reduced else None), POLICY)
        times.append(time.perf_counter() - started)
    return times


def score_cost(paths: list[Path]) -> tuple[float, float]:
    scorer = Scorer("bpclip-nr-tiny", "onnxruntime", "cpu")
    full = np.stack([as_array(open_image(path), POLICY) for path in paths])
    reduced = np.stack([as_array(open_image(path, reduce_for=POLICY.size), POLICY) for path in paths])
    a, b = scorer.backend(full), scorer.backend(reduced)
    return float(np.abs(a - b).max()), srcc(a, b)


def throughput(paths: list[Path], backend: str, precision: str, batch: int, passes: int) -> tuple[float, float]:
    """(pure inference images/s, end-to-end images/s), medians over interleaved passes."""
    weights = bench_weights("bpclip-nr").path
    scorer = Scorer("bpclip-nr", backend, "cpu", batch, weights=weights, precision=precision)
    decoded = np.stack([as_array(open_image(path, reduce_for=POLICY.size), POLICY) for path in paths[:batch]])
    jobs = [ScoreJob(path) for path in paths]
    scorer.backend(decoded)  # warm-up: compilation, first-touch
    pure, end_to_end = [], []
    for _ in range(passes):
        started = time.perf_counter()
        for _ in range(len(paths) // batch):
            scorer.backend(decoded)
        pure.append(len(paths) // batch * batch / (time.perf_counter() - started))
        started = time.perf_counter()
        rows = list(score_jobs(jobs, scorer.backend, POLICY, batch, default_workers()))
        assert all(row.ok for row in rows), [row.error for row in rows if not row.ok][:3]
        end_to_end.append(len(rows) / (time.perf_counter() - started))
    return statistics.median(pure), statistics.median(end_to_end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = make_photos(Path(folder), args.count)
        full, reduced = decode_times(paths, False), decode_times(paths, True)
        print(
            f"decode + resize of a {SIZE[0]}x{SIZE[1]} JPEG to 224x224: full {1e3 * statistics.median(full):.0f} ms, "
            f"DCT-reduced {1e3 * statistics.median(reduced):.0f} ms (medians of {len(paths)})"
        )
        max_delta, rank = score_cost(paths)
        print(
            f"score cost of the reduced decode (bpclip-nr-tiny, {len(paths)} photos): max |d| {max_delta:.2g}, "
            f"SRCC vs full decode {rank:.4f}"
        )
        pure, end_to_end = throughput(paths, args.backend, args.precision, args.batch, args.passes)
        print(
            f"bpclip-nr on {args.backend} {args.precision}, batch {args.batch}, {default_workers()} decode workers: "
            f"pure inference {pure:.1f} images/s, end to end from files {end_to_end:.1f} images/s "
            f"({end_to_end / pure:.0%} of pure inference)"
        )


if __name__ == "__main__":
    main()
