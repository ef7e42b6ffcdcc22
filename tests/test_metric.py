"""`iqart.create_metric` (pyiqa's calling convention) and `iqart list` (pyiqa's -ls)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import iqart
from iqart.engine.cli.main import main
from tests.helpers import EXAMPLE_IMAGES, EXAMPLE_PAIRS


@pytest.fixture(scope="module")
def nr_metric(iqart_home):
    return iqart.create_metric("qualiclip-tiny", device="cpu")


def test_metric_scores_paths_pil_arrays_and_tensors_alike(nr_metric):
    paths = [str(EXAMPLE_IMAGES / "chelsea.png"), str(EXAMPLE_IMAGES / "chelsea_blur.png")]
    arrays = [np.array(Image.open(path).convert("RGB")) for path in paths]
    from_paths = nr_metric(paths)
    assert isinstance(from_paths, torch.Tensor) and from_paths.shape == (2,) and from_paths.dtype == torch.float32
    assert torch.isfinite(from_paths).all() and from_paths[0] != from_paths[1]
    torch.testing.assert_close(nr_metric([Image.open(path) for path in paths]), from_paths)
    torch.testing.assert_close(nr_metric(arrays), from_paths)
    as_float = torch.from_numpy(arrays[0]).permute(2, 0, 1)[None].float() / 255  # pyiqa's input: (N, 3, H, W) in [0, 1]
    torch.testing.assert_close(nr_metric(as_float), from_paths[:1])
    np.testing.assert_allclose(from_paths.numpy(), iqart.Scorer("qualiclip-tiny", device="cpu").score(paths))


def test_metric_attributes_follow_pyiqa(nr_metric):
    assert nr_metric.lower_better is False
    assert nr_metric.score_range == (0.0, 1.0)
    assert nr_metric.task == "nr"


def test_full_reference_metric_takes_the_reference_second(iqart_home):
    metric = iqart.create_metric("bpclip-fr-tiny", device="cpu")
    distorted = sorted(path for path in (EXAMPLE_PAIRS / "distorted").rglob("*.png"))[:2]
    references = [EXAMPLE_PAIRS / "reference" / path.relative_to(EXAMPLE_PAIRS / "distorted") for path in distorted]
    scores = metric([str(p) for p in distorted], [str(p) for p in references])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    with pytest.raises(ValueError, match="full-reference"):
        metric([str(p) for p in distorted])


def test_metric_refuses_what_it_cannot_be():
    with pytest.raises(ValueError, match="not differentiable"):
        iqart.create_metric("qualiclip-tiny", as_loss=True)
    with pytest.raises(ValueError, match="unknown model 'brisque'"):
        iqart.create_metric("brisque")


def test_iqart_list_names_each_model_with_task_input_range_and_weights(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["model", "task"]
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert set(by_name) == set(iqart.list_models())
    assert "no-reference" in by_name["qualiclip-tiny"] and "native resolution" in by_name["qualiclip-tiny"]
    assert "full-reference" in by_name["bpclip-fr-tiny"] and "fixed [224, 224]" in by_name["bpclip-fr-tiny"]
    assert "demo weights" in by_name["bpclip-nr-tiny"] and "0..1 (higher is better)" in by_name["bpclip-nr-tiny"]
    assert "official" in by_name["qualiclip"]
    assert "none" in by_name["bpclip-nr"]
