"""benchmarks/attribute_srcc.py's core on a tiny input (the full run takes minutes): one row per
type and attribute, SRCCs in range, and score rows equal to `iqart eval --synthetic`'s."""

from __future__ import annotations

import numpy as np
import pytest
import tomllib
from scipy import stats

from benchmarks.attribute_srcc import (
    CONFIGS,
    MODELS,
    agreement_with_score,
    degraded_values,
    held_out_photos,
    markdown_table,
    ranking_rows,
)
from iqart.train.data.pristine import load_pristine
from iqart.train.evaluate import model_score_fn, synthetic_ranking
from iqart.train.models.zoo import load_model


def test_held_out_photos_are_those_of_the_demo_trainings():
    photos = held_out_photos()
    assert photos == ["coffee", "rocket"]  # as RESULTS.md and docs/explain.md name them
    for name in MODELS:
        with open(CONFIGS / f"{name}.toml", "rb") as file:
            assert set(photos) <= set(tomllib.load(file)["holdout_images"])


@pytest.mark.parametrize(("name", "attributes"), [("qualiclip-tiny", 8), ("bpclip-nr-tiny", 7)])
def test_attribute_ranking_on_a_tiny_input(random_seed, name, attributes):
    model = load_model(name)
    images = load_pristine("skimage:coffee")
    kinds = ("gaussian_blur", "white_noise")
    rows = ranking_rows(*degraded_values(model, images, kinds, crop=64, crops_per_image=2, seed=random_seed))
    assert [(row["kind"], row["crops"]) for row in rows] == [(kind, 2) for kind in kinds for _ in range(attributes)]
    assert all(-1.0 <= row[key] <= 1.0 for row in rows for key in ("per_crop", "pooled"))
    expected = synthetic_ranking(model_score_fn(model), images, kinds, crop=64, crops_per_image=2, seed=random_seed)
    for result in expected:
        (score,) = [row for row in rows if row["kind"] == result.kind and row["attribute"] == "score"]
        assert score["per_crop"] == pytest.approx(result.ranking, abs=1e-9)
        assert score["pooled"] == pytest.approx(result.pooled, abs=1e-9)
    names = list(dict.fromkeys(row["attribute"] for row in rows))
    assert names[0] == "score" and names[1:] == model.attribute_names()[: attributes - 1]
    assert markdown_table(rows, names).count("\n") == 1 + len(kinds)


def test_agreement_with_score():
    names, values = degraded_values(load_model("qualiclip-tiny"), load_pristine("skimage:coffee"), ("jpeg",), 64, 1)
    table = values["jpeg"].reshape(-1, len(names))
    # the columns are laid out as named: QualiCLIP's score is the mean of its 7 pair probabilities
    np.testing.assert_allclose(table[:, 0], table[:, 1:].mean(axis=1), rtol=0, atol=1e-6)
    agreement = agreement_with_score(names, values)
    for index, name in enumerate(names):
        assert agreement[name] == pytest.approx(stats.spearmanr(table[:, index], table[:, 0]).statistic)
