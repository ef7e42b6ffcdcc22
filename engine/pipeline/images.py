"""Image files -> uint8 RGB arrays the way the models expect them, or a clear reason why not.

Decoding honours EXIF orientation, converts colours to sRGB by the embedded ICC profile (a
wide-gamut photo is not scored on its raw values), and converts every mode explicitly to 8-bit
RGB (a 16-bit greyscale PNG is rescaled, not clipped; a 32-bit float TIFF is scaled by its
range, not clipped to black; transparency is composited on white). `decode="official"` instead
decodes exactly as the official QualiCLIP inference script does, `Image.open(path).convert("RGB")`
(no EXIF, no ICC, alpha dropped), for bit-exact comparison with published scores.

An image comes as a file path or as its encoded bytes already read (`EncodedImage`: a member of
a tar shard, a cell of a Parquet column); both go through the same decode, so a shard's sample
scores exactly as the same bytes written out as a file.

Only regular files are opened: a FIFO or device named `x.jpg` would block the read for ever.
A decompression-bomb limit and a minimum size are enforced. HEIF needs pillow-heif (registered
on first use). Failures raise ImageError naming the reason, so a batch can record the row and
go on.
"""

from __future__ import annotations

import functools
import io
import os
import stat
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps

from iqart.train.models.zoo import ResizePolicy

IMAGE_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".jfif",
    ".png",
    ".bmp",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
    ".gif",
    ".avif",
    ".heic",
    ".heif",
}
HEIF_SUFFIXES = {".heic", ".heif"}
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
DECODERS = ("iqart", "official")
MAX_PIXELS = 100_000_000  # decompression-bomb limit: about a 10,000 x 10,000 image
MIN_SIDE = 32  # the ResNet's total stride: smaller images have no layer4 grid
Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL's own guard agrees with ours


class ImageError(ValueError):
    """An image that cannot be scored; str() is the reason, for the output's error column."""


@dataclass
class ImageScan:
    """What a scan found: (file, root) pairs, and the files it passed over, counted by suffix."""

    files: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def skipped_summary(self) -> str:
        """ "3 files (.txt: 2, no suffix: 1)", or "" when nothing was skipped."""
        total = sum(self.skipped.values())
        if not total:
            return ""
        kinds = ", ".join(f"{suffix}: {count}" for suffix, count in self.skipped.most_common(8))
        return f"{total} file{'' if total == 1 else 's'} ({kinds}{', ...' if len(self.skipped) > 8 else ''})"


