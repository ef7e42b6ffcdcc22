"""CPU INT8 in an artifact: model.int8.onnx, its report int8.json, and spec.json's record of both.

The int8 graph never ships without its report: what it was calibrated on, which nodes were
quantised and which kept in fp32, and how its scores compare with fp32 on images it was not
calibrated on (iqart.export.int8_parity). Calibration defaults to examples/images (four photos,
pristine and with blur, JPEG and noise) plus degraded copies; parity to the eight photos
scikit-image ships plus copies under other degradation types.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from iqart.export.artifact import INT8_GRAPH, read_spec, sha256_file
from iqart.export.int8 import QUANTISED_OPS, BatchReader, quantize_graph
from iqart.export.int8_parity import Int8Parity, int8_parity, openvino_available, parity_set
from iqart.export.quality_images import DEFAULT_PARITY_SOURCE, default_calibration_source, load_source, quality_set
from iqart.train.storage import write_json_atomic

REPORT = "int8.json"
# Degradations (type, level 0..4) seen during calibration: one per KADID group, mild and strong.
CALIBRATION_DEGRADATIONS = [
    (kind, level)
    for kind in ("gaussian_blur", "jpeg", "white_noise", "brighten", "pixelate", "hsv_saturation", "linear_contrast")
    for level in (1, 3)
]
CALIBRATION_SEED = 0
# Kept in fp32 by default for full-reference models (unless keep_fp32 names others): an FR score
# rests on small differences between the image's and the reference's deep features, which int8
# rounding of the last stages blurs. Measured on bpclip-fr-tiny's demo weights, 176 parity images
# (benchmarks/RESULTS.md), SRCC against fp32 on ONNX Runtime / OpenVINO: layer4 kept 0.992 / 0.991, layer3
# and layer4 kept 0.996 / 0.997 (the NR models pass with everything quantised: 0.997 and 0.999).
FR_KEEP_FP32 = ("^/layer3/", "^/layer4/")


@dataclass
class Int8Report:
    calibration_source: str
    calibration_images: int
    quantised: dict[str, int]  # op type -> nodes quantised (a Relu after a quantised Conv is folded into its range: 0)
    fp32_convs: list[str]  # convolutions left in fp32: outside the encoder, or matched by keep_fp32
    keep_fp32: list[str] = field(default_factory=list)
    parity_source: str | None = None
    parity: Int8Parity | None = None
    parity_skipped: str | None = None  # why there is no parity (e.g. scikit-image missing)
    parity_openvino: Int8Parity | None = None  # the same graph on OpenVINO, when installed

    def to_json(self) -> dict:
        data = asdict(self)
        data["parity"] = self.parity.to_json() if self.parity else None
        data["parity_openvino"] = self.parity_openvino.to_json() if self.parity_openvino else None
        data["calibration_degradations"] = [list(d) for d in CALIBRATION_DEGRADATIONS]
        return data


def add_int8_graph(
    artifact_dir: str | os.PathLike,
    calibration_source: str | None = None,
    parity_source: str | None = DEFAULT_PARITY_SOURCE,
    keep_fp32: Sequence[str] = (),
) -> Int8Report:
    """Calibrate, write artifact_dir/model.int8.onnx, measure parity (unless `parity_source` is
    None), write int8.json and record both in spec.json. `keep_fp32` (regular expressions over
    node names) defaults to FR_KEEP_FP32 for full-reference models, to nothing otherwise."""
    artifact_dir = Path(artifact_dir)
    spec = read_spec(artifact_dir)
    fr = spec["task"] == "fr"
    calibration_source = calibration_source or default_calibration_source()
    keep_fp32 = list(keep_fp32) or (list(FR_KEEP_FP32) if fr else [])
    images, references = quality_set(load_source(calibration_source), CALIBRATION_DEGRADATIONS, CALIBRATION_SEED, fr)
    nodes = set(
        quantize_graph(
            artifact_dir / "model.onnx", artifact_dir / INT8_GRAPH, BatchReader(images, references), keep_fp32
        )
    )
    graph = onnx.load(artifact_dir / INT8_GRAPH, load_external_data=False)
    by_name = {node.name: node.op_type for node in graph.graph.node}
    quantised = Counter(by_name[name] for name in nodes if name in by_name)
    kept = sorted(name for name, op in by_name.items() if op == "Conv" and name not in nodes)
    report = Int8Report(
        calibration_source,
        len(images),
        {op: quantised[op] for op in QUANTISED_OPS},
        kept,
        list(keep_fp32),
        parity_source,
    )
    if parity_source:
        try:
            parity_images = parity_set(load_source(parity_source), fr)
            report.parity = int8_parity(artifact_dir, *parity_images)
            if openvino_available():
                report.parity_openvino = int8_parity(artifact_dir, *parity_images, runtime="openvino")
        except ValueError as exc:
            report.parity_skipped = str(exc)
    write_json_atomic(artifact_dir / REPORT, report.to_json())
    spec["sha256"][INT8_GRAPH] = sha256_file(artifact_dir / INT8_GRAPH)
    spec["int8"] = {"graph": INT8_GRAPH, "report": REPORT}
    write_json_atomic(artifact_dir / "spec.json", spec)
    return report
