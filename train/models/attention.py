"""Multi-head attention core whose queries and keys may differ, written as plain tensor math.

Both models route their attention cores through `cross_attention` so that:
- the exported ONNX graph holds a recognisable MatMul -> Softmax -> MatMul pattern that the
  TensorRT flavour replaces with one `FusedCrossAttention` node, and
- the torch backend can swap in the fused CUDA op with identical semantics.

Layout matches the fused kernel: Q (B, Nq, H*D), K and V (B, Nk, H*D) -> O (B, Nq, H*D).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from iqart.train.models.precision import full_precision

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int, float], torch.Tensor]
_implementation: AttentionFn | None = None


@contextmanager
def attention_implementation(fn: AttentionFn) -> Iterator[None]:
    """Route every `cross_attention` call to `fn(q, k, v, num_heads, scale)` inside the block.

    This is how the fused CUDA op (engine) and the ONNX plugin node (export) replace the core
    without the models knowing about either.
    """
    global _implementation
    previous, _implementation = _implementation, fn
    try:
        yield
    finally:
        _implementation = previous


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, H*D) -> (B, H, N, D)."""
    batch, tokens, width = x.shape
    return x.reshape(batch, tokens, num_heads, width // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) -> (B, N, H*D)."""
    batch, heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def cross_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float | None = None
) -> torch.Tensor:
    """O = softmax(scale * Q Kᵀ) V per head; softmax in float32 whatever the input dtype."""
    if q.shape[-1] % num_heads:
        raise ValueError(f"width {q.shape[-1]} is not divisible by num_heads={num_heads}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1] // num_heads)
    if _implementation is not None:
        return _implementation(q, k, v, num_heads, scale)
    return reference_cross_attention(q, k, v, num_heads, scale)


def reference_cross_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float
) -> torch.Tensor:
    """The plain-math core (also what an override may fall back to); logits and softmax in fp32."""
    qh, kh, vh = (split_heads(t, num_heads) for t in (q, k, v))
    with full_precision(q.device.type):  # logits in fp32, as the fused kernel accumulates them
        logits = torch.matmul(qh.float(), kh.float().transpose(-1, -2)) * scale
        weights = torch.softmax(logits, dim=-1).to(vh.dtype)
    return merge_heads(torch.matmul(weights, vh))
