"""Finds, builds and loads libiqart_plugins.so, the TensorRT plugin library of kernels/.

Where the library comes from, first match wins:
1. `IQART_PLUGIN_LIBRARY=/path/libiqart_plugins.so`: a library built elsewhere (by a C++ user
   with TensorRT's headers, or on a build machine) is loaded as is, never recompiled;
2. the cache, `$IQART_HOME/plugins/<build key>/libiqart_plugins.so` (default ~/.cache/iqart):
   built once per version of the kernel sources, TRT_ROOT and TensorRT, then only loaded;
3. a cmake build into that cache, which needs cmake, nvcc and TensorRT's headers
   (TRT_ROOT=<root with include/>, or a system install such as Debian's libnvinfer-dev).
   `pip install tensorrt` ships no headers, so from pip alone the plugin cannot be built; the
   tensorrt backend then runs the artifact's native-attention graph instead (`plugin_status`).

The library's key (`PluginLibrary.key`) goes into every TensorRT plan's cache key: a plan keeps
the plugin's fields and the workspace size the plugin's code asked for, so a plan built with
another build of the plugin is rebuilt, not reused. TensorRT is imported only by load_plugin().
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from iqart.engine.backends.fused_op import KERNELS_DIR
from iqart.engine.backends.tensorrt_import import TENSORRT, TensorRTLibrary
from iqart.train.storage import iqart_home

LIBRARY_NAME = "libiqart_plugins.so"
LIBRARY_ENV = "IQART_PLUGIN_LIBRARY"

# Where CMakeLists.txt's find_path looks without TRT_ROOT (system packages such as libnvinfer-dev).
SYSTEM_INCLUDE_DIRS = (
    "/usr/include/x86_64-linux-gnu",
    "/usr/include/aarch64-linux-gnu",
    "/usr/include",
    "/usr/local/include",
    "/usr/local/tensorrt/include",
)


@dataclass(frozen=True)
class PluginLibrary:
    path: Path
    key: str  # build_key() for a library built here, "file-<sha256 prefix>" for IQART_PLUGIN_LIBRARY


def tensorrt_version() -> str:
    """The installed TensorRT Python bindings' version (package metadata: no import), or "none"."""
    return TENSORRT.version()


def build_key() -> str:
    """Hash of what the library is built from: kernel sources, TRT_ROOT, TensorRT version."""
    digest = hashlib.sha256()
    for path in sorted(KERNELS_DIR.rglob("*")):
        if path.is_file() and path.suffix in {".h", ".cpp", ".cu", ".txt"} and "tests" not in path.parts:
            digest.update(path.relative_to(KERNELS_DIR).as_posix().encode())
            digest.update(path.read_bytes())
    digest.update(os.environ.get("TRT_ROOT", "").encode())
    digest.update(tensorrt_version().encode())
    return digest.hexdigest()[:16]


def file_key(path: Path) -> str:
    """A prebuilt library's key: its bytes, since its sources are unknown here."""
    return "file-" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cached_library_path() -> Path:
    return iqart_home() / "plugins" / build_key() / LIBRARY_NAME


def prebuilt_library() -> PluginLibrary | None:
    """The library that needs no compiling: IQART_PLUGIN_LIBRARY, else the cache's; None if neither."""
    named = os.environ.get(LIBRARY_ENV)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise RuntimeError(f"{LIBRARY_ENV}={named}: no such file")
        return PluginLibrary(path, file_key(path))
    cached = cached_library_path()
    return PluginLibrary(cached, build_key()) if cached.is_file() else None


def tensorrt_headers() -> Path | None:
    """The include directory holding NvInferRuntime.h, looked up as CMakeLists.txt does."""
    candidates = []
    if os.environ.get("TRT_ROOT"):
        candidates.append(Path(os.environ["TRT_ROOT"]) / "include")
    candidates += [Path(directory) for directory in SYSTEM_INCLUDE_DIRS]
    return next((path for path in candidates if (path / "NvInferRuntime.h").is_file()), None)


