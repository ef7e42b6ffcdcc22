"""Synthetic degradations for QualiCLIP training: 24 types in 7 groups, 5 intensity levels each.

The set, the groups and the per-level parameters are those of KADID-10k as used by ARNIQA and
QualiCLIP (miccunifi/ARNIQA, ``utils/utils_data.py``). Every function here is our own torch
implementation; the docstrings say what each parameter means and where we differ from ARNIQA.

Conventions:

- images are float RGB in [0, 1], shape (N, 3, H, W) (a single (3, H, W) image also works), on
  any device; the result has the same shape and device, is float32 and is clipped to [0, 1];
- every random choice comes from a CPU ``torch.Generator``. Parameters of a type (motion angle,
  shifted channel, block positions and colours, ...) are drawn once per call and shared by the
  batch; per-pixel noise differs from image to image;
- ``degrade_levels`` replays the generator state for each level, so the five levels of one call
  share every random draw and differ only in intensity (QualiCLIP's ranking needs exactly that).

Only JPEG and JPEG 2000 leave the device (they round-trip through Pillow on the CPU).
"""

from __future__ import annotations

import functools
import io
import itertools
import math
import operator
from collections.abc import Callable, Collection

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "GRID_LABEL_WIDTH",
    "GROUPS",
    "LEVELS",
    "NUM_LEVELS",
    "TYPES",
    "composite",
    "degradation_grid",
    "degrade",
    "degrade_levels",
    "group_of",
]

NUM_LEVELS = 5

GROUPS: dict[str, tuple[str, ...]] = {
    "blur": ("gaussian_blur", "lens_blur", "motion_blur"),
    "color": ("color_diffusion", "color_shift", "hsv_saturation", "lab_chroma"),
    "compression": ("jpeg", "jpeg2000"),
    "noise": ("white_noise", "white_noise_ycbcr", "impulse_noise", "multiplicative_noise"),
    "brightness": ("brighten", "darken", "mean_shift"),
    "spatial": ("jitter", "non_eccentricity_patch", "pixelate", "quantization", "color_block"),
    "sharpness_contrast": ("high_sharpen", "linear_contrast", "nonlinear_contrast"),
}

TYPES: tuple[str, ...] = tuple(kind for kinds in GROUPS.values() for kind in kinds)

LEVELS: dict[str, tuple[float, ...]] = {
    "gaussian_blur": (0.1, 0.5, 1.0, 2.0, 5.0),
    "lens_blur": (1, 2, 4, 6, 8),
    "motion_blur": (1, 2, 4, 6, 10),
    "color_diffusion": (1, 3, 6, 8, 12),
    "color_shift": (1, 3, 6, 8, 12),
    "hsv_saturation": (0.4, 0.2, 0.1, 0.0, -0.4),
    "lab_chroma": (1, 2, 3, 6, 9),
    "jpeg": (43, 36, 24, 7, 4),
    "jpeg2000": (16, 32, 45, 120, 170),
    "white_noise": (0.001, 0.002, 0.003, 0.005, 0.01),
    "white_noise_ycbcr": (0.0001, 0.0005, 0.001, 0.002, 0.003),
    "impulse_noise": (0.001, 0.005, 0.01, 0.02, 0.03),
    "multiplicative_noise": (0.001, 0.005, 0.01, 0.02, 0.05),
    "brighten": (0.1, 0.2, 0.4, 0.7, 1.1),
    "darken": (0.05, 0.1, 0.2, 0.4, 0.8),
    "mean_shift": (0.0, 0.08, -0.08, 0.15, -0.15),
    "jitter": (0.05, 0.1, 0.2, 0.5, 1.0),
    "non_eccentricity_patch": (20, 40, 60, 80, 100),
    "pixelate": (0.01, 0.05, 0.1, 0.2, 0.5),
    "quantization": (20, 16, 13, 10, 7),
    "color_block": (2, 4, 6, 8, 10),
    "high_sharpen": (1, 2, 3, 6, 12),
    "linear_contrast": (0.0, 0.15, -0.4, 0.3, -0.6),
    "nonlinear_contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
}