def find_images(paths: list[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """(file, root) for every image under the given files and folders (see scan_images)."""
    return scan_images(paths).files


def scan_images(paths: list[str | os.PathLike]) -> ImageScan:
    """Every image under the given files and folders, sorted within each folder, and a count
    of the files passed over. Explicit files are taken whatever their suffix; folders are walked
    recursively for known image suffixes, following symlinks but never visiting a directory
    twice (no loops)."""
    scan = ImageScan()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            _walk(path, scan)
        else:
            scan.files.append((path, path.parent))
    return scan


def _walk(root: Path, scan: ImageScan) -> None:
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        stat_result = os.stat(dirpath)
        if (stat_result.st_dev, stat_result.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((stat_result.st_dev, stat_result.st_ino))
        dirnames.sort()
        for name in sorted(filenames):
            suffix = Path(name).suffix.lower()
            if suffix in IMAGE_SUFFIXES:
                scan.files.append((Path(dirpath) / name, root))
            else:
                scan.skipped[suffix or "no suffix"] += 1


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB, explicitly (PIL's generic convert clips 16-bit data and
    float data)."""
    if image.mode == "F":
        return _float_to_rgb(np.asarray(image, dtype=np.float64))
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


def _float_to_rgb(data: np.ndarray) -> Image.Image:
    """A float image scaled by the range its values use: [0, 1] (the usual convention for
    float images), else [0, 255] or [0, 65535] where they fit, else [0, max]; negative values
    are clipped. NaN or infinity has no right answer: an error."""
    if not np.isfinite(data).all():
        raise ImageError("32-bit float image holds NaN or infinite values")
    high = float(data.max())
    peak = next((limit for limit in (1.0, 255.0, 65535.0) if high <= limit), high)
    grey = np.clip(np.round(data / peak * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


SRGB = ImageCms.createProfile("sRGB")
ICC_MODES = {"RGB": "RGB", "RGBA": "RGBA", "CMYK": "RGB", "L": "RGB"}  # what lcms converts, and to what


@functools.lru_cache(maxsize=32)
def _icc_transform(profile: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    # NOCACHE: one transform is shared by the decode threads; lcms' pixel cache is not thread-safe
    return ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(profile)),
        SRGB,
        mode,
        ICC_MODES[mode],
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
        flags=ImageCms.Flags.NOCACHE,
    )


def to_srgb(image: Image.Image, profile: bytes | None) -> Image.Image:
    """The image in sRGB by its embedded ICC profile. An image without one is taken as sRGB
    already; a profile lcms cannot read, or one that does not fit the image's mode, is ignored
    as browsers ignore it (the values are used as they are)."""
    if profile and image.mode == "P":  # a palette's colours are in the profile's space too
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if not profile or image.mode not in ICC_MODES:
        return image
    try:
        return ImageCms.applyTransform(image, _icc_transform(profile, image.mode))
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image


def resize_target(width: int, height: int, policy: ResizePolicy) -> tuple[int, int]:
    """(width, height) an upright image of this size is resized to under `policy` (its own size
    when nothing changes). One rule for the CPU path and the GPU path (gpu_decode)."""
    if policy.kind == "native":
        return width, height
    if policy.kind == "fixed":
        return policy.size[1], policy.size[0]
    scale = policy.size[0] / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize(image: Image.Image, policy: ResizePolicy) -> Image.Image:
    size = resize_target(image.width, image.height, policy)
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=None)


def load_image(path: str | os.PathLike, policy: ResizePolicy) -> np.ndarray:
    """uint8 RGB (H, W, 3) ready for the model, or ImageError with the reason."""
    return as_array(open_image(path), policy)


def draft_size(target: tuple[int, int]) -> tuple[int, int]:
    """What to ask a JPEG decoder for before a bicubic resize to `target` (height, width).

    JPEG decodes at 1/2, 1/4 or 1/8 scale almost for free (DCT scaling: PIL's `draft`), and a
    12-megapixel photo bound for 224x224 then costs a fraction of a full decode. The decoder
    keeps at least the size asked for; asking for twice the target's longer side on both axes
    leaves the bicubic resize at least 2x to reduce (so it still filters, as on a full decode)
    whatever the EXIF rotation. The cost in score is measured in benchmarks/bench_decode.py."""
    side = 2 * max(target)
    return side, side


@dataclass(frozen=True)
class EncodedImage:
    """An encoded image already in memory, with the name it has where it came from (its suffix
    says HEIF as a file's does)."""

    name: str
    data: bytes = field(repr=False)


def source_name(source: str | os.PathLike | EncodedImage) -> str:
    return source.name if isinstance(source, EncodedImage) else os.fsdecode(source)


def _open_source(source: Path | EncodedImage) -> io.BufferedIOBase:
    return io.BytesIO(source.data) if isinstance(source, EncodedImage) else _open_regular_file(source)


def open_image(
    path: str | os.PathLike | EncodedImage,
    decode: str = "iqart",
    *,
    reduce_for: tuple[int, int] | None = None,
    heif_retried: bool = False,
) -> Image.Image:
    """The decoded image in 8-bit RGB, at least MIN_SIDE on each side; or ImageError with the
    reason. `decode="iqart"`: upright (EXIF), sRGB (ICC), modes converted explicitly;
    "official": `Image.open(path).convert("RGB")` exactly. Full-reference pairs compare these
    sizes, before any resize. `reduce_for=(height, width)`: the image is about to be resized to
    that size, so a JPEG may be decoded smaller (see draft_size). `path` may be an EncodedImage:
    its bytes are decoded exactly as a file holding them would be."""
    path = path if isinstance(path, EncodedImage) else Path(path)
    if Path(source_name(path)).suffix.lower() in HEIF_SUFFIXES:
        _heif_registered()
    try:
        with _open_source(path) as file, Image.open(file) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(
                    f"{image.width}x{image.height} exceeds the {MAX_PIXELS:,}-pixel limit (decompression bomb?)"
                )
            if decode == "official":
                return _at_least_min_side(image.convert("RGB"))
            if reduce_for is not None and image.format == "JPEG":
                image.draft(image.mode, draft_size(reduce_for))
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
        if _is_heif(path):
            if not _heif_registered():
                raise ImageError("HEIF image: decoding it needs pillow-heif (pip install 'iqart[heif]')") from None
            if not heif_retried:  # a HEIF file under another name, met before pillow-heif was registered
                return open_image(path, decode, reduce_for=reduce_for, heif_retried=True)
        raise ImageError("not a recognised image format" + (" (empty file)" if _is_empty(path) else "")) from None
    except OSError as exc:
        if exc.errno is not None:  # the system's error (a symlink loop, a failing disk), not the decoder's
            raise ImageError(f"cannot read: {exc.strerror}") from None
        raise ImageError(f"corrupt or truncated image: {exc}") from None
    except (SyntaxError, ValueError, EOFError) as exc:  # PIL reports truncation and corruption this way
        raise ImageError(f"corrupt or truncated image: {exc}") from None
    except Exception as exc:  # a decoder bug on hostile input must cost one row, never the whole batch
        raise ImageError(f"cannot decode: {type(exc).__name__}: {exc}") from None


FILE_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


def _open_regular_file(path: Path) -> io.BufferedReader:
    """`path` opened for reading if it is a regular file; ImageError naming what it is if not,
    without opening it (opening a FIFO blocks until a writer comes, which may be never). The
    check is repeated on the open descriptor, so a file swapped in between cannot slip by."""
    kind = FILE_KINDS.get(stat.S_IFMT(os.stat(path).st_mode))
    if kind is not None:
        raise ImageError(f"is {kind}, not a regular file: not opened")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ImageError("not a regular file: not opened")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


_heif_lock = threading.Lock()
_heif_state: list[bool] = []  # [registered?] once tried


def _heif_registered() -> bool:
    """Whether pillow-heif is installed and registered with PIL (tried once, on the first HEIF
    file: importing it costs time that runs without HEIF files should not pay)."""
    with _heif_lock:
        if not _heif_state:
            try:
                import pillow_heif

                pillow_heif.register_heif_opener()
                _heif_state.append(True)
            except ImportError:
                _heif_state.append(False)
        return _heif_state[0]


def _is_heif(path: Path | EncodedImage) -> bool:
    """By suffix, or by the ISO-BMFF brand of a file named otherwise."""
    if Path(source_name(path)).suffix.lower() in HEIF_SUFFIXES:
        return True
    try:
        if isinstance(path, EncodedImage):
            head = path.data[:12]
        else:
            with open(path, "rb") as f:
                head = f.read(12)
    except OSError:
        return False
    return head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS


def upright_rgb(image: Image.Image) -> Image.Image:
    """EXIF orientation applied, sRGB by the ICC profile, explicit 8-bit RGB, and the minimum
    size enforced."""
    profile = image.info.get("icc_profile")
    return _at_least_min_side(to_rgb(to_srgb(ImageOps.exif_transpose(image), profile)))


def _at_least_min_side(rgb: Image.Image) -> Image.Image:
    if min(rgb.size) < MIN_SIDE:
        raise ImageError(f"too small: {rgb.width}x{rgb.height}; each side must be at least {MIN_SIDE} pixels")
    return rgb


def as_array(rgb: Image.Image, policy: ResizePolicy) -> np.ndarray:
    return np.array(resize(rgb, policy), dtype=np.uint8)  # a writable copy


def _is_empty(path: Path | EncodedImage) -> bool:
    if isinstance(path, EncodedImage):
        return not path.data
    try:
        return path.stat().st_size == 0
    except OSError:
        return False
