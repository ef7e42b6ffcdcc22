"""Multi-head attention core whose queries and keys may differ, written as plain tensor math.

Both models route their attention cores through `cross_attention` so that:
- the exported ONNX graph holds a recognisable MatMul -> Softmax -> MatMul pattern that the
  TensorRT flavour replaces with one `FusedCrossAttention` node, and
- the torch backend can swap in the fused CUDA op with identical semantics.

Layout matches the fused kernel: Q (B, Nq, H*D), K and V (B, Nk, H*D) -> O (B, Nq, H*D).
"""

from __future__ import annotations

import math

import torch


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
    qh, kh, vh = (split_heads(t, num_heads) for t in (q, k, v))
    logits = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    weights = torch.softmax(logits.float(), dim=-1).to(vh.dtype)
    return merge_heads(torch.matmul(weights, vh))