_GROUP_OF = {kind: group for group, kinds in GROUPS.items() for kind in kinds}

# ---------------------------------------------------------------------------------------------
# helpers: random draws, filtering, colour spaces
# ---------------------------------------------------------------------------------------------


def _rand(generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) CPU draws from ``generator``."""
    return torch.rand(shape, generator=generator)


def _randn_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` (drawn on the CPU, moved to x's device)."""
    return torch.randn(x.shape, generator=generator).to(x.device)


def _conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter every channel of (N, C, H, W) with one odd-sized 2-D kernel, replicate borders."""
    kh, kw = kernel.shape
    c = x.shape[1]
    weight = kernel.to(x.device, x.dtype).expand(c, 1, kh, kw)
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="replicate")
    return F.conv2d(padded, weight, groups=c)


@functools.lru_cache(maxsize=64)
def _gaussian_1d(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable gaussian blur (kernel truncated at 3 sigma), replicate borders."""
    k = _gaussian_1d(float(sigma))
    return _conv(_conv(x, k.view(1, -1)), k.view(-1, 1))


@functools.lru_cache(maxsize=16)
def _disk_kernel(radius: float, supersample: int = 16) -> torch.Tensor:
    """Normalised disk of the given radius; each cell weighs the fraction of it inside the circle."""
    r = math.ceil(radius)
    offsets = (torch.arange(supersample, dtype=torch.float64) + 0.5) / supersample - 0.5
    centres = torch.arange(-r, r + 1, dtype=torch.float64)
    pos = (centres[:, None] + offsets[None, :]).reshape(-1)  # sub-sample coordinates along an axis
    inside = (pos[:, None] ** 2 + pos[None, :] ** 2) <= radius**2
    size = 2 * r + 1
    coverage = inside.view(size, supersample, size, supersample).double().mean(dim=(1, 3))
    return (coverage / coverage.sum()).float()


def _motion_kernel(length: float, angle: float) -> torch.Tensor:
    """A line of ``length`` pixels through the centre at ``angle`` radians, splatted bilinearly."""
    half = (length - 1) / 2
    r = math.ceil(half) + 1
    n = max(1, int(16 * length))
    t = torch.linspace(-half, half, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    xs, ys = t * math.cos(angle) + r, -t * math.sin(angle) + r
    kernel = torch.zeros(2 * r + 1, 2 * r + 1, dtype=torch.float64)
    x0, y0 = xs.floor(), ys.floor()
    for dx in (0, 1):
        for dy in (0, 1):
            w = (1 - (xs - x0 - dx).abs()) * (1 - (ys - y0 - dy).abs())
            kernel.index_put_(((y0 + dy).long(), (x0 + dx).long()), w, accumulate=True)
    return (kernel / kernel.sum()).float()


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move the content of (N, C, H, W) by (dy, dx) pixels, repeating the border into the gap."""
    p = max(abs(dy), abs(dx))
    if p == 0:
        return x
    h, w = x.shape[-2:]
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def _mix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 colour matrix to the channels of (N, 3, H, W)."""
    return torch.einsum("ij,njhw->nihw", matrix.to(x.device, x.dtype), x)


_RGB_TO_XYZ = torch.tensor(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]],
    dtype=torch.float64,
)
_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ).float()
_RGB_TO_XYZ = _RGB_TO_XYZ.float()
_WHITE_D65 = (0.95047, 1.0, 1.08883)
_LAB_DELTA = 6 / 29


def _rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> CIE Lab (D65): L in [0, 100], a and b roughly in [-128, 128]."""
    linear = torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0) + 0.055) / 1.055) ** 2.4)
    xyz = _mix(_RGB_TO_XYZ, linear)
    xyz = xyz / torch.tensor(_WHITE_D65, device=x.device).view(1, 3, 1, 1)
    f = torch.where(xyz > _LAB_DELTA**3, xyz.clamp(min=1e-12) ** (1 / 3), xyz / (3 * _LAB_DELTA**2) + 4 / 29)
    fx, fy, fz = f.unbind(1)
    return torch.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), dim=1)


def _lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) -> sRGB, clipped to [0, 1] (out-of-gamut colours are clipped per channel)."""
    L, a, b = lab.unbind(1)
    fy = (L + 16) / 116
    f = torch.stack((fy + a / 500, fy, fy - b / 200), dim=1)
    xyz = torch.where(f > _LAB_DELTA, f**3, 3 * _LAB_DELTA**2 * (f - 4 / 29))
    xyz = xyz * torch.tensor(_WHITE_D65, device=lab.device).view(1, 3, 1, 1)
    linear = _mix(_XYZ_TO_RGB, xyz).clamp(0, 1)
    return torch.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055).clamp(0, 1)


