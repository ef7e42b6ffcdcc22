"""CLIP ResNet backbones built with open_clip, and the two ways our models read them.

- `image_features`: QualiCLIP's global feature. The attention pool runs WITHOUT its positional
  embedding (so any H x W works) and only for the mean-token query: output token 0 of CLIP's
  pool is the only one used, so computing it alone is a cross-attention of 1 query over HW+1 keys.
- `stage_features`: BPCLIP's five multiscale taps (stem, layer1..layer4).

Key names are open_clip's, which equal OpenAI CLIP's (`visual.conv1.weight`, ...), so both the
official QualiCLIP checkpoint and plain CLIP state dicts load without renaming.
"""

from __future__ import annotations

from dataclasses import dataclass

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.modified_resnet import AttentionPool2d, ModifiedResNet

from iqart.train.models.attention import cross_attention
from iqart.train.models.checkpoints import CheckpointError, check_fit, read_state_dict

# OpenAI's released state dicts carry these scalars beside the weights.
OPENAI_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
# `init = "openai"` in a training config: OpenAI's released CLIP weights, which both papers start from.
OPENAI_INIT = "openai"


@dataclass(frozen=True)
class BackboneConfig:
    """Shape of a CLIP ResNet: image tower, text tower and the shared embedding width."""

    name: str
    embed_dim: int
    layers: tuple[int, int, int, int]
    width: int
    text_width: int
    text_heads: int
    text_layers: int
    image_size: int = 224
    context_length: int = 77
    vocab_size: int = 49408

    @property
    def stage_channels(self) -> tuple[int, int, int, int, int]:
        """Channels of the five taps: stem, layer1..layer4 (Bottleneck expansion is 4)."""
        w = self.width
        return (w, 4 * w, 8 * w, 16 * w, 32 * w)

    @property
    def pool_heads(self) -> int:
        """Attention-pool heads, as CLIP sets them: heads of 64 over the 32*width features."""
        return self.width * 32 // 64


BACKBONES: dict[str, BackboneConfig] = {
    # The papers' backbone: OpenAI CLIP RN50.
    "RN50": BackboneConfig("RN50", 1024, (3, 4, 6, 3), 64, 512, 8, 12),
    # Ours: small enough to train on a 2-core CPU and to run in tests; same topology, same
    # 64-wide heads (8 of them), same tokenizer and vocabulary.
    "tiny": BackboneConfig("tiny", 256, (1, 1, 1, 1), 16, 128, 2, 2),
}


def backbone_config(name: str) -> BackboneConfig:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}") from None


def build_clip(name: str, seed: int | None = 0) -> CLIP:
    """A randomly initialised open_clip CLIP with the named backbone (seeded: reproducible).

    QuickGELU matches OpenAI's released RN50 weights, which both papers start from.
    """
    cfg = backbone_config(name)
    generator_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    try:
        model = CLIP(
            embed_dim=cfg.embed_dim,
            vision_cfg=CLIPVisionCfg(layers=cfg.layers, width=cfg.width, image_size=cfg.image_size),
            text_cfg=CLIPTextCfg(
                context_length=cfg.context_length,
                vocab_size=cfg.vocab_size,
                width=cfg.text_width,
                heads=cfg.text_heads,
                layers=cfg.text_layers,
            ),
            quick_gelu=True,
        )
    finally:
        if seed is not None:
            torch.random.set_rng_state(generator_state)
    return model.eval()


def openai_clip_state_dict(backbone: str) -> dict[str, torch.Tensor]:
    """OpenAI's CLIP weights for `backbone` (RN50 only) through open_clip, which downloads them
    once into its cache; without a network (and no cached copy) a CheckpointError names both ways
    to get them: online through open_clip, or a local RN50.pt given as `init`."""
    if backbone != "RN50":
        raise CheckpointError(
            f'init = "{OPENAI_INIT}": OpenAI released CLIP RN50 weights, which fit RN50 models only; '
            f"the {backbone!r} backbone starts from a weight file or at random"
        )
    try:
        model = open_clip.create_model("RN50", pretrained=OPENAI_INIT)
    except Exception as exc:  # open_clip and huggingface_hub raise several types for a failed download
        url = open_clip.get_pretrained_cfg("RN50", OPENAI_INIT).get("url", "")
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f'init = "{OPENAI_INIT}": open_clip could not get OpenAI\'s CLIP RN50 ({reason}). Either run online once: '
            f'open_clip.create_model("RN50", pretrained="openai") downloads it into its cache; or download '
            f"{url} on a machine that is online and set init to that local file's path"
        ) from None
    return model.state_dict()


def read_init(init: str, backbone: str) -> dict[str, torch.Tensor]:
    """The state dict a training config's `init` names: "openai" (OpenAI's CLIP through open_clip)
    or a weight file."""
    return openai_clip_state_dict(backbone) if init == OPENAI_INIT else read_state_dict(init)


def clip_from_state_dict(name: str, state: dict[str, torch.Tensor], source: str) -> CLIP:
    """A CLIP of the named backbone holding a plain open_clip / OpenAI state dict's weights."""
    clip = build_clip(name, seed=None)
    clip_state = {k: v for k, v in state.items() if k not in OPENAI_METADATA_KEYS}
    check_fit(clip.state_dict(), clip_state, source)
    clip.load_state_dict(clip_state)
    return clip.eval()


def tokenize(prompts: list[str]) -> torch.Tensor:
    """CLIP's BPE tokenizer (the vocabulary ships inside open_clip: works offline)."""
    return open_clip.tokenize(prompts)


@torch.no_grad()
def encode_prompts(clip: CLIP, prompts: list[str]) -> torch.Tensor:
    """L2-normalised text embeddings (P, embed_dim), float32, from the frozen text tower."""
    was_training = clip.training
    clip.eval()
    features = clip.encode_text(tokenize(prompts)).float()
    clip.train(was_training)
    return F.normalize(features, dim=-1)


def attention_pool(pool: AttentionPool2d, features: torch.Tensor) -> torch.Tensor:
    """CLIP's attention pool without positional embedding, for the mean-token query only.

    features: (N, C, H, W) -> (N, output_dim). Equals token 0 of the full pool's output.
    """
    tokens = features.flatten(2).transpose(1, 2)  # (N, HW, C)
    tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # (N, HW+1, C)
    query = pool.q_proj(tokens[:, :1])
    pooled = cross_attention(query, pool.k_proj(tokens), pool.v_proj(tokens), pool.num_heads)
    return pool.c_proj(pooled[:, 0])


def stage_features(visual: ModifiedResNet, images: torch.Tensor) -> list[torch.Tensor]:
    """The five multiscale taps [stem, layer1, layer2, layer3, layer4] of normalised images."""
    x = visual.stem(images)
    taps = [x]
    for stage in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = stage(x)
        taps.append(x)
    return taps


def image_features(visual: ModifiedResNet, images: torch.Tensor) -> torch.Tensor:
    """QualiCLIP's image embedding (N, embed_dim) at any input size (not normalised)."""
    return attention_pool(visual.attnpool, stage_features(visual, images)[-1])
