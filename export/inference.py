"""Inference modules: uint8 RGB NHWC in, score out, with the preprocessing inside the graph.

The same module is what every backend runs, so parity is measured end to end from the bytes a
decoder produces. `with_attributes=True` also returns the attributes the score is made of
(QualiCLIP's pair probabilities, BPCLIP's dimension scores and adjective similarities: the
model's `explain_head`); `with_features=True` also returns the embedding where the score head
starts: the fp16 conversion keeps everything after it in float32.
"""

from __future__ import annotations

import torch
from torch import nn

from iqart.train.models.preprocess import uint8_nhwc_to_model_input


class InferenceModule(nn.Module):
    def __init__(self, model: nn.Module, task: str, with_features: bool = False, with_attributes: bool = False):
        super().__init__()
        self.model = model.eval()
        self.task = task
        self.with_features = with_features
        self.with_attributes = with_attributes

    def forward(self, image: torch.Tensor, reference: torch.Tensor | None = None):
        inputs = [uint8_nhwc_to_model_input(image)]
        if self.task == "fr":
            inputs.append(uint8_nhwc_to_model_input(reference))
        features = self.model.embed(*inputs)
        if not self.with_attributes:
            score = self.model.head(features)
            return (score, features) if self.with_features else score
        score, attributes = self.model.explain_head(features)
        return (score, attributes, features) if self.with_features else (score, attributes)
