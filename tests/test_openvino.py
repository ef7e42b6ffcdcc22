"""The OpenVINO backend: parity with ONNX Runtime in fp32, int8 ranks, bf16 that says what ran,
and one compilation per input shape."""

from __future__ import annotations

import numpy as np
import pytest

import iqart
from iqart.engine.backends.openvino_backend import OpenVinoBackend, native_bf16, runtime_precisions
from iqart.export.int8_parity import INT8_MIN_SRCC
from iqart.export.validate import FP32_REL_TOL
from iqart.train.metrics import srcc
from tests.helpers import EXAMPLE_IMAGES, EXAMPLE_PAIRS

openvino = pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install -e '.[openvino]'")

BF16_MIN_SRCC, BF16_MAX_ABS = 0.999, 5e-3


@pytest.fixture(scope="module")
def paths():
    return sorted(str(path) for path in EXAMPLE_IMAGES.glob("*.png"))


@pytest.fixture(scope="module")
def fp32_scores(paths, iqart_home):
    return {
        model: iqart.Scorer(model, "onnxruntime", "cpu").score(paths) for model in ("qualiclip-tiny", "bpclip-nr-tiny")
    }


@pytest.mark.parametrize("model", ["qualiclip-tiny", "bpclip-nr-tiny"])
def test_fp32_equals_onnxruntime(model, paths, fp32_scores):
    scores = iqart.Scorer(model, "openvino").score(paths)
    np.testing.assert_allclose(scores, fp32_scores[model], rtol=FP32_REL_TOL, atol=1e-7)


@pytest.mark.parametrize("model", ["qualiclip-tiny", pytest.param("bpclip-nr-tiny", marks=pytest.mark.slow)])
def test_int8_ranks_the_examples_as_fp32_does(model, paths, fp32_scores):
    """The 16 sample images: int8 keeps the int8 floor (INT8_MIN_SRCC). The OpenVINO int8 target of
    0.995 is asserted where ranks mean something, on the 176 parity images (tests/test_int8.py,
    slow): here one swap of two scores 0.004 apart already costs 0.006."""
    scorer = iqart.Scorer(model, "openvino", precision="int8")
    scores = scorer.score(paths)
    assert np.isfinite(scores).all()
    assert scorer.backend.runtime_precision == "int8"
    assert srcc(fp32_scores[model], scores) >= INT8_MIN_SRCC


def test_bf16_reports_what_ran(paths, fp32_scores, capsys):
    scorer = iqart.Scorer("qualiclip-tiny", "openvino", precision="bf16")
    scores = scorer.score(paths)
    native = native_bf16(scorer.backend.core)
    assert scorer.backend.runtime_precision == ("bf16" if native else "fp32")
    if native:
        assert np.isfinite(scores).all()
        rank_corr = srcc(fp32_scores["qualiclip-tiny"], scores)
        delta = float(np.abs(scores - fp32_scores["qualiclip-tiny"]).max())
        if rank_corr < BF16_MIN_SRCC or delta > BF16_MAX_ABS:  # measured and explained in docs/cpu-engine.md
            pytest.xfail(
                f"OpenVINO bf16 misses its parity target on this CPU: SRCC {rank_corr:.4f} "
                f"(target {BF16_MIN_SRCC}), max |delta| {delta:.4f} (target {BF16_MAX_ABS})"
            )
    else:  # OpenVINO silently runs fp32 on such a CPU: we say so
        assert "this CPU has no native bf16" in capsys.readouterr().err
        np.testing.assert_allclose(scores, fp32_scores["qualiclip-tiny"], rtol=FP32_REL_TOL, atol=1e-7)


def test_each_shape_is_compiled_once(iqart_home, rng):
    artifact = iqart.Scorer("qualiclip-tiny").artifact
    backend = OpenVinoBackend(artifact, threads=2)
    first = rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)  # two concurrent requests of one image
    second = rng.integers(0, 256, (1, 80, 80, 3), dtype=np.uint8)  # one request
    a = backend(first)
    backend(second)
    np.testing.assert_array_equal(backend(first), a)
    assert list(backend._compiled) == [(1, 80, 80, 3, "LATENCY"), (1, 64, 96, 3, "THROUGHPUT")]  # reused, moved last
    assert runtime_precisions(backend.compiled_for(second.shape))["f32"] > 0


def test_concurrent_chunks_score_as_one_request(iqart_home, rng):
    """A batch split over the streams gives the scores, in order, that one request gives."""
    artifact = iqart.Scorer("qualiclip-tiny").artifact
    images = rng.integers(0, 256, (6, 96, 64, 3), dtype=np.uint8)
    split = OpenVinoBackend(artifact, threads=2)(images)
    whole = OpenVinoBackend(artifact, threads=1)(images)
    assert split.shape == (6,) and len(np.unique(split)) == 6
    np.testing.assert_allclose(split, whole, rtol=FP32_REL_TOL, atol=1e-7)


def test_full_reference_model(iqart_home):
    distorted = sorted((EXAMPLE_PAIRS / "distorted").glob("*.png"))
    references = [EXAMPLE_PAIRS / "reference" / path.name for path in distorted]
    expected = iqart.Scorer("bpclip-fr-tiny", "onnxruntime", "cpu").score(distorted, references)
    scores = iqart.Scorer("bpclip-fr-tiny", "openvino").score(distorted, references)
    np.testing.assert_allclose(scores, expected, rtol=FP32_REL_TOL, atol=1e-7)


def test_bad_requests_are_refused(iqart_home):
    with pytest.raises(ValueError, match="runs fp32, bf16, int8, not 'fp16'"):
        iqart.Scorer("qualiclip-tiny", "openvino", precision="fp16")
    artifact = iqart.Scorer("qualiclip-tiny").artifact
    with pytest.raises(ValueError, match="runs on the CPU"):
        OpenVinoBackend(artifact, "cuda")
