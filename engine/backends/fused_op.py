"""Fused cross-attention for torch: the CUDA kernel of kernels/ on CUDA tensors, the reference
math (iqart.train.models.attention.cross_attention) elsewhere.

The CUDA op is compiled on first use with torch.utils.cpp_extension (needs nvcc and a C++
compiler) and cached under $IQART_HOME/torch_ext (default ~/.cache/iqart/torch_ext), one build
per torch and CUDA version; later processes only load it. It is inference-only: no autograd.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from iqart.train.models.attention import reference_cross_attention
from iqart.train.storage import iqart_home

# kernels/ sits beside engine/ in a checkout, and inside the package in a wheel (package data)
KERNELS_DIR = Path(__file__).resolve().parents[2] / "kernels"
_SOURCES = ("torch_op.cpp", "fused_cross_attention.cu", "plugin_core.cpp")


def missing_sources() -> list[str]:
    """The kernel sources the op is built from that are not here (a wheel without package data)."""
    return [str(KERNELS_DIR / name) for name in _SOURCES if not (KERNELS_DIR / name).is_file()]


def toolkit_problem() -> str | None:
    """Why nvcc cannot build the op on this machine (no toolkit, or a CUDA_HOME without the CUDA
    headers), or None. The GPU-independent part of what _load_op needs, so a dry run can show it."""
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        return "nvcc not found; install the CUDA toolkit or set CUDA_HOME"
    if not (Path(cpp_extension.CUDA_HOME) / "include" / "cuda_runtime_api.h").is_file():
        # torch guesses CUDA_HOME from nvcc's folder, which a wrapper script (/usr/local/bin/nvcc) misleads
        return (
            f"CUDA_HOME={cpp_extension.CUDA_HOME} has no include/cuda_runtime_api.h; set CUDA_HOME to the "
            "CUDA toolkit's root (e.g. /usr/local/cuda)"
        )
    return None


def build_directory() -> Path:
    """Where the op is built and cached: one folder per torch and CUDA version."""
    return iqart_home() / "torch_ext" / f"torch{torch.__version__}-cuda{torch.version.cuda}"


def compile_op(build_dir: Path | None = None) -> None:
    """Compiles the op with torch's extension flags (cpp_extension rebuilds only when sources
    change) and loads it into this process. Needs the toolkit, not a GPU: a CPU machine with nvcc
    compiles exactly what a GPU machine would (tests/test_fused_op_compile.py)."""
    from torch.utils import cpp_extension

    problem = toolkit_problem()
    if problem:
        raise RuntimeError(f"iqart fused attention op: {problem}")
    missing = missing_sources()
    if missing:
        raise RuntimeError(f"iqart fused attention op: kernel sources missing (needs a source checkout): {missing}")
    build_dir = build_dir or build_directory()
    build_dir.mkdir(parents=True, exist_ok=True)
    cpp_extension.load(
        name="iqart_fused_attention",
        sources=[str(KERNELS_DIR / name) for name in _SOURCES],
        extra_include_paths=[str(KERNELS_DIR)],
        extra_cflags=["-O3"],
        extra_cuda_cflags=["-O3"],
        build_directory=str(build_dir),
        is_python_module=False,
    )


@functools.cache
def _load_op():
    """Builds (once per torch/CUDA version) and loads the op, on a machine with a CUDA GPU."""
    if not torch.cuda.is_available():
        raise RuntimeError("iqart fused attention op needs a CUDA GPU; torch.cuda.is_available() is False")
    compile_op()
    return torch.ops.iqart.fused_cross_attention


@functools.cache
def unavailable_reason() -> str | None:
    """None when CUDA tensors can use the fused op; otherwise why not, with the build's own
    error output (compiler messages included). Compiles the op on the first call (then cached)."""
    try:
        _load_op()
    except Exception as exc:  # missing GPU or toolkit, or a failed build: the message is the diagnosis
        return f"{type(exc).__name__}: {exc}"
    return None


def is_available() -> bool:
    """Whether CUDA tensors can use the fused op. Callers that fall back to the reference math
    should say why: `unavailable_reason()` holds the error (a build failure is never silent)."""
    return unavailable_reason() is None


def fused_cross_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float | None = None
) -> torch.Tensor:
    """O = softmax(scale * Q Kᵀ) V per head, Q (B, Nq, H*D), K and V (B, Nk, H*D) -> (B, Nq, H*D).

    scale defaults to 1/sqrt(D). CUDA tensors (fp16 or fp32, D in 32/64/128) run the fused kernel;
    other tensors run iqart.train.models.attention.cross_attention.
    """
    if scale is not None and not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if q.shape[-1] % num_heads:
        raise ValueError(f"width {q.shape[-1]} is not divisible by num_heads={num_heads}")
    if q.is_cuda:
        return _load_op()(q, k, v, num_heads, 0.0 if scale is None else float(scale))
    # Not cross_attention: this function is itself installed as its override (TorchBackend).
    return reference_cross_attention(q, k, v, num_heads, scale or (q.shape[-1] // num_heads) ** -0.5)