# BT.601 full range, all three channels in [0, 1] (chroma centred on 0.5).
_RGB_TO_YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=torch.float64
)
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR).float()
_RGB_TO_YCBCR = _RGB_TO_YCBCR.float()
_CHROMA_OFFSET = torch.tensor([0.0, 0.5, 0.5]).view(1, 3, 1, 1)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma, (N, 1, H, W)."""
    weights = _RGB_TO_YCBCR[0].to(x.device, x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _parabola_curve(x: torch.Tensor, midpoint: float) -> torch.Tensor:
    """The tone curve through (0, 0), (0.5, midpoint), (1, 1): a parabola, clipped to [0, 1]."""
    return (x + 4 * (midpoint - 0.5) * x * (1 - x)).clamp(0, 1)


def _pchip_curve(x: torch.Tensor, xs: list[float], ys: list[float]) -> torch.Tensor:
    """Monotone piecewise-cubic (Fritsch-Carlson) tone curve through the control points."""
    h = [x1 - x0 for x0, x1 in itertools.pairwise(xs)]
    d = [(y1 - y0) / hk for (y0, y1), hk in zip(itertools.pairwise(ys), h, strict=True)]
    slopes = [d[0]]
    for k in range(1, len(xs) - 1):
        if d[k - 1] * d[k] <= 0:
            slopes.append(0.0)
        else:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            slopes.append((w1 + w2) / (w1 / d[k - 1] + w2 / d[k]))
    slopes.append(d[-1])

    def table(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=x.dtype, device=x.device)

    x = x.clamp(xs[0], xs[-1])
    seg = torch.bucketize(x, table(xs[1:-1]))
    x0, hk = table(xs[:-1])[seg], table(h)[seg]
    y0, y1 = table(ys[:-1])[seg], table(ys[1:])[seg]
    m0, m1 = table(slopes[:-1])[seg] * hk, table(slopes[1:])[seg] * hk
    t = (x - x0) / hk
    t2, t3 = t * t, t * t * t
    return (2 * t3 - 3 * t2 + 1) * y0 + (t3 - 2 * t2 + t) * m0 + (-2 * t3 + 3 * t2) * y1 + (t3 - t2) * m1


def _pil_roundtrip(x: torch.Tensor, **save_args) -> torch.Tensor:
    """Encode every image with Pillow (``save_args``), decode it, return float RGB on x's device."""
    arrays = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    decoded = []
    for array in arrays:
        buffer = io.BytesIO()
        Image.fromarray(array, "RGB").save(buffer, **save_args)
        buffer.seek(0)
        with Image.open(buffer) as image:
            decoded.append(np.asarray(image.convert("RGB")))
    out = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).float() / 255
    return out.to(x.device)


# ---------------------------------------------------------------------------------------------
# the 24 degradations: function(images (N, 3, H, W) float32, param, generator) -> images
# ---------------------------------------------------------------------------------------------


