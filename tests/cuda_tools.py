"""Where the CUDA tools are: nvcc and cuobjdump, for the tests that compile or disassemble the
kernels (nothing runs without a GPU). Imports nothing of iqart, so those tests run without the
model stack (tests/test_kernels.py runs with --noconftest on the GPU machine)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    cuda_home = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    if found is None and (cuda_home / "bin" / "nvcc").is_file():
        found = str(cuda_home / "bin" / "nvcc")
    return found


def _cuobjdump() -> str | None:
    """cuobjdump from PATH, the CUDA toolkit, or pip's nvidia-cuda-cuobjdump (a dev extra)."""
    found = shutil.which("cuobjdump")
    if found is None and NVCC:
        candidate = Path(NVCC).resolve().parent / "cuobjdump"
        found = str(candidate) if candidate.is_file() else None
    if found is None and importlib.util.find_spec("nvidia") is not None:
        import nvidia

        found = next(
            (str(path) for root in nvidia.__path__ for path in sorted(Path(root).glob("*/bin/cuobjdump"))), None
        )
    return found


NVCC = _nvcc()
CUOBJDUMP = _cuobjdump()
