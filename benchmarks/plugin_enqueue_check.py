"""The TensorRT plugin's run-time path on a GPU, without TensorRT: builds libiqart_plugins.so
against TensorRT 11's headers (fetched into .trt_headers/, never committed, carried to the GPU
machine), compiles kernels/tests/plugin_enqueue_harness.cpp, which gets the plugin from its
creator and calls it as TensorRT would (fields, output types and shapes, formats, configure,
workspace size, a serialisation round trip, enqueue on fp16 device buffers, clone) against a
float64 reference, and then compares every output it dumped with the torch op on the same inputs.
gpu_verify.sh runs it as the `plugin` step of `--part checks`.

    python3 benchmarks/plugin_enqueue_check.py [--trt-root .trt_headers] [--seed N] [--memcheck SANITIZER]

With --memcheck (gpu_verify.sh passes it where its sanitizer preflight passed), the harness runs a
second time under compute-sanitizer's memcheck: the workspace is its own allocation of the size
getWorkspaceSize reported for a profile longer than the call, so a plugin that under-reports its
workspace, or a kernel that reads past a buffer, is caught there. A C++ program starts under the
sanitizer in about a second (no PyTorch modules to patch), which is why this runs here and not in
the PyTorch driver of the sanitizer steps.

Why this path: no TensorRT runs on the lent Hopper machines (TensorRT 11's libraries are not
installable there and TensorRT for RTX has no SM90 target), so without this the plugin's enqueue
never executes anywhere. tests/test_plugin_harness.py compiles the same harness with the same
command on machines without a GPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KERNELS = REPO / "kernels"
HARNESS = KERNELS / "tests" / "plugin_enqueue_harness.cpp"
DEFAULT_TRT_ROOT = REPO / ".trt_headers"  # git-ignored: `git archive` of NVIDIA/TensorRT's include/
BUILD_DIR = REPO / "build" / "plugin-enqueue"  # git-ignored; kept between calls on a warm machine
TOLERANCE = 2e-3  # max |error| / max |reference|, fp16: the harness's and tests/test_kernels.py's bound
NO_DEVICE_EXIT = 3  # the harness's exit status when it finds no CUDA device


def tensorrt_root(given: str | None = None) -> Path:
    """--trt-root, else TRT_ROOT, else the repository's .trt_headers/."""
    return Path(given or os.environ.get("TRT_ROOT") or DEFAULT_TRT_ROOT).resolve()


def headers_problem(root: Path) -> str | None:
    if (root / "include" / "NvInferRuntime.h").is_file():
        return None
    return (
        f"no TensorRT headers at {root}/include (NvInferRuntime.h): fetch NVIDIA/TensorRT and extract its "
        "include/ there (CONTRIBUTING.md, 'The GPU check'), then carry .trt_headers"
    )


def find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    candidate = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
    return found or (str(candidate) if candidate.is_file() else None)


def harness_command(nvcc: str, trt_root: Path, output: Path) -> list[str]:
    """nvcc compiling the harness (host code only: it reaches the kernels through the library);
    warnings are errors, as for every other C++ target of kernels/."""
    return [
        nvcc,
        "-std=c++17",
        "-O2",
        "-Xcompiler",
        "-Wall,-Wextra,-Werror",
        "-isystem",
        str(trt_root / "include"),
        "-I",
        str(KERNELS),
        str(HARNESS),
        "-ldl",
        "-o",
        str(output),
    ]


def plugin_build_commands(nvcc: str, trt_root: Path, build_dir: Path, arch: str) -> list[list[str]]:
    """cmake configure and build of the plugin target only, for one GPU architecture (`arch`,
    e.g. "90": a third of the compile time of kernels/CMakeLists.txt's default 80 and 90)."""
    cmake = shutil.which("cmake") or "cmake"
    return [
        [
            cmake,
            "-S",
            str(KERNELS),
            "-B",
            str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_CUDA_COMPILER={nvcc}",
            f"-DCMAKE_CUDA_ARCHITECTURES={arch}",
            f"-DTRT_ROOT={trt_root}",
        ],
        [cmake, "--build", str(build_dir), "--target", "iqart_plugins", "--parallel", str(os.cpu_count() or 2)],
    ]


def run(command: list[str], what: str) -> subprocess.CompletedProcess:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(
            f"{what} failed (exit {result.returncode}): {' '.join(command)}\n{(result.stdout + result.stderr)[-4000:]}"
        )
    print(f"{what}: {time.perf_counter() - started:.1f} s", flush=True)
    return result


