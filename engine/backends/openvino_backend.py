"""The CPU speed backend: an artifact's ONNX graph compiled by OpenVINO, in fp32, bf16 or int8.

Precision is always set explicitly: OpenVINO's own CPU default is bf16 wherever the CPU has it,
which would silently change scores. What actually ran is read back from the compiled model
(its INFERENCE_PRECISION_HINT and each runtime op's precision), because OpenVINO quietly runs
fp32 on a CPU without native bf16 (AVX512_BF16 or AMX): the backend says so once and reports it
in `runtime_precision`.

int8 runs our static QDQ graph (model.int8.onnx, iqart.export.int8): OpenVINO turns its
QuantizeLinear/DequantizeLinear pairs into int8 kernels and keeps the fp32 islands we chose
for accuracy; NNCF's own quantisation of model.onnx measured faster but ranked worse than
SRCC 0.995 on qualiclip-tiny (benchmarks/RESULTS.md, CPU int8), so it is not used.

OpenVINO is fastest on static shapes, so each input shape is compiled once and kept (the
pipeline's size buckets make shapes repeat). Threads: one per physical core. A batch that
splits evenly over the CPU's streams is scored as that many concurrent requests on a model
compiled with the throughput hint (one stream per core); anything else runs as one request
with the latency hint. Measured on 2 cores (qualiclip RN50 int8, batch 8, interleaved rounds):
two concurrent requests score 1.2x the images/s of one latency-hint request, while a single
request is no faster under either hint.
"""

from __future__ import annotations

import os
import sys
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np

from iqart.engine.backends.feeds import graph_feeds
from iqart.engine.hardware import physical_cores

GRAPHS = {"fp32": "model.onnx", "bf16": "model.onnx", "int8": "model.int8.onnx"}
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8 comes from the graph's QDQ; the rest stays fp32
COMPILED_SHAPES_KEPT = 16  # native-resolution folders bring many shapes; each compiled model holds its buffers


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise ImportError(
            "the openvino backend needs OpenVINO: pip install 'iqart[openvino]' (or pip install openvino)"
        ) from None
    return openvino


def native_bf16(core) -> bool:
    """Whether this CPU runs bf16 natively (OpenVINO lists BF16 among the CPU's capabilities)."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def runtime_precisions(compiled) -> Counter:
    """How many runtime ops ran in each precision (f32, bf16, i8, u8...): what actually executed."""
    counts: Counter = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info:
            counts[str(info["runtimePrecision"].astype(str))] += 1
    return counts


class OpenVinoBackend:
    """Scores uint8 RGB NHWC batches with an artifact's graph on OpenVINO's CPU plugin."""

    name = "openvino"
    takes_cuda_tensors = False  # host arrays: the session copies them itself
    _said: set[str] = set()

    def __init__(
        self,
        artifact: str | os.PathLike,
        device: str | None = None,
        precision: str = "fp32",
        threads: int | None = None,
    ):
        if precision not in GRAPHS:
            raise ValueError(f"openvino backend: precision must be one of {', '.join(GRAPHS)}, not {precision!r}")
        if device not in (None, "cpu"):
            raise ValueError(f"openvino backend: runs on the CPU, not {device!r}")
        ov = import_openvino()
        self.graph = Path(artifact) / GRAPHS[precision]
        if not self.graph.is_file():
            raise FileNotFoundError(f"{self.graph}: missing from the artifact (re-export it)")
        self.core = ov.Core()
        self.model = self.core.read_model(str(self.graph))
        self.input_names = [port.get_any_name() for port in self.model.inputs]
        self.precision = precision
        self.device = "cpu"
        self.threads = threads or physical_cores()
        self._compiled: OrderedDict[tuple, object] = OrderedDict()
        self.runtime_precision: str | None = None  # known after the first batch is compiled

    def config(self, hint: str) -> dict:
        streams = self.threads if hint == "THROUGHPUT" else 1
        return {
            "INFERENCE_PRECISION_HINT": HINTS[self.precision],
            "PERFORMANCE_HINT": hint,
            "NUM_STREAMS": streams,
            "INFERENCE_NUM_THREADS": self.threads,
        }

    def compiled_for(self, shape: tuple[int, ...], hint: str = "LATENCY"):
        """The model compiled for one input shape (and the reference's, which is the same)."""
        key = (*shape, hint)
        if key in self._compiled:
            self._compiled.move_to_end(key)
            return self._compiled[key]
        model = self.model.clone()
        model.reshape({name: list(shape) for name in self.input_names})
        compiled = self.core.compile_model(model, "CPU", self.config(hint))
        self._check_precision(compiled)
        self._compiled[key] = compiled
        if len(self._compiled) > COMPILED_SHAPES_KEPT:
            self._compiled.popitem(last=False)
        return compiled

    def _check_precision(self, compiled) -> None:
        if self.runtime_precision is not None:
            return
        counts = runtime_precisions(compiled)
        hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # "f32" or "bf16"
        if self.precision == "int8":
            ran = "int8" if counts["i8"] else "fp32"
        elif self.precision == "bf16":
            ran = "bf16" if hint == "bf16" and counts["bf16"] else "fp32"
        else:
            ran = "fp32"
        self.runtime_precision = ran
        if ran != self.precision and self.graph.as_posix() + self.precision not in self._said:
            self._said.add(self.graph.as_posix() + self.precision)
            reason = (
                "this CPU has no native bf16 (AVX512_BF16 or AMX)"
                if self.precision == "bf16" and not native_bf16(self.core)
                else "OpenVINO chose not to"
            )
            print(f"iqart: openvino ran {ran}, not the {self.precision} asked for: {reason}", file=sys.stderr)

    def __call__(self, images: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
        return self._run(images, references, ("score",))[0]

    def explain(self, images: np.ndarray, references: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores (N,), attributes (N, K)) from one run of the graph."""
        scores, attributes = self._run(images, references, ("score", "attributes"))
        return scores, attributes

    def _run(self, images: np.ndarray, references: np.ndarray | None, outputs: tuple[str, ...]) -> list[np.ndarray]:
        feeds = graph_feeds(self.input_names, images, references)
        batch = len(feeds["image"])
        if self.threads < 2 or batch < self.threads or batch % self.threads:
            compiled = self.compiled_for(feeds["image"].shape)
            results = compiled(feeds)
            return [np.asarray(results[compiled.output(name)], dtype=np.float32) for name in outputs]
        return self._concurrent(feeds, batch // self.threads, outputs)

    def _concurrent(self, feeds: dict[str, np.ndarray], chunk: int, outputs: tuple[str, ...]) -> list[np.ndarray]:
        """The batch as equal chunks, one request each, run at once on the throughput model's streams."""
        compiled = self.compiled_for((chunk, *feeds["image"].shape[1:]), "THROUGHPUT")
        requests = []
        for start in range(0, len(feeds["image"]), chunk):
            request = compiled.create_infer_request()
            request.start_async({name: array[start : start + chunk] for name, array in feeds.items()})
            requests.append(request)
        parts: list[list[np.ndarray]] = [[] for _ in outputs]
        for request in requests:
            request.wait()
            for part, name in zip(parts, outputs, strict=True):
                part.append(np.array(request.get_tensor(compiled.output(name)).data, dtype=np.float32))
        return [np.concatenate(part) for part in parts]
