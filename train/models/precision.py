"""Where low precision must not reach, whatever autocast the caller runs under.

Under fp16/bf16 autocast, two places of our models break: attention logits (QKᵀ of CLIP's
attention pool reach ~1e5 with real activations, past fp16's 65504, and come back inf, then NaN),
and the score head (feature norms of ~2e4 overflow fp16 when squared; cosines, softmax and the
mean rounded to one bf16 step make distinct images score the same). The exported fp16 graph
keeps these in fp32 (export.fp16); this module does the same for the torch backend's autocast.
"""

from __future__ import annotations

import contextlib

import torch


def full_precision(device_type: str):
    """A context where autocast is off, or nothing when autocast is not running (so export and
    fp32 inference trace exactly the ops they always did)."""
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def fp32_head(head, features: torch.Tensor) -> torch.Tensor:
    """`head(features)` computed in float32 from float32 features."""
    with full_precision(features.device.type):
        return head(features.float())
