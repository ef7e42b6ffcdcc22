"""The numbers both models take from their papers and from CLIP, checked against the published
values written out here (not imported from the code under test): CLIP's input mean and std,
the logit scale 100, and QualiCLIP's prompt order. A swapped digit or pair in any of them still
gives scores in [0, 1] that move with the image; only a check at the source sees it."""

from __future__ import annotations

import numpy as np
import open_clip
import torch

from iqart.train.models import bpclip, qualiclip
from iqart.train.models.preprocess import CLIP_MEAN, CLIP_STD, normalize_float, uint8_nhwc_to_model_input
from iqart.train.models.prompts import antonym_prompts

# OpenAI CLIP's image normalisation (clip/clip.py, _transform: Normalize(mean, std)), RGB order;
# the QualiCLIP authors' single_image_inference.py uses the same numbers.
PUBLISHED_MEAN = (0.48145466, 0.4578275, 0.40821073)
PUBLISHED_STD = (0.26862954, 0.26130258, 0.27577711)

# The temperature of CLIP's similarities: CLIP's learned logit scale is clipped at 100 (the CLIP
# paper), and QualiCLIP's code fixes it at 100 ("Value used in CLIP's paper").
PUBLISHED_LOGIT_SCALE = 100.0

# QualiCLIP's 7 antonym pairs, positive first, in the order of the paper and of the rows of the
# released checkpoint's `prompts_features` (pos0, neg0, pos1, neg1, ...).
PUBLISHED_PROMPTS = [
    "Good photo.",
    "Bad photo.",
    "Sharp image.",
    "Blurry image.",
    "Sharp edges.",
    "Blurry edges.",
    "High-resolution image.",
    "Low-resolution image.",
    "Noise-free image.",
    "Noisy image.",
    "High-quality image.",
    "Low-quality image.",
    "Good picture.",
    "Bad picture.",
]


def test_clip_mean_and_std_are_the_published_values():
    assert CLIP_MEAN == PUBLISHED_MEAN
    assert CLIP_STD == PUBLISHED_STD
    # open_clip ships the same numbers for OpenAI's weights: a second, independent copy
    assert tuple(open_clip.OPENAI_DATASET_MEAN) == PUBLISHED_MEAN
    assert tuple(open_clip.OPENAI_DATASET_STD) == PUBLISHED_STD


def test_the_model_input_is_normalised_with_the_published_values_per_channel():
    """Every level of every channel, through the function every consumer uses (training, the
    torch backend, the exported graphs): (level / 255 - mean[c]) / std[c], with the channel
    order and the roles of mean and std as published."""
    levels = np.arange(256, dtype=np.uint8)
    image = np.stack([levels, levels[::-1], np.roll(levels, 85)], axis=-1).reshape(1, 16, 16, 3)
    got = uint8_nhwc_to_model_input(torch.from_numpy(image)).numpy()
    assert got.shape == (1, 3, 16, 16) and got.dtype == np.float32
    expected = np.empty((1, 3, 16, 16), dtype=np.float64)
    for channel in range(3):
        plane = image[0, :, :, channel].astype(np.float64) / 255.0
        expected[0, channel] = (plane - PUBLISHED_MEAN[channel]) / PUBLISHED_STD[channel]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)  # float32 rounding of values up to 2.2
    floats = torch.from_numpy(image).permute(0, 3, 1, 2).double() / 255.0
    np.testing.assert_allclose(normalize_float(floats).numpy(), expected, rtol=0, atol=1e-12)


def test_the_logit_scales_are_the_published_value():
    assert qualiclip.LOGIT_SCALE == PUBLISHED_LOGIT_SCALE
    assert bpclip.ATTRIBUTE_LOGIT_SCALE == PUBLISHED_LOGIT_SCALE


def test_the_prompts_are_in_the_published_order():
    assert antonym_prompts() == PUBLISHED_PROMPTS
