"""The variants `iqart bench` compares, each built as a callable (uint8 NHWC images[, references])
-> scores, like every engine backend, so the harness times them all the same way.

    torch                   the PyTorch reference, eager fp32: the baseline every speed-up is against
    torch-fp16              the same under fp16 autocast (CUDA)
    torch-fp16-fused-graph  fp16 autocast, iqart's fused attention op, replayed as a CUDA graph (CUDA)
    onnxruntime             model.onnx (fp32) on ONNX Runtime
    onnxruntime-int8        model.int8.onnx (static QDQ int8, calibrated on first use) on ONNX Runtime's CPU provider
    openvino                model.onnx compiled by OpenVINO in fp32 (CPU)
    openvino-bf16           the same with bf16 inference precision (runs fp32 where the CPU has no native bf16)
    openvino-int8           model.int8.onnx compiled by OpenVINO (CPU)
    tensorrt                model.trt.onnx built into a TensorRT FP16 plan (CUDA, TensorRT)
    tensorrt-rtx            the same graphs as a TensorRT for RTX plan, JIT-specialised (Ampere, Ada, Blackwell RTX)

A variant that cannot run here raises Unavailable with the reason; the harness reports it and
goes on with the others.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from iqart.engine.artifact_cache import cached_artifact, cached_int8_graph
from iqart.engine.backends.fused_op import fused_cross_attention
from iqart.engine.backends.fused_op import unavailable_reason as fused_op_unavailable
from iqart.engine.backends.onnxruntime_backend import OnnxRuntimeBackend
from iqart.engine.backends.torch_backend import TorchBackend
from iqart.train.models.attention import attention_implementation
from iqart.train.models.checkpoints import save_checkpoint
from iqart.train.models.preprocess import uint8_nhwc_to_model_input
from iqart.train.models.zoo import build_model, get_card, load_model
from iqart.train.storage import iqart_home

Runner = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]
VARIANTS = (
    "torch",
    "torch-fp16",
    "torch-fp16-fused-graph",
    "onnxruntime",
    "onnxruntime-int8",
    "openvino",
    "openvino-bf16",
    "openvino-int8",
    "tensorrt",
    "tensorrt-rtx",
)
BASELINE = "torch"
PER_BATCH_SIZE = (
    "tensorrt",
    "tensorrt-rtx",
)  # built once per batch size (a plan is optimised for one); the others once per model


class Unavailable(RuntimeError):
    """This variant cannot run on this machine; the message says why."""


@dataclass(frozen=True)
class BenchWeights:
    path: Path
    random: bool  # True: random weights written for the benchmark (speed does not depend on values)


def randomise_batchnorm(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine terms, in place. A fresh CLIP ResNet zeroes each
    block's last BatchNorm, which silences the residual branches: activations would then be
    nothing like a trained network's, and neither would int8 calibration ranges."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                module.bias.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return model.eval()


def bench_weights(name: str, weights: str | os.PathLike | None = None, seed: int = 0) -> BenchWeights:
    """An explicit file; else the demo or already-downloaded official weights; else random
    weights, written once under $IQART_HOME/bench/ so their artifact is cached like any other.
    Never downloads: a benchmark must not depend on the network."""
    card = get_card(name)
    if weights is not None:
        return BenchWeights(Path(weights), random=False)
    if card.demo_weights.is_file():
        return BenchWeights(card.demo_weights, random=False)
    if card.official_url:
        cached = iqart_home() / "weights" / Path(card.official_url).name
        if cached.is_file():
            return BenchWeights(cached, random=False)
    path = iqart_home() / "bench" / f"{name}-random-seed{seed}.pt"
    if not path.is_file():
        save_checkpoint(path, name, randomise_batchnorm(build_model(name, seed), seed).state_dict())
    return BenchWeights(path, random=True)


class CudaGraphRunner:
    """fp16 autocast with the fused attention op, captured once per input shape as a CUDA graph
    and replayed: one launch per batch instead of hundreds, which is what small batches need."""

    def __init__(self, model: nn.Module, device: torch.device):
        self.model = model.to(device).eval()
        self.device = device
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], torch.Tensor]] = {}

    def _forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        # cache_enabled=False: autocast's weight-cast cache must not outlive a graph capture
        with (
            attention_implementation(fused_cross_attention),
            torch.autocast("cuda", dtype=torch.float16, cache_enabled=False),
        ):
            return self.model(*(uint8_nhwc_to_model_input(x) for x in inputs))

    @torch.inference_mode()
    def _capture(self, shapes: tuple) -> tuple:
        static = [torch.zeros(shape, dtype=torch.uint8, device=self.device) for shape in shapes]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
            for _ in range(3):
                self._forward(static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._forward(static)
        return graph, static, out

    @torch.inference_mode()
    def __call__(self, images: np.ndarray, references: np.ndarray | None = None) -> np.ndarray:
        arrays = [images] if references is None else [images, references]
        key = tuple(a.shape for a in arrays)
        if key not in self._graphs:
            self._graphs[key] = self._capture(key)
        graph, static, out = self._graphs[key]
        for buffer, array in zip(static, arrays, strict=True):
            buffer.copy_(torch.from_numpy(array))
        graph.replay()
        return out.float().cpu().numpy()


def _cuda_device(device: str | None, variant: str) -> torch.device:
    if not torch.cuda.is_available():
        raise Unavailable(f"{variant} needs a CUDA GPU (torch.cuda.is_available() is False)")
    chosen = torch.device(device or "cuda")
    if chosen.type != "cuda":
        raise Unavailable(f"{variant} runs on CUDA devices, not {chosen}")
    return chosen


def build_runner(variant: str, name: str, weights: Path, device: str | None, batch_size: int, threads: int) -> Runner:
    """The callable for `variant` of model `name` with these weights, or Unavailable. Only
    the TensorRT variants depend on `batch_size` (a plan is optimised for it); the others take any batch."""
    if variant in ("torch-fp16", "torch-fp16-fused-graph"):
        cuda = _cuda_device(device, variant)  # checked before any weights are read
        if variant == "torch-fp16":
            return TorchBackend(load_model(name, weights), str(cuda), "fp16")
        reason = fused_op_unavailable()
        if reason:
            raise Unavailable(f"{variant}: the fused attention op is unavailable: {reason}")
        return CudaGraphRunner(load_model(name, weights), cuda)
    if variant == "torch":
        return TorchBackend(load_model(name, weights), device, "fp32")
    if variant in ("tensorrt", "tensorrt-rtx"):
        from iqart.engine.backends.registry import BACKENDS, BackendOptions
        from iqart.engine.backends.tensorrt_import import TensorRTUnavailableError

        entry = BACKENDS[variant]
        try:  # before the export below: say what is missing without spending minutes first
            entry.preflight(device)
            return entry.create(cached_artifact(name, weights), device, "fp16", BackendOptions(batch_size))
        except TensorRTUnavailableError as exc:
            raise Unavailable(str(exc)) from None
    if variant == "onnxruntime":
        return OnnxRuntimeBackend(cached_artifact(name, weights), device, "fp32", threads, spinning=False)
    if variant == "onnxruntime-int8":
        if device not in (None, "cpu"):
            raise Unavailable(f"{variant} is a CPU graph (QDQ int8 for ONNX Runtime's CPU provider)")
        artifact = cached_artifact(name, weights)
        cached_int8_graph(artifact)
        return OnnxRuntimeBackend(artifact, "cpu", "int8", threads, spinning=False)
    if variant.startswith("openvino"):
        return _openvino_runner(variant, name, weights, device, threads)
    raise ValueError(f"unknown backend {variant!r}; available: {', '.join(VARIANTS)}")


def _openvino_runner(variant: str, name: str, weights: Path, device: str | None, threads: int) -> Runner:
    from iqart.engine.backends.openvino_backend import OpenVinoBackend, import_openvino

    if device not in (None, "cpu"):
        raise Unavailable(f"{variant} runs on the CPU, not {device}")
    try:
        import_openvino()
    except ImportError as exc:
        raise Unavailable(f"{variant}: {exc}") from None
    precision = variant.partition("-")[2] or "fp32"
    artifact = cached_artifact(name, weights)
    if precision == "int8":
        cached_int8_graph(artifact)
    return OpenVinoBackend(artifact, "cpu", precision, threads)
