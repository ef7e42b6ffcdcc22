"""JPEG decoding on the GPU (nvJPEG, through torchvision.io.decode_jpeg), with the CPU path's
EXIF orientation, resize policy and error rows.

At thousands of images a second PIL cannot keep up: a 12-megapixel JPEG costs tens of
milliseconds of a CPU core. Here the decode threads only read each file and parse its header
(PIL, no pixels); the pipeline hands the bytes of a whole batch to nvJPEG in one call, then
turns each image upright and resizes it on the GPU, and the batch reaches a GPU backend as a CUDA
uint8 NHWC tensor without a trip through host memory.

What goes to the GPU is what it decodes the way the CPU path would: baseline JPEGs in RGB or
greyscale, with no ICC profile or one that maps to sRGB within a level (SRGB_TOLERANCE), whose
bytes end with the EOI marker (a truncated file is the CPU path's to judge). Everything else,
and every job of `decode="official"`, is decoded by the CPU path (images.open_image) in the
decode threads, so other formats, CMYK, progressive files and wide-gamut photos read exactly as
before, and every unreadable file is the CPU path's error row, word for word. A file nvJPEG
rejects anyway (the batched call fails: each file is retried alone; one still failing goes
to the CPU path) costs a CPU decode, never the batch.

Faithfulness to the CPU path, measured on the CPU (tests/test_gpu_decode.py): the orientation
is exact; the resize reproduces PIL's BICUBIC (a = -0.5, antialiased, horizontal pass then
vertical, each rounded half up to 8 bits) with torch.nn.functional.interpolate(mode="bicubic",
antialias=True) and differs by at most 1 level in under 0.1% of values (PIL's fixed-point
weights). Two differences remain: nvJPEG's IDCT and chroma upsampling are not libjpeg-turbo's
(benchmarks/bench_gpu_decode.py measures the pixel and score difference on a GPU), and the CPU
path decodes a JPEG bound for a fixed model size DCT-reduced (images.draft_size) where the GPU
decodes it in full.
"""

from __future__ import annotations

import functools
import io
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from iqart.engine.pipeline.images import (
    MAX_PIXELS,
    MIN_SIDE,
    EncodedImage,
    ImageError,
    _open_source,
    resize_target,
    to_srgb,
)
from iqart.engine.pipeline.jobs import ScoreJob
from iqart.train.models.zoo import ResizePolicy

DECODE_DEVICES = ("cpu", "cuda")
GPU_FORMATS = {"JPEG", "MPO"}  # MPO: a JPEG with more frames after it (phones); nvJPEG and PIL decode the first
GPU_MODES = {"RGB", "L"}  # CMYK/YCCK JPEGs are the CPU path's (lcms, explicit conversion)
SRGB_TOLERANCE = 1  # levels: an embedded profile this close to sRGB is decoded on the GPU as sRGB
GPU_DECODE_PIXELS = 256_000_000  # pixels per nvJPEG call (21 12-MP photos: 0.8 GB decoded, 3 GB during the resize)
SOI = b"\xff\xd8\xff"  # start of image, and the first marker
EOI = b"\xff\xd9"

# Orientation (EXIF 0x0112) -> what PIL's exif_transpose does, on the last two dims (H, W).
ORIENTATIONS: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    2: lambda t: t.flip(-1),  # FLIP_LEFT_RIGHT
    3: lambda t: t.flip(-2, -1),  # ROTATE_180
    4: lambda t: t.flip(-2),  # FLIP_TOP_BOTTOM
    5: lambda t: t.transpose(-2, -1),  # TRANSPOSE
    6: lambda t: torch.rot90(t, -1, (-2, -1)),  # ROTATE_270: a quarter turn clockwise
    7: lambda t: t.transpose(-2, -1).flip(-2, -1),  # TRANSVERSE
    8: lambda t: torch.rot90(t, 1, (-2, -1)),  # ROTATE_90: a quarter turn anticlockwise
}

DecodeFn = Callable[[list[torch.Tensor], torch.device], list[torch.Tensor]]


@dataclass
class JpegFile:
    """One file the GPU can decode: its bytes and what its header says."""

    path: Path | EncodedImage
    data: bytes
    width: int  # as stored, before orientation
    height: int
    orientation: int = 1

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) after the EXIF orientation."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)


@dataclass
class GpuJob:
    """A job whose files all go to the GPU (the image, and the reference of a pair)."""

    job: ScoreJob
    files: list[JpegFile]

    @property
    def pixels(self) -> int:
        return sum(f.width * f.height for f in self.files)


