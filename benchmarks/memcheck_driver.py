"""Small calls of the fused op covering every kernel path, for compute-sanitizer (gpu_verify.sh):
split keys with and without the combine kernel, tiled with and without it, each head size and
dtype, one key, and a batch whose row count is not a multiple of any tile. The reference runs on
the CPU, so that the only GPU work the sanitizers see is the op's and torch's fills and copies.

Each case is the smallest that still takes its path (kernels/plugin_core.cpp, planLaunch: the
keys are split into chunks of at least 128 keys on the split-keys path and 64 on the tiled path,
until about 528 blocks; a second chunk means the combine kernel runs): at most 17 MB of Q, K and
V a call (1000 keys of 32 heads in fp32), microseconds of kernel time, so the sanitizers'
instrumentation (kernels one to two orders of magnitude slower) costs well under a second for all
of them. What a sanitized run
costs is its process start; the driver prints its own timeline (torch imported, CUDA ready, calls
done) so that gpu_verify.sh's caps can be checked against it.

    compute-sanitizer --tool memcheck python3 benchmarks/memcheck_driver.py
"""

from __future__ import annotations

import argparse
import sys
import time

STARTED = time.perf_counter()

import torch  # noqa: E402  (after the clock: the import is part of the timeline)

from iqart.engine.backends import fused_op  # noqa: E402
from iqart.train.models.attention import reference_cross_attention  # noqa: E402

# (batch, q_len, kv_len, heads, head_dim)
CASES = [
    (1, 1, 1000, 32, 64),  # split keys + combine (8 chunks of 128 keys)
    (2, 1, 50, 32, 64),  # split keys, single chunk
    (1, 3, 1, 4, 64),  # one key
    (2, 100, 100, 4, 64),  # tiled, partial query tile
    (1, 64, 600, 4, 64),  # tiled + combine (10 chunks of 64 keys)
    (3, 1, 700, 8, 32),
    (1, 70, 300, 2, 128),  # tiled: fp32 with > 48 KB of shared memory, fp16 with 32-key tiles
    (1, 2, 900, 2, 128),
    (2, 4, 1000, 4, 64),  # four queries sharing each K/V read, split + combine
    (1, 400, 400, 4, 64),  # BPCLIP 20x20 at batch 1: tiled split into 64-key chunks
    (3, 49, 49, 4, 64),  # BPCLIP 7x7: one key tile, 15 padded query rows
    (2, 33, 70, 8, 32),  # a warp with no query rows; a partial second key tile
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="float16,float32", help="comma-separated (default float16,float32)")
    return parser


def dry_run(args: argparse.Namespace) -> None:
    for name in args.dtypes.split(","):
        if not isinstance(getattr(torch, name, None), torch.dtype):
            raise SystemExit(f"--dtypes: {name!r} is not a torch dtype")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    imported = time.perf_counter() - STARTED
    torch.cuda.init()
    torch.empty(1, device="cuda")  # the context, before the first case
    ready = time.perf_counter() - STARTED
    calls = failures = 0
    for dtype in (getattr(torch, name) for name in args.dtypes.split(",")):
        for batch, q_len, kv_len, heads, head_dim in CASES:
            q = torch.randn(batch, q_len, heads * head_dim, device="cuda", dtype=dtype)
            k, v = (torch.randn(batch, kv_len, heads * head_dim, device="cuda", dtype=dtype) for _ in range(2))
            out = fused_op.fused_cross_attention(q, k, v, heads).float().cpu()
            ref = reference_cross_attention(q.float().cpu(), k.float().cpu(), v.float().cpu(), heads, head_dim**-0.5)
            err = ((out - ref).abs().max() / ref.abs().max()).item()
            calls += 1
            if not err < 5e-3:  # NaN fails too
                print(f"FAIL {dtype} B={batch} Nq={q_len} Nk={kv_len} H={heads} D={head_dim}: rel err {err:.3g}")
                failures += 1
    torch.cuda.synchronize()
    print(
        f"memcheck driver: {calls} calls ran, {failures} failed; timeline from the driver's first line: torch "
        f"imported {imported:.1f} s, CUDA ready {ready:.1f} s, calls done {time.perf_counter() - STARTED:.1f} s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
