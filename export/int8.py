"""CPU INT8: static QDQ quantisation of model.onnx into model.int8.onnx.

Why these choices:
- QDQ format with per-channel int8 weights and uint8 activations: ONNX Runtime's CPU provider
  fuses each QuantizeLinear/DequantizeLinear pair around a Conv into an integer convolution
  (u8s8, VNNI where the CPU has it), and the graph stays a standard ONNX graph any runtime reads.
- Only convolutions over image feature maps are quantised: the CLIP encoder (stem and
  layer1..layer4, both passes of BPCLIP-FR's siamese encoder) and BPCLIP's per-scale gate and
  value convolutions, with the Relu, Add and AveragePool between them so activations stay int8
  from one convolution to the next. They hold nearly all the arithmetic (BPCLIP-NR's scales alone
  are a fifth of it). Everything else stays fp32: the in-graph preprocessing (uint8 -> CLIP-
  normalised float must not be re-quantised), the attention pool or BPCLIP's transformer, and
  the score head, where a logit scale of 100 turns any rounding of the embedding into a visible
  score change. The stem's first convolution stays fp32 too: quantising its input (the
  normalised pixels) was the largest single error on the demo weights (qualiclip-tiny: max
  |delta score| 0.13 -> 0.09 when kept), for 0.2% of the arithmetic. `keep_fp32` keeps more
  nodes in fp32 (by name) where the parity report says a layer hurts.
- Activation ranges come from calibration batches fed exactly as the graph takes them.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

CALIBRATION_BATCH = 8
# Nodes over image feature maps, as the TorchScript exporter names them (module scopes; a module
# called twice, as BPCLIP-FR's encoder is, gets "_1" on its second call: /conv1_1/, /layer1/layer1.0/conv1_1/).
FEATURE_MAP_NODE = re.compile(r"^/((conv[123]|bn[123]|relu[123]|avgpool)(_\d+)?|layer[1-4]|scales\.\d+/(gate|value))/")
FIRST_CONV = re.compile(r"^/conv1(_\d+)?/")
QUANTISED_OPS = ("Conv", "Relu", "Add", "AveragePool")


class BatchReader(CalibrationDataReader):
    """Feeds fixed batches to ONNX Runtime's calibrator, as the graph takes them."""

    def __init__(self, images: np.ndarray, references: np.ndarray | None, batch: int = CALIBRATION_BATCH):
        self._starts = iter(range(0, len(images), batch))
        self._images, self._references, self._batch = images, references, batch

    def get_next(self) -> dict | None:
        start = next(self._starts, None)
        if start is None:
            return None
        feeds = {"image": np.ascontiguousarray(self._images[start : start + self._batch])}
        if self._references is not None:
            feeds["reference"] = np.ascontiguousarray(self._references[start : start + self._batch])
        return feeds


def iter_batches(images: np.ndarray, references: np.ndarray | None, batch: int) -> Iterator[dict]:
    reader = BatchReader(images, references, batch)
    while (feeds := reader.get_next()) is not None:
        yield feeds


def quantisable_nodes(model: onnx.ModelProto, keep_fp32: Sequence[str] = ()) -> list[str]:
    """Names of the nodes to quantise: a quantised op type, over feature maps, not the first
    convolution, and matched by none of the `keep_fp32` regular expressions."""
    kept = [re.compile(pattern) for pattern in keep_fp32]
    return [
        node.name
        for node in model.graph.node
        if node.op_type in QUANTISED_OPS
        and FEATURE_MAP_NODE.match(node.name)
        and not FIRST_CONV.match(node.name)
        and not any(pattern.search(node.name) for pattern in kept)
    ]


def quantize_graph(
    fp32_graph: str | os.PathLike,
    out_path: str | os.PathLike,
    reader: CalibrationDataReader,
    keep_fp32: Sequence[str] = (),
    method: CalibrationMethod = CalibrationMethod.MinMax,
) -> list[str]:
    """Write the QDQ int8 version of `fp32_graph` to `out_path` (atomically); returns the names
    of the nodes it quantised."""
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="iqart-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # ORT's symbolic shape inference cannot follow the attention pool's Expand; ONNX shape
        # inference and ORT's graph optimisation (BatchNorm folding, constant folding) still run.
        quant_pre_process(str(fp32_graph), str(prepared), skip_symbolic_shape=True)
        nodes = quantisable_nodes(onnx.load(prepared), keep_fp32)
        if not nodes:
            raise ValueError(
                f"{fp32_graph}: no feature-map convolutions left to quantise "
                f"(node names changed, or --keep-fp32 {list(keep_fp32)} matches them all)"
            )
        staged = Path(tmp) / "int8.onnx"
        quantize_static(
            str(prepared),
            str(staged),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            op_types_to_quantize=list(QUANTISED_OPS),
            nodes_to_quantize=nodes,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        partial = out_path.with_name(f".{out_path.name}.part")
        shutil.move(staged, partial)
        os.replace(partial, out_path)
    return nodes
