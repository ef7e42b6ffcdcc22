"""Quality maps (`iqart explain`): what the per-location features are, how the maps relate to the
score, that they fall where a photo is degraded (demo weights), and the command's outputs."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import stats

from benchmarks.explain_locality import PHOTOS, half_columns, measure
from iqart.engine.cli.main import main
from iqart.engine.explain import MAP_SUFFIX, OVERLAY_SUFFIX, SUMMARY_FILE, output_stem
from iqart.engine.results.formats import read_result_file
from iqart.train.data.pristine import _skimage_photo
from iqart.train.models.clip_backbone import stage_features
from iqart.train.models.preprocess import uint8_nhwc_to_model_input
from iqart.train.models.quality_maps import (
    SCORE,
    attention_pool_locations,
    bpclip_maps,
    layer4_grid,
    qualiclip_maps,
    quality_maps,
)
from iqart.train.models.zoo import load_model
from tests.helpers import EXAMPLE_IMAGES


@pytest.fixture(scope="module")
def demo_models():
    return {name: load_model(name) for name in ("qualiclip-tiny", "bpclip-nr-tiny")}


def test_location_features_are_the_pool_attending_each_location_to_itself(scrambled):
    """CLIP's full attention pool (all queries, torch's own multi-head attention) with every
    query allowed to attend only to itself returns, at each location, exactly the per-location
    feature the maps read: the value and output projections of that location alone."""
    pool = scrambled("qualiclip-tiny").visual.attnpool
    features = torch.randn(2, pool.v_proj.in_features, 5, 7)  # torch's generator, seeded per test
    tokens = features.flatten(2).permute(2, 0, 1)  # (L, N, C), as CLIP's pool lays them out
    only_itself = torch.full((tokens.shape[0],) * 2, float("-inf")).fill_diagonal_(0.0)
    out, _ = F.multi_head_attention_forward(
        tokens,
        tokens,
        tokens,
        tokens.shape[-1],
        pool.num_heads,
        None,
        torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        None,
        None,
        False,
        0.0,
        pool.c_proj.weight,
        pool.c_proj.bias,
        training=False,
        need_weights=False,
        attn_mask=only_itself,
        use_separate_proj_weight=True,
        q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
    )
    torch.testing.assert_close(attention_pool_locations(pool, features), out.transpose(0, 1), rtol=1e-5, atol=1e-5)


def test_with_equal_attention_the_score_is_the_mean_location_features_reading(demo_models, random_images):
    """The pool's output is an attention-weighted mix of the per-location features; with the
    query zeroed every location (and the mean token, whose feature is their mean) gets equal
    weight, so the embedding is the mean location feature and the score its reading. With the
    model's own attention the two differ: the weights are not equal."""
    model = copy.deepcopy(demo_models["qualiclip-tiny"])
    images = random_images(2, 96, 160)
    with torch.no_grad():
        grid = stage_features(model.visual, images)[-1]
        mean_feature = attention_pool_locations(model.visual.attnpool, grid).mean(dim=1)
        attended = model.embed(images)
        model.visual.attnpool.q_proj.weight.zero_()
        model.visual.attnpool.q_proj.bias.zero_()
        torch.testing.assert_close(model.embed(images), mean_feature, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(images), model.head(mean_feature), rtol=1e-5, atol=1e-6)
    assert (attended - mean_feature).abs().max() > 1e-3


