"""The `FusedCrossAttention` node of the TensorRT-flavoured graph, and its NumPy reference.

TensorRT's ONNX parser hands an op it does not know to the plugin registry under the op type's
name, with the node's attributes as plugin fields: op type = plugin name, plus
`plugin_version` and `plugin_namespace`. The reference implementation lets
`onnx.reference.ReferenceEvaluator` run the same graph on a CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from onnx.reference.op_run import OpRun

from iqart.train.models.attention import reference_cross_attention

PLUGIN_NAME = "FusedCrossAttention"
PLUGIN_NAMESPACE = "iqart"
PLUGIN_VERSION = "1"
PLUGIN_DOMAIN = "iqart"  # custom ONNX domain: keeps onnx.checker's full check meaningful
TRT_GRAPH = "model.trt.onnx"  # the fp16 graph with each attention core one plugin node


class _FusedCrossAttentionExport(torch.autograd.Function):
    """Computes the reference core when traced; exports as one plugin node."""

    @staticmethod
    def forward(ctx, q, k, v, num_heads: int, scale: float):
        return reference_cross_attention(q, k, v, num_heads, scale)

    @staticmethod
    def symbolic(g, q, k, v, num_heads: int, scale: float):
        out = g.op(
            f"{PLUGIN_DOMAIN}::{PLUGIN_NAME}",
            q,
            k,
            v,
            num_heads_i=num_heads,
            scale_f=scale,
            plugin_version_s=PLUGIN_VERSION,
            plugin_namespace_s=PLUGIN_NAMESPACE,
        )
        out.setType(q.type())
        return out


def plugin_attention(q, k, v, num_heads: int, scale: float) -> torch.Tensor:
    """An `attention_implementation` that exports each attention core as a plugin node."""
    return _FusedCrossAttentionExport.apply(q, k, v, num_heads, scale)


def numpy_cross_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, num_heads: int, scale: float) -> np.ndarray:
    """What the CUDA kernel computes: fp32 softmax and accumulation, output in the input dtype."""
    batch, nq, width = q.shape
    head_dim = width // num_heads

    def split(t: np.ndarray) -> np.ndarray:
        return t.astype(np.float32).reshape(batch, t.shape[1], num_heads, head_dim).transpose(0, 2, 1, 3)

    qh, kh, vh = split(q), split(k), split(v)
    logits = (qh @ kh.transpose(0, 1, 3, 2)) * np.float32(scale)
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=-1, keepdims=True)
    out = (weights @ vh).transpose(0, 2, 1, 3).reshape(batch, nq, width)
    return out.astype(q.dtype)


class FusedCrossAttention(OpRun):
    """`onnx.reference` implementation of the plugin node."""

    op_domain = PLUGIN_DOMAIN

    def _run(self, q, k, v, num_heads=None, scale=None, plugin_version=None, plugin_namespace=None):
        return (numpy_cross_attention(q, k, v, int(num_heads), float(scale)),)
