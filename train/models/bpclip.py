"""BPCLIP (Song et al., ICME 2025): bottom-up IQA from distortion to semantics on CLIP RN50.

The paper's code and several details are not public. Everything below follows DESIGN.md; the
choices marked OURS are ours, not the paper's:

1. Encoder: CLIP RN50, five taps (stem, layer1..layer4); FR is siamese (shared encoder).
2. Gated local pooling per scale. NR: sigmoid(phi(F)) * (W F). FR: sigmoid(phi(|Fd - Fr|)) *
   [Fd, Fr, |Fd - Fr|]. phi is a 1x1 -> 3x3 -> 1x1 conv bottleneck ending in one channel (OURS:
   the exact bottleneck). Each scale is average-pooled to the last stage's grid, projected to
   d_model, given a fixed 2-D sinusoidal positional embedding (OURS: sinusoidal, so any grid
   works without interpolation) and one pre-norm self-attention block: tokens G1..G5.
3. Bottom-up cross-attention: h1 = G1; h_i = Block(query=G_i, key/value=h_{i-1}), i = 2..5:
   deep semantics query the accumulated distortion evidence.
4. Text: 40 adjectives (train/models/prompts.py, OURS) through the frozen CLIP text tower give a
   (40, embed_dim) buffer. The mean of h5 is projected to the CLIP space; cosine similarity x
   100 (CLIP's temperature) gives a 40-d attribute vector; LayerNorm([pooled h5, attributes])
   -> MLP -> sigmoid: a score in [0, 1], higher is better (OURS: LayerNorm and sigmoid head,
   trained against MOS normalised to [0, 1]).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iqart.train.models.attention import cross_attention
from iqart.train.models.checkpoints import CheckpointError, check_fit, is_clip_state_dict, select_prefix
from iqart.train.models.clip_backbone import (
    backbone_config,
    build_clip,
    clip_from_state_dict,
    encode_prompts,
    stage_features,
)
from iqart.train.models.precision import fp32_head
from iqart.train.models.prompts import (
    GOOD_ADJECTIVES,
    QUALITY_ADJECTIVES,
    adjective_prompts,
    attribute_names,
)

ATTRIBUTE_LOGIT_SCALE = 100.0


@dataclass(frozen=True)
class BPCLIPConfig:
    backbone: str = "RN50"
    task: str = "nr"  # "nr" or "fr"
    d_model: int = 256
    num_heads: int = 4  # heads of 64
    ffn_dim: int = 1024
    gate_hidden: int = 64
    head_hidden: int = 256

    def __post_init__(self):
        if self.task not in ("nr", "fr"):
            raise ValueError(f"BPCLIP task must be 'nr' or 'fr', not {self.task!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}")


class AttentionBlock(nn.Module):
    """Pre-norm transformer block: self-attention, or cross-attention when given a context."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, cross: bool):
        super().__init__()
        self.num_heads = num_heads
        self.norm_query = nn.LayerNorm(d_model)
        self.norm_context = nn.LayerNorm(d_model) if cross else None
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.norm_ffn = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, d_model))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        query = self.norm_query(x)
        if (context is None) != (self.norm_context is None):
            raise ValueError("a cross-attention block needs a context; a self-attention block takes none")
        keys = query if context is None else self.norm_context(context)
        attended = cross_attention(self.q_proj(query), self.k_proj(keys), self.v_proj(keys), self.num_heads)
        x = x + self.out_proj(attended)
        return x + self.ffn(self.norm_ffn(x))


@functools.lru_cache(maxsize=32)
def _sinusoidal_2d_numpy(height: int, width: int, dim: int) -> np.ndarray:
    quarter = dim // 4
    freqs = np.exp(-math.log(10000.0) * np.arange(quarter) / quarter)
    ys, xs = np.arange(height)[:, None] * freqs, np.arange(width)[:, None] * freqs
    y_emb = np.broadcast_to(np.concatenate([np.sin(ys), np.cos(ys)], 1)[:, None, :], (height, width, 2 * quarter))
    x_emb = np.broadcast_to(np.concatenate([np.sin(xs), np.cos(xs)], 1)[None, :, :], (height, width, 2 * quarter))
    return np.concatenate([y_emb, x_emb], axis=-1).reshape(height * width, 4 * quarter).astype(np.float32)


