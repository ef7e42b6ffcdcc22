"""CLIP's input normalisation, shared by training, the torch backend and the exported graphs.

Every consumer starts from uint8 RGB NHWC (what decoders produce and what the ONNX graphs take)
so there is exactly one definition of the cast, scale, normalisation and layout change.
"""

from __future__ import annotations

import functools

import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@functools.lru_cache(maxsize=16)
def _mean_and_std(device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's mean and std as (1, 3, 1, 1) tensors on `device`, made once per device and dtype.

    Made on first use and reused: a forward pass that copied them from the host each time could
    not be captured as a CUDA graph (the copy synchronises the stream). Ordinary tensors, not
    inference tensors, so that training may differentiate through the division."""
    with torch.inference_mode(False), torch.no_grad():
        mean = torch.tensor(CLIP_MEAN, dtype=dtype, device=device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, dtype=dtype, device=device).view(1, 3, 1, 1)
    return mean, std


def normalize_float(images: torch.Tensor) -> torch.Tensor:
    """Float RGB NCHW in [0, 1] -> CLIP-normalised NCHW (what the reference models take)."""
    mean, std = _mean_and_std(images.device, images.dtype)
    return (images - mean) / std


def uint8_nhwc_to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (N, H, W, 3) -> float32 CLIP-normalised (N, 3, H, W).

    The cast comes first: in an exported graph it is then the first op on the uint8 input, the
    one form TensorRT accepts (it takes uint8 only as network I/O converted by a cast, and
    rejects a Transpose of it). Cast and permute commute exactly, so the numbers are the same."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3) RGB, got {tuple(images.shape)} {images.dtype}")
    return normalize_float(images.float().permute(0, 3, 1, 2) / 255.0)
