"""Times the fused cross-attention op against torch SDPA at the models' shapes, after checking
their parity, and prints a markdown table (and writes JSON with --json). Needs a CUDA GPU.

    python3 benchmarks/bench_fused_attention.py [--dtypes float16,float32] [--json out.json]
    python3 benchmarks/bench_fused_attention.py --whole-model qualiclip:224 qualiclip:1024x768 \
        [--batch-sizes 1,32,128] [--json out.json]

Kernel time, not launch overhead: each variant is captured as a CUDA graph of calls and the
graph's replays are timed with CUDA events (median of TRIALS replays, divided by the calls per
graph). Timed from memory, not from L2: each shape gets enough distinct input sets (Q, K, V) that
their bytes are at least twice the L2 cache read off the device (50 MiB on an H100), and one graph
calls every set once (at least REPS calls), so a replay finds none of its inputs still in L2 from
the call before. BPCLIP's 7x7 grid at batch 1 is 0.1 MB a set, so it gets about a thousand sets;
the figure (working-set bytes, number of sets) is printed per shape and kept in the JSON.
SDPA is timed as the models would run it without the fused op: split heads, SDPA, merge heads.
SDPA runs under each of its backends that accepts the shape (flash, memory-efficient, cuDNN, math)
and the fastest is the one compared, named in the row. Each row also gives the op's bytes moved
(Q, K, V read once, O written once) over its time, next to the device-to-device copy bandwidth
measured in the same run: the op is memory-bound at the QualiCLIP shapes (one query), so that
ratio is how close it is to its floor.

--whole-model MODEL:SIZE... times whole models instead, with the runners and the interleaved
timing of `iqart bench` (host arrays in, scores out; random RN50 weights): torch eager fp32, fp16
autocast, fp16 with the attention core in SDPA replayed as a CUDA graph (the strongest version a
PyTorch user writes without iqart), and fp16 with the fused op replayed as a CUDA graph. The
fused op's figure is given against the SDPA graph's, and every variant's scores against fp32's.
This mode needs the model code (open_clip); the op mode does not.

Both modes write --json after every shape (op mode) or batch (whole models), so a run stopped by a
time limit keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from iqart.engine.backends import fused_op
from iqart.train.models.attention import merge_heads, split_heads

HEAD_DIM = 64
REPS, TRIALS = 20, 15  # at least REPS calls per captured graph; the median of TRIALS replays
H100_L2_BYTES = 50 * 2**20  # what the dry run sizes the working sets for; the real run reads the device
TOLERANCE = {torch.float16: 2e-3, torch.float32: 1e-5}
PARITY_ROWS = 4  # batch items checked against the float64 reference (keeps its memory small)


def shapes() -> list[tuple[str, int, int, int, int]]:
    """(model, batch, q_len, kv_len, heads): QualiCLIP's pool at 224 px (49+1 keys), 1024x768
    (768+1) and ~3.4k x 3.4k (11700); BPCLIP's chain at 224 (7x7 grid), 384 (12x12) and 640
    (20x20); and 4 queries, the most the split-keys path takes (K and V read once for all)."""
    rows = [("QualiCLIP", b, 1, nk, 32) for nk in (50, 769) for b in (1, 32, 128)]
    rows += [("QualiCLIP", b, 1, 11700, 32) for b in (1, 32)]
    rows += [("BPCLIP", b, n, n, 4) for n in (49, 144) for b in (1, 32, 128)]
    rows += [("BPCLIP", b, 400, 400, 4) for b in (1, 32)]
    rows += [("4 queries", 8, 4, 3000, 8)]
    return rows


def sdpa(q, k, v, num_heads, scale=None):
    """The attention core as a PyTorch user writes it: split heads, torch's SDPA (which picks its
    fastest backend for the shape), merge heads."""
    qh, kh, vh = (split_heads(t, num_heads) for t in (q, k, v))
    return merge_heads(F.scaled_dot_product_attention(qh, kh, vh, scale=scale))


def sdpa_backends() -> dict:
    """SDPA's backends by name (torch.nn.attention), those this torch has."""
    from torch.nn.attention import SDPBackend

    names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION", "math": "MATH"}
    return {name: getattr(SDPBackend, member) for name, member in names.items() if hasattr(SDPBackend, member)}


