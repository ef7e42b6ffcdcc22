"""Strongly typed fp16 conversion of an fp32 ONNX graph, with explicit fp32 islands.

TensorRT 11 has no FP16 builder flag: a strongly typed network runs each layer in the types the
graph states. So precision is decided here, node by node, and every change of precision is an
explicit Cast:
- fp16: convolutions, matmuls, the plugin node, and the elementwise work between them
  (weights are stored in fp16);
- fp32: the preprocessing (everything before the first convolution), LayerNorm, softmax and
  reductions, and the whole score head (everything downstream of the `boundary` tensor, which
  includes the normalisation of features).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FP32_OPS = frozenset(
    {
        "LayerNormalization",
        "Softmax",
        "ReduceMean",
        "ReduceSum",
        "ReduceL2",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceLogSumExp",
        "GlobalAveragePool",
    }
)
COMPUTE_OPS = frozenset({"Conv", "MatMul", "Gemm", "FusedCrossAttention"})
SHAPE_OPS = frozenset({"Shape", "Size"})  # read only the shape: any input type will do
FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    """Constant nodes become initializers, so that weights of both kinds are converted alike."""
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _inline_weight_identities(graph: onnx.GraphProto) -> None:
    """Identity(initializer) -> the initializer itself. The exporter emits these for weights
    shared by the two branches of a siamese model; left in place they would hide the weights
    from the fp16 conversion."""
    initializers = {init.name for init in graph.initializer}
    outputs = {out.name for out in graph.output}
    alias = {}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs:
            alias[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = alias.get(name, name)
    del graph.node[:]
    graph.node.extend(kept)


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = inferred.graph
    infos = list(graph.value_info) + list(graph.input) + list(graph.output)
    names = {vi.name for vi in infos if vi.type.tensor_type.elem_type == FLOAT}
    return names | {init.name for init in graph.initializer if init.data_type == FLOAT}


def _downstream(graph: onnx.GraphProto, seeds: set[str]) -> set[int]:
    """Indices of nodes that (transitively) consume any tensor in `seeds` (graph is topological)."""
    reached, tensors = set(), set(seeds)
    for index, node in enumerate(graph.node):
        if any(name in tensors for name in node.input):
            reached.add(index)
            tensors.update(node.output)
    return reached


def node_precisions(graph: onnx.GraphProto, boundary: str) -> list[int]:
    """The element type (FLOAT or FLOAT16) each node computes in."""
    head = _downstream(graph, {boundary})
    compute_outputs = {out for node in graph.node if node.op_type in COMPUTE_OPS for out in node.output}
    after_compute = _downstream(graph, compute_outputs)
    precisions = []
    for index, node in enumerate(graph.node):
        in_body = node.op_type in COMPUTE_OPS or index in after_compute
        fp32 = index in head or node.op_type in FP32_OPS or not in_body
        precisions.append(FLOAT if fp32 else HALF)
    return precisions


def convert_to_fp16(model: onnx.ModelProto, boundary: str) -> tuple[onnx.ModelProto, dict]:
    """fp16 copy of `model` with fp32 islands; `boundary` is dropped from the outputs.

    Returns the model and a report of what stays fp32 (for spec.json).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    _constants_to_initializers(graph)
    _inline_weight_identities(graph)
    floats = _float_tensors(model)
    precisions = node_precisions(graph, boundary)
    producer_type = {inp.name: FLOAT for inp in graph.input}
    initializers = {init.name: init for init in graph.initializer}
    casts: dict[tuple[str, int], str] = {}
    new_nodes: list[onnx.NodeProto] = []
    fp32_ops: Counter = Counter()

    def as_type(name: str, elem_type: int) -> str:
        if name not in floats:
            return name
        if name in initializers:
            if elem_type == FLOAT:
                return name
            key = (name, HALF)
            if key not in casts:
                half = numpy_helper.to_array(initializers[name]).astype(np.float16)
                casts[key] = f"{name}__fp16"
                graph.initializer.append(numpy_helper.from_array(half, casts[key]))
            return casts[key]
        if producer_type.get(name, FLOAT) == elem_type:
            return name
        key = (name, elem_type)
        if key not in casts:
            casts[key] = f"{name}__{'fp16' if elem_type == HALF else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], name=f"{casts[key]}/Cast", to=elem_type))
        return casts[key]

    for node, precision in zip(list(graph.node), precisions, strict=True):
        follows_inputs = node.op_type == "Cast" or any(name in floats for name in node.input)
        if node.op_type in SHAPE_OPS or not follows_inputs:
            precision = FLOAT  # untouched: its float outputs (if any) keep their own type
        for i, name in enumerate(node.input):
            if name and node.op_type not in SHAPE_OPS:
                node.input[i] = as_type(name, precision)
        if node.op_type == "Cast" and precision == HALF:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == FLOAT:
                    attr.i = HALF
        for out in node.output:
            if out in floats:
                producer_type[out] = precision
        if precision == FLOAT and node.output and node.output[0] in floats:
            fp32_ops[node.op_type] += 1
        new_nodes.append(node)

    del graph.node[:]
    graph.node.extend(new_nodes)
    drop_unused_initializers(graph)
    outputs = [out for out in graph.output if out.name != boundary]
    del graph.output[:]
    graph.output.extend(outputs)
    del graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    report = {
        "fp16": "convolutions, matmuls/GEMMs, FusedCrossAttention and the elementwise work between them; "
        "weights stored in fp16",
        "fp32": "preprocessing (cast, /255, CLIP mean/std), LayerNorm, softmax, reductions, feature normalisation "
        "and the score head",
        "fp32_boundary": boundary,
        "fp32_node_counts": dict(sorted(fp32_ops.items())),
    }
    return model, report


def drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
