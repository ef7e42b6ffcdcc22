"""`iqart bench`: images/s and latency of each backend against PyTorch eager fp32, same run.

    iqart bench --model qualiclip --backends torch,onnxruntime,onnxruntime-int8 \\
                --batch-sizes 1,8,32 --sizes 224,384,1024x768 --json results.json

For every model, input size and batch size, the backends run the same batch interleaved (see
iqart.engine.bench.harness), after warm-up. Each record carries the speed-up over torch eager fp32 measured in
that run, and the achieved GFLOP/s against the measured fp32 matmul peak of the device.
`--end-to-end --images DIR` times the scoring pipeline instead: decoding files, resizing,
batching and inference. Speed does not depend on the weights: a model without weights at hand
runs with random ones, and the output says so. Runners are built once per model and reused for
every size and batch size (TensorRT once per batch size: a plan is optimised for one).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from iqart.engine.bench.flops import matmul_peak_gflops, model_flops
from iqart.engine.bench.harness import end_to_end_timings, interleaved_timings, speedup
from iqart.engine.bench.records import BenchRecord, machine_description, markdown_table, plot, write_json
from iqart.engine.bench.runners import (
    BASELINE,
    PER_BATCH_SIZE,
    VARIANTS,
    Runner,
    Unavailable,
    bench_weights,
    build_runner,
)
from iqart.engine.cli.usage import (
    UsageError,
    non_negative_int,
    positive_int,
    require_existing,
    require_output_folder,
    user_input,
)
from iqart.engine.hardware import default_workers, physical_cores, usable_cpus
from iqart.engine.pipeline.images import find_images, load_image
from iqart.engine.pipeline.jobs import ScoreJob
from iqart.train.models.zoo import ModelCard, ResizePolicy, get_card, list_models, load_model


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _size_list(text: str) -> list[tuple[int, int]]:
    """'224,1024x768' -> [(224, 224), (1024, 768)]: (width, height); a lone number is a square."""
    sizes = []
    for item in (v.strip().lower() for v in text.split(",") if v.strip()):
        width, _, height = item.partition("x")
        try:
            size = (int(width), int(height or width))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected sizes like 224 or 1024x768, got {item!r}") from None
        if min(size) < 1:
            raise argparse.ArgumentTypeError(f"expected positive sizes, got {item!r}")
        sizes.append(size)
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected sizes like 224,1024x768, got {text!r}")
    return sizes


def size_label(width: int, height: int) -> int | str:
    """A record's `size`: the side of a square input, else 'WxH'."""
    return width if width == height else f"{width}x{height}"


def _backend_list(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown backend(s) {', '.join(unknown) or text!r}; available: {', '.join(VARIANTS)}"
        )
    return names


def add_bench_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="images/s and latency per backend against torch eager fp32, same run",
        description="Images/s and latency of each backend against PyTorch eager fp32, measured "
        "in the same run with the backends interleaved, for every model, input size "
        "and batch size; --end-to-end times decoding files too. Writes the records "
        "as JSON and a PNG chart.",
    )
    p.add_argument(
        "-m",
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help=f"model (repeatable; default qualiclip): {', '.join(list_models())}",
    )
    p.add_argument(
        "-w",
        "--weights",
        metavar="FILE",
        help="weight file (one --model only; default: demo/official weights if at hand, else random weights)",
    )
    p.add_argument(
        "--backends",
        type=_backend_list,
        default=["torch", "onnxruntime"],
        metavar="LIST",
        help=f"comma-separated, from: {', '.join(VARIANTS)} (default: torch,onnxruntime)",
    )
    p.add_argument(
        "--batch-sizes",
        type=_int_list,
        default=[1, 8, 32],
        metavar="LIST",
        help="comma-separated batch sizes (default 1,8,32)",
    )
    p.add_argument(
        "--sizes",
        type=_size_list,
        default=[(224, 224)],
        metavar="LIST",
        help="input sizes in pixels: N for N x N, or WxH such as 1024x768 (default 224)",
    )
    p.add_argument(
        "--images",
        metavar="DIR",
        help="folder of images: the batch content, and the files of --end-to-end (default: random pixels)",
    )
    p.add_argument("--end-to-end", action="store_true", help="time the pipeline from files (needs --images)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when available)")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=physical_cores(),
        help="CPU threads for torch and ONNX Runtime (default: physical cores)",
    )
    p.add_argument("--warmup", type=non_negative_int, default=3, help="untimed calls per backend (default 3)")
    p.add_argument(
        "--iters", type=positive_int, default=10, help="timed calls (end-to-end: passes) per backend (default 10)"
    )
    p.add_argument("--json", default="bench.json", metavar="FILE", help="records to write (default bench.json)")
    p.add_argument("--chart", metavar="FILE", help="PNG chart to write (default: the --json path with .png)")
    p.set_defaults(run=run_bench)


