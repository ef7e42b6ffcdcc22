"""Builds and loads libiqart_plugins.so, the TensorRT plugin library of kernels/.

The library is built with cmake once per version of the kernel sources: it is kept under
$IQART_HOME/plugins/<key> (default ~/.cache/iqart/plugins/<key>), where the key hashes the
sources, TRT_ROOT and the installed TensorRT version. TensorRT is imported only by load_plugin().
Building needs cmake, nvcc and TensorRT's headers (TRT_ROOT=<root with include/>, or a system
install such as Debian's libnvinfer-dev).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from iqart.engine.backends.fused_op import KERNELS_DIR
from iqart.train.home import iqart_home

LIBRARY_NAME = "libiqart_plugins.so"
PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION = "FusedCrossAttention", "iqart", "1"


def _tensorrt_version() -> str:
    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "none"


def build_key() -> str:
    """Hash of what the library is built from: kernel sources, TRT_ROOT, TensorRT version."""
    digest = hashlib.sha256()
    for path in sorted(KERNELS_DIR.rglob("*")):
        if path.is_file() and path.suffix in {".h", ".cpp", ".cu", ".txt"} and "tests" not in path.parts:
            digest.update(path.relative_to(KERNELS_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    digest.update(os.environ.get("TRT_ROOT", "").encode())
    digest.update(_tensorrt_version().encode())
    return digest.hexdigest()[:16]


def _nvcc() -> str:
    found = shutil.which("nvcc")
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidate = Path(cuda_home) / "bin" / "nvcc"
    if found is None and candidate.is_file():
        found = str(candidate)
    if found is None:
        raise RuntimeError("building the TensorRT plugin needs nvcc: install the CUDA toolkit or set CUDA_HOME")
    return found


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise RuntimeError(f"command failed ({result.returncode}): {' '.join(command)}\n{tail}")


def build_plugin() -> Path:
    """Path of libiqart_plugins.so for the current sources, building it with cmake if needed."""
    target = iqart_home() / "plugins" / build_key() / LIBRARY_NAME
    if target.is_file():
        return target
    cmake = shutil.which("cmake")
    if cmake is None:
        raise RuntimeError("building the TensorRT plugin needs cmake (>= 3.18) on PATH")
    if not (KERNELS_DIR / "CMakeLists.txt").is_file():
        raise RuntimeError(f"kernel sources not found in {KERNELS_DIR} (needs a source checkout)")
    target.parent.mkdir(parents=True, exist_ok=True)
    # A private build directory per call, so concurrent builds never share one.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix="build-") as build_dir:
        configure = [cmake, "-S", str(KERNELS_DIR), "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                     f"-DCMAKE_CUDA_COMPILER={_nvcc()}", f"-DPython3_EXECUTABLE={sys.executable}"]
        if os.environ.get("TRT_ROOT"):
            configure.append(f"-DTRT_ROOT={os.environ['TRT_ROOT']}")
        _run(configure)
        cache = (Path(build_dir) / "CMakeCache.txt").read_text()
        if "TRT_INCLUDE_DIR:PATH=" not in cache or "TRT_INCLUDE_DIR-NOTFOUND" in cache:
            raise RuntimeError("TensorRT headers (NvInferRuntime.h) not found: set TRT_ROOT to a TensorRT root "
                               "with include/, or install TensorRT's development headers")
        _run([cmake, "--build", build_dir, "--target", "iqart_plugins", "--parallel", "2"])
        staged = target.with_suffix(".so.tmp")
        shutil.copy2(Path(build_dir) / LIBRARY_NAME, staged)
        os.replace(staged, target)
    return target


@functools.cache
def load_plugin() -> Path:
    """Builds if needed and registers the plugin library with TensorRT's plugin registry (once)."""
    try:
        import tensorrt as trt
    except ImportError as error:
        raise RuntimeError("TensorRT is not installed: pip install 'iqart[trt]'") from error
    path = build_plugin()
    if trt.get_plugin_registry().load_library(str(path)) is None:
        raise RuntimeError(f"TensorRT could not load the plugin library {path}")
    return path
