"""JPEG decoding on the GPU (nvJPEG) against the CPU path (PIL), on 12-megapixel photos.

    python3 benchmarks/bench_gpu_decode.py [--count 64] [--batch 32] [--json out.json]
    python3 benchmarks/bench_gpu_decode.py --dry-run    # imports, arguments, the GPU path's code on the CPU

Writes `--count` 4000x3000 JPEGs (quality 90; the example photos upscaled, with noise so that
they are not smoother than a camera's, a quarter of them EXIF-rotated) to a temporary folder,
then measures, on the model's resize policy (bpclip-nr: fixed 224x224):
1. decode images/s: the CPU path (iqart.engine.pipeline.batch_scoring.decode_job on `--workers`
   threads: PIL, DCT-reduced for a fixed size, as `iqart score` decodes) against nvJPEG (the
   GPU path's batched decode, orientation and resize; bytes already read), and nvJPEG including
   the file reads and header parses on one thread;
2. how far the GPU path's model input is from the CPU path's (mean and max |d| in levels, against
   the CPU's full decode and its reduced decode);
3. end-to-end images/s from the files, `Scorer.score_jobs` (what `iqart score` runs) with
   decode_device cpu against cuda, interleaved pass by pass, with the torch backend on the GPU
   (`--precision fp16`; random RN50 weights: speed does not depend on them), the score
   difference between the two, and pure inference images/s on a decoded batch for scale.
Prints a table; `--json PATH` writes every figure, rewritten after each of the three stages, so a
run stopped by a time limit keeps the stages it finished. Without a CUDA GPU it says so and exits 0.
Needs the model code (open_clip) for step 3 and for iqart's pipeline imports (ResizePolicy lives
in the model zoo): on the GPU machine, the wheels gpu_verify.sh carries in .whl/ for its steps
that need the model code. gpu_verify.sh runs it last, as its decode-bench step:

    py_step decode-bench --model-code -- benchmarks/bench_gpu_decode.py --count 64 --batch 32 \
        --json "$OUT_DIR/gpu_decode.json"
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iqart.engine.hardware import default_workers
from iqart.engine.pipeline.batch_scoring import PipelineStats, decode_job
from iqart.engine.pipeline.gpu_decode import GpuDecoder, GpuJob, prepare_job
from iqart.engine.pipeline.images import as_array, open_image
from iqart.engine.pipeline.jobs import ScoreJob
from iqart.engine.scorer import BACKENDS
from iqart.train.models.zoo import ResizePolicy, get_card

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
SOURCES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.png")
DISTINCT = 8  # distinct photos made; further files are copies (decoding costs the same, making them does not)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=64, help="JPEGs to decode and score (default 64)")
    parser.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT of each JPEG (default 4000x3000: 12 MP)")
    parser.add_argument("--model", default="bpclip-nr", help="zoo model for the end-to-end figures (default bpclip-nr)")
    parser.add_argument("--backend", default="torch", choices=BACKENDS)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="CPU decode threads (default: iqart's default)")
    parser.add_argument("--passes", type=int, default=3, help="interleaved timing passes; medians are reported")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check imports and arguments, run the GPU path's code on the CPU on two small JPEGs",
    )
    return parser


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) < 32 or int(height) < 32:
        raise SystemExit(f"--size must be WIDTHxHEIGHT, each at least 32, not {text!r}")
    return int(width), int(height)


def check_args(args: argparse.Namespace) -> None:
    parse_size(args.size)
    get_card(args.model)
    if min(args.count, args.batch, args.passes) < 1 or (args.workers is not None and args.workers < 1):
        raise SystemExit("--count, --batch, --passes and --workers must be at least 1")


def make_photos(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """`count` JPEGs of `size`: DISTINCT made from the examples (bicubic upscale, noise of
    sigma 4, a quarter EXIF orientation 6), the rest copies of them."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(min(count, DISTINCT)):
        with Image.open(EXAMPLES / SOURCES[index % len(SOURCES)]) as source:
            base = source.convert("RGB").resize(size, Image.Resampling.BICUBIC)
        pixels = np.asarray(base, dtype=np.float32) + rng.normal(0, 4, (size[1], size[0], 3)).astype(np.float32)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        exif = image.getexif()
        if index % 4 == 3:
            exif[0x0112] = 6
        path = folder / f"photo{index:03d}.jpg"
        image.save(path, "JPEG", quality=90, exif=exif)
        paths.append(path)
    for index in range(len(paths), count):
        path = folder / f"photo{index:03d}.jpg"
        shutil.copyfile(paths[index % DISTINCT], path)
        paths.append(path)
    return paths