@pytest.mark.parametrize(("name", "size"), [("qualiclip-tiny", (97, 161)), ("bpclip-nr-tiny", (224, 224))])
def test_maps_carry_the_models_own_score_and_attributes(demo_models, random_images, name, size):
    model = demo_models[name]
    images = random_images(2, *size)
    maps = quality_maps(model, images)
    with torch.no_grad():
        score, attributes = model.explain_head(model.embed(images))
        torch.testing.assert_close(maps.scores, model(images), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(maps.attributes, attributes[:, : len(maps.names) - 1])
    assert maps.names[0] == SCORE and maps.names[1:] == model.attribute_names()[: len(maps.names) - 1]
    assert maps.maps.shape == (2, len(maps.names), *layer4_grid(*size))
    assert maps.maps.min() >= 0.0 and maps.maps.max() <= 1.0


def test_qualiclip_score_channel_is_the_mean_of_its_pair_channels(demo_models, random_images):
    maps = qualiclip_maps(demo_models["qualiclip-tiny"], random_images(1, 128, 96)).maps
    torch.testing.assert_close(maps[:, 0], maps[:, 1:].mean(dim=1), rtol=1e-6, atol=1e-6)


def test_bpclip_map_is_the_head_read_on_each_token(demo_models, random_images):
    """A token read alone: its map cell equals the head given a token set holding only it."""
    model = demo_models["bpclip-nr-tiny"]
    images = random_images(1, 224, 224)
    maps = bpclip_maps(model, images).maps
    with torch.no_grad():
        tokens = model.embed(images)
        score, attributes = model.explain_head(tokens[0, 10][None, None])
    row, column = divmod(10, maps.shape[-1])
    assert maps[0, 0, row, column] == pytest.approx(float(score[0]), abs=1e-6)
    torch.testing.assert_close(maps[0, 1:, row, column], attributes[0, : maps.shape[1] - 1])


@pytest.mark.parametrize(("height", "width"), [(32, 32), (33, 97), (224, 224), (427, 640), (95, 96)])
def test_layer4_grid_matches_the_network(demo_models, height, width):
    with torch.no_grad():
        grid = stage_features(demo_models["qualiclip-tiny"].visual, torch.zeros(1, 3, height, width))[-1]
    assert layer4_grid(height, width) == tuple(grid.shape[-2:])


def test_half_columns_leave_out_a_straddling_column():
    assert half_columns(7) == ([0, 1, 2], [4, 5, 6])
    assert half_columns(20) == (list(range(10)), list(range(10, 20)))


@pytest.fixture(scope="module")
def locality(demo_models, tmp_path_factory):
    """benchmarks/explain_locality.py's figures for both demo models (left half blurred, radius 4,
    or noised) on four skimage photos, through PNG files and the scoring decode."""
    folder = tmp_path_factory.mktemp("local")
    # a fixed noise seed: these are figures of the demo weights, reported in docs/explain.md
    return {name: measure(name, folder, PHOTOS, seed=0, model=model) for name, model in demo_models.items()}


def _changes(rows, degradation, channel=0):
    picked = [row for row in rows if row["degradation"] == degradation]
    left = np.array([row["left"][1][channel] - row["left"][0][channel] for row in picked])
    right = np.array([row["right"][1][channel] - row["right"][0][channel] for row in picked])
    return left, right


@pytest.mark.parametrize("degradation", ["blur", "noise"])
def test_qualiclip_map_falls_on_the_degraded_half_only(locality, degradation):
    """Every photo: the degraded half's score channel drops by at least 0.1 (measured 0.12 to
    0.76), the untouched half moves by at most 0.04 (measured at most 0.03), and by far less."""
    left, right = _changes(locality["qualiclip-tiny"], degradation)
    assert (left <= -0.1).all(), left
    assert (np.abs(right) <= 0.04).all(), right
    assert (-left >= 4 * np.abs(right)).all(), (left, right)


@pytest.mark.parametrize("degradation", ["blur", "noise"])
def test_bpclip_map_falls_mostly_on_the_degraded_half(locality, degradation):
    """BPCLIP's tokens have mixed every location through the attention chain, so its map
    localises less: over the four photos the degraded half drops on average (measured 0.06 for
    blur, 0.06 for noise) more than twice as much as the untouched half moves (0.02, 0.007)."""
    left, right = _changes(locality["bpclip-nr-tiny"], degradation)
    assert left.mean() <= -0.03, left
    assert -left.mean() >= 2 * np.abs(right).mean(), (left, right)


@pytest.mark.parametrize("name", ["qualiclip-tiny", "bpclip-nr-tiny"])
def test_map_mean_orders_images_as_the_score_does(locality, name):
    """The score is not the map's mean (the pool weights locations unequally and both heads are
    non-linear), but over the 12 images (4 photos, clean, half blurred, half noised) the two
    rank alike: SRCC measured 0.90 (QualiCLIP) and 0.95 (BPCLIP)."""
    images = {}
    for row in locality[name]:
        images[row["photo"], "clean"] = (row["map_mean"][0], row["score"][0])
        images[row["photo"], row["degradation"]] = (row["map_mean"][1], row["score"][1])
    means, scores = np.array(list(images.values())).T
    assert len(images) == 12
    assert stats.spearmanr(means, scores).statistic >= 0.8


@pytest.fixture
def photo_folder(tmp_path):
    """Two small photos (PNG) in a folder, one in a subfolder."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(_skimage_photo("chelsea")[:160, :224]).save(folder / "cat.png")
    Image.fromarray(_skimage_photo("coffee")[100:196, 200:328]).save(folder / "sub" / "cup.png")
    return folder


@pytest.mark.parametrize(("name", "channels", "input_size"), [("qualiclip-tiny", 8, None), ("bpclip-nr-tiny", 7, 224)])
def test_cli_writes_overlay_and_map_per_image(demo_models, photo_folder, tmp_path, name, channels, input_size):
    out = tmp_path / "maps"
    assert main(["explain", str(photo_folder), "-m", name, "-o", str(out)]) == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["model"] == name and summary["channels"][0] == SCORE and len(summary["channels"]) == channels
    assert sorted(row["source"] for row in summary["images"]) == sorted(map(str, photo_folder.rglob("*.png")))
    model = demo_models[name]
    for stem, (height, width) in (("cat", (160, 224)), ("sub/cup", (96, 128))):
        if input_size:
            height = width = input_size
        raw = np.load(out / f"{stem}{MAP_SUFFIX}")
        with Image.open(out / f"{stem}{OVERLAY_SUFFIX}") as overlay:
            assert overlay.format == "PNG" and overlay.size == (width, height)
        assert raw.dtype == np.float32 and raw.shape == (channels, *layer4_grid(height, width))
        pixels = np.asarray(Image.open(photo_folder / f"{stem}.png").convert("RGB").resize((width, height), 3))
        expected = quality_maps(model, uint8_nhwc_to_model_input(torch.from_numpy(pixels.copy())[None])).maps[0]
        np.testing.assert_allclose(raw, expected.numpy(), atol=1e-5)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("name", ["qualiclip-tiny", "bpclip-nr-tiny"])
def test_cli_maps_what_iqart_score_scores(tmp_path, iqart_home, name):
    """A large JPEG (which scoring decodes reduced for a fixed-size model): the score beside the
    map equals `iqart score`'s on the torch backend, so the map is of the image that was scored."""
    photo = tmp_path / "cat.jpg"
    Image.fromarray(_skimage_photo("chelsea")).resize((2000, 1400), Image.Resampling.BICUBIC).save(photo, quality=90)
    assert main(["score", str(photo), "-m", name, "--backend", "torch", "-o", str(tmp_path / "s.csv")]) == 0
    assert main(["explain", str(photo), "-m", name, "-o", str(tmp_path / "maps")]) == 0
    (row,) = json.loads((tmp_path / "maps" / SUMMARY_FILE).read_text())["images"]
    scored = (tmp_path / "s.csv").read_text().splitlines()[1].split(",")[1]
    assert row["score"] == pytest.approx(float(scored), abs=1e-6)


def test_cli_maps_a_full_reference_pair_as_iqart_score_scores_it(tmp_path, iqart_home):
    """BPCLIP-FR maps each image against its reference (--ref, paired by relative path): the score
    beside each map equals `iqart score --ref`'s on the torch backend."""
    pairs = EXAMPLE_IMAGES.parent / "fr"
    scores = tmp_path / "s.csv"
    common = ["-m", "bpclip-fr-tiny", "-r", str(pairs / "reference")]
    assert main(["score", str(pairs / "distorted"), *common, "--backend", "torch", "-o", str(scores)]) == 0
    assert main(["explain", str(pairs / "distorted"), *common, "-o", str(tmp_path / "maps")]) == 0
    summary = json.loads((tmp_path / "maps" / SUMMARY_FILE).read_text())
    scored = {row["path"]: row["score"] for row in read_result_file(scores)}
    assert len(summary["images"]) == len(scored) == 3
    for row in summary["images"]:
        assert row["score"] == pytest.approx(scored[row["source"]], abs=1e-6)
        assert np.load(tmp_path / "maps" / row["map"]).shape == (7, 7, 7)  # score + six dimensions, 7x7 grid


def test_cli_per_attribute_overlays(photo_folder, tmp_path):
    out = tmp_path / "maps"
    assert (
        main(["explain", str(photo_folder / "cat.png"), "-m", "qualiclip-tiny", "-o", str(out), "--per-attribute"]) == 0
    )
    names = json.loads((out / SUMMARY_FILE).read_text())["channels"]
    assert sorted(p.name for p in out.glob(f"*{OVERLAY_SUFFIX}")) == sorted(
        f"cat{'' if n == SCORE else '.' + n}{OVERLAY_SUFFIX}" for n in names
    )


def test_cli_an_image_that_does_not_decode_is_reported_and_the_rest_written(photo_folder, tmp_path):
    (photo_folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    out = tmp_path / "maps"
    assert main(["explain", str(photo_folder), "-m", "qualiclip-tiny", "-o", str(out)]) == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert [e["source"] for e in summary["errors"]] == [str(photo_folder / "broken.png")]
    assert len(summary["images"]) == 2 and (out / f"cat{MAP_SUFFIX}").is_file()
    only_broken = tmp_path / "broken"
    only_broken.mkdir()
    (photo_folder / "broken.png").rename(only_broken / "broken.png")
    assert main(["explain", str(only_broken), "-m", "qualiclip-tiny", "-o", str(tmp_path / "none")]) == 1


def test_cli_usage_errors_exit_2(photo_folder, tmp_path, capsys):
    out = str(tmp_path / "maps")
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("")
    Image.open(photo_folder / "cat.png").save(photo_folder / "cat.jpg")
    cases = {
        "full-reference model: pass --ref": ["explain", str(photo_folder), "-m", "bpclip-fr-tiny", "-o", out],
        "no-reference model: --ref": [
            "explain",
            str(photo_folder),
            "-m",
            "qualiclip-tiny",
            "-r",
            str(photo_folder),
            "-o",
            out,
        ],
        "no such file": ["explain", str(tmp_path / "missing.png"), "-m", "qualiclip-tiny", "-o", out],
        "no image files": ["explain", str(tmp_path / "empty"), "-m", "qualiclip-tiny", "-o", out],
        "same outputs": ["explain", str(photo_folder), "-m", "qualiclip-tiny", "-o", out],
        "not a folder": ["explain", str(photo_folder / "sub"), "-m", "qualiclip-tiny", "-o", str(tmp_path / "a_file")],
        "unknown model": ["explain", str(photo_folder), "-m", "nosuch", "-o", out],
    }
    for expected, argv in cases.items():
        capsys.readouterr()
        assert main(argv) == 2, expected
        assert expected in capsys.readouterr().err, expected
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "-o", out])  # no IMAGE: argparse's usage error
    assert exit_info.value.code == 2
    assert not (tmp_path / "maps").exists()


def test_output_stem_keeps_subfolders(tmp_path):
    assert str(output_stem(tmp_path / "a" / "b.jpg", tmp_path)) == "a/b"
    assert str(output_stem(tmp_path / "b.jpg", tmp_path)) == "b"
