"""Synthetic degradations (train/data/degradations.py): API contract, determinism and, on a real photo,
that each type's intensity grows with its level."""

from __future__ import annotations

import itertools

import pytest
import torch

from iqart.train.data import degradations as D

RANDOM_TYPES = {
    "motion_blur",
    "color_shift",
    "white_noise",
    "white_noise_ycbcr",
    "impulse_noise",
    "multiplicative_noise",
    "jitter",
    "non_eccentricity_patch",
    "color_block",
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The test machine has 2 shared cores: intra-op threads only add contention here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """A 128x128 crop of skimage's astronaut (face, suit, flag, background), (1, 3, 128, 128)."""
    from skimage import data  # scikit-image comes with the dev extra

    image = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float() / 255
    return image[:, 40:168, 170:298].unsqueeze(0).contiguous()


@pytest.fixture(scope="module")
def small(photo) -> torch.Tensor:
    """Two different non-square 40x56 images: a downscaled photo and smooth random colour."""
    scaled = torch.nn.functional.interpolate(photo, size=(40, 56), mode="area")
    noise = torch.rand((1, 3, 5, 7), generator=torch.Generator().manual_seed(3))
    smooth = torch.nn.functional.interpolate(noise, size=(40, 56), mode="bilinear", align_corners=False)
    return torch.cat((scaled, smooth))


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def luma(x: torch.Tensor) -> torch.Tensor:
    return (x * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(dim=-3)


def high_frequency(x: torch.Tensor) -> float:
    """Mean squared Laplacian of the luma."""
    g = luma(x)
    lap = 4 * g[..., 1:-1, 1:-1] - g[..., :-2, 1:-1] - g[..., 2:, 1:-1] - g[..., 1:-1, :-2] - g[..., 1:-1, 2:]
    return lap.pow(2).mean().item()


def ab(x: torch.Tensor) -> torch.Tensor:
    return D._rgb_to_lab(x.reshape(-1, 3, *x.shape[-2:]))[:, 1:]


def chroma(x: torch.Tensor) -> float:
    return ab(x).pow(2).sum(dim=1).sqrt().mean().item()


def mse(x: torch.Tensor, reference: torch.Tensor) -> float:
    return (x - reference).pow(2).mean().item()


def strictly_increasing(values: list[float]) -> bool:
    return all(b > a for a, b in itertools.pairwise(values))


def strictly_decreasing(values: list[float]) -> bool:
    return all(b < a for a, b in itertools.pairwise(values))


# --- tables --------------------------------------------------------------------------------------


def test_tables():
    assert list(D.GROUPS) == ["blur", "color", "compression", "noise", "brightness", "spatial", "sharpness_contrast"]
    assert [len(kinds) for kinds in D.GROUPS.values()] == [3, 4, 2, 4, 3, 5, 3]
    assert tuple(kind for kinds in D.GROUPS.values() for kind in kinds) == D.TYPES
    assert len(set(D.TYPES)) == 24
    assert tuple(D.LEVELS) == D.TYPES
    assert D.NUM_LEVELS == 5 and all(len(v) == 5 for v in D.LEVELS.values())
    assert D.GROUPS["blur"] == ("gaussian_blur", "lens_blur", "motion_blur")
    assert D.LEVELS["jpeg"] == (43, 36, 24, 7, 4)
    assert D.LEVELS["mean_shift"] == (0.0, 0.08, -0.08, 0.15, -0.15)
    for group, kinds in D.GROUPS.items():
        assert all(D.group_of(kind) == group for kind in kinds)


# --- contract: shape, range, dtype, device -------------------------------------------------------


@pytest.mark.parametrize("kind", D.TYPES)
def test_every_level_shape_range_dtype(kind, small):
    for level in range(D.NUM_LEVELS):
        out = D.degrade(small, kind, level, seeded(level))
        assert out.shape == small.shape
        assert out.dtype == torch.float32 and out.device == small.device
        assert not torch.isnan(out).any()
        assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(D.degrade(small, kind, 4, seeded()), small)  # the strongest level changes the image


@pytest.mark.parametrize("kind", D.TYPES)
def test_tiny_single_double_image(kind):
    """An 8x8 single image (3, H, W) in float64 works and comes back (3, H, W) float32."""
    image = torch.rand((3, 8, 8), generator=seeded(1), dtype=torch.float64)
    out = D.degrade(image, kind, 4, seeded())
    assert out.shape == (3, 8, 8) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


# --- randomness ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", D.TYPES)
def test_seeding(kind, small):
    first = D.degrade(small, kind, 3, seeded(1))
    assert torch.equal(first, D.degrade(small, kind, 3, seeded(1)))
    other = D.degrade(small, kind, 3, seeded(2))
    if kind in RANDOM_TYPES:
        assert not torch.equal(first, other)
    else:
        assert torch.equal(first, other)


def test_default_generator_follows_torch_seed(small):
    torch.manual_seed(5)
    first = D.degrade(small, "white_noise", 2)
    torch.manual_seed(5)
    assert torch.equal(first, D.degrade(small, "white_noise", 2))


def test_parameters_shared_noise_per_image(photo):
    twins = photo.repeat(2, 1, 1, 1)
    for kind in ("motion_blur", "color_shift", "non_eccentricity_patch", "color_block"):
        out = D.degrade(twins, kind, 4, seeded())
        assert torch.equal(out[0], out[1]), kind
    for kind in ("white_noise", "white_noise_ycbcr", "impulse_noise", "multiplicative_noise", "jitter"):
        out = D.degrade(twins, kind, 4, seeded())
        assert not torch.equal(out[0], out[1]), kind


@pytest.mark.parametrize("kind", sorted(RANDOM_TYPES) + ["jpeg", "gaussian_blur"])
def test_degrade_levels_is_stacked_degrade(kind, small):
    generator = seeded(7)
    levels = D.degrade_levels(small, kind, generator)
    expected = torch.stack([D.degrade(small, kind, level, seeded(7)) for level in range(D.NUM_LEVELS)])
    assert levels.shape == (5, *small.shape)
    assert torch.equal(levels, expected)
    after_one_call = seeded(7)
    D.degrade(small, kind, 0, after_one_call)
    assert torch.equal(generator.get_state(), after_one_call.get_state())


def test_degrade_levels_single_image(small):
    assert D.degrade_levels(small[0], "white_noise", seeded()).shape == (5, *small[0].shape)


# --- intensity grows with the level, on a real photo ---------------------------------------------


def levels_of(photo: torch.Tensor, kind: str, seed: int = 0) -> list[torch.Tensor]:
    return list(D.degrade_levels(photo, kind, seeded(seed)))


@pytest.mark.parametrize("kind", ["gaussian_blur", "lens_blur", "motion_blur"])
def test_blur_removes_high_frequencies(kind, photo):
    energy = [high_frequency(y) for y in levels_of(photo, kind)]
    assert energy[0] <= high_frequency(photo) + 1e-9
    assert strictly_decreasing(energy), energy


@pytest.mark.parametrize(
    "kind",
    [
        "color_diffusion",
        "color_shift",
        "jpeg",
        "jpeg2000",
        "white_noise",
        "white_noise_ycbcr",
        "impulse_noise",
        "multiplicative_noise",
        "jitter",
        "non_eccentricity_patch",
        "pixelate",
        "quantization",
        "color_block",
        "high_sharpen",
        "nonlinear_contrast",
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_error_grows(kind, seed, photo):
    errors = [mse(y, photo) for y in levels_of(photo, kind, seed)]
    assert errors[0] > 0
    assert strictly_increasing(errors), errors


def test_sharpen_adds_high_frequencies(photo):
    energy = [high_frequency(y) for y in levels_of(photo, "high_sharpen")]
    assert energy[0] > high_frequency(photo)
    assert strictly_increasing(energy), energy


def test_hsv_saturation(photo):
    levels = levels_of(photo, "hsv_saturation")
    values = [chroma(y) for y in levels]
    assert values[0] < chroma(photo)
    assert strictly_decreasing(values[:4]), values
    assert values[3] < 0.5  # saturation 0: grey
    # factor -0.4: as much colour as +0.4 would leave, but pushed through grey to the opposite hue
    assert values[4] > values[2]
    assert (ab(levels[4]) * ab(photo)).sum(dim=1).mean() < 0


def test_lab_chroma(photo):
    values = [chroma(y) for y in levels_of(photo, "lab_chroma")]
    assert abs(values[0] - chroma(photo)) < 0.5  # factor 1
    assert strictly_increasing(values), values


def test_brighten_darken(photo):
    brighter = [y.mean().item() for y in levels_of(photo, "brighten")]
    darker = [y.mean().item() for y in levels_of(photo, "darken")]
    assert brighter[0] > photo.mean().item() and strictly_increasing(brighter), brighter
    assert darker[0] < photo.mean().item() and strictly_decreasing(darker), darker


def test_mean_shift_signs(photo):
    """Levels 0, +0.08, -0.08, +0.15, -0.15: each level's shift has the listed sign and grows
    in size within its sign (clipping keeps it a little under the nominal amount)."""
    delta = [y.mean().item() - photo.mean().item() for y in levels_of(photo, "mean_shift")]
    assert abs(delta[0]) < 1e-6
    assert 0 < delta[1] < delta[3] <= 0.15
    assert 0 > delta[2] > delta[4] >= -0.15
    assert delta[1] > 0.05 and delta[2] < -0.05


def test_linear_contrast_signs(photo):
    """Amounts 0, .15, -.4, .3, -.6: positive amounts (and ARNIQA's 0, a mild S-curve) raise the
    contrast (std) and more so for larger amounts; negative ones lower it, more so when larger."""
    base = photo.std().item()
    spread = [y.std().item() for y in levels_of(photo, "linear_contrast")]
    assert base < spread[0] < spread[1] < spread[3]
    assert base > spread[2] > spread[4]


def test_nonlinear_contrast_flattens(photo):
    spread = [y.std().item() for y in levels_of(photo, "nonlinear_contrast")]
    assert spread[0] < photo.std().item() and strictly_decreasing(spread), spread


# --- errors ------------------------------------------------------------------------------------------


def test_bad_kind_and_level(small):
    with pytest.raises(ValueError, match="blurry.*gaussian_blur"):
        D.degrade(small, "blurry", 0)
    with pytest.raises(ValueError, match="blurry"):
        D.degrade_levels(small, "blurry")
    with pytest.raises(ValueError, match="blurry"):
        D.group_of("blurry")
    for level in (-1, 5, 1.5, "2", True):
        with pytest.raises(ValueError, match=r"0\.\.4"):
            D.degrade(small, "jpeg", level)
    with pytest.raises(ValueError, match="RGB"):
        D.degrade(small[:, :1], "jpeg", 0)


# --- composite ---------------------------------------------------------------------------------------


def test_composite_groups_and_range(small):
    counts = set()
    for seed in range(12):
        out, kinds = D.composite(small, 2, seeded(seed))
        counts.add(len(kinds))
        assert 1 <= len(kinds) <= 4
        assert all(kind in D.TYPES for kind in kinds)
        assert len({D.group_of(kind) for kind in kinds}) == len(kinds)
        assert out.shape == small.shape and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1
    assert len(counts) >= 3


def test_composite_fixed_count_and_determinism(small):
    for groups in (1, 4, 7):
        out, kinds = D.composite(small, 4, seeded(groups), groups=groups)
        assert len(kinds) == groups and len({D.group_of(k) for k in kinds}) == groups
        again, kinds_again = D.composite(small, 4, seeded(groups), groups=groups)
        assert kinds == kinds_again and torch.equal(out, again)
    with pytest.raises(ValueError, match="groups"):
        D.composite(small, 0, seeded(), groups=0)
    with pytest.raises(ValueError, match=r"0\.\.4"):
        D.composite(small, 7, seeded())


def test_composite_keeps_to_the_allowed_types(small):
    allowed = [k for k in D.TYPES if D.group_of(k) in ("blur", "noise") and k != "white_noise"]
    for seed in range(10):
        _, kinds = D.composite(small, 1, seeded(seed), allowed=allowed)
        assert set(kinds) <= set(allowed) and 1 <= len(kinds) <= 2
    with pytest.raises(ValueError, match="unknown"):
        D.composite(small, 1, seeded(), allowed=["not_a_type"])


def test_draw_kind_draws_groups_uniformly():
    generator = seeded(3)
    draws = [D.draw_kind(generator) for _ in range(7000)]
    per_group = {group: sum(D.group_of(k) == group for k in draws) for group in D.GROUPS}
    assert all(850 <= count <= 1150 for count in per_group.values()), per_group  # 1000 expected each
    narrowed = [D.draw_kind(generator, ["jpeg", "lens_blur"]) for _ in range(200)]
    assert set(narrowed) == {"jpeg", "lens_blur"}
    with pytest.raises(ValueError, match="no degradation types"):
        D.draw_kind(generator, [])


def test_composite_chains_and_clips(photo, monkeypatch):
    """Each step is one ``degrade`` call on the previous, clipped output, at the given level."""
    calls = []
    real = D.degrade

    def spy(images, kind, level, generator=None):
        out = real(images, kind, level, generator)
        calls.append((images, kind, level, out))
        return out

    monkeypatch.setattr(D, "degrade", spy)
    out, kinds = D.composite(photo * 1.5 - 0.25, 4, seeded(11), groups=4)
    assert [call[1] for call in calls] == kinds and all(call[2] == 4 for call in calls)
    for (_, _, _, previous), (images, *_rest) in itertools.pairwise(calls):
        assert images is previous and images.min() >= 0 and images.max() <= 1
    assert out is calls[-1][3]


# --- grid --------------------------------------------------------------------------------------------


def test_degradation_grid(photo):
    tile = 24
    sheet = D.degradation_grid(photo[0], seed=1, tile=tile)
    assert sheet.mode == "RGB"
    assert sheet.size == (D.GRID_LABEL_WIDTH + 6 * tile, 24 * tile)
    first = sheet.crop((D.GRID_LABEL_WIDTH, 0, D.GRID_LABEL_WIDTH + tile, tile))
    last = sheet.crop((D.GRID_LABEL_WIDTH, 23 * tile, D.GRID_LABEL_WIDTH + tile, 24 * tile))
    assert first.tobytes() == last.tobytes()  # the original starts every row
    labels = sheet.crop((0, 0, D.GRID_LABEL_WIDTH, tile))
    assert labels.getextrema() != ((255, 255), (255, 255), (255, 255))  # a label was drawn


# --- CUDA --------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", D.TYPES)
def test_cuda_matches_cpu(kind, small):
    gpu = D.degrade(small.cuda(), kind, 3, seeded(5))
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    cpu = D.degrade(small, kind, 3, seeded(5))
    if kind in ("jpeg", "jpeg2000"):  # 8-bit rounding may differ by one step
        assert (gpu.cpu() - cpu).abs().mean() < 0.01
    else:
        torch.testing.assert_close(gpu.cpu(), cpu, atol=2e-3, rtol=0)
