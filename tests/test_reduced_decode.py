"""JPEGs bound for a fixed model size are decoded DCT-reduced (PIL draft): much cheaper, nearly
the same pixels after the resize; pairs, other formats and --decode official are decoded in full."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from iqart.engine.pipeline.batch_scoring import decode_job
from iqart.engine.pipeline.images import as_array, draft_size, open_image
from iqart.engine.pipeline.jobs import ScoreJob
from iqart.train.models.zoo import ResizePolicy
from tests.helpers import EXAMPLE_IMAGES

POLICY = ResizePolicy("fixed", (224, 224))


@pytest.fixture(scope="module")
def big_photo(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    with Image.open(EXAMPLE_IMAGES / "chelsea.png") as image:
        photo = image.convert("RGB").resize((2400, 1800), Image.Resampling.BICUBIC)
    photo.save(folder / "photo.jpg", quality=92)
    photo.save(folder / "photo.png")
    return folder


def test_reduced_decode_keeps_twice_the_target_and_nearly_the_same_pixels(big_photo):
    reduced = open_image(big_photo / "photo.jpg", reduce_for=(224, 224))
    assert reduced.size == (600, 450)  # 1/4 scale: the smallest DCT scale with both sides >= 448
    assert min(reduced.size) >= draft_size((224, 224))[0]
    full = as_array(open_image(big_photo / "photo.jpg"), POLICY).astype(np.int16)
    model_input = decode_job(ScoreJob(big_photo / "photo.jpg"), POLICY)[0].astype(np.int16)
    assert model_input.shape == (224, 224, 3)
    assert np.abs(model_input - full).mean() < 2.0 and np.abs(model_input - full).max() < 40


def test_what_is_decoded_in_full(big_photo):
    native = ResizePolicy("native")
    assert decode_job(ScoreJob(big_photo / "photo.jpg"), native)[0].shape == (
        1800,
        2400,
        3,
    )  # QualiCLIP needs every pixel
    assert open_image(big_photo / "photo.png", reduce_for=(224, 224)).size == (2400, 1800)  # not a JPEG
    official = decode_job(ScoreJob(big_photo / "photo.jpg"), POLICY, decode="official")[0]
    expected = np.asarray(
        Image.open(big_photo / "photo.jpg")
        .convert("RGB")
        .resize((224, 224), Image.Resampling.BICUBIC, reducing_gap=None)
    )
    np.testing.assert_array_equal(official, expected)
    # a full-reference pair of a JPEG and a PNG of the same size still matches in size
    image, reference = decode_job(ScoreJob(big_photo / "photo.jpg", big_photo / "photo.png"), POLICY)
    assert image.shape == reference.shape == (224, 224, 3)
