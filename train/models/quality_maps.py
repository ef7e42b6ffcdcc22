"""Quality maps: each model's own score head read at every location of its last feature grid.

Neither paper defines a map; the method here is OURS. Both models end in a grid of features
(1/32 of the input resolution, the ResNet's total stride) that they pool into one vector and
read with a head; a map reads every location with that same head instead of only the pool.

- **QualiCLIP.** The attention pool mixes its value vectors with attention weights, then
  projects them (`c_proj`). Taking each location's value through the same two projections,
  `c_proj(v_proj(token))`, gives a per-location feature in the CLIP embedding space: the
  dense-feature reading of CLIP's attention pool that MaskCLIP (Zhou et al., "Extract Free Dense
  Labels from CLIP") uses for segmentation. Each location's feature then goes through
  QualiCLIP's head unchanged: the 7 antonym-pair probabilities (CLIP's temperature 100,
  `QualiCLIP.pair_probabilities`) and their mean, the location's "score" channel. The pool's
  own output mixes the same per-location values, each head's share with that head's attention
  weights (over the locations and their mean), before the same output projection; with equal
  attention everywhere it is exactly the mean of the per-location features (the mean token's
  own reading is that mean, the projections being affine).
- **BPCLIP.** Its score head reads the mean of the last tokens h5 of the bottom-up chain (one
  token per location of the layer4 grid): projected to the CLIP space, compared with the 40
  adjectives, read as six dimension scores (`dimension_scores`) and, with the pooled tokens,
  by the MLP head. The map applies that head to each h5 token alone: per location the six
  dimension scores and the head's score ("score"). Each h5 token has already attended to every
  location through the chain, so a token's reading is not confined to its cell: it is where the
  model's evidence sits after mixing, not a receptive field.

A map is a reading of the model, not a ground truth: no location-level labels trained it. How
well it localises degradations on the demo weights is measured in docs/explain.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iqart.train.models.bpclip import BPCLIP
from iqart.train.models.clip_backbone import attention_pool, stage_features
from iqart.train.models.qualiclip import QualiCLIP

SCORE = "score"  # the first channel of every map: the score head's reading of each location
MAP_STRIDE = 32  # input pixels per map cell: the CLIP ResNet's total stride


@dataclass
class QualityMaps:
    """Maps of a batch: channel 0 is SCORE, then one channel per model attribute."""

    names: list[str]  # channel names, SCORE first
    maps: torch.Tensor  # (N, channels, h, w) on the model's last feature grid
    scores: torch.Tensor  # (N,) the model's own score of the same input
    attributes: torch.Tensor  # (N, channels - 1) the model's own attributes, parallel to names[1:]


def layer4_grid(height: int, width: int) -> tuple[int, int]:
    """The layer4 grid of a CLIP ModifiedResNet for an input of this size: the stem's stride-2
    convolution (padding 1) and 2x2 average pool, then a stride-2 average pool in each of
    layer2..layer4 (each rounding down)."""

    def side(n: int) -> int:
        n = (n - 1) // 2 + 1  # conv1: kernel 3, stride 2, padding 1
        for _ in range(4):  # the stem's pool, then layer2, layer3, layer4
            n //= 2
        return n

    return side(int(height)), side(int(width))


def attention_pool_locations(pool, features: torch.Tensor) -> torch.Tensor:
    """Per-location features of CLIP's attention pool: (N, C, h, w) -> (N, h*w, output_dim),
    each location's value through the pool's value and output projections (no attention)."""
    tokens = features.flatten(2).transpose(1, 2)
    return pool.c_proj(pool.v_proj(tokens))


def _per_location(head, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Apply a model's explain_head to each location alone: features (N, L, ...) -> maps
    (N, 1 + attributes, h, w), channel 0 the head's score."""
    batch, locations = features.shape[:2]
    # One location per row: each row is what the head sees of an image made of that location only.
    score, attributes = head(features.reshape(batch * locations, *features.shape[2:]))
    channels = torch.cat([score[:, None], attributes], dim=1)
    return channels.reshape(batch, locations, -1).transpose(1, 2).reshape(batch, -1, *grid)


@torch.no_grad()
def qualiclip_maps(model: QualiCLIP, images: torch.Tensor) -> QualityMaps:
    """Maps of CLIP-normalised images (N, 3, H, W): the score channel and the 7 pair probabilities per
    location of the layer4 grid (about H/32 x W/32), with the model's score of the same pass."""
    grid_features = stage_features(model.visual, images)[-1]
    pool = model.visual.attnpool
    score, attributes = model.explain_head(attention_pool(pool, grid_features))
    locations = attention_pool_locations(pool, grid_features)
    maps = _per_location(model.explain_head, locations, tuple(grid_features.shape[-2:]))
    return QualityMaps(map_channel_names(model), maps, score, attributes)


def bpclip_dimension_count(model: BPCLIP) -> int:
    """How many of BPCLIP's attributes are dimension scores (the rest are adjective similarities)."""
    return len(model.attribute_names()) - model.adjective_features.shape[0]


@torch.no_grad()
def bpclip_maps(model: BPCLIP, images: torch.Tensor, references: torch.Tensor | None = None) -> QualityMaps:
    """Maps of CLIP-normalised images (N, 3, H, W) for BPCLIP: the score channel (the score head on
    each h5 token alone) and the six dimension scores per token of the layer4 grid. BPCLIP-FR
    takes the references too: its tokens already compare each location with the reference's."""
    if (model.task == "fr") != (references is not None):
        raise ValueError(
            f"BPCLIP-{model.task.upper()} maps take {'a reference' if model.task == 'fr' else 'no reference'}"
        )
    tokens = model.embed(images, references)  # (N, h*w, d_model), row-major over the layer4 grid
    grid = layer4_grid(*images.shape[-2:])
    dimensions = bpclip_dimension_count(model)

    def head(token_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # a token set of one token: its mean, which the head reads, is that token
        score, attributes = model.explain_head(token_features[:, None, :])
        return score, attributes[:, :dimensions]

    score, attributes = model.explain_head(tokens)
    maps = _per_location(head, tokens, grid)
    return QualityMaps(map_channel_names(model), maps, score, attributes[:, :dimensions])


def map_channel_names(model: torch.nn.Module) -> list[str]:
    """The channels of a model's maps, in order: SCORE, then its attributes that have a map."""
    if isinstance(model, QualiCLIP):
        return [SCORE, *model.attribute_names()]
    if isinstance(model, BPCLIP):
        return [SCORE, *model.attribute_names()[: bpclip_dimension_count(model)]]
    raise TypeError(f"no quality map for {type(model).__name__}")


def quality_maps(model: torch.nn.Module, images: torch.Tensor, references: torch.Tensor | None = None) -> QualityMaps:
    """The maps of a QualiCLIP or BPCLIP model (see the module's docstring); full-reference
    models take `references`."""
    if isinstance(model, QualiCLIP):
        return qualiclip_maps(model, images)
    if isinstance(model, BPCLIP):
        return bpclip_maps(model, images, references)
    raise TypeError(f"no quality map for {type(model).__name__}")
