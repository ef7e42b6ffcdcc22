"""The default backend: an artifact's ONNX graph on ONNX Runtime.

The CPU provider runs with every graph optimisation on, one intra-op thread per physical core
and sequential execution (the graphs are a single chain: parallel execution only adds
scheduling). The CUDA provider is used when a CUDA device is asked for (or `device=None` finds
one) and onnxruntime-gpu is installed. The graph takes uint8 NHWC batches and does its own
preprocessing, so a call is one `session.run`. The int8 graph (static QDQ, iqart.export.int8) is a CPU
graph: it runs on the CPU provider whatever device a GPU machine would default to.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from iqart.engine.backends.feeds import graph_feeds
from iqart.engine.hardware import physical_cores

GRAPHS = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
CUDA_PROVIDER = "CUDAExecutionProvider"


def session_options(threads: int | None = None, spinning: bool = True) -> ort.SessionOptions:
    """`spinning=False` lets ORT's threads sleep as soon as a run ends: needed where other engines
    share the cores between our calls (benchmarks interleave them), at a small cost per call."""
    options = ort.SessionOptions()
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or physical_cores()
    options.inter_op_num_threads = 1
    return options


def cuda_available() -> bool:
    """onnxruntime-gpu installed and a CUDA GPU visible (the package alone lists the provider)."""
    if CUDA_PROVIDER not in ort.get_available_providers():
        return False
    import torch

    return torch.cuda.is_available()


def providers_for(device: str | None) -> list:
    """ORT providers for `device`: None picks CUDA when usable, else the CPU."""
    if device is None:
        device = "cuda" if cuda_available() else "cpu"
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind != "cuda":
        raise ValueError(f"onnxruntime backend: unknown device {device!r} (cpu, cuda or cuda:N)")
    if not cuda_available():
        raise ValueError(
            f"onnxruntime backend: device {device!r} needs onnxruntime-gpu and a CUDA GPU "
            f"(available providers: {', '.join(ort.get_available_providers())})"
        )
    return [(CUDA_PROVIDER, {"device_id": int(index or 0)}), "CPUExecutionProvider"]


class OnnxRuntimeBackend:
    """Scores uint8 RGB NHWC batches with one of an artifact's graphs."""

    name = "onnxruntime"
    takes_cuda_tensors = False  # host arrays: the session copies them itself

    def __init__(
        self,
        artifact: str | os.PathLike,
        device: str | None = None,
        precision: str = "fp32",
        threads: int | None = None,
        spinning: bool = True,
    ):
        if precision not in GRAPHS:
            raise ValueError(f"onnxruntime backend: precision must be one of {', '.join(GRAPHS)}, not {precision!r}")
        if precision == "int8":
            if device not in (None, "cpu"):
                raise ValueError(f"onnxruntime backend: the int8 graph runs on the CPU, not {device!r}")
            device = "cpu"
        self.graph = Path(artifact) / GRAPHS[precision]
        if not self.graph.is_file():
            raise FileNotFoundError(f"{self.graph}: missing from the artifact (re-export it)")
        self.precision = precision
        self.session = ort.InferenceSession(
            str(self.graph), sess_options=session_options(threads, spinning), providers=providers_for(device)
        )
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.device = "cuda" if CUDA_PROVIDER in self.session.get_providers() else "cpu"

    def __call__(self, images: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
        feeds = graph_feeds(self.input_names, images, references)
        return self.session.run(["score"], feeds)[0].astype(np.float32, copy=False)

    def explain(self, images: np.ndarray, references: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores (N,), attributes (N, K)) from one run of the graph."""
        feeds = graph_feeds(self.input_names, images, references)
        scores, attributes = self.session.run(["score", "attributes"], feeds)
        return scores.astype(np.float32, copy=False), attributes.astype(np.float32, copy=False)
