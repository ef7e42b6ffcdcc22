"""Write the sample images in examples/ from scikit-image's bundled photos (needs `.[dev]`).

The photos are public domain or CC0 (see examples/images/README.md); the degraded variants are
made here, so every file in examples/ may be redistributed. Run: python examples/make_sample_images.py
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from skimage import data

HERE = Path(__file__).parent
SOURCES = {"astronaut": data.astronaut, "chelsea": data.chelsea, "coffee": data.coffee, "rocket": data.rocket}
LONG_SIDE = 320


def pristine(name: str) -> Image.Image:
    image = Image.fromarray(SOURCES[name]()).convert("RGB")
    scale = LONG_SIDE / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)


def blur(image: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=3))


def jpeg(image: Image.Image, quality: int = 8) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(buffer).convert("RGB")


def noise(image: Image.Image, sigma: float = 25.0) -> Image.Image:
    rng = np.random.default_rng(0)
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0.0, sigma, (image.height, image.width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def main() -> None:
    images, reference, distorted = HERE / "images", HERE / "fr" / "reference", HERE / "fr" / "distorted"
    for folder in (images, reference, distorted):
        folder.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        clean = pristine(name)
        clean.save(images / f"{name}.png")
        blur(clean).save(images / f"{name}_blur.png")
        jpeg(clean).save(images / f"{name}_jpeg.png")
        noise(clean).save(images / f"{name}_noise.png")
    for name, degrade in (("astronaut", blur), ("chelsea", noise), ("coffee", jpeg)):
        clean = pristine(name)
        clean.save(reference / f"{name}.png")
        degrade(clean).save(distorted / f"{name}.png")


if __name__ == "__main__":
    main()
