"""`iqart validate`: parity of an artifact's graphs against the PyTorch reference.

Inputs are real images (examples/ or --images) and fresh random ones, never zeros. Tolerances
(docs/design.md):
- model.onnx on ONNX Runtime vs torch fp32: relative score error <= 1e-5;
- model.fp16.onnx on ONNX Runtime vs torch fp32: |delta score| <= 2e-3 and SRCC >= 0.999;
- model.trt.onnx run by onnx.reference with the NumPy FusedCrossAttention vs model.fp16.onnx:
  |delta score| <= 2e-3 (slow: small inputs only);
- model.trt-native.onnx (opset-23 Attention ops) on ONNX Runtime vs torch fp32: |delta score|
  <= 2e-3, as the fp16 graph; where this ONNX Runtime cannot run opset-23 Attention, on
  onnx.reference against model.fp16.onnx with the small inputs of the plugin-graph check.
SRCC is only meaningful when the scores spread well beyond fp16 noise; when they span less than
SRCC_MIN_SPAN (as random weights do) the row says so instead of passing or failing.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from onnx.reference import ReferenceEvaluator
from PIL import Image, ImageOps

from iqart.export.inference import InferenceModule
from iqart.export.native_attention import NATIVE_GRAPH
from iqart.export.plugin_node import FusedCrossAttention
from iqart.train.models.zoo import ModelCard

FP32_REL_TOL = 1e-5
FP16_ABS_TOL = 2e-3
FP16_MIN_SRCC = 0.999
SRCC_MIN_SPAN = 20 * FP16_ABS_TOL
RANDOM_IMAGES = 4
NATIVE_VALIDATION_SIZE = 224  # real images of native-resolution models are resized to this
REFERENCE_EVALUATOR_SIZE = 64  # onnx.reference runs convolutions in NumPy: keep inputs small


@dataclass
class ParityRow:
    check: str
    metric: str
    value: float
    limit: str
    passed: bool | None  # None: not meaningful for these inputs

    def status(self) -> str:
        return {True: "ok", False: "FAIL", None: "n/a"}[self.passed]


def srcc(a: np.ndarray, b: np.ndarray) -> float:
    def rank(x: np.ndarray) -> np.ndarray:
        return np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(np.float64)

    ra, rb = rank(a), rank(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / denominator) if denominator else float("nan")


def validation_inputs(
    card: ModelCard, image_paths: list[Path], seed: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """(image batch, reference batch or None) of one size: real images resized, then random ones."""
    size = card.resize.size if card.resize.kind == "fixed" else (NATIVE_VALIDATION_SIZE, NATIVE_VALIDATION_SIZE)
    real = [image for image in (_read_resized(path, size) for path in image_paths) if image is not None]
    rng = np.random.default_rng(seed)
    randoms = rng.integers(0, 256, (RANDOM_IMAGES, *size, 3), dtype=np.uint8)
    images = np.stack(real + list(randoms))
    references = None
    if card.task == "fr":  # pair each image with a degraded copy of itself
        noise = rng.normal(0, 20, images.shape)
        references, images = images, np.clip(images + noise, 0, 255).astype(np.uint8)
    return images, references


def _read_resized(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    """uint8 RGB (H, W, 3), or None for a file PIL cannot read. Parity only needs the same pixels
    on both sides, so this is plain PIL rather than the engine's decode policy."""
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image).convert("RGB")
            return np.asarray(upright.resize((size[1], size[0]), Image.Resampling.BICUBIC))
    except (OSError, ValueError):
        return None


def _feeds(images: np.ndarray, references: np.ndarray | None) -> dict:
    return {"image": images} if references is None else {"image": images, "reference": references}


def _torch_scores(model: torch.nn.Module, card: ModelCard, images, references) -> np.ndarray:
    module = InferenceModule(model, card.task).eval()
    with torch.no_grad():
        ref = None if references is None else torch.from_numpy(references)
        return module(torch.from_numpy(images), ref).numpy()


