"""Shared fixtures: tiny models with weights scrambled so that scores depend on the input.

A freshly initialised CLIP ResNet zeroes the last BatchNorm of every block and keeps identity
running statistics, which makes its outputs almost input-independent; tests that compare
scores need models whose outputs move with the image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from iqart.engine.bench.runners import randomise_batchnorm
from iqart.train.models.zoo import build_model

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_IMAGES = REPO / "examples" / "images"
EXAMPLE_PAIRS = REPO / "examples" / "fr"


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
    from iqart.train.models.checkpoints import save_checkpoint

    path = folder / f"{name}-scrambled-{seed}.pt"
    save_checkpoint(path, name, scramble(build_model(name, seed=seed), seed).state_dict())
    return path


@pytest.fixture
def scrambled():
    """Factory: scrambled(name, seed=0) -> a tiny zoo model whose scores depend on the input."""
    return lambda name, seed=0: scramble(build_model(name, seed=seed), seed)


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


@pytest.fixture
def random_images():
    """Factory: random_images(n, h, w, seed=None) -> CLIP-normalised-scale float images, fresh
    each call unless a seed is given."""

    def make(n: int, height: int, width: int, seed: int | None = None) -> torch.Tensor:
        seed = seed if seed is not None else int(np.random.SeedSequence().entropy % 2**31)
        return structured_noise(n, height, width, torch.Generator().manual_seed(seed))

    return make


@pytest.fixture(scope="module")
def iqart_home(tmp_path_factory):
    """One artifact cache per test module, as $IQART_HOME: each model is exported once, as in
    real use, and nothing touches the user's cache. Set before anything starts that inherits
    the environment (Ray workers)."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("iqart_home")
        patch.setenv("IQART_HOME", str(home))
        yield home
