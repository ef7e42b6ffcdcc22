"""Do the quality maps fall where an image is degraded? Degrade the left half of a photo, map
it with `iqart explain`'s code (decoded from a PNG file by the scoring pipeline) and compare each
half's mean change against the untouched photo.

Two local degradations, each on the left half only (the whole photo is degraded, then its left
half pasted over the original, so the edge between the halves is the photo's own):
- blur: Pillow's GaussianBlur with radius 4 (Pillow's radius is the Gaussian's standard
  deviation, in pixels of the photo as decoded);
- noise: train/data/degradations.py's white noise at its strongest level (variance 0.01 on
  the [0, 1] scale, so a standard deviation of 0.1, about 25 of 255), then rounded to 8 bits.
The halves are the map columns whose input region lies wholly left, or wholly right, of the
photo's middle; a column straddling the middle (odd grids) is in neither.

    python benchmarks/explain_locality.py --picture docs/explain-example.png   # docs/explain.md's figures
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from iqart.engine.explain import explain_image, overlay
from iqart.train.data.degradations import LEVELS, NUM_LEVELS, degrade
from iqart.train.data.pristine import _skimage_photo
from iqart.train.models.zoo import get_card, load_model

MODELS = ("qualiclip-tiny", "bpclip-nr-tiny")
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
BLUR_RADIUS = 4
NOISE_LEVEL = NUM_LEVELS - 1  # white_noise's strongest level
NOISE_VARIANCE = LEVELS["white_noise"][NOISE_LEVEL]


def left_half_from(photo: np.ndarray, degraded: np.ndarray) -> np.ndarray:
    """The photo with its left half (floor(width / 2) columns) taken from `degraded`."""
    out = photo.copy()
    half = photo.shape[1] // 2
    out[:, :half] = degraded[:, :half]
    return out


def blur_left(photo: np.ndarray) -> np.ndarray:
    blurred = np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(BLUR_RADIUS)))
    return left_half_from(photo, blurred)


def noise_left(photo: np.ndarray, seed: int) -> np.ndarray:
    image = torch.from_numpy(photo).permute(2, 0, 1).float() / 255.0
    noisy = degrade(image, "white_noise", NOISE_LEVEL, torch.Generator().manual_seed(seed))
    noisy = torch.round(noisy * 255.0).to(torch.uint8).permute(1, 2, 0).numpy()
    return left_half_from(photo, noisy)


DEGRADATIONS = {"blur": lambda photo, seed: blur_left(photo), "noise": noise_left}


def half_columns(width: int) -> tuple[list[int], list[int]]:
    """Map columns wholly left and wholly right of the middle: column j stands for the input's
    columns [j W / width, (j + 1) W / width)."""
    left = [j for j in range(width) if 2 * (j + 1) <= width]
    right = [j for j in range(width) if 2 * j >= width]
    return left, right


def half_means(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's mean over the left and over the right columns of (channels, h, w) maps."""
    left, right = half_columns(maps.shape[-1])
    return maps[..., left].mean(axis=(-2, -1)), maps[..., right].mean(axis=(-2, -1))


def measure(model_name: str, folder: Path, photos: tuple[str, ...] = PHOTOS, seed: int = 0, model=None) -> list[dict]:
    """Per photo and local degradation: each map channel's left and right means before and
    after, the score before and after, and the whole map's mean of the score channel."""
    card = get_card(model_name)
    model = load_model(model_name) if model is None else model
    rows = []
    for photo_name in photos:
        photo = _skimage_photo(photo_name)
        versions = {"clean": photo} | {name: make(photo, seed) for name, make in DEGRADATIONS.items()}
        read = {}
        for version, pixels in versions.items():
            path = folder / f"{photo_name}-{version}.png"
            Image.fromarray(pixels).save(path)
            _, maps = explain_image(model, card, path)
            grid = maps.maps[0].numpy()
            read[version] = (*half_means(grid), float(maps.scores[0]), float(grid[0].mean()), maps.names)
        left, right, score, mean, names = read["clean"]
        for version in DEGRADATIONS:
            d_left, d_right, d_score, d_mean, _ = read[version]
            rows.append(
                {
                    "model": model_name,
                    "photo": photo_name,
                    "degradation": version,
                    "channels": names,
                    "left": [left.tolist(), d_left.tolist()],
                    "right": [right.tolist(), d_right.tolist()],
                    "score": [score, d_score],
                    "map_mean": [mean, d_mean],
                }
            )
    return rows


def picture(model_name: str, photo_name: str, folder: Path, seed: int = 0, width: int = 960) -> Image.Image:
    """Score-channel overlays of a photo side by side: clean, left half blurred, left half noised."""
    card, model = get_card(model_name), load_model(model_name)
    photo = _skimage_photo(photo_name)
    versions = {"clean": photo} | {name: make(photo, seed) for name, make in DEGRADATIONS.items()}
    panels = []
    for version, pixels in versions.items():
        path = folder / f"{photo_name}-{version}.png"
        Image.fromarray(pixels).save(path)
        image, maps = explain_image(model, card, path)
        panels.append(overlay(image, maps.maps[0, 0].numpy()))
    strip = Image.fromarray(np.concatenate(panels, axis=1))
    return strip.resize((width, round(strip.height * width / strip.width)), Image.Resampling.LANCZOS)


def markdown_table(rows: list[dict]) -> str:
    """The score channel: left and right half means, clean -> degraded, and the model's score."""
    lines = [
        "| model | photo | left half degraded by | left half of the map | right half of the map | score | map mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [
            f"{row['left'][0][0]:.2f} → {row['left'][1][0]:.2f}",
            f"{row['right'][0][0]:.2f} → {row['right'][1][0]:.2f}",
        ]
        cells += [
            f"{row['score'][0]:.3f} → {row['score'][1]:.3f}",
            f"{row['map_mean'][0]:.2f} → {row['map_mean'][1]:.2f}",
        ]
        lines.append(f"| {row['model']} | {row['photo']} | {row['degradation']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    parser.add_argument("--json", type=Path, help="also write the rows (every channel) to this JSON file")
    parser.add_argument("--picture", type=Path, help="also draw qualiclip-tiny's overlays of astronaut to this PNG")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in MODELS:
            rows += measure(name, Path(folder), seed=args.seed)
        if args.picture:
            picture("qualiclip-tiny", "astronaut", Path(folder), args.seed).save(args.picture, optimize=True)
    print(markdown_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