def _nvcc() -> str | None:
    found = shutil.which("nvcc")
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    candidate = Path(cuda_home) / "bin" / "nvcc"
    return found or (str(candidate) if candidate.is_file() else None)


def build_requirements_missing() -> list[str]:
    """What building the library here lacks (empty: it can be built)."""
    missing = []
    if shutil.which("cmake") is None:
        missing.append("cmake (>= 3.18) on PATH")
    if _nvcc() is None:
        missing.append("nvcc (install the CUDA toolkit or set CUDA_HOME)")
    if tensorrt_headers() is None:
        missing.append(
            "TensorRT's headers (NvInferRuntime.h; pip's tensorrt ships none: set TRT_ROOT to a "
            "TensorRT root with include/, or install libnvinfer-dev)"
        )
    if not (KERNELS_DIR / "CMakeLists.txt").is_file():
        missing.append(f"the kernel sources ({KERNELS_DIR})")
    return missing


def plugin_status() -> tuple[bool, str]:
    """(usable, why): whether the plugin library is built or can be built here, and how."""
    try:
        library = prebuilt_library()
    except RuntimeError as exc:
        return False, str(exc)
    if library is not None:
        return True, f"plugin library {library.path}"
    missing = build_requirements_missing()
    if missing:
        return False, (
            f"the plugin library is not built and cannot be built here: needs {'; '.join(missing)} "
            f"(or {LIBRARY_ENV}=<a prebuilt {LIBRARY_NAME}>)"
        )
    return True, f"plugin library built on first use with TensorRT headers in {tensorrt_headers()}"


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise RuntimeError(f"command failed ({result.returncode}): {' '.join(command)}\n{tail}")


def build_plugin() -> PluginLibrary:
    """The library for the current sources: prebuilt if there is one, else built with cmake."""
    library = prebuilt_library()
    if library is not None:
        return library
    missing = build_requirements_missing()
    if missing:
        raise RuntimeError(f"building the TensorRT plugin needs {'; '.join(missing)}")
    target = cached_library_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    # A private build directory per call, so concurrent builds never share one.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix="build-") as build_dir:
        configure = [
            shutil.which("cmake"),
            "-S",
            str(KERNELS_DIR),
            "-B",
            build_dir,
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_CUDA_COMPILER={_nvcc()}",
            f"-DPython3_EXECUTABLE={sys.executable}",
        ]
        if os.environ.get("TRT_ROOT"):
            configure.append(f"-DTRT_ROOT={os.environ['TRT_ROOT']}")
        _run(configure)
        cache = (Path(build_dir) / "CMakeCache.txt").read_text()
        if "TRT_INCLUDE_DIR:PATH=" not in cache or "TRT_INCLUDE_DIR-NOTFOUND" in cache:
            raise RuntimeError(
                "cmake found no TensorRT headers (NvInferRuntime.h): set TRT_ROOT to a TensorRT root "
                "with include/, or install TensorRT's development headers"
            )
        _run([shutil.which("cmake"), "--build", build_dir, "--target", "iqart_plugins", "--parallel", "2"])
        staged = target.with_suffix(".so.tmp")
        shutil.copy2(Path(build_dir) / LIBRARY_NAME, staged)
        os.replace(staged, target)
    return PluginLibrary(target, build_key())


@functools.cache
def load_plugin(library: TensorRTLibrary = TENSORRT) -> PluginLibrary:
    """Finds or builds the library and registers it with `library`'s plugin registry (once).

    The plugin is compiled against TensorRT's headers (the TensorRT 11 API); TensorRT for RTX
    loads the same library through the same IPluginV3 interfaces (tests/test_tensorrt_build.py
    builds a plugin graph with it)."""
    trt = library.load()
    plugin = build_plugin()
    library.link_core_library()  # the ONNX parser dlopens it for plugin nodes
    if trt.get_plugin_registry().load_library(str(plugin.path)) is None:
        raise RuntimeError(f"{library.title} could not load the plugin library {plugin.path}")
    return plugin
