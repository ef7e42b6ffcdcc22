"""Low precision that keeps its meaning: fp16/bf16 autocast of the torch backend ranks images as
fp32 does (the attention logits and the score head stay fp32), and never returns NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import iqart
from iqart.train.models.attention import reference_cross_attention
from tests.helpers import EXAMPLE_IMAGES, assert_parity

MIN_SRCC = 0.999
# Absolute tolerance per autocast precision, on scores in [0, 1] whose fp32 values spread over
# 1.0 (QualiCLIP) and 0.58 (BPCLIP-NR) on these images. Measured: fp16 1.8e-4, bf16 0.017 (its
# 8-bit significand); bf16's tolerance is still under a tenth of the smaller spread.
ABS_TOL = {"fp16": 2e-3, "bf16": 0.04}


@pytest.fixture(scope="module")
def example_paths():
    return sorted(str(path) for path in EXAMPLE_IMAGES.glob("*.png"))


@pytest.mark.parametrize("model", ["qualiclip-tiny", "bpclip-nr-tiny"])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_keeps_the_ranks_of_fp32(model, precision, example_paths):
    """Demo weights, the example photos and their degraded copies: before the fix, fp16 gave NaN
    for every image and bf16 collapsed distinct images onto one bf16 step."""
    reference = iqart.Scorer(model, "torch", "cpu").score(example_paths)
    low = iqart.Scorer(model, "torch", "cpu", precision=precision).score(example_paths)
    assert_parity(reference.astype(np.float64), low, ABS_TOL[precision], MIN_SRCC)
    assert len(np.unique(low)) == len(np.unique(reference))
    assert low.dtype == np.float32


def test_attention_logits_that_overflow_fp16_stay_finite_under_autocast():
    """Keys and queries of the size CLIP's attention pool produces (|q|~500, |k|~2000 over 64
    dims) give QKᵀ past fp16's 65504: the logits are computed in fp32."""
    generator = torch.Generator().manual_seed(0)
    q = 500 * torch.rand(1, 1, 512, generator=generator)
    k = 2000 * torch.rand(1, 50, 512, generator=generator)
    v = torch.randn(1, 50, 512, generator=generator)
    expected = reference_cross_attention(q, k, v, 8, 0.125)
    with torch.autocast("cpu", dtype=torch.float16):
        assert torch.isinf(torch.matmul(q, k.transpose(1, 2))).any()  # the failure this guards against
        low = reference_cross_attention(q.half(), k.half(), v.half(), 8, 0.125)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), expected, atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize("make", ["scorer", "backend"])
def test_bf16_with_the_fused_op_is_refused_before_any_device_is_touched(make):
    """The fused kernel has fp16 and fp32 paths only. Asked for bf16, the Scorer and the torch
    backend say so when made, on a machine with or without a GPU, not on the first batch."""
    from iqart.engine.backends.torch_backend import TorchBackend
    from iqart.engine.scorer import Scorer
    from iqart.train.models.zoo import build_model

    with pytest.raises(ValueError, match="fused attention op runs fp32 or fp16, not bf16"):
        if make == "scorer":
            Scorer("qualiclip-tiny", backend="torch", device="cuda", precision="bf16", fused_attention=True)
        else:
            TorchBackend(build_model("qualiclip-tiny"), "cuda", "bf16", fused_attention=True)
