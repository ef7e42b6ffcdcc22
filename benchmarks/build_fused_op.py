"""Builds the fused attention torch op and runs it once, or prints why it cannot, with the build's
own error output, and exits 1. First GPU step of gpu_verify.sh: the later steps load what this
built (torch.utils.cpp_extension caches it under $IQART_HOME/torch_ext).

    python3 benchmarks/build_fused_op.py
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.utils import cpp_extension

from iqart.engine.backends import fused_op
from iqart.train.models.attention import reference_cross_attention


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=__doc__.splitlines()[0])


def dry_run(args: argparse.Namespace) -> None:
    """What the build needs that a CPU machine can show: the sources, and nvcc where it is installed."""
    missing = fused_op.missing_sources()
    if missing:
        raise SystemExit(f"kernel sources missing: {missing}")
    problem = fused_op.toolkit_problem()
    print(
        f"sources: {fused_op.KERNELS_DIR} ({', '.join(fused_op._SOURCES)}); CUDA_HOME for nvcc: "
        f"{cpp_extension.CUDA_HOME or 'not found on this machine (the GPU image has nvcc)'}"
        f"{'' if cpp_extension.CUDA_HOME is None or problem is None else f' ({problem}: the build would fail here)'}"
    )


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    started = time.perf_counter()
    reason = fused_op.unavailable_reason()
    if reason:
        print(f"fused op unavailable after {time.perf_counter() - started:.0f} s:\n{reason}", file=sys.stderr)
        return 1
    print(
        f"fused op built and loaded in {time.perf_counter() - started:.1f} s on {torch.cuda.get_device_name()} "
        f"(sm_{''.join(map(str, torch.cuda.get_device_capability()))}), torch {torch.__version__}, "
        f"CUDA {torch.version.cuda}"
    )
    q, k, v = (torch.randn(2, n, 4 * 64, device="cuda", dtype=torch.float16) for n in (3, 300, 300))
    out = fused_op.fused_cross_attention(q, k, v, 4).float()
    ref = reference_cross_attention(q.float(), k.float(), v.float(), 4, 0.125)
    err = ((out - ref).abs().max() / ref.abs().max()).item()
    print(f"smoke call: relative error {err:.2e} against the fp32 reference")
    return 0 if err < 2e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
