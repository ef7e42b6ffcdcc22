"""Real images and degraded copies of them at one size: what int8 calibration and its parity
report feed the graphs.

An IQA model sees pristine and damaged pictures alike, so int8 activation ranges must be
calibrated on both, and int8 is judged by whether it ranks both like fp32 does. Images come from
a source as `iqart.train.data.pristine` reads it: a folder of image files, or `skimage[:name,...]` (the
photos scikit-image ships). Degradations come from `iqart.train.data.degradations`, seeded.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from iqart.train.data.degradations import degrade
from iqart.train.data.pristine import load_pristine

SIZE = 224  # native-resolution models are calibrated and judged at the size they are benchmarked at
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"
DEFAULT_PARITY_SOURCE = "skimage"  # eight photos; four of them (as examples/images) also calibrate


def default_calibration_source() -> str:
    """examples/images in a checkout; the same four photos from scikit-image elsewhere."""
    return str(EXAMPLES) if EXAMPLES.is_dir() else "skimage:astronaut,chelsea,coffee,rocket"


def load_source(source: str, size: int = SIZE) -> np.ndarray:
    """uint8 (N, size, size, 3): every image of `source`, resized (antialiased bicubic)."""
    try:
        with warnings.catch_warnings():  # scikit-image's photos are read-only arrays; torch warns, harmlessly
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            images = load_pristine(source)
    except ModuleNotFoundError as exc:  # skimage is a dev extra
        raise ValueError(f"{source}: {exc.msg} (pip install scikit-image, or pass a folder of images)") from None
    resized = [
        F.interpolate(image[None], size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        for image in images.values()
    ]
    return to_uint8(torch.cat(resized))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [0, 1] -> uint8 (N, H, W, 3), as the graphs take them."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def degraded_copies(images: np.ndarray, degradations: Sequence[tuple[str, int]], seed: int) -> np.ndarray:
    """uint8 (len(degradations) * N, H, W, 3): every image under every (type, level), in that order."""
    floats = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    generator = torch.Generator().manual_seed(seed)
    return to_uint8(torch.cat([degrade(floats, kind, level, generator) for kind, level in degradations]))


def quality_set(
    real: np.ndarray, degradations: Sequence[tuple[str, int]], seed: int, fr: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, references or None): the real images, then their degraded copies. Full-reference
    models get every copy paired with its pristine source, and the real images paired with
    themselves (a perfect pair is part of what an FR model sees)."""
    images = np.concatenate([real, degraded_copies(real, degradations, seed)])
    if not fr:
        return images, None
    return images, np.concatenate([real] * (1 + len(degradations)))