def gaussian_blur(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` pixels (kernel to 3 sigma; ARNIQA cuts at 2)."""
    return _gaussian(x, sigma)


def lens_blur(x: torch.Tensor, radius: float, generator: torch.Generator) -> torch.Tensor:
    """Defocus: average over a disk of ``radius`` pixels (anti-aliased edge, like fspecial('disk'))."""
    return _conv(x, _disk_kernel(float(radius)))


def motion_blur(x: torch.Tensor, length: float, generator: torch.Generator) -> torch.Tensor:
    """Linear motion blur along a path of ``length`` pixels at a random angle in [0, 180) degrees.

    As in ARNIQA (MATLAB's fspecial('motion', len, angle)) the parameter ARNIQA calls "radius" is
    the path length, so level 1 (length 1) leaves the image unchanged.
    """
    angle = float(_rand(generator, 1)) * math.pi
    return _conv(x, _motion_kernel(float(length), angle))


def color_diffusion(x: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Colour bleeding: gaussian blur (std ``sigma`` pixels) of the Lab a and b channels only.

    ARNIQA blurs with std 1.5*amount+2 and also multiplies a, b by the amount (a saturation boost
    on top of the bleeding); we blur with std ``sigma`` and leave the chroma amplitude alone.
    """
    lab = _rgb_to_lab(x)
    ab = _gaussian(lab[:, 1:], sigma)
    return _lab_to_rgb(torch.cat((lab[:, :1], ab), dim=1))


def color_shift(x: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Misregistered colour channel: one channel moved by ``amount`` pixels, where edges are strong.

    The channel is moved in a random direction and blended with the original through an edge map
    (gradient magnitude of the luma, blurred with std 4, scaled per image so its 99th percentile
    is 1): flat areas keep their colour, fringes appear along edges. ARNIQA always moves the green
    channel and only towards the lower right; we draw the channel (R, G or B) and any direction.
    """
    draw = _rand(generator, 2)
    channel = min(int(draw[0] * 3), 2)
    angle = float(draw[1]) * 2 * math.pi
    dy, dx = round(amount * math.sin(angle)), round(amount * math.cos(angle))

    luma = _luma(x)
    gy = _shift(luma, -1, 0) - _shift(luma, 1, 0)
    gx = _shift(luma, 0, -1) - _shift(luma, 0, 1)
    edges = _gaussian(torch.sqrt(gx**2 + gy**2), 4.0).flatten(1)
    low = edges.min(dim=1, keepdim=True).values
    high = torch.quantile(edges, 0.99, dim=1, keepdim=True)
    edges = ((edges - low) / (high - low).clamp(min=1e-6)).clamp(0, 1).view_as(luma)

    out = x.clone()
    moved = _shift(x[:, channel : channel + 1], dy, dx)
    out[:, channel : channel + 1] = edges * moved + (1 - edges) * x[:, channel : channel + 1]
    return out


def hsv_saturation(x: torch.Tensor, factor: float, generator: torch.Generator) -> torch.Tensor:
    """Multiply the HSV saturation by ``factor`` at constant hue and value.

    With V = max(R, G, B) every channel becomes V - factor * (V - c): 1 keeps the image, 0 gives
    the grey image V, and a negative factor pushes each colour through grey to its complementary
    hue with |factor| of the saturation (the result ARNIQA gets from kornia's HSV with S < 0;
    channels above 1 are clipped).
    """
    value = x.amax(dim=1, keepdim=True)
    return value - factor * (value - x)


def lab_chroma(x: torch.Tensor, factor: float, generator: torch.Generator) -> torch.Tensor:
    """Over-saturation: multiply the Lab a and b channels by ``factor`` (1 = unchanged).

    Colours pushed out of the sRGB gamut are clipped per channel (ARNIQA also truncates to 8 bits).
    """
    lab = _rgb_to_lab(x)
    return _lab_to_rgb(torch.cat((lab[:, :1], lab[:, 1:] * factor), dim=1))


def jpeg(x: torch.Tensor, quality: float, generator: torch.Generator) -> torch.Tensor:
    """JPEG at ``quality`` (Pillow/libjpeg scale, 4:2:0 chroma), images quantised to 8 bits first."""
    return _pil_roundtrip(x, format="JPEG", quality=int(quality))


def jpeg2000(x: torch.Tensor, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """JPEG 2000 (OpenJPEG via Pillow) at compression ratio ``ratio``:1, one quality layer.

    ARNIQA uses 8 resolution levels; we use as many as the image size allows, at most 8.
    """
    resolutions = max(1, min(8, int(math.log2(min(x.shape[-2:]))) + 1))
    return _pil_roundtrip(
        x, format="JPEG2000", quality_mode="rates", quality_layers=[float(ratio)], num_resolutions=resolutions
    )


def white_noise(x: torch.Tensor, variance: float, generator: torch.Generator) -> torch.Tensor:
    """Additive gaussian noise of ``variance`` (on the [0, 1] scale), independent per channel."""
    return x + math.sqrt(variance) * _randn_like(x, generator)


def white_noise_ycbcr(x: torch.Tensor, variance: float, generator: torch.Generator) -> torch.Tensor:
    """Additive gaussian noise of ``variance`` on each of Y, Cb and Cr (BT.601, [0, 1] scale)."""
    offset = _CHROMA_OFFSET.to(x.device)
    ycbcr = _mix(_RGB_TO_YCBCR, x) + offset
    ycbcr = ycbcr + math.sqrt(variance) * _randn_like(x, generator)
    return _mix(_YCBCR_TO_RGB, ycbcr - offset)


def impulse_noise(x: torch.Tensor, density: float, generator: torch.Generator) -> torch.Tensor:
    """Salt and pepper: a ``density`` fraction of the channel values set to 0 or 1 (half each).

    ARNIQA draws density * C*H*W coordinates with replacement; we flip each value independently
    with probability ``density`` (the same expected count, and nested across levels).
    """
    u = _rand(generator, *x.shape).to(x.device)
    out = torch.where(u < density / 2, torch.zeros_like(x), x)
    return torch.where(u > 1 - density / 2, torch.ones_like(x), out)


def multiplicative_noise(x: torch.Tensor, variance: float, generator: torch.Generator) -> torch.Tensor:
    """Speckle: x * (1 + n) with n gaussian of ``variance``, independent per channel."""
    return x * (1 + math.sqrt(variance) * _randn_like(x, generator))


def brighten(x: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Brighten with the tone curve through (0.5, 0.5 + amount/2), applied to RGB and to Lab L.

    Like ARNIQA: the result is (2 * curve(RGB) + rgb(curve(L))) / 3; the curve is the parabola
    that MATLAB's spline fits through three points.
    """
    midpoint = 0.5 + amount / 2
    lab = _rgb_to_lab(x)
    lightness = _parabola_curve(lab[:, :1] / 100, midpoint) * 100
    via_lab = _lab_to_rgb(torch.cat((lightness, lab[:, 1:]), dim=1))
    return (2 * _parabola_curve(x, midpoint) + via_lab) / 3


def darken(x: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Darken every RGB channel with the tone curve through (0.5, 0.5 - amount/2) (as ARNIQA)."""
    return _parabola_curve(x, 0.5 - amount / 2)


def mean_shift(x: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Add ``amount`` to every channel (negative darkens); the levels alternate in sign."""
    return x + amount


def jitter(x: torch.Tensor, amount: float, generator: torch.Generator, iterations: int = 5) -> torch.Tensor:
    """Pixel scatter: 5 rounds of resampling each pixel at a random offset of std ``amount`` pixels.

    As ARNIQA's imscatter: per round, a gaussian displacement field (the same for the 3 channels,
    different per image) and bilinear resampling with replicated borders.
    """
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device), indexing="ij"
    )
    base = torch.stack((xs, ys), dim=-1)  # grid_sample wants (x, y)
    to_normalised = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1)], device=x.device)
    out = x
    for _ in range(iterations):
        offsets = torch.randn((n, h, w, 2), generator=generator).to(x.device) * amount
        grid = base + offsets * to_normalised
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out


_MAX_PATCHES = 100
_MAX_BLOCKS = 10


def non_eccentricity_patch(x: torch.Tensor, count: float, generator: torch.Generator) -> torch.Tensor:
    """Copy ``count`` 16x16 patches of the image each to a random spot at most 8 pixels away.

    Patch size and reach shrink to a quarter of the image side for small images. Positions for
    100 patches are always drawn and the first ``count`` used; every patch is cut from the
    original and earlier patches lie on top of later ones, so a higher level only adds pixels to
    what a lower level changed. ARNIQA copies one patch after the other from the image being
    modified (a patch can carry an earlier copy), with the same sizes.
    """
    h, w = x.shape[-2:]
    size = max(1, min(16, h // 4, w // 4))
    reach = size
    lo_y, hi_y = min(reach, h - size), max(0, h - size - reach)
    lo_x, hi_x = min(reach, w - size), max(0, w - size - reach)
    draws = _rand(generator, max(int(count), _MAX_PATCHES), 4)[: int(count)].tolist()
    out = x.clone()
    for uy, ux, vy, vx in reversed(draws):
        sy = round(lo_y + uy * max(hi_y - lo_y, 0))
        sx = round(lo_x + ux * max(hi_x - lo_x, 0))
        ty = min(max(round(sy + (vy - 0.5) * reach), 0), h - size)
        tx = min(max(round(sx + (vx - 0.5) * reach), 0), w - size)
        out[..., ty : ty + size, tx : tx + size] = x[..., sy : sy + size, sx : sx + size]
    return out


def pixelate(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Mosaic: downscale to (0.95 - strength**0.6) of the size by area averaging, upscale nearest.

    The scale law is ARNIQA's; ARNIQA downscales with nearest neighbour (dropping rows and
    columns), we average each block, which is what a pixelation filter shows.
    """
    h, w = x.shape[-2:]
    scale = 0.95 - strength**0.6
    small = F.interpolate(x, size=(max(1, int(h * scale)), max(1, int(w * scale))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


def quantization(x: torch.Tensor, levels: float, generator: torch.Generator) -> torch.Tensor:
    """Uniform quantisation of each channel to ``levels`` values (bin centres of equal bins).

    ARNIQA bins with the same equal thresholds but then min-max stretches the bin indices over the
    image; reconstructing at bin centres keeps brightness and makes the error grow with fewer levels.
    """
    levels = int(levels)
    bins = (x * levels).floor().clamp(0, levels - 1)
    return (bins + 0.5) / levels


def color_block(x: torch.Tensor, count: float, generator: torch.Generator) -> torch.Tensor:
    """Paste ``count`` 32x32 blocks of random solid colours at random positions.

    Block size shrinks to a quarter of the image side for small images. Positions and colours for
    10 blocks are always drawn and the first ``count`` used, earlier blocks on top, so a higher
    level only adds covered pixels to a lower one (ARNIQA pastes later blocks on top).
    """
    h, w = x.shape[-2:]
    size = max(1, min(32, h // 4, w // 4))
    draws = _rand(generator, max(int(count), _MAX_BLOCKS), 5)[: int(count)].tolist()
    out = x.clone()
    for uy, ux, *rgb in reversed(draws):
        top, left = int(uy * (h - size + 1)), int(ux * (w - size + 1))
        out[..., top : top + size, left : left + size] = torch.tensor(rgb, device=x.device).view(3, 1, 1)
    return out


def high_sharpen(x: torch.Tensor, amount: float, generator: torch.Generator, sigma: float = 3.0) -> torch.Tensor:
    """Over-sharpening: unsharp mask of Lab L, L + amount * (L - gaussian(L, sigma 3)).

    ARNIQA's kernel is 13x13 with std 6 (nearly a box); ours is a plain gaussian of std 3 (19x19),
    the usual unsharp mask.
    """
    lab = _rgb_to_lab(x)
    lightness = lab[:, :1]
    sharpened = lightness + amount * (lightness - _gaussian(lightness, sigma))
    return _lab_to_rgb(torch.cat((sharpened, lab[:, 1:]), dim=1))


def linear_contrast(x: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Contrast curve through (0.3, 0.25 - amount/4), (0.5, 0.5), (0.7, 0.75 + amount/4).

    ARNIQA's control points: amount > 0 raises contrast, amount < 0 lowers it, and amount 0 is
    already a mild S-curve. ARNIQA interpolates with MATLAB's not-a-knot cubic spline (which can
    overshoot); we use a monotone piecewise cubic through the same points.
    """
    return _pchip_curve(x, [0.0, 0.3, 0.5, 0.7, 1.0], [0.0, 0.25 - amount / 4, 0.5, 0.75 + amount / 4, 1.0])


def nonlinear_contrast(x: torch.Tensor, half_range: float, generator: torch.Generator) -> torch.Tensor:
    """Contrast compression: map [0, 1] linearly onto [0.5 - half_range, 0.5 + half_range].

    This is what ARNIQA's "non-linear contrast change" computes, despite its name; we keep it
    (smaller ``half_range`` = flatter image).
    """
    return 0.5 + (x - 0.5) * (2 * half_range)


_FUNCTIONS: dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    "gaussian_blur": gaussian_blur,
    "lens_blur": lens_blur,
    "motion_blur": motion_blur,
    "color_diffusion": color_diffusion,
    "color_shift": color_shift,
    "hsv_saturation": hsv_saturation,
    "lab_chroma": lab_chroma,
    "jpeg": jpeg,
    "jpeg2000": jpeg2000,
    "white_noise": white_noise,
    "white_noise_ycbcr": white_noise_ycbcr,
    "impulse_noise": impulse_noise,
    "multiplicative_noise": multiplicative_noise,
    "brighten": brighten,
    "darken": darken,
    "mean_shift": mean_shift,
    "jitter": jitter,
    "non_eccentricity_patch": non_eccentricity_patch,
    "pixelate": pixelate,
    "quantization": quantization,
    "color_block": color_block,
    "high_sharpen": high_sharpen,
    "linear_contrast": linear_contrast,
    "nonlinear_contrast": nonlinear_contrast,
}
assert tuple(_FUNCTIONS) == TYPES and tuple(LEVELS) == TYPES

# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------


def group_of(kind: str) -> str:
    """The group a degradation type belongs to."""
    _check_kind(kind)
    return _GROUP_OF[kind]


def _check_kind(kind: str) -> None:
    if not isinstance(kind, str) or kind not in _GROUP_OF:
        raise ValueError(f"unknown degradation type {kind!r}; valid types: {', '.join(TYPES)}")


def _check_level(level: int) -> int:
    try:
        if isinstance(level, bool):
            raise TypeError
        value = operator.index(level)
    except TypeError:
        raise ValueError(f"level must be an integer in 0..{NUM_LEVELS - 1}, got {level!r}") from None
    if not 0 <= value < NUM_LEVELS:
        raise ValueError(f"level must be an integer in 0..{NUM_LEVELS - 1} (0 = mildest), got {level!r}")
    return value


def _as_batch(images: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(N, 3, H, W) or (3, H, W) -> float32 (N, 3, H, W), and whether a batch dim was added."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    single = images.ndim == 3
    batch = images.unsqueeze(0) if single else images
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"images must be RGB (N, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    return batch.float().contiguous(), single


def _default_generator() -> torch.Generator:
    """A CPU generator seeded from torch's global RNG (so torch.manual_seed makes runs repeat)."""
    seed = int(torch.randint(0, 2**62, (1,)).item())
    return torch.Generator().manual_seed(seed)


def degrade(images: torch.Tensor, kind: str, level: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply degradation ``kind`` at ``level`` (0 = mildest .. 4) to float RGB images in [0, 1].

    Random parameters are drawn once from ``generator`` (a CPU generator; a fresh one seeded from
    torch's global RNG when None) and shared by the batch; per-pixel noise differs per image.
    Inputs are clamped to [0, 1] first. Returns float32 in [0, 1], same shape and device as
    ``images``. Raises ValueError for an unknown ``kind`` or a level outside 0..4.
    """
    _check_kind(kind)
    level = _check_level(level)
    batch, single = _as_batch(images)
    if generator is None:
        generator = _default_generator()
    out = _FUNCTIONS[kind](batch.clamp(0, 1), LEVELS[kind][level], generator)
    out = out.float().clamp(0, 1)
    return out[0] if single else out


def degrade_levels(images: torch.Tensor, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """All five levels of ``kind``: (5, N, 3, H, W) ((5, 3, H, W) for one image).

    The generator state is replayed for every level, so the levels share every random draw and
    differ only in intensity; the result equals stacking ``degrade`` with equally seeded
    generators, and the generator ends as after one ``degrade`` call.
    """
    _check_kind(kind)
    if generator is None:
        generator = _default_generator()
    start = generator.get_state()
    outs = []
    for level in range(NUM_LEVELS):
        generator.set_state(start)
        outs.append(degrade(images, kind, level, generator))
    return torch.stack(outs)


def allowed_groups(allowed: Collection[str] | None = None) -> dict[str, tuple[str, ...]]:
    """GROUPS narrowed to the ``allowed`` types (all when None), dropping emptied groups."""
    if allowed is None:
        return dict(GROUPS)
    for kind in allowed:
        _check_kind(kind)
    narrowed = {group: tuple(k for k in members if k in allowed) for group, members in GROUPS.items()}
    return {group: members for group, members in narrowed.items() if members}


def draw_kind(generator: torch.Generator, allowed: Collection[str] | None = None) -> str:
    """A random type: a group uniformly, then a type of it uniformly, so that each group is
    drawn equally often however many types it has (blur has 3, noise 4, spatial 5)."""
    groups = list(allowed_groups(allowed).values())
    if not groups:
        raise ValueError("no degradation types to draw from")
    members = groups[int(torch.randint(len(groups), (1,), generator=generator))]
    return members[int(torch.randint(len(members), (1,), generator=generator))]


def composite(
    images: torch.Tensor,
    level: int,
    generator: torch.Generator,
    groups: int | None = None,
    allowed: Collection[str] | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """Chain degradations from 1-4 distinct groups (``groups`` of them if given), all at ``level``.

    The number of groups (uniform in 1..4 unless given), the groups, their order and one type per
    group are drawn from ``generator``, among the ``allowed`` types when given (training keeps its
    held-out types out this way); the image is clipped to [0, 1] after each step. Returns the
    degraded images and the types applied, in order.
    """
    level = _check_level(level)
    available = allowed_groups(allowed)
    names = list(available)
    if groups is None:
        groups = int(torch.randint(1, min(4, len(names)) + 1, (1,), generator=generator))
    else:
        try:
            count = None if isinstance(groups, bool) else operator.index(groups)
        except TypeError:
            count = None
        if count is None or not 1 <= count <= len(names):
            raise ValueError(f"groups must be an integer in 1..{len(names)}, got {groups!r}")
        groups = count
    order = torch.randperm(len(names), generator=generator)[:groups].tolist()
    kinds = []
    for index in order:
        members = available[names[index]]
        kinds.append(members[int(torch.randint(len(members), (1,), generator=generator))])
    out = images
    for kind in kinds:
        out = degrade(out, kind, level, generator)
    return out, kinds


GRID_LABEL_WIDTH = 160


def degradation_grid(image: torch.Tensor, seed: int = 0, tile: int = 128) -> Image.Image:
    """A contact sheet: one row per type (24), the original then levels 1-5 as columns.

    ``image`` (3, H, W) in [0, 1] is centre-cropped to a square and resized to ``tile`` pixels.
    The picture is (GRID_LABEL_WIDTH + 6 * tile) x (24 * tile), type names on the left.
    """
    batch, _ = _as_batch(image)
    batch = batch[:1].cpu().clamp(0, 1)
    h, w = batch.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = batch[..., top : top + side, left : left + side]
    square = F.interpolate(square, size=(tile, tile), mode="bilinear", antialias=True, align_corners=False)
    square = square.clamp(0, 1)

    def to_pil(x: torch.Tensor) -> Image.Image:
        array = (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        return Image.fromarray(array, "RGB")

    sheet = Image.new("RGB", (GRID_LABEL_WIDTH + (NUM_LEVELS + 1) * tile, len(TYPES) * tile), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    original = to_pil(square[0])
    generator = torch.Generator().manual_seed(seed)
    for row, kind in enumerate(TYPES):
        y = row * tile
        draw.text((6, y + tile // 2 - 6), kind, fill="black", font=font)
        sheet.paste(original, (GRID_LABEL_WIDTH, y))
        for level, degraded in enumerate(degrade_levels(square, kind, generator)):
            sheet.paste(to_pil(degraded[0]), (GRID_LABEL_WIDTH + (level + 1) * tile, y))
    return sheet