def cpu_decode_rate(paths: list[Path], policy: ResizePolicy, workers: int) -> float:
    """Images/s of the CPU path's decode (with its DCT reduction for a fixed size) on `workers` threads."""
    with ThreadPoolExecutor(workers) as pool:
        started = time.perf_counter()
        for _ in pool.map(lambda path: decode_job(ScoreJob(path), policy), paths):
            pass
        return len(paths) / (time.perf_counter() - started)


def gpu_decode_rate(decoder: GpuDecoder, paths: list[Path], policy: ResizePolicy, batch: int) -> tuple[float, float]:
    """(images/s of nvJPEG + orientation + resize on bytes already read and parsed, images/s
    including the reads and header parses on one thread)."""
    started = time.perf_counter()
    jobs = [prepare_job(ScoreJob(path)) for path in paths]
    parsed = time.perf_counter() - started
    assert all(isinstance(job, GpuJob) for job in jobs), [job for job in jobs if not isinstance(job, GpuJob)][:3]
    torch.cuda.synchronize()
    started = time.perf_counter()
    for start in range(0, len(jobs), batch):
        outcomes = list(decoder.decode_jobs(jobs[start : start + batch], policy))
        assert all(outcome is not None for _, outcome in outcomes), "nvJPEG rejected a benchmark JPEG"
    torch.cuda.synchronize()
    decoded = time.perf_counter() - started
    return len(paths) / decoded, len(paths) / (decoded + parsed)


