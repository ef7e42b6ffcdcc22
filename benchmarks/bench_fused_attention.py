"""Times the fused cross-attention op against torch SDPA at the models' shapes, after checking
their parity, and prints a markdown table (and writes JSON with --json). Needs a CUDA GPU.

    python3 benchmarks/bench_fused_attention.py [--dtypes float16,float32] [--json out.json]

Kernel time, not launch overhead: each variant is captured as a CUDA graph of REPS calls and the
graph's replays are timed with CUDA events (median of TRIALS replays, divided by REPS). The calls
cycle over enough input sets to exceed twice the L2 cache, so small shapes are not timed out of
L2. SDPA is timed as the models would run it without the fused op: split heads, SDPA, merge heads.
SDPA runs under each of its backends that accepts the shape (flash, memory-efficient, cuDNN, math)
and the fastest is the one compared, named in the row. Each row also gives the op's bytes moved (Q, K, V read once, O written once) over its time, next
to the device-to-device copy bandwidth measured in the same run: the op is memory-bound at the
QualiCLIP shapes (one query), so that ratio is how close it is to its floor.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys

import torch
import torch.nn.functional as F

from iqart.engine.backends import fused_op
from iqart.train.models.attention import merge_heads, split_heads

HEAD_DIM = 64
REPS, TRIALS = 20, 15
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


def sdpa(q, k, v, num_heads):
    qh, kh, vh = (split_heads(t, num_heads) for t in (q, k, v))
    return merge_heads(F.scaled_dot_product_attention(qh, kh, vh))


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


def graph_time_ms(fn, input_sets: list[tuple]) -> tuple[float, str]:
    """Median milliseconds per call of fn over input_sets, from CUDA-graph replays; falls back to
    timing eager calls (saying so) when the capture fails."""
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
            for i in range(REPS):
                fn(*input_sets[i % len(input_sets)])
        run = graph.replay
    except RuntimeError as exc:
        method = f"eager (capture failed: {str(exc).splitlines()[0][:120]})"

        def run():
            for i in range(REPS):
                fn(*input_sets[i % len(input_sets)])

    run()
    times = []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(TRIALS):
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / REPS)
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


def bench_shape(model, batch, q_len, kv_len, heads, dtype, l2_bytes) -> dict:
    width = heads * HEAD_DIM
    element = torch.finfo(dtype).bits // 8
    set_bytes = batch * (2 * q_len + 2 * kv_len) * width * element
    sets = max(1, min(8, math.ceil(2 * l2_bytes / set_bytes)))
    input_sets = [(torch.randn(batch, q_len, width, device="cuda", dtype=dtype),
                   *(torch.randn(batch, kv_len, width, device="cuda", dtype=dtype) for _ in range(2)))
                  for _ in range(sets)]
    err, ok = parity(*input_sets[0], heads, dtype)
    fused_ms, fused_method = graph_time_ms(lambda q, k, v: fused_op.fused_cross_attention(q, k, v, heads), input_sets)
    sdpa_ms, sdpa_backend, sdpa_method, sdpa_all = best_sdpa_time(input_sets, heads)
    del input_sets
    return {"model": model, "batch": batch, "q_len": q_len, "kv_len": kv_len, "heads": heads, "head_dim": HEAD_DIM,
            "dtype": str(dtype).removeprefix("torch."), "fused_ms": fused_ms, "sdpa_ms": sdpa_ms,
            "sdpa_backend": sdpa_backend, "sdpa_ms_by_backend": sdpa_all,
            "speedup": sdpa_ms / fused_ms, "rel_err": err, "parity_ok": ok, "input_sets": sets,
            "fused_gbs": set_bytes / (fused_ms * 1e-3) / 1e9, "timing": {"fused": fused_method, "sdpa": sdpa_method}}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="float16,float32", help="comma-separated (default float16,float32)")
    parser.add_argument("--json", help="write the rows and the device's figures here")
    return parser


def dry_run(args: argparse.Namespace) -> None:
    for name in args.dtypes.split(","):
        if getattr(torch, name, None) not in TOLERANCE:
            raise SystemExit(f"--dtypes: {name!r} is not one of float16, float32")
    if not sdpa_backends():
        raise SystemExit("torch.nn.attention.SDPBackend lists no backends")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dry_run(args)
    if not torch.cuda.is_available():
        print("bench_fused_attention: needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    reason = fused_op.unavailable_reason()
    if reason:
        print(f"bench_fused_attention: the fused op is unavailable: {reason}", file=sys.stderr)
        return 2
    properties = torch.cuda.get_device_properties(0)
    bandwidth = copy_bandwidth_gbs()
    print(f"{properties.name}, {properties.multi_processor_count} SMs, L2 {properties.L2_cache_size >> 20} MiB; "
          f"copy bandwidth {bandwidth:.0f} GB/s (read + write); {REPS} calls per graph, median of {TRIALS} replays\n")
    print("| model | dtype | B | Nq | Nk | heads x D | fused ms | best SDPA ms (backend) | speed-up | fused GB/s | rel err |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    torch.manual_seed(0)
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        for model, batch, q_len, kv_len, heads in shapes():
            row = bench_shape(model, batch, q_len, kv_len, heads, dtype, properties.L2_cache_size)
            rows.append(row)
            eager = "" if row["timing"] == {"fused": "cuda graph", "sdpa": "cuda graph"} else " (eager)"
            print(f"| {model} | {name} | {batch} | {q_len} | {kv_len} | {heads}x{HEAD_DIM} | {row['fused_ms']:.4f} "
                  f"| {row['sdpa_ms']:.4f} ({row['sdpa_backend']}) | {row['speedup']:.2f}x{eager} | {row['fused_gbs']:.0f} "
                  f"| {row['rel_err']:.1e}{'' if row['parity_ok'] else ' FAIL'} |")
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": properties.name, "sm_count": properties.multi_processor_count,
                       "l2_bytes": properties.L2_cache_size, "copy_gbs": bandwidth, "torch": torch.__version__,
                       "cuda": torch.version.cuda, "reps_per_graph": REPS, "trials": TRIALS, "rows": rows}, f, indent=1)
    failures = sum(not row["parity_ok"] for row in rows)
    if failures:
        print(f"\n{failures} shape(s) failed parity", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
