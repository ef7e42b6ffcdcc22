"""The inputs of an artifact graph, from the batches every backend is called with."""

from __future__ import annotations

import numpy as np


def graph_feeds(input_names: list[str], images: np.ndarray, references: np.ndarray | None) -> dict[str, np.ndarray]:
    """{"image": ..., "reference": ...} as contiguous uint8, after checking that the references
    given fit the graph (full-reference graphs have a `reference` input, no-reference ones not)."""
    feeds = {"image": np.ascontiguousarray(images, dtype=np.uint8)}
    if "reference" in input_names:
        if references is None:
            raise ValueError("this is a full-reference model: pass references")
        feeds["reference"] = np.ascontiguousarray(references, dtype=np.uint8)
    elif references is not None:
        raise ValueError("this is a no-reference model: references do not apply")
    return feeds