def batch_inputs(
    card: ModelCard, width: int, height: int, batch: int, files: list[Path], seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """One batch at width x height: decoded files (cycled) when given, else random pixels. FR models
    get the batch mirrored left-right as references, so image and reference differ."""
    if files:
        policy = ResizePolicy("fixed", (height, width))
        decoded = [load_image(files[i % len(files)], policy) for i in range(batch)]
        images = np.stack(decoded)
    else:
        images = np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    references = np.ascontiguousarray(images[:, :, ::-1]) if card.task == "fr" else None
    return images, references


def model_runners(
    args: argparse.Namespace, name: str, weights: Path, batch: int, built: dict[str, Runner], unavailable: set[str]
) -> dict[str, Runner]:
    """The runners for one batch size, in --backends order: reused from `built` across batch sizes
    (except per-batch-size ones), a variant found unavailable reported once and not retried."""
    runners = {}
    for variant in args.backends:
        if variant in unavailable:
            continue
        if variant in built and variant not in PER_BATCH_SIZE:
            runners[variant] = built[variant]
            continue
        try:
            runners[variant] = built[variant] = build_runner(variant, name, weights, args.device, batch, args.threads)
        except Unavailable as exc:
            print(f"  skip {variant}: {exc}", file=sys.stderr)
            unavailable.add(variant)
    return runners


def busy_warning(threads: int) -> str | None:
    """A warning when other work already loads the CPUs the benchmark is about to use."""
    load = os.getloadavg()[0]
    if load > 0.5 * len(usable_cpus()):
        return (
            f"warning: load average {load:.1f} on {len(usable_cpus())} CPUs before starting: other work "
            f"shares the cores, so these figures are noisy (and torch's {threads} threads may stall)"
        )
    return None


def run_bench(args: argparse.Namespace) -> int:
    models = args.models or ["qualiclip"]
    if args.weights and len(models) > 1:
        raise UsageError("--weights applies to one --model")
    with user_input():
        for name in models:
            get_card(name)
    require_existing(("--weights", args.weights), ("--images", args.images))
    chart = args.chart or str(Path(args.json).with_suffix(".png"))
    require_output_folder(args.json, "--json")
    require_output_folder(chart, "--chart")
    files = [path for path, _ in find_images([args.images])] if args.images else []
    if args.images and not files:
        raise UsageError(f"no images found under {args.images}")
    if args.end_to_end and not files:
        raise UsageError("--end-to-end needs --images DIR")
    torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    load = os.getloadavg()[0]
    warning = busy_warning(args.threads)
    peak = matmul_peak_gflops(args.threads, device="cuda" if cuda else "cpu")
    machine, date = machine_description(device), time.strftime("%Y-%m-%d")
    print(f"{machine}; {args.threads} threads; fp32 matmul peak {peak:.0f} GFLOP/s (measured); {date}")
    if warning:
        print(warning, file=sys.stderr)
    if os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
        print(
            "warning: OMP_WAIT_POLICY is not PASSIVE: torch's OpenMP threads spin between calls and stall the engines "
            "interleaved with them (the `iqart` command sets it for bench; set it before Python starts)",
            file=sys.stderr,
        )
    records: list[BenchRecord] = []
    unavailable: set[str] = set()
    for name in models:
        card = get_card(name)
        weights = bench_weights(name, args.weights)
        print(
            f"{name}: "
            + (
                f"RANDOM weights ({weights.path}): speed does not depend on them"
                if weights.random
                else f"weights {weights.path}"
            )
        )
        reference_model = load_model(name, weights.path)
        built: dict[str, Runner] = {}
        for width, height in args.sizes:
            size = size_label(width, height)
            if card.resize.kind == "fixed" and tuple(card.resize.size) != (height, width):
                print(
                    f"  skip size {size}: {name} takes fixed {card.resize.size[0]}x{card.resize.size[1]} input",
                    file=sys.stderr,
                )
                continue
            gflop = model_flops(reference_model, card.task, height, width) / 1e9
            for batch in args.batch_sizes:
                runners = model_runners(args, name, weights.path, batch, built, unavailable)
                if not runners:
                    continue
                if args.end_to_end:
                    jobs = [ScoreJob(path, path if card.task == "fr" else None) for path in files]
                    timings = end_to_end_timings(
                        runners,
                        jobs,
                        ResizePolicy("fixed", (height, width)),
                        batch,
                        default_workers(),
                        min(args.warmup, 1),
                        args.iters,
                    )
                else:
                    images, references = batch_inputs(card, width, height, batch, files)
                    timings = interleaved_timings(runners, images, references, args.warmup, args.iters, cuda)
                baseline = timings.get(BASELINE)
                for variant, timing in timings.items():
                    achieved = gflop * timing.images_per_s
                    records.append(
                        BenchRecord(
                            backend=variant,
                            model=name,
                            batch_size=batch,
                            size=size,
                            images_per_s=timing.images_per_s,
                            p50_ms=timing.percentile_ms(50),
                            p95_ms=timing.percentile_ms(95),
                            peak_rss_mb=timing.peak_rss_kib / 1024,
                            working_mb=timing.working_kib / 1024,
                            speedup_vs_torch=speedup(baseline, timing) if baseline else None,
                            gflop_per_image=gflop,
                            gflops_per_s=achieved,
                            peak_gflops_per_s=peak,
                            fraction_of_peak=achieved / peak,
                            spread=timing.spread,
                            calls=len(timing.latencies),
                            device=device,
                            threads=args.threads,
                            weights="random" if weights.random else str(weights.path),
                            end_to_end=args.end_to_end,
                            peak_gpu_mb=None if timing.peak_gpu_bytes is None else timing.peak_gpu_bytes / 2**20,
                            machine=machine,
                            date=date,
                            load_average=load,
                        )
                    )
        del built  # free this model's sessions before loading the next
    print(markdown_table(records))
    write_json(records, args.json)
    if records:
        plot(records, chart)
    print(f"wrote {args.json}" + (f" and {chart}" if records else ""))
    return 0 if records else 1
