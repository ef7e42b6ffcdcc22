"""Export a zoo model to the graphs of the artifact: fp32, fp16, and the two TensorRT flavours
(attention as plugin nodes, attention as TensorRT-native `Attention` ops)."""

from __future__ import annotations

import io
import warnings

import onnx
import torch

from iqart.export.fp16 import convert_to_fp16, drop_unused_initializers
from iqart.export.inference import InferenceModule
from iqart.export.native_attention import NATIVE_GRAPH, to_native_attention
from iqart.export.plugin_node import PLUGIN_DOMAIN, plugin_attention
from iqart.train.models.attention import attention_implementation
from iqart.train.models.zoo import ModelCard

OPSET = 18
FEATURES = "features"  # the boundary output the fp16 pass keeps fp32 after, then drops
OUTPUTS = ["score", "attributes"]  # every graph's outputs (spec.json names the attributes)
EXPORTER = "torch.onnx (TorchScript exporter)"


def input_names(card: ModelCard) -> list[str]:
    return ["image", "reference"] if card.task == "fr" else ["image"]


def example_input(card: ModelCard, batch: int = 2) -> torch.Tensor:
    """A fresh random uint8 batch at the model's export size (native models: 224x224)."""
    height, width = card.resize.size if card.resize.kind == "fixed" else (224, 224)
    return torch.randint(
        0, 256, (batch, height, width, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


def _dynamic_axes(card: ModelCard) -> dict:
    dims = {0: "N", 1: "H", 2: "W"} if card.resize.kind != "fixed" else {0: "N"}
    axes = {name: dims for name in input_names(card)}
    axes.update({"score": {0: "N"}, "attributes": {0: "N"}, FEATURES: {0: "N"}})
    return axes


def export_onnx(model: torch.nn.Module, card: ModelCard, fused_attention: bool = False) -> onnx.ModelProto:
    """The fp32 graph with outputs (score, attributes, features); attention cores as plugin nodes
    if asked."""
    module = InferenceModule(model, card.task, with_features=True, with_attributes=True).eval()
    example = example_input(card)
    args = (example, example.flip(0)) if card.task == "fr" else (example,)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic: shapes stay symbolic
        if fused_attention:
            with attention_implementation(plugin_attention):
                _export(module, args, buffer, card, {PLUGIN_DOMAIN: 1})
        else:
            _export(module, args, buffer, card)
    return onnx.load_from_string(buffer.getvalue())


def _export(module, args, buffer, card: ModelCard, custom_opsets: dict | None = None) -> None:
    """Our opset domain only where plugin nodes use it (else torch warns that it is unused)."""
    torch.onnx.export(
        module,
        args,
        buffer,
        dynamo=False,
        opset_version=OPSET,
        input_names=input_names(card),
        output_names=[*OUTPUTS, FEATURES],
        dynamic_axes=_dynamic_axes(card),
        do_constant_folding=True,
        custom_opsets=custom_opsets,
    )


def without_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """A copy without the named graph output (and the nodes only it needed)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    outputs = [out for out in model.graph.output if out.name != name]
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    needed = {out.name for out in outputs}
    kept = []
    for node in reversed(model.graph.node):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(node.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    drop_unused_initializers(model.graph)
    return model


def build_graphs(model: torch.nn.Module, card: ModelCard) -> tuple[dict[str, onnx.ModelProto], dict]:
    """{"model.onnx", "model.fp16.onnx", "model.trt.onnx", "model.trt-native.onnx"} and the fp16 report."""
    plain = export_onnx(model, card)
    fused = export_onnx(model, card, fused_attention=True)
    fp16, report = convert_to_fp16(plain, FEATURES)
    trt, _ = convert_to_fp16(fused, FEATURES)
    return {
        "model.onnx": without_output(plain, FEATURES),
        "model.fp16.onnx": fp16,
        "model.trt.onnx": trt,
        NATIVE_GRAPH: to_native_attention(trt),
    }, report
