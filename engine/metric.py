"""`create_metric`: iqart's models behind the calling convention pyiqa users know.

    metric = iqart.create_metric("qualiclip-tiny")
    metric("photo.jpg")                                # tensor([0.61])
    metric(batch)                                      # (N, 3, H, W) float in [0, 1] or uint8
    fr = iqart.create_metric("bpclip-fr-tiny")
    fr(distorted, reference)                           # full-reference: second argument
    metric.lower_better, metric.score_range            # as pyiqa names them

It scores; it does not train. Our backends are inference engines (ONNX Runtime, TensorRT) or a
torch model under inference mode, so no gradient reaches the input: `as_loss=True` is refused
instead of returning a loss that silently does nothing.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from iqart.engine.scorer import Scorer


class Metric:
    """A callable scorer: `metric(images, reference=None) -> torch.Tensor` of shape (N,)."""

    def __init__(self, scorer: Scorer):
        self.scorer = scorer

    name = property(lambda self: self.scorer.name)
    lower_better = property(lambda self: self.scorer.lower_better)
    score_range = property(lambda self: self.scorer.score_range)
    task = property(lambda self: self.scorer.task)

    def __call__(self, images: Any, reference: Any = None) -> torch.Tensor:
        scores = torch.from_numpy(self.scorer.score(images, reference))
        device = _tensor_device(images)
        return scores.to(device) if device is not None else scores

    def __repr__(self) -> str:
        return (
            f"Metric({self.name!r}, lower_better={self.lower_better}, score_range={self.score_range}, {self.scorer!r})"
        )


def create_metric(
    name: str,
    device: str | None = None,
    backend: str = "onnxruntime",
    *,
    as_loss: bool = False,
    weights: str | os.PathLike | None = None,
    **scorer_options,
) -> Metric:
    """The named zoo model (see `iqart.list_models()`) as a metric; an unknown name is a ValueError
    listing the models. `device`: "cpu", "cuda"... (default:
    a GPU when the backend can use one). Other keywords go to `Scorer` (precision, batch_size...)."""
    if as_loss:
        raise ValueError(
            f"iqart metrics score images but are not differentiable, so {name!r} cannot be a loss "
            "(iqart.train has the training code for our models)"
        )
    return Metric(Scorer(name, backend, device, weights=weights, **scorer_options))


def _tensor_device(images: Any) -> torch.device | None:
    """Scores go back to the device of the input tensor, as a pyiqa user would expect."""
    first = images[0] if isinstance(images, (list, tuple)) and images else images
    return first.device if isinstance(first, torch.Tensor) else None
