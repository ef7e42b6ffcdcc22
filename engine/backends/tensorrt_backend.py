"""The tensorrt backend: FP16 plans built from one of an artifact's TensorRT graphs, run on a CUDA stream.

Written against the TensorRT 11 API: tensors are addressed by name (`set_input_shape`,
`set_tensor_address`) and run with `execute_async_v3`. Device buffers are torch CUDA tensors; no
pycuda. Plans come from the artifact's plan cache (iqart.engine.backends.plan_cache), built on
first use unless told not to (iqart.engine.backends.tensorrt_build: graphs, attention modes,
build settings). The tensorrt-rtx backend (iqart.engine.backends.tensorrt_rtx_backend) is this
class on TensorRT for RTX. TensorRT is imported only inside functions, so the rest of iqart
works without it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from iqart.engine.backends.feeds import graph_feeds
from iqart.engine.backends.plan_cache import DEFAULT_MAX_SIDE, PlanCache, PlanKey, PlanMismatchError, profile_for
from iqart.engine.backends.tensorrt_build import (
    ATTENTION_MODES,
    _Logger,
    build_plan,
    cached_or_built_plan,
    choose_attention,
    cuda_device,
)
from iqart.engine.backends.tensorrt_import import TENSORRT, TensorRTUnavailableError, import_tensorrt
from iqart.export.spec_files import read_spec

__all__ = [
    "ATTENTION_MODES",
    "TensorRTBackend",
    "TensorRTUnavailableError",
    "build_plan",
    "choose_attention",
    "cuda_device",
    "import_tensorrt",
]


class TensorRTBackend:
    """Scores uint8 RGB NHWC batches with a cached FP16 plan (built on first use if `build`).

    `attention`: "plugin", "native", "unfused" or None (the plugin if usable here, else native;
    see `attention` and `attention_reason` after construction)."""

    name = "tensorrt"
    precision = "fp16"
    library = TENSORRT
    takes_cuda_tensors = True  # a GPU-decoded batch is fed where it lies (no trip through host memory)

    def __init__(
        self,
        artifact: str | os.PathLike,
        device: str | None = None,
        batch_size: int = 8,
        max_side: int = DEFAULT_MAX_SIDE,
        build: bool = True,
        attention: str | None = None,
    ):
        trt = self.library.load()
        self.artifact = Path(artifact)
        self.device = cuda_device(device, self.name)
        self.attention, self.attention_reason = choose_attention(attention, self.artifact)
        print(f"{self.name}: {self.attention} attention ({self.attention_reason})", file=sys.stderr)
        spec = read_spec(self.artifact)
        self.profile = profile_for(spec, (1, batch_size, batch_size), max_side)
        key, env = cached_or_built_plan(
            self.artifact, self.profile, str(self.device), self.attention, self.library, build
        )
        cache = PlanCache(self.artifact)
        self.cache, self.key = cache, key
        self.plan_path = cache.plan_path(key)
        self.profile = key.profile  # the plan's own range, which may be wider than asked
        self.check_gpu(key)
        with torch.cuda.device(self.device):
            self.engine = trt.Runtime(_Logger.get(trt)).deserialize_cuda_engine(cache.load(key, env))
            if self.engine is None:
                raise PlanMismatchError(f"{trt.__name__} could not deserialise {self.plan_path}; delete it and rebuild")
            self.context = self.create_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        for output in ("score", "attributes"):
            if output not in names or self.engine.get_tensor_dtype(output) != trt.DataType.FLOAT:
                raise PlanMismatchError(f"{self.plan_path}: no float32 output {output!r} (rebuild it)")
        self.attribute_count = int(self.engine.get_tensor_shape("attributes")[1])

    def check_gpu(self, key: PlanKey) -> None:
        """TensorRT's plans are keyed by the GPU itself: nothing more to check."""

    def create_context(self):
        return self.engine.create_execution_context()

    def __call__(
        self, images: np.ndarray | torch.Tensor, references: np.ndarray | torch.Tensor | None = None
    ) -> np.ndarray:
        return self.explain(images, references)[0]

    def explain(
        self, images: np.ndarray | torch.Tensor, references: np.ndarray | torch.Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores (N,), attributes (N, K)): a plan computes both (every output needs a buffer)."""
        batch, height, width = images.shape[:3]
        problem = self.profile.accepts(batch, height, width)
        if problem:
            raise ValueError(problem)
        feeds = graph_feeds(self.input_names, images, references)
        with torch.cuda.device(self.device):
            # tensors made on the caller's stream (GPU decoding) must be complete before ours reads them
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            inputs = {name: torch.as_tensor(array, device=self.device) for name, array in feeds.items()}
            scores = torch.empty(batch, dtype=torch.float32, device=self.device)
            attributes = torch.empty((batch, self.attribute_count), dtype=torch.float32, device=self.device)
            for name, tensor in inputs.items():
                if not self.context.set_input_shape(name, tuple(tensor.shape)):
                    raise ValueError(f"{self.plan_path} does not accept {name} of shape {tuple(tensor.shape)}")
                self.context.set_tensor_address(name, tensor.data_ptr())
            self.context.set_tensor_address("score", scores.data_ptr())
            self.context.set_tensor_address("attributes", attributes.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError(f"{self.name} failed to run {self.plan_path} on a batch of {batch}x{height}x{width}")
            result = scores.cpu().numpy(), attributes.cpu().numpy()  # synchronises: the inputs lived until then
        self.after_batch((height, width))
        return result

    def after_batch(self, size: tuple[int, int]) -> None:
        """Hook for work after a batch of `size` (TensorRT-RTX saves its runtime cache)."""