def best_sdpa_time(input_sets: list[tuple], heads: int) -> tuple[float, str, str, dict]:
    """The fastest SDPA backend on these inputs: (ms, backend, timing method, ms of every backend
    that ran). A backend that refuses the shape or dtype is left out."""
    from torch.nn.attention import sdpa_kernel

    times, methods = {}, {}
    for name, backend in sdpa_backends().items():

        def call(q, k, v, backend=backend):
            with sdpa_kernel([backend]):
                return sdpa(q, k, v, heads)

        try:
            times[name], methods[name] = graph_time_ms(call, input_sets)
        except RuntimeError:  # "No available kernel": this backend does not take the shape
            torch.cuda.synchronize()
    if not times:
        raise RuntimeError("no SDPA backend ran this shape")
    best = min(times, key=times.get)
    return times[best], best, methods[best], times


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy of 1 GiB, bytes read plus written per second (best of 5)."""
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = math.inf
    for _ in range(6):
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end))
    return 2 * src.numel() / (best * 1e-3) / 1e9


def calls_per_graph(sets: int) -> int:
    """Every input set once per replay, and at least REPS calls (large shapes have few sets)."""
    return max(REPS, sets)


def graph_time_ms(fn, input_sets: list[tuple]) -> tuple[float, str]:
    """Median milliseconds per call of fn over input_sets, from CUDA-graph replays of
    calls_per_graph(len(input_sets)) calls cycling through the sets; falls back to timing eager
    calls (saying so) when the capture fails."""
    calls = calls_per_graph(len(input_sets))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
        for inputs in input_sets:
            fn(*inputs)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    method = "cuda graph"
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(calls):
                fn(*input_sets[i % len(input_sets)])
        run = graph.replay
    except RuntimeError as exc:
        method = f"eager (capture failed: {str(exc).splitlines()[0][:120]})"

        def run():
            for i in range(calls):
                fn(*input_sets[i % len(input_sets)])

    run()
    times = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(TRIALS):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times), method


def parity(q, k, v, heads, dtype) -> tuple[float, bool]:
    """Relative error of the op against float64 SDPA on fresh inputs; the output is poisoned
    first (a NaN-filled block freed just before the call), so an unwritten element fails."""
    q, k, v = (t[:PARITY_ROWS] for t in (q, k, v))
    poison = torch.full_like(q, float("nan"))
    del poison
    out = fused_op.fused_cross_attention(q, k, v, heads)
    ref = sdpa(q.double(), k.double(), v.double(), heads)
    err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
    return err, bool(err <= TOLERANCE[dtype] and not out.isnan().any())


def working_set(batch, q_len, kv_len, heads, dtype, l2_bytes) -> tuple[int, int]:
    """(bytes of one input set: Q, K, V read and O written once; number of sets): enough sets
    that together they are at least twice the L2 cache."""
    element = torch.finfo(dtype).bits // 8
    set_bytes = batch * (2 * q_len + 2 * kv_len) * heads * HEAD_DIM * element
    return set_bytes, max(1, math.ceil(2 * l2_bytes / set_bytes))


def working_set_table(l2_bytes: int, dtype: torch.dtype) -> str:
    """The working set of every shape for an L2 of l2_bytes (no GPU needed: the dry run prints it)."""
    lines = [
        f"working sets for an L2 of {l2_bytes / 2**20:.0f} MiB, {str(dtype).removeprefix('torch.')}:",
        "| model | B | Nq | Nk | heads | MB a set | sets | working set MB | calls a graph |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, batch, q_len, kv_len, heads in shapes():
        set_bytes, sets = working_set(batch, q_len, kv_len, heads, dtype, l2_bytes)
        lines.append(
            f"| {model} | {batch} | {q_len} | {kv_len} | {heads} | {set_bytes / 1e6:.3g} | {sets} "
            f"| {sets * set_bytes / 1e6:.0f} | {calls_per_graph(sets)} |"
        )
    return "\n".join(lines)


def bench_shape(model, batch, q_len, kv_len, heads, dtype, l2_bytes) -> dict:
    width = heads * HEAD_DIM
    set_bytes, sets = working_set(batch, q_len, kv_len, heads, dtype, l2_bytes)
    input_sets = [
        (
            torch.randn(batch, q_len, width, device="cuda", dtype=dtype),
            *(torch.randn(batch, kv_len, width, device="cuda", dtype=dtype) for _ in range(2)),
        )
        for _ in range(sets)
    ]
    err, ok = parity(*input_sets[0], heads, dtype)
    fused_ms, fused_method = graph_time_ms(lambda q, k, v: fused_op.fused_cross_attention(q, k, v, heads), input_sets)
    sdpa_ms, sdpa_backend, sdpa_method, sdpa_all = best_sdpa_time(input_sets, heads)
    del input_sets
    return {
        "model": model,
        "batch": batch,
        "q_len": q_len,
        "kv_len": kv_len,
        "heads": heads,
        "head_dim": HEAD_DIM,
        "dtype": str(dtype).removeprefix("torch."),
        "fused_ms": fused_ms,
        "sdpa_ms": sdpa_ms,
        "sdpa_backend": sdpa_backend,
        "sdpa_ms_by_backend": sdpa_all,
        "speedup": sdpa_ms / fused_ms,
        "rel_err": err,
        "parity_ok": ok,
        "input_sets": sets,
        "set_bytes": set_bytes,
        "working_set_bytes": sets * set_bytes,
        "calls_per_graph": calls_per_graph(sets),
        "fused_gbs": set_bytes / (fused_ms * 1e-3) / 1e9,
        "timing": {"fused": fused_method, "sdpa": sdpa_method},
    }


SDPA_GRAPH, FUSED_GRAPH = "torch-fp16-sdpa-graph", "torch-fp16-fused-graph"
WHOLE_MODEL_VARIANTS = ("torch", "torch-fp16", SDPA_GRAPH, FUSED_GRAPH)
WHOLE_MODEL_WARMUP, WHOLE_MODEL_ITERS = 2, 8  # calls per variant and batch size, interleaved as in `iqart bench`


def model_size(text: str) -> tuple[str, int, int]:
    """MODEL:N or MODEL:WxH -> (model, width, height)."""
    name, _, size = text.partition(":")
    width, _, height = size.lower().partition("x")
    height = height or width
    if not name or not (width.isdigit() and height.isdigit()) or min(int(width), int(height)) < 32:
        raise argparse.ArgumentTypeError(f"expected MODEL:N or MODEL:WxH (sides of at least 32), got {text!r}")
    return name, int(width), int(height)


def batch_sizes(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip().isdigit()]
    if not values or min(values) < 1 or len(values) != len(text.split(",")):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def whole_model_runners(model, device: torch.device) -> tuple[dict, dict[str, str]]:
    """The four variants on copies of one loaded model (loading an RN50 model costs seconds): the
    classes `iqart bench` builds for torch, torch-fp16 and torch-fp16-fused-graph, and the same
    graph runner with SDPA as the attention core. Returns (runners, why each missing one is)."""
    import copy

    from iqart.engine.backends.torch_backend import TorchBackend
    from iqart.engine.bench.runners import CudaGraphRunner
    from iqart.train.models.attention import attention_implementation
    from iqart.train.models.preprocess import uint8_nhwc_to_model_input

    class SdpaGraphRunner(CudaGraphRunner):  # here, not at the top: the op mode runs without the model code
        def _forward(self, inputs):
            with attention_implementation(sdpa), torch.autocast("cuda", dtype=torch.float16, cache_enabled=False):
                return self.model(*(uint8_nhwc_to_model_input(x) for x in inputs))

    runners = {
        "torch": TorchBackend(copy.deepcopy(model), str(device), "fp32"),
        "torch-fp16": TorchBackend(copy.deepcopy(model), str(device), "fp16"),
        SDPA_GRAPH: SdpaGraphRunner(copy.deepcopy(model), device),
    }
    reason = fused_op.unavailable_reason()
    if reason:
        return runners, {FUSED_GRAPH: f"the fused attention op is unavailable: {reason}"}
    runners[FUSED_GRAPH] = CudaGraphRunner(model, device)
    return runners, {}


def bench_whole_model(
    name: str,
    sizes: list[tuple[int, int]],
    batches: list[int],
    device: torch.device,
    rows: list[dict],
    save: Callable[[], None],
) -> None:
    """Appends one row per size, batch and variant to `rows` (a variant that fails there, or could
    not be built, gets a row saying why), and saves them after each batch: a step stopped at its
    time limit keeps what it measured."""
    from iqart.engine.bench.harness import interleaved_timings, speedup
    from iqart.engine.bench.runners import bench_weights
    from iqart.engine.cli.bench import batch_inputs
    from iqart.train.models.zoo import get_card, load_model

    card = get_card(name)
    weights = bench_weights(name)
    runners, missing = whole_model_runners(load_model(name, weights.path), device)
    rows += [{"model": name, "backend": variant, "unavailable": why} for variant, why in missing.items()]
    for width, height in sizes:
        for batch in batches:
            images, references = batch_inputs(card, width, height, batch, [])
            scores, active, first = {}, {}, len(rows)
            for variant, runner in runners.items():  # the first call also captures the graphs, before any timing
                try:
                    scores[variant] = np.asarray(runner(images, references), dtype=np.float64)
                    active[variant] = runner
                except RuntimeError as exc:  # out of memory, a failed capture: the others still run
                    rows.append(
                        {
                            "model": name,
                            "size": f"{width}x{height}",
                            "batch": batch,
                            "backend": variant,
                            "unavailable": f"{type(exc).__name__}: {exc}",
                        }
                    )
                    torch.cuda.empty_cache()
            timings = (
                interleaved_timings(
                    active, images, references, WHOLE_MODEL_WARMUP, WHOLE_MODEL_ITERS, cuda=device.type == "cuda"
                )
                if active
                else {}
            )
            for variant, timing in timings.items():
                row = {
                    "model": name,
                    "size": f"{width}x{height}",
                    "batch": batch,
                    "backend": variant,
                    "images_per_s": timing.images_per_s,
                    "p50_ms": timing.percentile_ms(50),
                    "p95_ms": timing.percentile_ms(95),
                    "spread": timing.spread,
                    "calls": len(timing.latencies),
                    "peak_gpu_mb": None if timing.peak_gpu_bytes is None else timing.peak_gpu_bytes / 2**20,
                    "speedup_vs_torch": speedup(timings["torch"], timing) if "torch" in timings else None,
                    "max_abs_score_diff_vs_fp32": (
                        float(np.abs(scores[variant] - scores["torch"]).max()) if "torch" in scores else None
                    ),
                    "scores_finite": bool(np.isfinite(scores[variant]).all()),
                    "weights": "random" if weights.random else str(weights.path),
                }
                if variant == FUSED_GRAPH and SDPA_GRAPH in timings:
                    row["speedup_vs_sdpa_graph"] = speedup(timings[SDPA_GRAPH], timing)
                rows.append(row)
            print(whole_model_table(rows[first:], header=False), flush=True)
            save()
    del runners
    torch.cuda.empty_cache()


def _figure(row: dict, key: str, form: str) -> str:
    return "" if row.get(key) is None else format(row[key], form)


def whole_model_table(rows: list[dict], header: bool = True) -> str:
    lines = (
        [
            "| model | size | batch | backend | images/s | x torch fp32 | x SDPA graph | p50 ms "
            "| max score diff vs fp32 |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        if header
        else []
    )
    for r in rows:
        if "unavailable" in r:
            why = " ".join(r["unavailable"].split())[:200].replace("|", "/")
            lines.append(
                f"| {r['model']} | {r.get('size', '')} | {r.get('batch', '')} | {r['backend']} "
                f"| unavailable: {why} | | | | |"
            )
            continue
        lines.append(
            f"| {r['model']} | {r['size']} | {r['batch']} | {r['backend']} | {r['images_per_s']:.1f} "
            f"| {_figure(r, 'speedup_vs_torch', '.2f')} | {_figure(r, 'speedup_vs_sdpa_graph', '.2f')} "
            f"| {r['p50_ms']:.2f} | {_figure(r, 'max_abs_score_diff_vs_fp32', '.2g')}"
            f"{'' if r['scores_finite'] else ' NOT FINITE'} |"
        )
    return "\n".join(lines)


def whole_model_main(args: argparse.Namespace) -> int:
    device = torch.device("cuda")
    properties = torch.cuda.get_device_properties(device)
    print(
        f"{properties.name}; torch {torch.__version__}; {WHOLE_MODEL_WARMUP} warm-up and {WHOLE_MODEL_ITERS} "
        "timed calls per variant, interleaved\n"
    )
    print(whole_model_table([]))
    rows: list[dict] = []

    def save() -> None:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {
                        "device": properties.name,
                        "torch": torch.__version__,
                        "cuda": torch.version.cuda,
                        "warmup": WHOLE_MODEL_WARMUP,
                        "iters": WHOLE_MODEL_ITERS,
                        "rows": rows,
                    },
                    f,
                    indent=1,
                )

    grouped: dict[str, list[tuple[int, int]]] = {}
    for name, width, height in args.whole_model:  # one load per model, whatever its sizes
        grouped.setdefault(name, []).append((width, height))
    for name, sizes in grouped.items():
        bench_whole_model(name, sizes, args.batch_sizes, device, rows, save)
    print("\n" + whole_model_table(rows))
    problems = [r for r in rows if "unavailable" in r or not r["scores_finite"]]
    if problems:
        print(f"\n{len(problems)} row(s) unavailable or with scores that are not finite", file=sys.stderr)
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="float16,float32", help="comma-separated (default float16,float32)")
    parser.add_argument("--json", help="write the rows and the device's figures here")
    parser.add_argument(
        "--whole-model",
        nargs="+",
        type=model_size,
        metavar="MODEL:SIZE",
        help="time whole models instead of the op (e.g. qualiclip:224 qualiclip:1024x768)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=batch_sizes,
        default=[1, 32, 128],
        help="with --whole-model: comma-separated (default 1,32,128)",
    )
    return parser


def check_args(args: argparse.Namespace) -> None:
    for name in args.dtypes.split(","):
        if getattr(torch, name, None) not in TOLERANCE:
            raise SystemExit(f"--dtypes: {name!r} is not one of float16, float32")
    if not sdpa_backends():
        raise SystemExit("torch.nn.attention.SDPBackend lists no backends")
    if args.whole_model:
        from iqart.train.models.zoo import get_card

        for name, _, _ in args.whole_model:
            get_card(name)


def dry_run(args: argparse.Namespace) -> None:
    """The arguments; in op mode the working set of every shape for an H100's L2 (the figure the
    real run prints per shape, read off the device there); with --whole-model each model built on
    the meta device (the model code's imports, as the real run makes them)."""
    check_args(args)
    if not args.whole_model:
        for name in args.dtypes.split(","):
            print(working_set_table(H100_L2_BYTES, getattr(torch, name)))
    if args.whole_model:
        from iqart.engine.backends import torch_backend  # noqa: F401  (the imports the run makes)
        from iqart.engine.bench import harness, runners  # noqa: F401
        from iqart.engine.cli import bench  # noqa: F401
        from iqart.train.models.zoo import build_model

        for name in dict.fromkeys(name for name, _, _ in args.whole_model):
            with torch.device("meta"):  # the modules and shapes, without the seconds of weight init
                build_model(name)
        print(
            f"whole-model bench: {', '.join(f'{n}:{w}x{h}' for n, w, h in args.whole_model)} at batch "
            f"{','.join(map(str, args.batch_sizes))} builds"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    if not torch.cuda.is_available():
        print("bench_fused_attention: needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    reason = fused_op.unavailable_reason()
    if reason:
        print(f"bench_fused_attention: the fused op is unavailable: {reason}", file=sys.stderr)
        if not args.whole_model:  # the whole-model table still has the other variants
            return 2
    if args.whole_model:
        return whole_model_main(args)
    properties = torch.cuda.get_device_properties(0)
    bandwidth = copy_bandwidth_gbs()
    print(
        f"{properties.name}, {properties.multi_processor_count} SMs, L2 {properties.L2_cache_size >> 20} MiB; "
        f"copy bandwidth {bandwidth:.0f} GB/s (read + write); each shape's input sets rotate through at least "
        f"twice the L2, every set once a graph (at least {REPS} calls); median of {TRIALS} replays\n"
    )
    print(
        "| model | dtype | B | Nq | Nk | heads x D | working set (sets) | fused ms | best SDPA ms (backend) "
        "| speed-up | fused GB/s | rel err |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []

    def save() -> None:  # after every shape: a run stopped at its time limit keeps what it measured
        if args.json:
            with open(args.json, "w") as f:
                json.dump(
                    {
                        "device": properties.name,
                        "sm_count": properties.multi_processor_count,
                        "l2_bytes": properties.L2_cache_size,
                        "copy_gbs": bandwidth,
                        "torch": torch.__version__,
                        "cuda": torch.version.cuda,
                        "min_calls_per_graph": REPS,
                        "trials": TRIALS,
                        "rows": rows,
                    },
                    f,
                    indent=1,
                )

    torch.manual_seed(0)
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        for model, batch, q_len, kv_len, heads in shapes():
            row = bench_shape(model, batch, q_len, kv_len, heads, dtype, properties.L2_cache_size)
            rows.append(row)
            eager = "" if row["timing"] == {"fused": "cuda graph", "sdpa": "cuda graph"} else " (eager)"
            print(
                f"| {model} | {name} | {batch} | {q_len} | {kv_len} | {heads}x{HEAD_DIM} "
                f"| {row['working_set_bytes'] / 1e6:.0f} MB ({row['input_sets']}) | {row['fused_ms']:.4f} "
                f"| {row['sdpa_ms']:.4f} ({row['sdpa_backend']}) | {row['speedup']:.2f}x{eager} "
                f"| {row['fused_gbs']:.0f} "
                f"| {row['rel_err']:.1e}{'' if row['parity_ok'] else ' FAIL'} |",
                flush=True,
            )
            save()
            torch.cuda.empty_cache()
    failures = sum(not row["parity_ok"] for row in rows)
    if failures:
        print(f"\n{failures} shape(s) failed parity", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
