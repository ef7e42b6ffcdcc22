"""Pristine images for opinion-unaware training and synthetic evaluation, and the crops taken
from them.

A source is a folder of image files, or `skimage` (the colour photographs scikit-image ships,
which need no download) optionally narrowed to some of them: `skimage:coffee,rocket`. Named
sources may also use its greyscale photographs (SKIMAGE_GREY_PHOTOS, as three equal channels):
more distinct content and textures for the tiny demo models, whose colour photos are only eight.
`bundled` is every photograph the installed packages ship (scikit-image's colour and greyscale
ones, scikit-learn's `load_sample_images`, matplotlib's sample photo), again narrowable:
`bundled:china,flower`. Training can mix in procedural dead-leaves images (train/data/dead_leaves.py)
through TrainingContent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _skimage_photo(name: str) -> np.ndarray:
    from skimage import data

    if name == "motorcycle":
        return data.stereo_motorcycle()[0]
    if name not in SKIMAGE_PHOTOS + SKIMAGE_GREY_PHOTOS:
        raise ValueError(
            f"unknown scikit-image photo {name!r}; available: {', '.join(SKIMAGE_PHOTOS + SKIMAGE_GREY_PHOTOS)}"
        )
    photo = getattr(data, name)()
    return np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo


def _bundled_photo(name: str) -> np.ndarray:
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        return np.array(load_sample_image(f"{name}.jpg"))
    if name in MATPLOTLIB_PHOTOS:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data(f"{name}.jpg") as f, Image.open(f) as image:
            return np.array(image.convert("RGB"))
    if name not in BUNDLED_PHOTOS:
        raise ValueError(f"unknown bundled photo {name!r}; available: {', '.join(BUNDLED_PHOTOS)}")
    return _skimage_photo(name)


SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle",
)
SKIMAGE_GREY_PHOTOS = ("camera", "brick", "grass", "gravel", "coins", "moon", "clock")
SKLEARN_PHOTOS = ("china", "flower")  # sklearn.datasets.load_sample_images
MATPLOTLIB_PHOTOS = ("grace_hopper",)  # matplotlib's sample data
BUNDLED_PHOTOS = SKIMAGE_PHOTOS + SKIMAGE_GREY_PHOTOS + SKLEARN_PHOTOS + MATPLOTLIB_PHOTOS
_NAMED_SOURCES = {"skimage": SKIMAGE_PHOTOS, "bundled": BUNDLED_PHOTOS}


def _named_source(source: str) -> str | None:
    """'skimage' or 'bundled' when the source is one of them (with or without names), else None."""
    prefix = source.partition(":")[0]
    return prefix if prefix in _NAMED_SOURCES else None


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1).float() / 255.0


def read_image(path: Path) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            return _to_tensor(np.asarray(ImageOps.exif_transpose(image).convert("RGB")))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read as a pristine image: {exc}") from None


def pristine_names(source: str) -> list[str]:
    """The image names a source stands for, in a stable order."""
    named = _named_source(source)
    if named:
        names = source.partition(":")[2]
        return [n.strip() for n in names.split(",") if n.strip()] if names else list(_NAMED_SOURCES[named])
    root = Path(source)
    if not root.is_dir():
        raise ValueError(
            f"pristine image source {source!r} is neither a folder nor 'skimage[:name,...]' or 'bundled[:name,...]'"
        )
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise ValueError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    return names


def load_pristine(source: str) -> dict[str, torch.Tensor]:
    """name -> float (3, H, W) image in [0, 1], for every image of the source."""
    names = pristine_names(source)
    named = _named_source(source)
    if named:
        read = _skimage_photo if named == "skimage" else _bundled_photo
        return {name: _to_tensor(read(name)) for name in names}
    return {name: read_image(Path(source) / name) for name in names}


def split_pristine(
    source: str, holdout: list[str] | tuple[str, ...]
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Training images and the held-out ones (by name) of a source; unknown held-out names are errors."""
    images = load_pristine(source)
    unknown = sorted(set(holdout) - set(images))
    if unknown:
        raise ValueError(f"held-out image(s) {', '.join(unknown)} are not in {source}; it has: {', '.join(images)}")
    train = [image for name, image in images.items() if name not in holdout]
    if not train:
        raise ValueError(f"no training images left in {source} after holding out {', '.join(holdout)}")
    return train, {name: images[name] for name in holdout}


