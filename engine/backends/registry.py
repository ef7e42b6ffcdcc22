"""The backends' one contract, and the table that finds a backend by name.

Every backend turns uint8 RGB NHWC batches into float32 scores; the Scorer, the pipeline and the
benchmarks use only what `Backend` states. A backend is added by one row in `BACKENDS`: its
precisions (the first is the default), whether it runs an exported artifact (else the PyTorch
model), a check that says what is missing before any export starts, and its factory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from iqart.engine.backends.onnxruntime_backend import GRAPHS as ONNXRUNTIME_GRAPHS
from iqart.engine.backends.onnxruntime_backend import OnnxRuntimeBackend
from iqart.engine.backends.openvino_backend import GRAPHS as OPENVINO_GRAPHS
from iqart.engine.backends.openvino_backend import OpenVinoBackend
from iqart.engine.backends.plan_cache import DEFAULT_MAX_SIDE
from iqart.engine.backends.tensorrt_backend import TensorRTBackend
from iqart.engine.backends.tensorrt_build import cuda_device
from iqart.engine.backends.tensorrt_import import LIBRARIES
from iqart.engine.backends.tensorrt_rtx_backend import TensorRTRTXBackend
from iqart.engine.backends.torch_backend import PRECISIONS as TORCH_PRECISIONS
from iqart.engine.backends.torch_backend import TorchBackend


@runtime_checkable
class Backend(Protocol):
    name: str  # as in BACKENDS
    precision: str
    device: Any  # "cpu", "cuda" or a torch.device
    takes_cuda_tensors: bool  # batches may arrive as CUDA uint8 tensors (GPU decoding) rather than host arrays

    def __call__(self, images: Any, references: Any = None) -> np.ndarray:
        """float32 scores (N,) for uint8 (N, H, W, 3) images (and references for FR models)."""

    def explain(self, images: Any, references: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores (N,), attributes (N, K)) float32: the attributes named in the artifact's spec.json
        (the model's attribute_names) from the same run as the scores."""


@dataclass(frozen=True)
class BackendOptions:
    """The Scorer's settings that some backends read."""

    batch_size: int = 8
    max_side: int = DEFAULT_MAX_SIDE  # TensorRT profiles of native-resolution models
    attention: str | None = None  # TensorRT graph: plugin, native, unfused
    threads: int | None = None  # CPU engines' intra-op threads
    fused_attention: bool = False  # torch on CUDA: the fused op


@dataclass(frozen=True)
class BackendEntry:
    precisions: tuple[str, ...]
    runs_artifact: bool  # False: the PyTorch model itself
    create: Callable[[Any, str | None, str, BackendOptions], Backend]  # (model or artifact, device, precision, options)
    preflight: Callable[[str | None], None] = lambda device: None  # raises when it cannot run here


def _torch(model, device, precision, options) -> Backend:
    return TorchBackend(model, device, precision, options.fused_attention)


def _onnxruntime(artifact, device, precision, options) -> Backend:
    return OnnxRuntimeBackend(artifact, device, precision, options.threads)


def _openvino(artifact, device, precision, options) -> Backend:
    return OpenVinoBackend(artifact, device, precision, options.threads)


def _tensorrt(artifact, device, precision, options) -> Backend:
    return TensorRTBackend(artifact, device, options.batch_size, options.max_side, attention=options.attention)


def _tensorrt_rtx(artifact, device, precision, options) -> Backend:
    return TensorRTRTXBackend(artifact, device, options.batch_size, options.max_side, attention=options.attention)


def _tensorrt_preflight(library_name: str) -> Callable[[str | None], None]:
    def preflight(device: str | None) -> None:
        LIBRARIES[library_name].load()
        cuda_device(device, library_name)

    return preflight


BACKENDS: dict[str, BackendEntry] = {
    "onnxruntime": BackendEntry(tuple(ONNXRUNTIME_GRAPHS), True, _onnxruntime),
    "openvino": BackendEntry(tuple(OPENVINO_GRAPHS), True, _openvino),
    "torch": BackendEntry(tuple(TORCH_PRECISIONS), False, _torch),
    "tensorrt": BackendEntry(("fp16",), True, _tensorrt, _tensorrt_preflight("tensorrt")),
    "tensorrt-rtx": BackendEntry(("fp16",), True, _tensorrt_rtx, _tensorrt_preflight("tensorrt-rtx")),
}