def pixel_difference(decoder: GpuDecoder, paths: list[Path], policy: ResizePolicy) -> dict:
    """Mean and max |d| (levels) of the GPU path's model input against the CPU path's, full
    decode and (fixed size) DCT-reduced decode, on the distinct photos."""
    full, reduced = [], []
    for path in paths[:DISTINCT]:
        ((_, (ours, _)),) = decoder.decode_jobs([prepare_job(ScoreJob(path))], policy)
        ours = ours.cpu().numpy().astype(np.int16)
        full.append(np.abs(ours - as_array(open_image(path), policy)))
        reduced.append(np.abs(ours - decode_job(ScoreJob(path), policy)[0]))
    return {
        "vs_full_decode_mean": float(np.mean([d.mean() for d in full])),
        "vs_full_decode_max": int(max(d.max() for d in full)),
        "vs_cpu_path_mean": float(np.mean([d.mean() for d in reduced])),
        "vs_cpu_path_max": int(max(d.max() for d in reduced)),
    }


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation without scipy (the GPU machine's image may not have it); no ties here."""

    def rank(x: np.ndarray) -> np.ndarray:
        return np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(np.float64)

    return float(np.corrcoef(rank(a), rank(b))[0, 1])


def end_to_end(args: argparse.Namespace, paths: list[Path]) -> dict:
    """Scorer.score_jobs from the files with decode_device cpu and cuda, interleaved passes."""
    from iqart.engine.bench.runners import bench_weights
    from iqart.engine.scorer import Scorer

    weights = bench_weights(args.model)
    scorer = Scorer(
        args.model,
        args.backend,
        "cuda",
        args.batch,
        weights=weights.path,
        precision=args.precision,
        workers=args.workers,
    )
    jobs = [ScoreJob(path) for path in paths]
    batch = np.stack([decode_job(job, scorer.resize)[0] for job in jobs[: args.batch]])
    for _ in range(2):  # warm-up: cuDNN autotuning, nvJPEG's handles, first touch
        scorer.backend(batch)
    list(scorer.score_jobs(jobs[: args.batch], decode_device="cuda"))
    rates: dict[str, list[float]] = {"cpu": [], "cuda": []}
    scores: dict[str, dict] = {}
    stats: dict[str, PipelineStats] = {}
    for _ in range(args.passes):
        for device in ("cpu", "cuda"):
            stats[device] = PipelineStats()
            started = time.perf_counter()
            rows = list(scorer.score_jobs(jobs, stats[device], decode_device=device))
            rates[device].append(len(rows) / (time.perf_counter() - started))
            failed = [row.error for row in rows if not row.ok]
            assert not failed, failed[:3]
            scores[device] = {row.path: row.score for row in rows}
    torch.cuda.synchronize()
    started = time.perf_counter()
    rounds = max(1, len(paths) // args.batch)
    for _ in range(rounds):
        scorer.backend(batch)
    pure = rounds * len(batch) / (time.perf_counter() - started)
    a = np.array([scores["cpu"][key] for key in sorted(scores["cpu"])])
    b = np.array([scores["cuda"][key] for key in sorted(scores["cpu"])])
    return {
        "model": args.model,
        "weights": "random" if weights.random else str(weights.path),
        "backend": args.backend,
        "precision": args.precision,
        "batch": args.batch,
        "workers": scorer.workers,
        "cpu_images_per_s": statistics.median(rates["cpu"]),
        "cuda_images_per_s": statistics.median(rates["cuda"]),
        "cpu_passes": rates["cpu"],
        "cuda_passes": rates["cuda"],
        "pure_inference_images_per_s": pure,
        "gpu_decoded_per_pass": stats["cuda"].gpu_decoded,
        "gpu_rejected_per_pass": stats["cuda"].gpu_rejected,
        "backend_busy_cpu": stats["cpu"].backend_busy,
        "backend_busy_cuda": stats["cuda"].backend_busy,
        "score_max_abs_difference": float(np.abs(a - b).max()),
        "score_srcc": spearman(a, b) if len(a) > 2 and np.ptp(a) > 0 else None,
    }


def table(results: dict) -> str:
    decode, e2e, pixels = results["decode"], results.get("end_to_end"), results["pixels"]
    lines = [
        (
            f"{results['count']} JPEGs of {results['size']} ({results['megabytes_per_file']:.1f} MB each), "
            f"policy {results['policy']}, {results['gpu']}"
        ),
        "| measure | CPU (PIL) | GPU (nvJPEG) | GPU / CPU |",
        "|---|---|---|---|",
        (
            f"| decode images/s ({decode['workers']} threads; GPU: bytes in memory) "
            f"| {decode['cpu_images_per_s']:.0f} | "
            f"{decode['gpu_images_per_s']:.0f} | {decode['gpu_images_per_s'] / decode['cpu_images_per_s']:.1f}x |"
        ),
        (
            f"| decode images/s, GPU with reads and header parses (1 thread) | {decode['cpu_images_per_s']:.0f} | "
            f"{decode['gpu_with_reads_images_per_s']:.0f} | "
            f"{decode['gpu_with_reads_images_per_s'] / decode['cpu_images_per_s']:.1f}x |"
        ),
    ]
    if e2e:
        lines.append(
            f"| end to end images/s, {e2e['model']} {e2e['backend']} {e2e['precision']} batch {e2e['batch']} "
            f"(pure inference {e2e['pure_inference_images_per_s']:.0f}) | {e2e['cpu_images_per_s']:.0f} | "
            f"{e2e['cuda_images_per_s']:.0f} | {e2e['cuda_images_per_s'] / e2e['cpu_images_per_s']:.1f}x |"
        )
    lines.append(
        f"model input, GPU vs CPU full decode: mean |d| {pixels['vs_full_decode_mean']:.3f}, max "
        f"{pixels['vs_full_decode_max']}; vs the CPU path (reduced decode): mean "
        f"{pixels['vs_cpu_path_mean']:.3f}, "
        f"max {pixels['vs_cpu_path_max']} (levels)"
    )
    if e2e:
        lines.append(
            f"scores, cuda vs cpu decode: max |d| {e2e['score_max_abs_difference']:.2g}, SRCC {e2e['score_srcc']}"
        )
    return "\n".join(lines)


def dry_run(args: argparse.Namespace) -> None:
    """On the CPU, in seconds: the arguments, and the GPU path's code on two small JPEGs with
    torchvision's CPU decoder, against the CPU path."""
    check_args(args)
    policy = get_card(args.model).resize
    with tempfile.TemporaryDirectory() as folder:
        paths = make_photos(Path(folder), 2, (320, 240))
        decoder = GpuDecoder("cpu")
        for path in paths:
            ((_, (ours, _)),) = decoder.decode_jobs([prepare_job(ScoreJob(path))], policy)
            full = as_array(open_image(path), policy)
            assert ours.shape == full.shape and np.abs(ours.numpy().astype(np.int16) - full).max() <= 1
    print(
        f"bench_gpu_decode dry run ok: {args.model} ({policy}), count {args.count}, size {args.size}, "
        f"batch {args.batch}; CUDA {'available' if torch.cuda.is_available() else 'not available here'}"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.dry_run:
        dry_run(args)
        return 0
    check_args(args)
    if not torch.cuda.is_available():
        message = "no CUDA GPU (torch.cuda.is_available() is False): nothing to measure"
        print(f"bench_gpu_decode: {message}")
        if args.json:
            args.json.write_text(json.dumps({"skipped": message}, indent=2) + "\n")
        return 0
    size = parse_size(args.size)
    policy = get_card(args.model).resize
    workers = args.workers or default_workers()
    decoder = GpuDecoder("cuda")

    def save(results: dict) -> None:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        paths = make_photos(Path(folder), args.count, size)
        print(f"made {len(paths)} JPEGs in {time.perf_counter() - started:.0f} s", flush=True)
        results = {
            "count": len(paths),
            "size": args.size,
            "policy": str(policy),
            "gpu": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "megabytes_per_file": paths[0].stat().st_size / 1e6,
        }
        list(decoder.decode_jobs([prepare_job(ScoreJob(paths[0]))], policy))  # nvJPEG's first call sets it up
        cpu_rate = statistics.median(cpu_decode_rate(paths, policy, workers) for _ in range(args.passes))
        gpu_rates = [gpu_decode_rate(decoder, paths, policy, args.batch) for _ in range(args.passes)]
        results["decode"] = {
            "workers": workers,
            "batch": args.batch,
            "cpu_images_per_s": cpu_rate,
            "gpu_images_per_s": statistics.median(r[0] for r in gpu_rates),
            "gpu_with_reads_images_per_s": statistics.median(r[1] for r in gpu_rates),
        }
        print(
            f"decode: CPU {cpu_rate:.0f} images/s, GPU {results['decode']['gpu_images_per_s']:.0f} images/s", flush=True
        )
        save(results)
        results["pixels"] = pixel_difference(decoder, paths, policy)
        save(results)
        try:
            results["end_to_end"] = end_to_end(args, paths)
        except Exception as exc:  # the decode figures stand without it; the failure is reported, and fails the run
            results["end_to_end_error"] = f"{type(exc).__name__}: {exc}"
        save(results)
    print(table(results))
    if "end_to_end_error" in results:
        print(f"end to end failed: {results['end_to_end_error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
