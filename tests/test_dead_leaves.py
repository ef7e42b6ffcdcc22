"""Dead-leaves images (train/data/dead_leaves.py), the bundled photos and the training content mix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iqart.train.data.dead_leaves import DeadLeavesPool, dead_leaves, power_law_radii
from iqart.train.data.pristine import BUNDLED_PHOTOS, TrainingContent, load_pristine, random_rescale


def test_same_seed_same_image_other_seed_other_image():
    a = dead_leaves(64, torch.Generator().manual_seed(7))
    b = dead_leaves(64, torch.Generator().manual_seed(7))
    c = dead_leaves(64, torch.Generator().manual_seed(8))
    assert a.shape == (3, 64, 64) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_radii_follow_the_power_law():
    """Maximum-likelihood exponent of a (practically untruncated) Pareto sample: 1 + n / Σ ln(r / r_min)."""
    radii = power_law_radii(50_000, 2.0, 1e9, 3.0, torch.Generator().manual_seed(0))
    assert radii.min() >= 2.0 and radii.max() <= 1e9
    alpha = 1 + len(radii) / np.log(radii / 2.0).sum()
    assert alpha == pytest.approx(3.0, abs=0.05)
    # truncated: every radius inside the bounds, and the median where the truncated CDF puts it
    truncated = power_law_radii(20_000, 4.0, 40.0, 3.0, torch.Generator().manual_seed(1))
    assert truncated.min() >= 4.0 and truncated.max() <= 40.0
    expected_median = (0.5 * (4.0**-2 + 40.0**-2)) ** -0.5
    assert np.median(truncated) == pytest.approx(expected_median, rel=0.03)
    with pytest.raises(ValueError):
        power_law_radii(3, 5.0, 2.0, 3.0, torch.Generator())


def test_leaves_occlude_into_flat_regions_with_sharp_edges():
    """Flat leaves without supersampling: every pixel belongs to one leaf (no gaps, no blending),
    so the image is piecewise constant: most pixels equal their right neighbour, and the rest are
    edges between leaves of visibly different colours."""
    image = dead_leaves(96, torch.Generator().manual_seed(2), supersample=1, textured=False)
    colours = {tuple(c) for c in image.reshape(3, -1).t().tolist()}
    same_as_right = (image[:, :, 1:] == image[:, :, :-1]).all(dim=0).float().mean().item()
    assert 0.6 < same_as_right < 0.98  # flat regions and edges
    assert 20 < len(colours) < 96 * 96 // 10  # many leaves, each covering many pixels
    jumps = (image[:, :, 1:] - image[:, :, :-1]).abs().amax(dim=0)
    assert jumps[jumps > 0].median() > 0.1  # an edge is a step, not a ramp


def test_the_spectrum_falls_like_a_natural_images():
    """Natural images' power spectrum falls as ~1/f^2 (scale invariance); dead leaves with a
    power-law radius distribution do the same, white noise (slope 0) does not."""

    def slope(gray: np.ndarray) -> float:
        power = np.abs(np.fft.fftshift(np.fft.fft2(gray - gray.mean()))) ** 2
        n = gray.shape[0]
        y, x = np.indices(power.shape) - n // 2
        radius = np.hypot(y, x).astype(int)
        freqs = np.arange(4, n // 2)
        radial = np.array([power[radius == f].mean() for f in freqs])
        return float(np.polyfit(np.log(freqs), np.log(radial), 1)[0])

    slopes = [slope(dead_leaves(128, torch.Generator().manual_seed(s)).mean(dim=0).numpy()) for s in range(3)]
    assert all(-3.2 < s < -1.5 for s in slopes), slopes
    assert abs(slope(np.random.default_rng(0).random((128, 128)))) < 0.3


def test_pool_refreshes_and_otherwise_only_flips_and_rotates():
    pool = DeadLeavesPool(32, torch.Generator().manual_seed(0), capacity=2, refresh=0.0)
    originals = [image.clone() for image in pool.images]
    variants = [
        torch.rot90(im.flip(-1) if f else im, k, dims=(-2, -1)) for im in originals for f in (0, 1) for k in range(4)
    ]
    for _ in range(10):
        drawn = pool.draw()
        assert any(torch.equal(drawn, v) for v in variants)
    fresh = DeadLeavesPool(32, torch.Generator().manual_seed(0), capacity=2, refresh=1.0)
    for _ in range(12):
        fresh.draw()
    assert not any(torch.equal(a, b) for a in fresh.images for b in originals)
    with pytest.raises(ValueError):
        DeadLeavesPool(32, torch.Generator(), capacity=0)


def test_bundled_photos_come_from_every_package():
    """scikit-image's, scikit-learn's (the dev extra installs it) and matplotlib's photos."""
    images = load_pristine("bundled:china,flower,grace_hopper,camera")
    assert images["china"].shape == (3, 427, 640) and images["grace_hopper"].shape[0] == 3
    assert torch.equal(images["camera"][0], images["camera"][2])  # greyscale as three channels
    assert {"coffee", "china", "grace_hopper", "gravel"} <= set(BUNDLED_PHOTOS)
    with pytest.raises(ValueError, match="unknown bundled photo 'nope'"):
        load_pristine("bundled:nope")


def test_training_content_mixes_and_without_procedural_draws_as_before():
    photos = [torch.rand(3, 40, 50), torch.rand(3, 60, 30)]
    a, b = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    content = TrainingContent(photos, 0.5, 0.0, 48, a)
    for index in (0, 1, 1, 0):
        assert torch.equal(content.photo(index), random_rescale(photos[index], 0.5, b))
    assert torch.equal(a.get_state(), b.get_state())  # the same random numbers, no more
    mixed = TrainingContent(photos, 1.0, 0.5, 48, torch.Generator().manual_seed(0), pool_capacity=4)
    shapes = [tuple(mixed.photo(0).shape) for _ in range(40)]
    procedural = shapes.count((3, 48, 48))
    assert 10 < procedural < 30 and shapes.count((3, 40, 50)) == 40 - procedural
    with pytest.raises(ValueError, match="procedural_probability"):
        TrainingContent(photos, 1.0, 1.5, 48, torch.Generator())
