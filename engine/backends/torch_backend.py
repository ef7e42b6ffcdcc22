"""The reference backend: the PyTorch model itself, fed the same uint8 batches as every backend."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from iqart.engine.backends.fused_op import fused_cross_attention
from iqart.train.models.attention import attention_implementation
from iqart.train.models.precision import fp32_head
from iqart.train.models.preprocess import uint8_nhwc_to_model_input

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
FUSED_PRECISIONS = ("fp32", "fp16")  # what the fused kernel computes in (kernels/torch_op.cpp): no bf16


def check_fused_precision(precision: str) -> None:
    """Refuse bf16 with the fused op when the backend is made, not on the first batch."""
    if precision not in FUSED_PRECISIONS:
        raise ValueError(
            f"the fused attention op runs {' or '.join(FUSED_PRECISIONS)}, not {precision}: its kernel has "
            f"no {precision} path; use precision='fp16' with fused_attention, or {precision} without it"
        )


class TorchBackend:
    """Scores uint8 RGB NHWC batches with the PyTorch model (fp32, or autocast on request).

    `device=None` picks CUDA when available. `fused_attention=True` routes every attention core
    through iqart's fused CUDA op on CUDA devices (the reference math elsewhere).
    """

    name = "torch"

    def __init__(
        self, model: nn.Module, device: str | None = None, precision: str = "fp32", fused_attention: bool = False
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if fused_attention:
            check_fused_precision(precision)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = precision
        self.model = model.to(self.device).eval()
        self.fused_attention = fused_attention

    @property
    def takes_cuda_tensors(self) -> bool:
        """On a CUDA device, batches may come as CUDA uint8 NHWC tensors (GPU-decoded images)."""
        return self.device.type == "cuda"

    @torch.inference_mode()
    def __call__(
        self, images: np.ndarray | torch.Tensor, references: np.ndarray | torch.Tensor | None = None
    ) -> np.ndarray:
        with self._running():
            scores = self.model(*self._inputs(images, references))
        return scores.float().cpu().numpy()

    @torch.inference_mode()
    def explain(
        self, images: np.ndarray | torch.Tensor, references: np.ndarray | torch.Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores (N,), attributes (N, K)): the model's explain_head, in float32 as its head."""
        with self._running():
            features = self.model.embed(*self._inputs(images, references))
            scores, attributes = fp32_head(self.model.explain_head, features)
        return scores.float().cpu().numpy(), attributes.float().cpu().numpy()

    def _inputs(self, images, references) -> list[torch.Tensor]:
        inputs = [uint8_nhwc_to_model_input(torch.as_tensor(images, device=self.device))]
        if references is not None:
            inputs.append(uint8_nhwc_to_model_input(torch.as_tensor(references, device=self.device)))
        return inputs

    def _running(self) -> contextlib.ExitStack:
        """The precision (autocast) and attention implementation this backend runs with."""
        stack = contextlib.ExitStack()
        if self.fused_attention:
            stack.enter_context(attention_implementation(fused_cross_attention))
        dtype = PRECISIONS[self.precision]
        stack.enter_context(torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None))
        return stack
