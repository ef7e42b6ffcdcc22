"""In-memory images (arrays, tensors, PIL images, paths) -> upright 8-bit RGB PIL images.

Each type follows the convention its users already have: numpy arrays are channels-last uint8
(H, W[, C]) or (N, H, W, C), as PIL and OpenCV give them; torch tensors are torchvision's
channels-first (C, H, W) or (N, C, H, W), uint8 in 0..255 (`read_image`) or float in [0, 1]
(`ToTensor`, what pyiqa takes). Every image then goes through the same orientation, mode and
minimum-size steps as a file (iqart.engine.pipeline.images.upright_rgb), so a file and its decoded array
score the same; the caller applies the resize policy after comparing full-reference pairs.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from PIL import Image

from iqart.engine.pipeline.images import ImageError, open_image, upright_rgb

FLOAT_RANGE_SLACK = 1e-3  # float tensors may overshoot [0, 1] by rounding, not by a normalisation


def as_rgb_images(images: Any) -> list[Image.Image]:
    """One image per input; a list or tuple is a sequence of images or batches."""
    items = images if isinstance(images, (list, tuple)) else [images]
    return [image for item in items for image in _convert(item)]


def _convert(item: Any) -> list[Image.Image]:
    if isinstance(item, (str, bytes, os.PathLike)):
        try:
            return [open_image(item)]
        except ImageError as exc:
            raise ImageError(f"{os.fsdecode(item)}: {exc}") from None
    if isinstance(item, Image.Image):
        return [upright_rgb(item)]
    if isinstance(item, torch.Tensor):
        item = _tensor_to_channels_last(item)
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8:
            raise TypeError(f"numpy images must be uint8 (H, W, 3) RGB, not {item.dtype}")
        if item.ndim == 4:
            return [upright_rgb(_from_array(a)) for a in item]
        return [upright_rgb(_from_array(item))]
    raise TypeError(f"cannot score a {type(item).__name__}: pass paths, PIL images, numpy arrays or torch tensors")


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4)):
        return Image.fromarray(np.ascontiguousarray(array))  # L, RGB or RGBA by shape
    raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4); got {array.shape}")


def _tensor_to_channels_last(tensor: torch.Tensor) -> np.ndarray:
    if tensor.ndim not in (3, 4) or tensor.shape[-3] not in (1, 3, 4):
        raise ValueError(f"tensors must be (C, H, W) or (N, C, H, W) with C in 1, 3, 4; got {tuple(tensor.shape)}")
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        low, high = float(tensor.min()), float(tensor.max())
        if low < -FLOAT_RANGE_SLACK or high > 1 + FLOAT_RANGE_SLACK:
            raise ValueError(
                f"float tensors must hold values in [0, 1] (torchvision's ToTensor), not "
                f"{low:.3g}..{high:.3g}: pass images before any mean/std normalisation"
            )
        tensor = (tensor.clamp(0, 1) * 255).round().to(torch.uint8)
    elif tensor.dtype != torch.uint8:
        raise TypeError(f"tensors must be uint8 or floating point, not {tensor.dtype}")
    return tensor.movedim(-3, -1).contiguous().numpy()
