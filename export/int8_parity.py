"""Parity of model.int8.onnx against model.onnx, on ONNX Runtime's CPU provider and, when it is
installed, on OpenVINO (which runs the same QDQ graph with its own int8 kernels and fusions, so
its scores differ from ONNX Runtime's and are measured, not assumed).

The set is real photos (by default the ones scikit-image ships) plus degraded copies made with
degradation types the calibration never saw, and another seed, so the report is not measured on
the calibration inputs. What matters for IQA is the ranking: SRCC of int8 scores against fp32
scores (target >= 0.99), with |delta score| statistics beside it. SRCC says nothing
when the fp32 scores barely spread (as with random weights): the row is then marked n/a, as
`iqart validate` does for fp16.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from iqart.export.artifact import INT8_GRAPH
from iqart.export.int8 import iter_batches
from iqart.export.quality_images import quality_set
from iqart.export.validate import SRCC_MIN_SPAN, ParityRow
from iqart.train.metrics import srcc

INT8_MIN_SRCC = 0.99
OPENVINO_INT8_MIN_SRCC = 0.995  # OpenVINO int8 is the CPU speed path: it must rank closer
PARITY_DEGRADATIONS = [
    (kind, level)
    for kind in ("lens_blur", "jpeg2000", "impulse_noise", "darken", "quantization", "color_shift", "high_sharpen")
    for level in (0, 2, 4)
]
PARITY_SEED = 1
PARITY_BATCH = 8


@dataclass
class Int8Parity:
    images: int
    srcc: float
    mean_abs_delta: float
    p95_abs_delta: float
    max_abs_delta: float
    fp32_span: float  # max - min of the fp32 scores: SRCC needs a spread well beyond int8 noise
    runtime: str = "onnxruntime"  # what ran the int8 graph

    @property
    def srcc_meaningful(self) -> bool:
        return self.fp32_span >= SRCC_MIN_SPAN

    @property
    def min_srcc(self) -> float:
        return MIN_SRCC[self.runtime]

    def to_json(self) -> dict:
        return {**asdict(self), "srcc_meaningful": self.srcc_meaningful, "min_srcc": self.min_srcc}


MIN_SRCC = {"onnxruntime": INT8_MIN_SRCC, "openvino": OPENVINO_INT8_MIN_SRCC}  # the runtimes, with their floors


def _scores(graph: Path, images: np.ndarray, references: np.ndarray | None, runtime: str) -> np.ndarray:
    if runtime not in MIN_SRCC:
        raise ValueError(f"int8 parity runs on {', '.join(MIN_SRCC)}, not {runtime!r}")
    batches = iter_batches(images, references, PARITY_BATCH)
    if runtime == "openvino":
        import openvino

        compiled = openvino.Core().compile_model(str(graph), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return np.concatenate([compiled(feeds)[compiled.output("score")] for feeds in batches])
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["score"], feeds)[0] for feeds in batches])


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def parity_set(real: np.ndarray, fr: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, references or None): `real` and its copies under PARITY_DEGRADATIONS."""
    return quality_set(real, PARITY_DEGRADATIONS, PARITY_SEED, fr)


def int8_parity(
    artifact_dir: str | os.PathLike, images: np.ndarray, references: np.ndarray | None, runtime: str = "onnxruntime"
) -> Int8Parity:
    """Scores `images` (and `references`, FR) with model.int8.onnx on `runtime` and compares them
    with model.onnx's scores on ONNX Runtime (the fp32 reference of every int8 figure)."""
    artifact_dir = Path(artifact_dir)
    fp32 = _scores(artifact_dir / "model.onnx", images, references, "onnxruntime").astype(np.float64)
    int8 = _scores(artifact_dir / INT8_GRAPH, images, references, runtime).astype(np.float64)
    delta = np.abs(int8 - fp32)
    return Int8Parity(
        images=len(images),
        srcc=srcc(int8, fp32),
        mean_abs_delta=float(delta.mean()),
        p95_abs_delta=float(np.percentile(delta, 95)),
        max_abs_delta=float(delta.max()),
        fp32_span=float(np.ptp(fp32)),
        runtime=runtime,
    )


def parity_rows(report: Int8Parity) -> list[ParityRow]:
    """The report as `iqart validate` rows, judged by its runtime's floor (|delta| has no limit:
    it is reported, not judged)."""
    check = f"model.int8.onnx on {report.runtime} vs model.onnx"
    return [
        ParityRow(
            check,
            f"SRCC over {report.images} real + degraded images",
            report.srcc,
            f">= {report.min_srcc} (when scores span >= {SRCC_MIN_SPAN:g}; span {report.fp32_span:.3g})",
            (report.srcc >= report.min_srcc) if report.srcc_meaningful else None,
        ),
        ParityRow(check, "mean |delta score|", report.mean_abs_delta, "reported", None),
        ParityRow(check, "max |delta score|", report.max_abs_delta, "reported", None),
    ]