def gpu_readable(path: Path | EncodedImage) -> JpegFile | str:
    """The file's bytes and header if the GPU decodes it as the CPU path would; else why not
    (the CPU path then decodes it, or names what is wrong with it). An EncodedImage (a shard's
    member) is judged by the same rules."""
    try:
        with _open_source(path) as file:
            data = file.read(len(SOI))
            if data != SOI:  # another format: not read further here (the CPU path reads it)
                return "not a JPEG"
            data += file.read()
        with Image.open(io.BytesIO(data)) as image:  # the header only: no pixels decoded
            if image.format not in GPU_FORMATS:
                return f"{image.format or 'unknown'} file"
            if image.mode not in GPU_MODES:
                return f"{image.mode} JPEG"
            if image.info.get("progressive") or image.info.get("progression"):
                return "progressive JPEG"
            if image.mode == "RGB" and image.info.get("adobe_transform") == 0:
                return "RGB-coded JPEG (Adobe transform 0)"
            profile = image.info.get("icc_profile")
            if profile and (image.mode != "RGB" or not is_srgb(profile)):
                return "ICC profile other than sRGB"
            width, height = image.size
            if width * height > MAX_PIXELS or min(width, height) < MIN_SIDE:
                return "size out of range"
            orientation = image.getexif().get(0x0112, 1)
    except Exception as exc:  # unreadable, not an image, a bad header: the CPU path says which
        return f"header not read ({type(exc).__name__})"
    if not data.rstrip(b"\0").endswith(EOI):
        return "no end-of-image marker (truncated?)"
    return JpegFile(path, data, width, height, orientation if orientation in ORIENTATIONS else 1)


@functools.lru_cache(maxsize=64)
def is_srgb(profile: bytes) -> bool:
    """Whether the CPU path's colour conversion (images.to_srgb) moves no value of a 17x17x17
    RGB grid by more than SRGB_TOLERANCE: then decoding without it is the same image. A profile
    the CPU path ignores (unreadable, or not for RGB) counts as sRGB, as it is used as sRGB."""
    levels = np.linspace(0, 255, 17).round().astype(np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(1, -1, 3)
    converted = np.asarray(to_srgb(Image.fromarray(grid, "RGB"), profile).convert("RGB"))
    return int(np.abs(converted.astype(np.int16) - grid).max()) <= SRGB_TOLERANCE


def prepare_job(job: ScoreJob) -> GpuJob | str:
    """The job for the GPU, or why the CPU path must decode it. A pair goes to the GPU only
    when both files do and their upright sizes match (a mismatch is the CPU path's error row)."""
    if job.problem is not None:
        return "the job's problem is the CPU path's error row"
    files = []
    for path in (job.path,) if job.reference is None else (job.path, job.reference):
        readable = gpu_readable(path)
        if isinstance(readable, str):
            return readable
        files.append(readable)
    if len(files) == 2 and files[0].upright_size != files[1].upright_size:
        return "pair sizes differ"
    return GpuJob(job, files)


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """(…, H, W) turned upright as PIL's ImageOps.exif_transpose does for this EXIF orientation."""
    transform = ORIENTATIONS.get(orientation)
    return image if transform is None else transform(image)


def resize_like_pil(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """uint8 (C, H, W) -> uint8 (C, height, width) as PIL's resize(BICUBIC, reducing_gap=None):
    a separable antialiased bicubic (a = -0.5, which torch uses when antialias=True), the
    horizontal pass first, each pass rounded half up and clipped to 8 bits as PIL stores its
    intermediate image."""
    if (image.shape[-1], image.shape[-2]) == (width, height):
        return image
    x = image.unsqueeze(0).float()
    if x.shape[-1] != width:
        x = _to_8_bits(F.interpolate(x, size=(x.shape[-2], width), mode="bicubic", antialias=True, align_corners=False))
    if x.shape[-2] != height:
        x = _to_8_bits(F.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False))
    return x.squeeze(0).to(torch.uint8)


def _to_8_bits(x: torch.Tensor) -> torch.Tensor:
    return (x + 0.5).floor_().clamp_(0, 255)


def torchvision_decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """uint8 (3, H, W) per JPEG, decoded on `device` (nvJPEG on CUDA, libjpeg-turbo on the CPU)."""
    from torchvision.io import ImageReadMode, decode_jpeg  # torchvision is imported when first used

    return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


class GpuDecoder:
    """Decodes GpuJobs in batches on `device` into model input: uint8 (H, W, 3) tensors there.

    `decode_fn(list of uint8 byte tensors, device) -> list of uint8 (3, H, W)` is torchvision's
    decode_jpeg; on device "cpu" the same code runs on its CPU decoder (how the tests run it).
    """

    def __init__(self, device: str | torch.device = "cuda", decode_fn: DecodeFn = torchvision_decode):
        self.device = torch.device(device)
        self.decode_fn = decode_fn

    def decode(self, files: Sequence[JpegFile]) -> list[torch.Tensor | Exception]:
        """Each file decoded, or the exception that stopped it: one call for all, and when that
        fails, one call per file, so that one file nvJPEG rejects costs only itself."""
        data = [torch.frombuffer(bytearray(f.data), dtype=torch.uint8) for f in files]
        try:
            return list(self._decode_call(data))
        except Exception:
            if len(files) == 1:
                raise
        results: list[torch.Tensor | Exception] = []
        for one in data:
            try:
                results.append(self._decode_call([one])[0])
            except Exception as exc:
                results.append(exc)
        return results

    def _decode_call(self, data: list[torch.Tensor]) -> list[torch.Tensor]:
        """One call of decode_fn, once the current stream has finished its work on a CUDA device.

        torchvision's decode_jpeg allocates its outputs on the caller's current stream but decodes
        into them on a private stream that does not wait for it (torchvision PR #9606; nvJPEG's
        hardware engine on Hopper ignores stream order, torchcodec PR #1634). A block freed while
        the previous batch's resize kernels are still queued can be handed out as an output and
        overwritten under them. Waiting for the current stream first leaves no queued kernel on
        any block the decoder can be given (tests/test_gpu_decode.py decodes many batches back to
        back on a GPU and compares every image with the CPU path)."""
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        return self.decode_fn(data, self.device)

    def model_input(self, decoded: torch.Tensor, file: JpegFile, policy: ResizePolicy) -> torch.Tensor:
        """uint8 (H, W, 3) upright and resized by `policy`, from nvJPEG's (3, H, W)."""
        if tuple(decoded.shape) != (3, file.height, file.width):
            raise ImageError(f"decoded as {tuple(decoded.shape)}, header says 3x{file.height}x{file.width}")
        upright = orient(decoded, file.orientation)
        width, height = resize_target(upright.shape[-1], upright.shape[-2], policy)
        return resize_like_pil(upright, width, height).permute(1, 2, 0).contiguous()

    def decode_jobs(
        self, jobs: Sequence[GpuJob], policy: ResizePolicy
    ) -> Iterator[tuple[ScoreJob, tuple[torch.Tensor, torch.Tensor | None] | None]]:
        """(job, (image, reference or None)) per job, or (job, None) when the GPU could not
        decode one of its files: the CPU path then decodes the job."""
        files = [file for job in jobs for file in job.files]
        try:
            decoded = iter(self.decode(files))
        except Exception:
            decoded = iter([None] * len(files))
        for job in jobs:
            outputs = [next(decoded) for _ in job.files]
            try:
                if any(not isinstance(out, torch.Tensor) for out in outputs):
                    raise ImageError("not decoded")
                images = [self.model_input(out, file, policy) for out, file in zip(outputs, job.files, strict=True)]
            except Exception:  # nvJPEG's rejection, or the GPU failing on it (memory): the CPU path's
                yield job.job, None
                continue
            yield job.job, (images[0], images[1] if len(images) == 2 else None)


@functools.lru_cache(maxsize=8)
def probe(device: torch.device, decode_fn: DecodeFn = torchvision_decode) -> str | None:
    """None if `decode_fn` decodes a JPEG on `device`, else why not (torchvision built without
    nvJPEG, a driver problem). Done once per device."""
    buffer = io.BytesIO()
    Image.new("RGB", (MIN_SIDE, MIN_SIDE), (90, 120, 200)).save(buffer, "JPEG")
    try:
        out = decode_fn([torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)], device)[0]
        if tuple(out.shape) != (3, MIN_SIDE, MIN_SIDE):
            return f"decoded a test JPEG as {tuple(out.shape)}"
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