def ort_session(path: str | os.PathLike) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def validate_artifact(
    artifact: str | os.PathLike,
    model: torch.nn.Module,
    card: ModelCard,
    image_paths: list[Path] = (),
    trt_check: bool = True,
    seed: int | None = None,
) -> list[ParityRow]:
    artifact = Path(artifact)
    images, references = validation_inputs(card, list(image_paths), seed)
    expected = _torch_scores(model, card, images, references)
    fp32 = ort_session(artifact / "model.onnx").run(None, _feeds(images, references))[0]
    fp16 = ort_session(artifact / "model.fp16.onnx").run(None, _feeds(images, references))[0]
    for name, scores in (("model.onnx", fp32), ("model.fp16.onnx", fp16)):
        if not np.isfinite(scores).all():
            return [ParityRow(f"{name} (onnxruntime)", "finite scores", float("nan"), "all finite", False)]
    rel = float(np.abs(fp32 - expected).max() / max(np.abs(expected).max(), 1e-12))
    delta16 = float(np.abs(fp16 - expected).max())
    span = float(expected.max() - expected.min())
    rank_corr = srcc(fp16, expected)
    rows = [
        ParityRow(
            "model.onnx (onnxruntime) vs torch", "max relative error", rel, f"<= {FP32_REL_TOL:g}", rel <= FP32_REL_TOL
        ),
        ParityRow(
            "model.fp16.onnx (onnxruntime) vs torch",
            "max |delta score|",
            delta16,
            f"<= {FP16_ABS_TOL:g}",
            delta16 <= FP16_ABS_TOL,
        ),
        ParityRow(
            "model.fp16.onnx (onnxruntime) vs torch",
            f"SRCC over {len(expected)} images",
            rank_corr,
            f">= {FP16_MIN_SRCC} (when scores span >= {SRCC_MIN_SPAN:g}; span {span:.3g})",
            (rank_corr >= FP16_MIN_SRCC) if span >= SRCC_MIN_SPAN else None,
        ),
    ]
    rows.append(_native_row(artifact, card, images, references, expected))
    if trt_check:
        rows.append(_trt_reference_row(artifact, card, images, references))
    return rows


def _native_row(artifact: Path, card: ModelCard, images, references, expected: np.ndarray) -> ParityRow:
    """model.trt-native.onnx on ONNX Runtime vs torch; on onnx.reference where ORT lacks Attention-23."""
    try:
        session = ort_session(artifact / NATIVE_GRAPH)
    except Exception as exc:  # an ONNX Runtime without opset-23 Attention refuses the graph at load
        feeds = _small_feeds(card, images, references)
        fp16 = ort_session(artifact / "model.fp16.onnx").run(None, feeds)[0]
        native = ReferenceEvaluator(str(artifact / NATIVE_GRAPH)).run(None, feeds)[0]
        delta = float(np.abs(native - fp16).max()) if np.isfinite(native).all() else float("nan")
        return ParityRow(
            f"{NATIVE_GRAPH} (onnx.reference; onnxruntime refused it: {str(exc)[:80]}) vs model.fp16.onnx",
            "max |delta score|",
            delta,
            f"<= {FP16_ABS_TOL:g}",
            bool(delta <= FP16_ABS_TOL),
        )
    native = session.run(None, _feeds(images, references))[0]
    delta = float(np.abs(native - expected).max()) if np.isfinite(native).all() else float("nan")
    return ParityRow(
        f"{NATIVE_GRAPH} (onnxruntime) vs torch",
        "max |delta score|",
        delta,
        f"<= {FP16_ABS_TOL:g}",
        bool(delta <= FP16_ABS_TOL),
    )


def _small_feeds(card: ModelCard, images, references) -> dict:
    """One image, cropped to REFERENCE_EVALUATOR_SIZE for native-resolution models: what the
    NumPy-speed onnx.reference can run in seconds."""
    if card.resize.kind != "fixed":
        size = REFERENCE_EVALUATOR_SIZE
        images = images[:1, :size, :size]
        references = None if references is None else references[:1, :size, :size]
    else:
        images, references = images[:1], None if references is None else references[:1]
    return _feeds(np.ascontiguousarray(images), None if references is None else np.ascontiguousarray(references))


def _trt_reference_row(artifact: Path, card: ModelCard, images, references) -> ParityRow:
    """model.trt.onnx on onnx.reference vs model.fp16.onnx on ONNX Runtime, one small input."""
    feeds = _small_feeds(card, images, references)
    fp16 = ort_session(artifact / "model.fp16.onnx").run(None, feeds)[0]
    trt = ReferenceEvaluator(str(artifact / "model.trt.onnx"), new_ops=[FusedCrossAttention]).run(None, feeds)[0]
    delta = float(np.abs(trt - fp16).max()) if np.isfinite(trt).all() else float("nan")
    return ParityRow(
        "model.trt.onnx (onnx.reference + NumPy plugin) vs model.fp16.onnx",
        "max |delta score|",
        delta,
        f"<= {FP16_ABS_TOL:g}",
        bool(delta <= FP16_ABS_TOL),
    )


def format_table(rows: list[ParityRow]) -> str:
    lines = ["| check | metric | value | limit | status |", "|---|---|---|---|---|"]
    lines += [f"| {r.check} | {r.metric} | {r.value:.3g} | {r.limit} | {r.status()} |" for r in rows]
    return "\n".join(lines)


def default_images() -> list[Path]:
    examples = Path(__file__).resolve().parents[1] / "examples" / "images"
    return sorted(path for path in examples.glob("*") if path.suffix.lower() in (".png", ".jpg", ".jpeg"))
