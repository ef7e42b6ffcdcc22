"""Dead-leaves images: unlimited procedural content with natural images' scale invariance.

A dead-leaves image is a stack of occluding discs ("leaves") of random position, colour and
texture whose radii follow a power law p(r) ∝ r^-α on [r_min, r_max]. With α = 3 the picture
looks statistically the same at every scale, as natural images do, and it is full of sharp
occlusion edges, flat regions and textures: the features blur, noise and compression act on.
The tiny demo models train on it (mixed with the few bundled photos) so that they cannot
memorise content: no image is ever seen twice.

Rendering is front to back: the first disc drawn is the frontmost, each later disc only paints
pixels still uncovered, and drawing stops once (nearly) everything is covered. That is the same
distribution as dropping leaves back to front until the picture stops changing, at a fraction
of the cost. Discs are drawn at `supersample` times the size and area-averaged down, so edges
are antialiased like a camera's, not aliased staircases (which blur detection would call sharp
and everything else would call an artefact).

Every random draw comes from one CPU torch.Generator: the same seed gives the same image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

EXPONENT = 3.0  # α: scale invariance
MAX_LEAVES = 20_000  # safety bound; at the default sizes full coverage needs a few thousand
_TEXTURES = ("flat", "gradient", "grating")
_TEXTURE_PROBABILITIES = (0.45, 0.35, 0.2)


def power_law_radii(count: int, r_min: float, r_max: float, exponent: float, generator: torch.Generator) -> np.ndarray:
    """`count` radii with density ∝ r^-exponent on [r_min, r_max] (inverse-CDF sampling)."""
    if not 0 < r_min < r_max:
        raise ValueError(f"need 0 < r_min < r_max, got {r_min}, {r_max}")
    u = torch.rand(count, generator=generator, dtype=torch.float64).numpy()
    if exponent == 1.0:
        return r_min * (r_max / r_min) ** u
    a, b = r_min ** (1 - exponent), r_max ** (1 - exponent)
    return (a + u * (b - a)) ** (1 / (1 - exponent))


def _colours(count: int, generator: torch.Generator) -> np.ndarray:
    """(count, 3) RGB in [0, 1]: uniform hue, mostly moderate saturation, spread-out brightness
    (uniform RGB would be far more saturated than photographs)."""
    draws = torch.rand(count, 3, generator=generator, dtype=torch.float64).numpy()
    hue, saturation, value = draws[:, 0], draws[:, 1] ** 1.5, 0.08 + 0.9 * draws[:, 2] ** 0.8
    k = (np.array([5.0, 3.0, 1.0])[None, :] + hue[:, None] * 6) % 6
    return value[:, None] * (1 - saturation[:, None] * np.clip(np.minimum(k, 4 - k), 0, 1))


def dead_leaves(
    size: int | tuple[int, int],
    generator: torch.Generator,
    r_min: float = 4.0,
    r_max: float | None = None,
    exponent: float = EXPONENT,
    supersample: int = 2,
    textured: bool = True,
) -> torch.Tensor:
    """A dead-leaves image, float (3, H, W) in [0, 1].

    `size` is the output size (an int for a square); radii are in output pixels, r_max defaults
    to half the longer side. r_min = 4 keeps the smallest leaves a few pixels wide: smaller ones
    turn the picture into confetti that looks like impulse noise. `textured` gives each leaf one
    of: a flat colour, a linear shading gradient, or a sinusoidal grating of random period and
    orientation, so that pristine content is not only flat paint. No per-pixel grain: that is what
    the noise degradations add, and a pristine image must not show it.
    """
    height, width = (size, size) if isinstance(size, int) else size
    s = int(supersample)
    H, W = height * s, width * s
    r_max = (max(height, width) / 2 if r_max is None else r_max) * s
    canvas = np.zeros((H, W, 3), dtype=np.float32)
    uncovered = np.ones((H, W), dtype=bool)
    remaining = H * W
    drawn = 0
    while remaining > 0 and drawn < MAX_LEAVES:
        batch = 256
        radii = power_law_radii(batch, r_min * s, r_max, exponent, generator)
        centres = torch.rand(batch, 2, generator=generator, dtype=torch.float64).numpy()
        # centres may lie a radius outside the frame, so edges are not biased towards the middle
        cy = centres[:, 0] * (H + 2 * radii) - radii
        cx = centres[:, 1] * (W + 2 * radii) - radii
        colours = _colours(batch, generator)
        kinds = (
            torch.multinomial(
                torch.tensor(_TEXTURE_PROBABILITIES), batch, replacement=True, generator=generator
            ).numpy()
            if textured
            else np.zeros(batch, dtype=np.int64)
        )
        params = torch.rand(batch, 4, generator=generator, dtype=torch.float64).numpy()
        for i in range(batch):
            r = radii[i]
            top, bottom = max(0, math.floor(cy[i] - r)), min(H, math.ceil(cy[i] + r) + 1)
            left, right = max(0, math.floor(cx[i] - r)), min(W, math.ceil(cx[i] + r) + 1)
            if top >= bottom or left >= right:
                continue
            ys = np.arange(top, bottom, dtype=np.float32)[:, None] - cy[i]
            xs = np.arange(left, right, dtype=np.float32)[None, :] - cx[i]
            inside = (ys * ys + xs * xs <= r * r) & uncovered[top:bottom, left:right]
            if not inside.any():
                continue
            canvas[top:bottom, left:right][inside] = _paint(kinds[i], params[i], colours[i], ys, xs, r, s, inside)
            uncovered[top:bottom, left:right] &= ~inside
            remaining -= int(inside.sum())
        drawn += batch
    if remaining > 0:  # only after MAX_LEAVES: fill the last specks with the mean colour
        canvas[uncovered] = canvas[~uncovered].mean(axis=0)
    image = torch.from_numpy(canvas).permute(2, 0, 1)
    if s > 1:
        image = F.avg_pool2d(image[None], s)[0]
    return image.clamp(0, 1)


def _paint(
    kind: int,
    params: np.ndarray,
    colour: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    r: float,
    supersample: int,
    inside: np.ndarray,
) -> np.ndarray:
    """The pixels of one leaf where `inside`, (count, 3)."""
    texture = _TEXTURES[kind]
    if texture == "flat":
        return np.broadcast_to(colour, (int(inside.sum()), 3))
    angle = params[0] * 2 * math.pi
    along = np.cos(angle) * xs + np.sin(angle) * ys  # signed distance along a random direction
    along = np.broadcast_to(along, inside.shape)[inside]
    if texture == "gradient":  # shading across the leaf: up to ±30 % brightness
        factor = 1 + 0.3 * params[1] * along / max(r, 1.0)
        return np.clip(colour[None, :] * factor[:, None], 0, 1)
    # grating: period 3-30 output pixels, amplitude up to 0.15
    period = (3 + 27 * params[1] ** 2) * supersample
    wave = 0.15 * params[2] * np.sin(2 * math.pi * along / period + params[3] * 2 * math.pi)
    return np.clip(colour[None, :] + wave[:, None], 0, 1)


class DeadLeavesPool:
    """Dead-leaves images for training, `size` pixels square, at a bounded cost per draw.

    Rendering one takes ~0.1 s on one CPU core, more than a tiny model's training step spends on
    it. The pool holds `capacity` images; each draw replaces a random one with a fresh image with
    probability `refresh`, and returns a random one flipped and rotated by a multiple of 90
    degrees (dead leaves have no up or down). Over a run that is `refresh` new images per draw,
    and random crops of them are all different content.
    """

    def __init__(self, size: int, generator: torch.Generator, capacity: int = 64, refresh: float = 0.25):
        if capacity < 1 or not 0 <= refresh <= 1:
            raise ValueError(f"need capacity >= 1 and 0 <= refresh <= 1, got {capacity}, {refresh}")
        self.size, self.generator, self.refresh = size, generator, refresh
        self.images = [dead_leaves(size, generator) for _ in range(capacity)]

    def draw(self) -> torch.Tensor:
        g = self.generator
        index = int(torch.randint(len(self.images), (1,), generator=g))
        if float(torch.rand(1, generator=g)) < self.refresh:
            self.images[index] = dead_leaves(self.size, g)
        image = self.images[index]
        if int(torch.randint(2, (1,), generator=g)):
            image = image.flip(-1)
        return torch.rot90(image, int(torch.randint(4, (1,), generator=g)), dims=(-2, -1))
