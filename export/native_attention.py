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

`softmax_precision` is set to FLOAT to state the contract (fp32 softmax, as the plugin kernel
and the fp16 graph do); TensorRT's importer does not read it, and IAttention's fused kernels
accumulate in fp32 anyway. The parser builds the layer not decomposable by default: TensorRT
then has to find a fused kernel for each core's shapes (QualiCLIP: 1 query over HW+1 keys,
32 heads of 64; BPCLIP: grid x grid, 4 heads of 64). Whether it does on a given GPU is checked
only by building a plan there (`iqart build --attention native`).

Made by rewriting model.trt.onnx rather than by a third export, so that the two TensorRT graphs
differ in nothing but their attention nodes.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from iqart.export.plugin_node import PLUGIN_DOMAIN, PLUGIN_NAME

NATIVE_GRAPH = "model.trt-native.onnx"
NATIVE_OPSET = 23  # the first opset with the Attention op


def _attribute(node: onnx.NodeProto, name: str):
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def native_attention_node(plugin: onnx.NodeProto) -> onnx.NodeProto:
    """The `Attention` node computing what one FusedCrossAttention node computes."""
    heads, scale = int(_attribute(plugin, "num_heads")), float(_attribute(plugin, "scale"))
    return helper.make_node("Attention", list(plugin.input), list(plugin.output), name=plugin.name or None,
                            q_num_heads=heads, kv_num_heads=heads, scale=scale, softmax_precision=TensorProto.FLOAT)


def to_native_attention(trt_graph: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the plugin graph with every plugin node an `Attention` op, at opset 23.

    Raising the opset from 18 to 23 leaves the other ops' meaning unchanged: the versions in
    between only add types or attributes whose defaults are the old behaviour (Cast's
    `saturate`, Pad's `wrap` mode, pooling dilations); the checker and the CPU parity check
    (iqart validate) confirm it on each export.
    """
    model = onnx.ModelProto.FromString(trt_graph.SerializeToString())
    nodes = [native_attention_node(n) if n.domain == PLUGIN_DOMAIN and n.op_type == PLUGIN_NAME else n
             for n in model.graph.node]
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


def attention_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Attention" and n.domain in ("", "ai.onnx")]
