"""The two TensorRTs iqart builds plans with, how to import each, and refusing too old a version.

- TensorRT (`pip install 'iqart[trt]'`): the module `tensorrt` (the CUDA-versioned frontend wheel,
  e.g. tensorrt-cu13, re-exporting `tensorrt_bindings`), or `tensorrt_bindings` alone with
  libnvinfer from a system package. Version 11 or newer: strongly typed networks, IPluginV3,
  IAttention. Builds on the GPU it will run on; serves every CUDA GPU it supports, Hopper included.
- TensorRT for RTX (`pip install 'iqart[trt-rtx]'`): the module `tensorrt_rtx`, the same builder,
  parser and plugin API. Its builder runs ahead of time on any machine, a CPU-only one included;
  the plan is JIT-specialised on the GPU (its `ComputeCapability` enum lists SM75-SM89, SM120 and
  SM121, no Hopper; iqart's plans target iqart.engine.backends.tensorrt_build.RTX_TARGETS).

Kept apart from the backends so that the plugin loader can use it without importing them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path


class TensorRTUnavailableError(RuntimeError):
    """TensorRT or a CUDA GPU is missing; the message says which and how to get it."""


@dataclass(frozen=True)
class TensorRTLibrary:
    """One TensorRT flavour: its backend name, Python modules, wheels and oldest usable version."""

    name: str  # the backend's name and the plan key's `library`
    title: str  # for messages
    modules: tuple[str, ...]  # importable names, first found wins
    distributions: tuple[str, ...]  # wheels whose metadata gives the version without an import
    min_major: int
    install: str
    core_library: str  # the unversioned name its ONNX parser dlopens for plugin nodes
    libs_package: str  # the wheel's package holding that library as <name>.<major>

    def load(self):
        """The module, or TensorRTUnavailableError saying what is wrong."""
        for module in self.modules:
            if importlib.util.find_spec(module) is None:
                continue
            try:
                trt = importlib.import_module(module)
            except (ImportError, OSError) as exc:  # installed, but its shared libraries do not load
                raise TensorRTUnavailableError(
                    f"{self.title}'s Python module {module!r} is installed but does not load ({exc}); it needs "
                    f"{self.title}'s libraries: {self.install}"
                ) from None
            break
        else:
            raise TensorRTUnavailableError(
                f"the {self.name} backend needs {self.title} (>= {self.min_major}): {self.install}"
            )
        version = str(getattr(trt, "__version__", "0"))
        if _major(version) < self.min_major:
            raise TensorRTUnavailableError(
                f"{self.title} {version} found (module {trt.__name__}); iqart needs "
                f"{self.title} {self.min_major} or newer (strongly typed networks, "
                f"IPluginV3, IAttention)"
            )
        return trt

    def installed(self) -> bool:
        return any(importlib.util.find_spec(module) is not None for module in self.modules)

    def version(self) -> str:
        """The installed bindings' version from package metadata (no import), or "none"."""
        for dist in self.distributions:
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                continue
        return "none"

    def link_core_library(self) -> None:
        """Makes the unversioned core library name resolve next to the wheel's libraries.

        The ONNX parser dlopens `core_library` (e.g. libtensorrt_rtx.so) by that bare name when it
        imports a plugin node, through its own RPATH ($ORIGIN); the wheel ships only the
        versioned file (libtensorrt_rtx.so.1), so the parse ends in std::terminate, inside the
        parser, right after "Successfully created plugin". A symbolic link beside it is what a
        system install's -dev package would provide. Nothing to do where the name resolves.
        """
        spec = importlib.util.find_spec(self.libs_package)
        if spec is None or not spec.submodule_search_locations:
            return  # not a wheel install: a system install has its own links
        directory = Path(next(iter(spec.submodule_search_locations)))
        link = directory / self.core_library
        if link.exists():
            return
        versioned = sorted(directory.glob(f"{self.core_library}.*"))
        if not versioned:
            return
        try:
            os.symlink(versioned[0].name, link)
        except FileExistsError:
            pass  # made by another process meanwhile
        except OSError as exc:
            raise TensorRTUnavailableError(
                f"{self.title}'s ONNX parser needs {link} to load plugin graphs and it cannot be made here ({exc}): "
                f"ln -s {versioned[0].name} {link}, or run without the plugin (--attention native)"
            ) from None


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


TENSORRT = TensorRTLibrary(
    name="tensorrt",
    title="TensorRT",
    modules=("tensorrt", "tensorrt_bindings"),
    distributions=("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings", "tensorrt-cu12-bindings"),
    min_major=11,
    install="pip install 'iqart[trt]' on a machine with an NVIDIA GPU",
    core_library="libnvinfer.so",
    libs_package="tensorrt_libs",
)
TENSORRT_RTX = TensorRTLibrary(
    name="tensorrt-rtx",
    title="TensorRT for RTX",
    modules=("tensorrt_rtx",),
    distributions=("tensorrt-rtx-cu13", "tensorrt-rtx-cu12", "tensorrt_rtx_cu13_bindings"),
    min_major=1,
    install="pip install 'iqart[trt-rtx]' (builds on any machine; runs on SM80-SM89 and SM120 GPUs)",
    core_library="libtensorrt_rtx.so",
    libs_package="tensorrt_rtx_libs",
)
LIBRARIES = {library.name: library for library in (TENSORRT, TENSORRT_RTX)}


def import_tensorrt():
    """The TensorRT module (11 or newer), or TensorRTUnavailableError saying what is wrong."""
    return TENSORRT.load()
