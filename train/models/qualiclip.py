"""QualiCLIP (Agnolucci, Galteri, Bertini): opinion-unaware no-reference IQA with CLIP RN50.

score = mean over the 7 antonym pairs of softmax(100 · cos(f, [T_pos, T_neg]))[pos], in [0, 1],
higher is better. Images are scored at native resolution: the attention pool runs without its
positional embedding. Only the image tower is held; the 14 prompt embeddings are a buffer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from iqart.train.models.checkpoints import (
    CheckpointError,
    check_fit,
    is_clip_state_dict,
    is_official_qualiclip,
    select_prefix,
)
from iqart.train.models.clip_backbone import build_clip, clip_from_state_dict, encode_prompts, image_features
from iqart.train.models.precision import fp32_head
from iqart.train.models.prompts import ANTONYM_PAIRS, antonym_prompts, attribute_names

LOGIT_SCALE = 100.0  # CLIP's (and the paper's) fixed temperature


class QualiCLIP(nn.Module):
    """Takes CLIP-normalised float images (N, 3, H, W), returns quality scores (N,)."""

    def __init__(self, backbone: str = "RN50", seed: int | None = 0):
        super().__init__()
        self.backbone = backbone
        clip = build_clip(backbone, seed=seed)
        self.visual = clip.visual
        self.register_buffer("prompts_features", encode_prompts(clip, antonym_prompts()))

    @property
    def num_pairs(self) -> int:
        return len(ANTONYM_PAIRS)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The image tower's output (N, embed_dim): the boundary between backbone and score head."""
        return image_features(self.visual, images)

    def similarities(self, features: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of embedded images to the 14 prompts (N, 14): what training ranks."""
        return F.normalize(features, dim=-1) @ self.prompts_features.t()

    def pair_probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """(N, 7): for each antonym pair, the probability of its positive prompt against the
        negative one (prompts.pair_attribute_names names them). The score is their mean."""
        logits = LOGIT_SCALE * self.similarities(features)
        return logits.reshape(logits.shape[0], self.num_pairs, 2).softmax(dim=-1)[..., 0]

    def head(self, features: torch.Tensor) -> torch.Tensor:
        return self.pair_probabilities(features).mean(dim=1)

    def explain_head(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score (N,), attributes (N, 7)): the score and the pair probabilities it averages."""
        pairs = self.pair_probabilities(features)
        return pairs.mean(dim=1), pairs

    def attribute_names(self) -> list[str]:
        return attribute_names("qualiclip")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return fp32_head(self.head, self.embed(images))

    def load_weights(self, state: Mapping[str, torch.Tensor], source: str) -> None:
        """Load the official layout, a plain CLIP state dict, or iqart's own state dict."""
        if is_official_qualiclip(state):
            visual = select_prefix(state, "clip_model.visual.")
            prompts = state["prompts_features"]
        elif is_clip_state_dict(state):
            visual, prompts = select_prefix(state, "visual."), self._prompts_from_clip(state, source)
        elif "prompts_features" in state and any(k.startswith("visual.") for k in state):
            visual, prompts = select_prefix(state, "visual."), state["prompts_features"]
        else:
            raise CheckpointError(
                f"{source}: not a QualiCLIP checkpoint: expected the official layout "
                "(clip_model.* + prompts_features), a CLIP state dict (visual.*, transformer.*, "
                f"token_embedding.*) or an iqart checkpoint; found keys like {sorted(state)[:5]}"
            )
        check_fit(self.visual.state_dict(), visual, source)
        check_fit({"prompts_features": self.prompts_features}, {"prompts_features": prompts}, source)
        self.visual.load_state_dict(visual)
        self.prompts_features.copy_(prompts.float())

    def _prompts_from_clip(self, state: Mapping[str, torch.Tensor], source: str) -> torch.Tensor:
        """Prompt embeddings from a plain CLIP file's own text tower."""
        return encode_prompts(clip_from_state_dict(self.backbone, state, source), antonym_prompts())
