"""model.trt-native.onnx: the fp16 TensorRT graph with each attention core as an ONNX `Attention`
op (opset 23), the form TensorRT fuses with its own kernels, so no plugin is needed.

Why the `Attention` op and not a MatMul-Softmax-MatMul chain:
- TensorRT (10.15 and later, 11) has a first-class fused attention layer, `IAttention`
  (`INetworkDefinition::addAttention`), which its documentation ("Fused Attention") recommends
  over letting the builder discover the pattern in primitive layers. The ONNX parser
  (onnx-tensorrt's `Attention` importer) maps opset-23 `Attention` straight to it: 3-D inputs
  (B, S, heads*D) are reshaped and transposed to (B, heads, S, D) using `q_num_heads` and
  `kv_num_heads`, and the `scale` attribute is applied as sqrt(scale) to Q and to K, which is
  the pre-scaling TensorRT requires for its fused kernels.
- The primitive chain is fused only if it matches TensorRT's pattern: Q or K scaled *before*
  the first batched matmul, and no precision change inside. Our fp16 graph scales the logits
  after Q·Kᵀ and runs the softmax in fp32 between two Casts (the precision the kernel promises),
  so that chain would not be matched; rewriting it to match would change the numerics of the
  reference graph instead of just the layer TensorRT picks.
- The op is also standard ONNX, so the same graph is checked on the CPU: ONNX Runtime (1.2x+) and
  onnx.reference run opset-23 `Attention` (iqart.export.validate, fp16 tolerance).

The node carries no `softmax_precision`: TensorRT's importer rejects any graph that sets it
("Setting softmax precision is not supported in TensorRT Attention"). What that attribute was
for, logits that stay inside fp16's range, is kept another way every runtime honours: Q is
multiplied by the scale before the op (a separate Mul, exact for a power-of-two scale such as
1/sqrt(64)) and the op's own `scale` is 1. The product Q·Kᵀ then never exists unscaled, where
QualiCLIP's pool logits would exceed fp16's 65504; TensorRT's fused kernels accumulate in fp32
anyway. The parser builds the layer not decomposable by default: TensorRT then has to find a
fused kernel for each core's shapes (QualiCLIP: 1 query over HW+1 keys, 32 heads of 64; BPCLIP:
grid x grid, 4 heads of 64). tests/test_tensorrt_build.py builds it with
TensorRT for RTX; whether a GPU has the kernel is checked by building a plan there.

Made by rewriting model.trt.onnx rather than by a third export, so that the two TensorRT graphs
differ in nothing but their attention nodes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from iqart.export.plugin_node import PLUGIN_DOMAIN, PLUGIN_NAME

NATIVE_GRAPH = "model.trt-native.onnx"
NATIVE_OPSET = 23  # the first opset with the Attention op


def _attribute(node: onnx.NodeProto, name: str):
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def native_attention_nodes(plugin: onnx.NodeProto, dtype: int) -> tuple[list[onnx.NodeProto], onnx.TensorProto]:
    """The Mul (Q times the scale) and `Attention` node computing what one FusedCrossAttention
    node computes, and the scale's initializer (in `dtype`, Q's element type)."""
    heads, scale = int(_attribute(plugin, "num_heads")), float(_attribute(plugin, "scale"))
    name = plugin.name or plugin.output[0]
    q, k, v = plugin.input
    factor = numpy_helper.from_array(np.array(scale, dtype=helper.tensor_dtype_to_np_dtype(dtype)), f"{name}/q_scale")
    scaled_q = f"{name}/q_scaled"
    mul = helper.make_node("Mul", [q, factor.name], [scaled_q], name=f"{name}/ScaleQ")
    attention = helper.make_node(
        "Attention",
        [scaled_q, k, v],
        list(plugin.output),
        name=plugin.name or None,
        q_num_heads=heads,
        kv_num_heads=heads,
        scale=1.0,
    )
    return [mul, attention], factor


def to_native_attention(trt_graph: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the plugin graph with every plugin node an `Attention` op, at opset 23.

    Raising the opset from 18 to 23 leaves the other ops' meaning unchanged: the versions in
    between only add types or attributes whose defaults are the old behaviour (Cast's
    `saturate`, Pad's `wrap` mode, pooling dilations); the checker and the CPU parity check
    (iqart validate) confirm it on each export.
    """
    model = onnx.ModelProto.FromString(trt_graph.SerializeToString())
    types = _element_types(model)
    nodes = []
    for node in model.graph.node:
        if node.domain == PLUGIN_DOMAIN and node.op_type == PLUGIN_NAME:
            replacement, factor = native_attention_nodes(node, types[node.input[0]])
            nodes += replacement
            model.graph.initializer.append(factor)
        else:
            nodes.append(node)
    if any(n.domain == PLUGIN_DOMAIN for n in nodes):
        raise ValueError(f"unexpected {PLUGIN_DOMAIN!r} nodes other than {PLUGIN_NAME}")
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    opsets = [o for o in model.opset_import if o.domain not in ("", "ai.onnx", PLUGIN_DOMAIN)]
    del model.opset_import[:]
    model.opset_import.extend([helper.make_opsetid("", NATIVE_OPSET), *opsets])
    model.ir_version = max(model.ir_version, 10)  # opset 23 needs IR version 10 or later (ONNX 1.18+)
    del model.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    return {vi.name: vi.type.tensor_type.elem_type for vi in [*graph.value_info, *graph.input, *graph.output]}


def attention_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Attention" and n.domain in ("", "ai.onnx")]