def compare_with_torch_op(dump: Path) -> int:
    """Each dumped case: the torch op on the harness's inputs, against the harness's output and a
    float64 reference. Returns the number of failed cases."""
    import torch
    import torch.nn.functional as F

    from iqart.engine.backends import fused_op

    reason = fused_op.unavailable_reason()
    if reason:
        print(f"the torch op is unavailable, so the plugin cannot be compared with it: {reason}")
        return 1
    failures = 0
    for line in (dump / "cases.txt").read_text().splitlines():
        name, batch, q_len, kv_len, heads, head_dim, scale = line.split()
        batch, q_len, kv_len, heads, head_dim = map(int, (batch, q_len, kv_len, heads, head_dim))
        width = heads * head_dim

        def load(part: str, length: int, name=name, batch=batch, width=width) -> torch.Tensor:
            data = torch.from_file(str(dump / f"{name}.{part}.f16"), size=batch * length * width, dtype=torch.float16)
            return data.view(batch, length, width).cuda()

        q, k, v, plugin_out = load("q", q_len), load("k", kv_len), load("v", kv_len), load("o", q_len)
        op_out = fused_op.fused_cross_attention(q, k, v, heads, float(scale))
        split = [t.double().view(batch, -1, heads, head_dim).transpose(1, 2) for t in (q, k, v)]
        ref = F.scaled_dot_product_attention(*split, scale=float(scale)).transpose(1, 2).reshape(batch, q_len, width)
        top = ref.abs().max().item()
        plugin_err = (plugin_out.double() - ref).abs().max().item()
        op_err = (op_out.double() - ref).abs().max().item()
        identical = torch.equal(plugin_out, op_out)
        ok = max(plugin_err, op_err) / top <= TOLERANCE
        failures += not ok
        print(
            f"{name:20s} plugin vs float64 {plugin_err:.3e}, torch op vs float64 {op_err:.3e} (max |ref| {top:.2f}; "
            f"tolerance {TOLERANCE:.0e} of it); plugin and torch op "
            f"{'bit-identical' if identical else f'differ by {(plugin_out - op_out).abs().max().item():.3e}'}"
            f"{'' if ok else '  FAIL'}",
            flush=True,
        )
    return failures


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trt-root", help="TensorRT root holding include/ (default: TRT_ROOT, else .trt_headers)")
    parser.add_argument("--seed", type=int, help="the harness's input seed (default: a fresh one, printed)")
    parser.add_argument("--memcheck", metavar="SANITIZER", help="compute-sanitizer to run the harness under, again")
    return parser


def dry_run(args: argparse.Namespace) -> None:
    """What a CPU machine can say: the harness source is there; whether the headers are (where
    they are absent, the device run of this step fails, so say so); nvcc and cmake."""
    if not HARNESS.is_file():
        raise SystemExit(f"{HARNESS} is missing")
    problem = headers_problem(tensorrt_root(args.trt_root))
    tools = {"nvcc": find_nvcc(), "cmake": shutil.which("cmake")}
    print(
        f"plugin enqueue check: headers {'at ' + str(tensorrt_root(args.trt_root)) if problem is None else 'MISSING'}; "
        + ", ".join(
            f"{tool} {'found' if path else 'not on this machine (the GPU image has it)'}"
            for tool, path in tools.items()
        )
    )
    if problem:
        print(f"WARNING: the device run of this step will fail: {problem}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    root = tensorrt_root(args.trt_root)
    problem = headers_problem(root)
    nvcc = find_nvcc()
    if problem or nvcc is None:
        print(f"plugin enqueue check: {problem or 'nvcc not found'}", file=sys.stderr)
        return 1
    if not torch.cuda.is_available():
        print("plugin enqueue check: needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 1
    arch = "".join(map(str, torch.cuda.get_device_capability()))
    for command, what in zip(
        plugin_build_commands(nvcc, root, BUILD_DIR, arch), ("cmake configure", "plugin build"), strict=True
    ):
        run(command, what)
    harness = BUILD_DIR / "plugin_enqueue_harness"
    run(harness_command(nvcc, root, harness), "harness compile")
    with tempfile.TemporaryDirectory() as dump:
        command = [str(harness), str(BUILD_DIR / "libiqart_plugins.so"), "--dump", dump]
        if args.seed is not None:
            command += ["--seed", str(args.seed)]
        result = subprocess.run(command, capture_output=True, text=True)
        print(result.stdout + result.stderr, end="", flush=True)
        if result.returncode != 0:
            print(f"the harness failed (exit {result.returncode})", file=sys.stderr)
            return 1
        failures = compare_with_torch_op(Path(dump))
    if args.memcheck:
        command = [args.memcheck, "--tool", "memcheck", "--error-exitcode", "1", str(harness)]
        command += [str(BUILD_DIR / "libiqart_plugins.so")] + (
            ["--seed", str(args.seed)] if args.seed is not None else []
        )
        result = subprocess.run(command, capture_output=True, text=True)
        print(result.stdout + result.stderr, end="", flush=True)
        clean = result.returncode == 0 and "ERROR SUMMARY: 0 errors" in result.stdout + result.stderr
        print(f"the harness under memcheck: {'no errors' if clean else f'FAILED (exit {result.returncode})'}")
        failures += not clean
    print(f"plugin enqueue check: {'all cases agree' if not failures else f'{failures} case(s) FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