def check_decode_device(requested: str | None) -> None:
    """A clear error for a decode device that cannot be had here (before any work is done)."""
    if requested is None or requested == "cpu":
        return
    if requested != "cuda":
        raise ValueError(f"decode device must be one of {', '.join(DECODE_DEVICES)}, not {requested!r}")
    if not torch.cuda.is_available():
        raise ValueError(
            "--decode-device cuda needs a CUDA GPU, and torch.cuda.is_available() is False here; "
            "pass --decode-device cpu (the default for CPU backends)"
        )


def gpu_decoder_for(
    requested: str | None, backend, decode: str = "iqart", decode_fn: DecodeFn = torchvision_decode
) -> GpuDecoder | None:
    """The GPU decoder a run uses, or None for the CPU path.

    `requested`: "cuda", "cpu", or None: cuda when the backend runs on a CUDA device and takes
    CUDA tensors (torch on CUDA, tensorrt), else cpu. "cuda" asked for without a usable GPU
    decoder is an error (ValueError); the default falls back to the CPU with one line on stderr.
    `decode="official"` always decodes on the CPU (PIL's own convert is what it reproduces). The
    decoder runs on the backend's GPU when it has one."""
    check_decode_device(requested)
    if requested == "cpu" or decode != "iqart":
        return None
    backend_device = torch.device(getattr(backend, "device", "cpu"))
    if requested is None and not (backend_device.type == "cuda" and backend.takes_cuda_tensors):
        return None
    device = backend_device if backend_device.type == "cuda" else torch.device("cuda")
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    problem = probe(device, decode_fn)
    if problem is None:
        return GpuDecoder(device, decode_fn)
    if requested == "cuda":
        raise ValueError(f"--decode-device cuda: nvJPEG cannot decode on {device}: {problem}")
    print(f"iqart: decoding on the CPU: nvJPEG cannot decode on {device} ({problem})", file=sys.stderr)
    return None
