"""Times the fused cross-attention op against torch SDPA at the models' shapes, after checking
their parity, and prints a markdown table. Needs a CUDA GPU (the op is built on first use).

    PYTHONPATH=. python benchmarks/bench_fused_attention.py [--dtype float16] [--iters 100]
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from iqart.engine.backends import fused_op
from iqart.train.attention import merge_heads, split_heads

# (model, batch, q_len, kv_len, heads); head size 64 throughout.
SHAPES = [("QualiCLIP", b, 1, nk, 32) for b in (1, 32) for nk in (50, 769, 11700)]
SHAPES += [("BPCLIP", b, n, n, 4) for b in (1, 32) for n in (49, 144)]
HEAD_DIM = 64
TOLERANCE = {torch.float16: 2e-3, torch.float32: 1e-5}


def sdpa(q, k, v, num_heads):
    """What the models would run without the fused op: SDPA on split heads, then merge."""
    qh, kh, vh = (split_heads(t, num_heads) for t in (q, k, v))
    return merge_heads(F.scaled_dot_product_attention(qh, kh, vh))


def time_ms(fn, warmup: int, iters: int) -> float:
    """Mean milliseconds per call, from CUDA events around `iters` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iters", type=int, default=100)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_fused_attention: needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    if not fused_op.is_available():
        print("bench_fused_attention: the fused op could not be built (needs nvcc); see engine/fused_op.py",
              file=sys.stderr)
        return 2

    dtype = getattr(torch, args.dtype)
    print(f"{torch.cuda.get_device_name()}, {args.dtype}, {args.iters} iterations after {args.warmup} warm-up\n")
    print("| model | B | Nq | Nk | heads x D | fused ms | SDPA ms | speedup | rel err |")
    print("|---|---|---|---|---|---|---|---|---|")
    failures = 0
    torch.manual_seed(0)
    for model, batch, q_len, kv_len, heads in SHAPES:
        q = torch.randn(batch, q_len, heads * HEAD_DIM, device="cuda", dtype=dtype)
        k, v = (torch.randn(batch, kv_len, heads * HEAD_DIM, device="cuda", dtype=dtype) for _ in range(2))
        out = fused_op.fused_cross_attention(q, k, v, heads)
        ref = sdpa(q.double(), k.double(), v.double(), heads)
        err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
        ok = err <= TOLERANCE[dtype] and not out.isnan().any()
        failures += not ok
        del ref
        fused = time_ms(lambda: fused_op.fused_cross_attention(q, k, v, heads), args.warmup, args.iters)
        reference = time_ms(lambda: sdpa(q, k, v, heads), args.warmup, args.iters)
        print(f"| {model} | {batch} | {q_len} | {kv_len} | {heads}x{HEAD_DIM} | {fused:.4f} | {reference:.4f} "
              f"| {reference / fused:.2f}x | {err:.2e}{'' if ok else ' FAIL'} |")
    if failures:
        print(f"\n{failures} shape(s) failed parity (tolerance {TOLERANCE[dtype]})", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
