"""The inputs of an artifact graph, from the batches every backend is called with."""

from __future__ import annotations

import numpy as np
import torch


def graph_feeds(input_names: list[str], images, references) -> dict:
    """{"image": ..., "reference": ...} as contiguous uint8, after checking that the references
    given fit the graph (full-reference graphs have a `reference` input, no-reference ones not).
    Host arrays stay arrays; torch tensors (GPU-decoded batches) stay tensors where they are."""
    feeds = {"image": _contiguous_uint8(images)}
    if "reference" in input_names:
        if references is None:
            raise ValueError("this is a full-reference model: pass references")
        feeds["reference"] = _contiguous_uint8(references)
    elif references is not None:
        raise ValueError("this is a no-reference model: references do not apply")
    return feeds


def _contiguous_uint8(batch):
    if isinstance(batch, torch.Tensor):
        return batch.to(torch.uint8).contiguous()
    return np.ascontiguousarray(batch, dtype=np.uint8)