def sinusoidal_2d(height: int, width: int, dim: int, device=None) -> torch.Tensor:
    """Fixed 2-D positional embedding (H*W, dim): half the channels encode y, half x.

    Computed in NumPy so that a traced export sees one constant, not a chain of Range ops.
    """
    return torch.from_numpy(_sinusoidal_2d_numpy(height, width, dim)).to(device)


@functools.lru_cache(maxsize=32)
def position_table(height: int, width: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """`sinusoidal_2d` on `device` in `dtype`, copied there once per grid, device and dtype.

    The first forward pass at a grid makes it; later passes reuse it, so a captured forward
    (a CUDA graph) holds no host-to-device copy. An ordinary tensor, not an inference tensor,
    so that training may use it after scoring made it."""
    with torch.inference_mode(False), torch.no_grad():
        return sinusoidal_2d(height, width, dim, device).to(dtype)


class GatedScale(nn.Module):
    """One scale's gated local pooling, pooling to the token grid, projection and self-attention."""

    def __init__(self, channels: int, cfg: BPCLIPConfig):
        super().__init__()
        self.fr = cfg.task == "fr"
        self.gate = nn.Sequential(
            nn.Conv2d(channels, cfg.gate_hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(cfg.gate_hidden, cfg.gate_hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(cfg.gate_hidden, 1, 1),
        )
        self.value = None if self.fr else nn.Conv2d(channels, channels, 1)
        self.project = nn.Linear(3 * channels if self.fr else channels, cfg.d_model)
        self.self_attention = AttentionBlock(cfg.d_model, cfg.num_heads, cfg.ffn_dim, cross=False)

    def forward(self, distorted: torch.Tensor, reference: torch.Tensor | None, grid: tuple[int, int]) -> torch.Tensor:
        if self.fr:
            difference = (distorted - reference).abs()
            gated = torch.sigmoid(self.gate(difference)) * torch.cat([distorted, reference, difference], dim=1)
        else:
            gated = torch.sigmoid(self.gate(distorted)) * self.value(distorted)
        pooled = F.adaptive_avg_pool2d(gated, grid)
        tokens = self.project(pooled.flatten(2).transpose(1, 2))
        tokens = tokens + position_table(*grid, self.project.out_features, tokens.device, tokens.dtype)
        return self.self_attention(tokens)


def dimension_scores(similarities: torch.Tensor) -> torch.Tensor:
    """(N, 40) scaled adjective similarities -> (N, 6): per dimension, the probability mass its
    good adjectives take in a softmax over that dimension's adjectives (OURS: the paper reads the
    40 similarities only through its score head). In [0, 1], higher is better."""
    scores, start = [], 0
    for dimension, adjectives in QUALITY_ADJECTIVES.items():
        probabilities = similarities[:, start : start + len(adjectives)].softmax(dim=-1)
        scores.append(probabilities[:, : GOOD_ADJECTIVES[dimension]].sum(dim=-1))
        start += len(adjectives)
    return torch.stack(scores, dim=-1)


class BPCLIP(nn.Module):
    """NR: forward(images); FR: forward(distorted, reference). CLIP-normalised (N, 3, H, W) -> (N,)."""

    def __init__(self, cfg: BPCLIPConfig = BPCLIPConfig(), seed: int | None = 0):
        super().__init__()
        self.cfg = cfg
        backbone = backbone_config(cfg.backbone)
        clip = build_clip(cfg.backbone, seed=seed)
        self.encoder = clip.visual
        self.encoder.attnpool = None  # the five taps end at layer4; the pool is unused
        self.register_buffer("adjective_features", encode_prompts(clip, adjective_prompts()))
        generator_state = torch.random.get_rng_state()
        if seed is not None:
            torch.manual_seed(seed + 1)
        try:
            self.scales = nn.ModuleList(GatedScale(c, cfg) for c in backbone.stage_channels)
            self.chain = nn.ModuleList(
                AttentionBlock(cfg.d_model, cfg.num_heads, cfg.ffn_dim, cross=True) for _ in backbone.stage_channels[1:]
            )
            self.to_clip_space = nn.Linear(cfg.d_model, backbone.embed_dim)
            num_attributes = self.adjective_features.shape[0]
            self.head_mlp = nn.Sequential(
                nn.LayerNorm(cfg.d_model + num_attributes),
                nn.Linear(cfg.d_model + num_attributes, cfg.head_hidden),
                nn.GELU(),
                nn.Linear(cfg.head_hidden, 1),
            )
        finally:
            if seed is not None:
                torch.random.set_rng_state(generator_state)

    @property
    def task(self) -> str:
        return self.cfg.task

    def tokens(self, distorted: torch.Tensor, reference: torch.Tensor | None = None) -> list[torch.Tensor]:
        """G1..G5: one token set per scale, all on the last stage's grid."""
        taps_d = stage_features(self.encoder, distorted)
        taps_r = stage_features(self.encoder, reference) if reference is not None else [None] * len(taps_d)
        # Plain ints: BPCLIP is exported at a fixed size, so the grid is a graph constant.
        grid = (int(taps_d[-1].shape[-2]), int(taps_d[-1].shape[-1]))
        return [scale(d, r, grid) for scale, d, r in zip(self.scales, taps_d, taps_r, strict=True)]

    def attributes(self, pooled: torch.Tensor) -> torch.Tensor:
        """(N, 40): scaled cosine similarity of the pooled semantics to each quality adjective."""
        embedded = F.normalize(self.to_clip_space(pooled), dim=-1)
        return ATTRIBUTE_LOGIT_SCALE * embedded @ self.adjective_features.t()

    def embed(self, distorted: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """h5 (N, tokens, d_model): the end of the bottom-up chain, where the score head starts."""
        if (self.task == "fr") != (reference is not None):
            raise ValueError(
                f"BPCLIP-{self.task.upper()} takes {'a reference' if self.task == 'fr' else 'no reference'}"
            )
        if reference is not None and reference.shape != distorted.shape:
            raise ValueError(
                f"reference {tuple(reference.shape)} and distorted {tuple(distorted.shape)} differ in shape"
            )
        g = self.tokens(distorted, reference)
        h = g[0]
        for block, query in zip(self.chain, g[1:], strict=True):
            h = block(query, context=h)
        return h

    def head(self, h: torch.Tensor) -> torch.Tensor:
        return self.explain_head(h)[0]

    def explain_head(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(score (N,), attributes (N, 6 + 40)): the score, one score per quality dimension
        (dimension_scores), then the 40 scaled adjective similarities the score head reads."""
        pooled = h.mean(dim=1)
        similarities = self.attributes(pooled)
        score = torch.sigmoid(self.head_mlp(torch.cat([pooled, similarities], dim=-1))).squeeze(-1)
        return score, torch.cat([dimension_scores(similarities), similarities], dim=-1)

    def attribute_names(self) -> list[str]:
        return attribute_names("bpclip")

    def forward(self, distorted: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        return fp32_head(self.head, self.embed(distorted, reference))

    def load_weights(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load a full BPCLIP state dict (as written by iqart training)."""
        if is_clip_state_dict(state):
            raise CheckpointError(
                f"{source}: is a plain CLIP state dict, not trained BPCLIP weights; "
                "use it to initialise training (init_from_clip), not to score"
            )
        check_fit(self.state_dict(), state, source)
        self.load_state_dict(state)

    def init_from_clip(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Start from pretrained CLIP: the image tower and the adjective embeddings of its text tower."""
        if not is_clip_state_dict(state):
            raise CheckpointError(
                f"{source}: not a CLIP state dict (expected visual.*, transformer.*, token_embedding.*)"
            )
        clip = clip_from_state_dict(self.cfg.backbone, state, source)
        encoder_state = {k: v for k, v in select_prefix(state, "visual.").items() if not k.startswith("attnpool.")}
        self.encoder.load_state_dict(encoder_state)
        self.adjective_features.copy_(encode_prompts(clip, adjective_prompts()))
