"""Importing TensorRT's Python bindings, whichever way they were installed, and refusing < 11.

`pip install tensorrt` installs the module `tensorrt` (from the CUDA-versioned frontend wheel,
e.g. tensorrt-cu13), which re-exports `tensorrt_bindings`. A bindings-only install (the
tensorrt-cu13-bindings wheel with libnvinfer from a system package) has `tensorrt_bindings`
and no `tensorrt`. Both are the same API. Kept apart from the backend so that the plugin loader
can use it without importing the backend (and so without a cycle).
"""

from __future__ import annotations

import importlib
import importlib.util

MIN_TENSORRT_MAJOR = 11
MODULES = ("tensorrt", "tensorrt_bindings")


class TensorRTUnavailableError(RuntimeError):
    """TensorRT or a CUDA GPU is missing; the message says which and how to get it."""


def import_tensorrt():
    """The TensorRT module (11 or newer), or TensorRTUnavailableError saying what is wrong."""
    for name in MODULES:
        if importlib.util.find_spec(name) is None:
            continue
        try:
            trt = importlib.import_module(name)
        except (ImportError, OSError) as exc:  # installed, but its shared libraries do not load
            raise TensorRTUnavailableError(
                f"TensorRT's Python module {name!r} is installed but does not load ({exc}); it needs TensorRT's "
                f"libraries: pip install 'iqart[trt]', or libnvinfer {MIN_TENSORRT_MAJOR} on the library path") from None
        break
    else:
        raise TensorRTUnavailableError(f"the tensorrt backend needs TensorRT (>= {MIN_TENSORRT_MAJOR}): "
                                       "pip install 'iqart[trt]' on a machine with an NVIDIA GPU")
    version = str(getattr(trt, "__version__", "0"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_TENSORRT_MAJOR:
        raise TensorRTUnavailableError(f"TensorRT {version} found (module {trt.__name__}); iqart needs TensorRT "
                                       f"{MIN_TENSORRT_MAJOR} or newer (strongly typed networks, IPluginV3, IAttention)")
    return trt
