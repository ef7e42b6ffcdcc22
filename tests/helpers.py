"""What several test modules share besides fixtures: the example files, scrambled tiny models,
random image content, a wide-gamut ICC profile, CLIP's own attention pool and the parity check.

A freshly initialised CLIP ResNet zeroes the last BatchNorm of every block and keeps identity
running statistics, which makes its outputs almost input-independent; tests that compare
scores need models whose outputs move with the image (`scramble`).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iqart.engine.bench.runners import randomise_batchnorm
from iqart.train.metrics import srcc
from iqart.train.models.checkpoints import save_checkpoint
from iqart.train.models.zoo import build_model

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_IMAGES = REPO / "examples" / "images"
EXAMPLE_PAIRS = REPO / "examples" / "fr"
SEED_VARIABLE = "IQART_TEST_SEED"  # set it to a failed test's reported seed to replay its random inputs


def draw_seed() -> int:
    """$IQART_TEST_SEED if set (a replay), else a fresh 31-bit seed: each run tries new inputs and
    reports the seed of any that fail (tests/conftest.py)."""
    fixed = os.environ.get(SEED_VARIABLE)
    return int(fixed) if fixed else int.from_bytes(os.urandom(4), "little") % 2**31


def scramble(model: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm random affine parameters and running statistics (as the benchmarks'
    random weights do), and (BPCLIP) amplify the per-scale projections so image content is not
    drowned by the positional embedding, as it is at initialisation (in place)."""
    randomise_batchnorm(model, seed)
    with torch.no_grad():
        for scale in getattr(model, "scales", []):
            scale.project.weight.mul_(30.0)
    return model.eval()


def write_scrambled_weights(folder: Path, name: str, seed: int) -> Path:
    """A weight file of a scrambled tiny model (scores that move with the input), in `folder`."""
    path = folder / f"{name}-scrambled-{seed}.pt"
    save_checkpoint(path, name, scramble(build_model(name, seed=seed), seed).state_dict())
    return path


def structured_noise(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Random images that differ in content, not only in pixels: white noise of one size is
    statistically the same image to a CNN, so each image gets its own blob scale, colour cast
    and contrast."""
    images = []
    for _ in range(n):
        cells = int(torch.randint(2, 12, (1,), generator=generator))
        coarse = torch.randn(1, 3, cells, cells, generator=generator)
        smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
        gain, cast = 0.5 + 1.5 * torch.rand(1, generator=generator), 0.5 * torch.randn(1, 3, 1, 1, generator=generator)
        images.append(gain * smooth + cast + 0.3 * torch.randn(1, 3, height, width, generator=generator))
    return torch.cat(images)


def matrix_profile(red, green, blue, gamma=2.2) -> bytes:
    """A minimal ICC v2 RGB matrix/TRC profile (D50-adapted primaries, one gamma): PIL can only
    create sRGB and Lab profiles, and a wide-gamut one is what the tests need."""

    def s15(value):
        return struct.pack(">i", round(value * 65536))

    def xyz(x, y, z):
        return b"XYZ " + bytes(4) + s15(x) + s15(y) + s15(z)

    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    text = b"iqart test wide gamut\0"
    desc = b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(*red)),
        (b"gXYZ", xyz(*green)),
        (b"bXYZ", xyz(*blue)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for signature, body in tags:
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body + bytes(-len(body) % 4)
    header = (
        struct.pack(">I", offset + len(data))
        + bytes(4)
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(28)
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + bytes(48)
    )
    return header + struct.pack(">I", len(tags)) + table + data


DISPLAY_P3 = matrix_profile((0.5151, 0.2412, -0.0011), (0.2920, 0.6922, 0.0419), (0.1571, 0.0666, 0.7841))


def full_attention_pool_token0(pool, features):
    """CLIP's own pool (all HW+1 queries, as in the official code) without positional embedding."""
    n, c, h, w = features.shape
    x = features.reshape(n, c, h * w).permute(2, 0, 1)
    x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
    out, _ = F.multi_head_attention_forward(
        query=x,
        key=x,
        value=x,
        embed_dim_to_check=c,
        num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None,
        bias_v=None,
        add_zero_attn=False,
        dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight,
        out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True,
        training=False,
        need_weights=False,
    )
    return out[0]


def assert_parity(expected: np.ndarray, got: np.ndarray, atol: float, min_srcc: float) -> None:
    """Finite, within `atol` of the reference everywhere, ranked as the reference ranks, on
    inputs whose reference scores spread over at least ten times `atol`."""
    assert got.shape == expected.shape and np.isfinite(got).all(), got
    spread = float(expected.max() - expected.min())
    assert spread >= 10 * atol, f"the reference scores spread over {spread:.3g} only: a tolerance {atol} means little"
    delta = np.abs(got.astype(np.float64) - expected)
    assert delta.max() <= atol, f"max |delta| {delta.max():.3g} > {atol} (at input {int(delta.argmax())})"
    rank = srcc(expected, got)
    assert rank >= min_srcc, f"SRCC {rank:.4f} < {min_srcc}"


SAMPLE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
SAMPLE_DEGRADATIONS = ("blur", "jpeg", "noise")


def sample_inputs(task: str) -> tuple[list, list | None]:
    """(images, references or None): the 16 sample files (each photo, then its degraded copies),
    or for a full-reference model each copy paired with its photo and each photo with itself."""
    if task == "nr":
        names = [name for photo in SAMPLE_PHOTOS for name in (photo, *(f"{photo}_{d}" for d in SAMPLE_DEGRADATIONS))]
        return [EXAMPLE_IMAGES / f"{name}.png" for name in names], None
    pairs = [(f"{photo}_{d}", photo) for photo in SAMPLE_PHOTOS for d in SAMPLE_DEGRADATIONS]
    pairs += [(photo, photo) for photo in SAMPLE_PHOTOS]
    return [EXAMPLE_IMAGES / f"{a}.png" for a, _ in pairs], [EXAMPLE_IMAGES / f"{b}.png" for _, b in pairs]
