"""Batches are bounded by pixels as well as by count, so memory follows what one large image
needs, not batch x resolution; small images still fill whole batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from iqart.engine.backends.torch_backend import TorchBackend
from iqart.engine.pipeline.batch_scoring import PIXEL_BUDGET, SizeBuckets, score_jobs
from iqart.engine.pipeline.jobs import ScoreJob
from iqart.train.models.zoo import build_model, get_card


def item(height, width):
    return ScoreJob(Path(f"{height}x{width}.png")), np.zeros((height, width, 3), np.uint8), None


def test_a_12_megapixel_photo_goes_alone_and_small_images_fill_the_batch():
    buckets = SizeBuckets(batch_size=8, max_pending=32)
    assert [len(b) for b in buckets.add(item(3000, 4000))] == [1]  # two would pass the 16-megapixel budget
    for _ in range(7):
        assert buckets.add(item(768, 1024)) == []
    assert [len(b) for b in buckets.add(item(768, 1024))] == [8]  # 6.3 megapixels: the count decides


def test_waiting_images_are_bounded_by_pixels_too():
    buckets = SizeBuckets(batch_size=8, max_pending=32, pixel_budget=1_000_000)
    ready = []
    for height in range(600, 620):  # 20 sizes of ~0.36 megapixels: none fills, pixels force them out
        ready += buckets.add(item(height, 600))
    assert ready and buckets.pending_pixels <= 4 * 1_000_000
    assert all(len(batch) * batch[0][1].shape[0] * 600 <= 1_000_000 for batch in ready)


class Recording:
    def __init__(self, backend):
        self.backend, self.shapes = backend, []

    def __call__(self, images, references=None):
        self.shapes.append(images.shape)
        return self.backend(images, references)


def test_the_pipeline_batches_large_images_one_by_one(tmp_path):
    for index in range(3):
        Image.new("RGB", (400, 300), (index * 60, 90, 30)).save(tmp_path / f"big{index}.png")
        Image.new("RGB", (64, 48), (index * 60, 90, 30)).save(tmp_path / f"small{index}.png")
    backend = Recording(TorchBackend(build_model("qualiclip-tiny", seed=0)))
    jobs = [ScoreJob(path) for path in sorted(tmp_path.iterdir())]
    rows = list(
        score_jobs(jobs, backend, get_card("qualiclip-tiny").resize, batch_size=8, workers=1, pixel_budget=200_000)
    )
    assert len(rows) == 6 and all(row.ok for row in rows)
    assert sorted(shape[:3] for shape in backend.shapes) == [(1, 300, 400)] * 3 + [(3, 48, 64)]
    assert PIXEL_BUDGET >= 8 * 1024 * 768  # the default does not shrink batches of ordinary photos
