"""The in-repo demo weights of the no-reference tiny models do what the quickstart shows: on the
sample images (examples/images: each photo pristine and as _blur, _jpeg and _noise copies)
every degraded copy scores below its pristine photo. Two of the four photos (coffee, rocket)
were never trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqart.train.models.preprocess import normalize_float
from iqart.train.models.zoo import get_card, load_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
DEGRADATIONS = ("blur", "jpeg", "noise")


def _load(name: str, model_name: str) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1], sized as the engine sizes it for this model (BICUBIC, as
    engine/pipeline/images.py resizes)."""
    with Image.open(EXAMPLES / f"{name}.png") as image:
        image = image.convert("RGB")
        policy = get_card(model_name).resize
        if policy.kind == "fixed":
            height, width = policy.size
            image = image.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=None)
        array = np.array(image)
    return torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255.0


@pytest.mark.parametrize("model_name", ["qualiclip-tiny", "bpclip-nr-tiny"])
def test_every_degraded_example_scores_below_its_pristine_photo(model_name):
    model = load_model(model_name)
    with torch.no_grad():
        scores = {
            name: float(model(normalize_float(_load(name, model_name))))
            for photo in PHOTOS
            for name in (photo, *(f"{photo}_{d}" for d in DEGRADATIONS))
        }
    wrong = [
        f"{photo}_{d} {scores[f'{photo}_{d}']:.3f} >= {photo} {scores[photo]:.3f}"
        for photo in PHOTOS
        for d in DEGRADATIONS
        if scores[f"{photo}_{d}"] >= scores[photo]
    ]
    assert not wrong, wrong