def fit_short_side(image: torch.Tensor, minimum: int) -> torch.Tensor:
    """Upscale (bicubic) so the short side is at least `minimum`; larger images are untouched."""
    height, width = image.shape[-2:]
    if min(height, width) >= minimum:
        return image
    factor = minimum / min(height, width)
    size = (max(minimum, round(height * factor)), max(minimum, round(width * factor)))
    return F.interpolate(image[None], size=size, mode="bicubic", align_corners=False)[0].clamp(0, 1)


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def overlapping_crops(image: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """Two crops (2, 3, crop, crop) whose offsets differ by at most half a crop in each direction,
    so they overlap and share content, as QualiCLIP's consistency loss needs."""
    image = fit_short_side(image, crop)
    height, width = image.shape[-2:]
    top, left = _randint(0, height - crop, generator), _randint(0, width - crop, generator)
    half = crop // 2
    top2 = min(max(0, top + _randint(-half, half, generator)), height - crop)
    left2 = min(max(0, left + _randint(-half, half, generator)), width - crop)
    return torch.stack(
        [image[:, top : top + crop, left : left + crop], image[:, top2 : top2 + crop, left2 : left2 + crop]]
    )


def random_rescale(image: torch.Tensor, min_scale: float, generator: torch.Generator) -> torch.Tensor:
    """Resize by a random factor in [min_scale, 1] (antialiased) and flip left-right half the
    time: a handful of pristine photos then yield many more distinct contents and scales."""
    if _randint(0, 1, generator):
        image = image.flip(-1)
    if min_scale >= 1.0:
        return image
    factor = min_scale + (1.0 - min_scale) * float(torch.rand(1, generator=generator))
    height, width = image.shape[-2:]
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    return F.interpolate(image[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0].clamp(0, 1)


def random_crop(image: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    image = fit_short_side(image, crop)
    height, width = image.shape[-2:]
    top, left = _randint(0, height - crop, generator), _randint(0, width - crop, generator)
    return image[:, top : top + crop, left : left + crop]


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid: the engine only ever sees uint8 images, so training should too."""
    return torch.round(images.clamp(0, 1) * 255.0) / 255.0


class TrainingContent:
    """Where training images come from: a random training photo, randomly rescaled and flipped
    (random_rescale), or with probability `procedural_probability` a dead-leaves image from a
    DeadLeavesPool of `procedural_size` pixels (not rescaled: the upscaling that fit_short_side
    may apply would blur it, and dead leaves look alike at every scale anyway).

    With procedural_probability 0 it draws exactly the random numbers the trainers drew before
    procedural content existed, so older configurations reproduce their weights.
    """

    def __init__(
        self,
        photos: list[torch.Tensor],
        min_scale: float,
        procedural_probability: float,
        procedural_size: int,
        generator: torch.Generator,
        pool_capacity: int = 64,
    ):
        if not 0 <= procedural_probability <= 1:
            raise ValueError(f"procedural_probability must be in [0, 1], got {procedural_probability}")
        if procedural_probability < 1 and not photos:
            raise ValueError("no training photos, and procedural_probability < 1 asks for some")
        self.photos, self.min_scale, self.generator = photos, min_scale, generator
        self.procedural_probability = procedural_probability
        self.pool = None
        if procedural_probability > 0:
            from iqart.train.data.dead_leaves import DeadLeavesPool

            self.pool = DeadLeavesPool(procedural_size, generator, capacity=pool_capacity)

    def photo(self, index: int) -> torch.Tensor:
        """Photo `index` (the caller drew it), or a dead-leaves image in its place."""
        if self.pool is not None and float(torch.rand(1, generator=self.generator)) < self.procedural_probability:
            return self.pool.draw()
        return random_rescale(self.photos[index], self.min_scale, self.generator)
