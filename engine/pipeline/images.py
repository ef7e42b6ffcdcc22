"""Image files -> uint8 RGB arrays the way the models expect them, or a clear reason why not.

Decoding honours EXIF orientation and converts every mode explicitly to 8-bit RGB (a 16-bit
greyscale PNG is rescaled, not clipped; transparency is composited on white). A decompression-
bomb limit and a minimum size are enforced. Failures raise ImageError naming file and reason,
so a batch can record the row and go on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from iqart.train.zoo import ResizePolicy

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif"}
MAX_PIXELS = 100_000_000  # decompression-bomb limit: about a 10,000 x 10,000 image
MIN_SIDE = 32  # the ResNet's total stride: smaller images have no layer4 grid
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL's own guard agrees with ours


class ImageError(ValueError):
    """An image that cannot be scored; str() is the reason, for the output's error column."""


def find_images(paths: list[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """(file, root) for every image under the given files and folders, sorted within each folder.

    Explicit files are taken whatever their suffix; folders are walked recursively for known
    image suffixes, following symlinks but never visiting a directory twice (no loops).
    """
    found: list[tuple[Path, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend((f, path) for f in _walk(path))
        else:
            found.append((path, path.parent))
    return found


def _walk(root: Path) -> list[Path]:
    seen: set[tuple[int, int]] = set()
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        stat = os.stat(dirpath)
        if (stat.st_dev, stat.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirnames.sort()
        files.extend(Path(dirpath) / name for name in sorted(filenames) if Path(name).suffix.lower() in IMAGE_SUFFIXES)
    return files


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, explicitly (PIL's generic convert clips 16-bit data)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        data = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or data.max() > 255 else 255.0
        grey = np.clip(np.round(data / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, F, RGB


def resize(image: Image.Image, policy: ResizePolicy) -> Image.Image:
    if policy.kind == "native":
        return image
    if policy.kind == "fixed":
        height, width = policy.size
    else:
        short = policy.size[0]
        scale = short / min(image.size)
        width, height = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    if (width, height) == image.size:
        return image
    return image.resize((width, height), Image.Resampling.BICUBIC, reducing_gap=None)


def load_image(path: str | os.PathLike, policy: ResizePolicy) -> np.ndarray:
    """uint8 RGB (H, W, 3) ready for the model, or ImageError with the reason."""
    return as_array(open_image(path), policy)


def open_image(path: str | os.PathLike) -> Image.Image:
    """The decoded image upright (EXIF), in 8-bit RGB, at least MIN_SIDE on each side; or
    ImageError with the reason. Full-reference pairs compare these sizes, before any resize."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(f"{image.width}x{image.height} exceeds the {MAX_PIXELS:,}-pixel limit (decompression bomb?)")
            image.load()
            return upright_rgb(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"decompression bomb: {exc}") from None
    except FileNotFoundError:
        raise ImageError("no such file") from None
    except IsADirectoryError:
        raise ImageError("is a directory") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except Image.UnidentifiedImageError:
        raise ImageError("not a recognised image format" + (" (empty file)" if _is_empty(path) else "")) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # PIL reports truncation and corruption this way
        raise ImageError(f"corrupt or truncated image: {exc}") from None
    except Exception as exc:  # a decoder bug on hostile input must cost one row, never the whole batch
        raise ImageError(f"cannot decode: {type(exc).__name__}: {exc}") from None


def upright_rgb(image: Image.Image) -> Image.Image:
    """EXIF orientation applied, explicit 8-bit RGB, and the minimum size enforced."""
    rgb = to_rgb(ImageOps.exif_transpose(image))
    if min(rgb.size) < MIN_SIDE:
        raise ImageError(f"too small: {rgb.width}x{rgb.height}; each side must be at least {MIN_SIDE} pixels")
    return rgb


def as_array(rgb: Image.Image, policy: ResizePolicy) -> np.ndarray:
    return np.array(resize(rgb, policy), dtype=np.uint8)  # a writable copy


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False
