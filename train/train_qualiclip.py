"""QualiCLIP's opinion-unaware training: rank synthetic degradation levels against antonym prompts.

One step: pick `images_per_step` pristine images; from each take two overlapping crops; degrade
both at the 5 increasing levels of one random degradation type (same type, same random
parameters); embed the 10 crops with the image tower; rank and align their cosine similarities
to the frozen prompt embeddings with the losses in train/losses.py. Only the image tower trains.

Where the defaults come from. From the paper: 224×224 crops, two overlapping crops per image,
5 levels of one degradation per image, the three hinge losses, only the image tower trained.
Ours (the paper's training code is unreleased and its exact values could not be checked
offline): margins, loss weights, AdamW, learning rate and schedule, batch and step counts, and
`composite_probability` (how often several groups are chained, in place of one type).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iqart.train.config import config_dict
from iqart.train.data.degradations import NUM_LEVELS, TYPES, composite, degrade_levels, draw_kind
from iqart.train.data.pristine import TrainingContent, overlapping_crops, quantize, split_pristine
from iqart.train.evaluate import model_score_fn, summarize_ranking, synthetic_ranking
from iqart.train.losses import qualiclip_losses
from iqart.train.models.checkpoints import check_fit, read_state_dict, select_prefix
from iqart.train.models.clip_backbone import read_init
from iqart.train.models.preprocess import normalize_float
from iqart.train.models.qualiclip import QualiCLIP
from iqart.train.models.zoo import build_model, get_card
from iqart.train.runs import RunDirectory, fit, seed_everything


@dataclass(frozen=True)
class QualiCLIPTrainConfig:
    model: str = "qualiclip"  # zoo name: qualiclip (RN50) or qualiclip-tiny
    init: str = ""  # CLIP or QualiCLIP weights to start from; "openai" = OpenAI's CLIP RN50; "" = random (tiny only)
    init_encoder: str = ""  # ours: BPCLIP weights whose image encoder starts the tower (its attention pool stays new)
    images: str = "skimage"  # folder of pristine images, or skimage[:name,...]
    holdout_images: tuple[str, ...] = ()  # never trained on; used by the evaluation
    holdout_types: tuple[str, ...] = ()  # degradation types never trained on
    crop: int = 224  # paper
    min_scale: float = 1.0  # ours: images are resized by a random factor in [min_scale, 1] (and flipped)
    procedural_probability: float = 0.0  # ours: share of images that are dead leaves (train/data/dead_leaves.py)
    images_per_step: int = 4  # each gives 2 crops x 5 levels = 10 crops
    steps: int = 2000
    lr: float = 1e-5
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    margin: float = 0.05  # m in L_pos and L_neg
    consistency_margin: float = 0.025  # m_c in L_cons
    weight_consistency: float = 1.0
    weight_positive: float = 1.0
    weight_negative: float = 1.0
    composite_probability: float = 0.0
    freeze_batchnorm: bool = True  # keep BN statistics fixed (pretrained or calibrated); see runs.calibrate_batchnorm
    calibrate_batchnorm: int = 0  # batches to estimate BN statistics from before training (from scratch: ~20)
    eval_every: int = 0  # synthetic ranking on the held-out images every N steps (0: at the end only)
    eval_crops_per_image: int = 2
    checkpoint_every: int = 100
    log_every: int = 10
    half_weights: bool = False  # store weights.pt in fp16 (the in-repo demo weights)
    seed: int = 0


def build_qualiclip(config: QualiCLIPTrainConfig) -> QualiCLIP:
    card = get_card(config.model)
    if card.family != "qualiclip":
        raise ValueError(f"{config.model} is not a QualiCLIP model")
    model = build_model(config.model, seed=config.seed)
    if config.init:
        model.load_weights(read_init(config.init, card.backbone), config.init)
    if config.init_encoder:
        encoder = select_prefix(read_state_dict(config.init_encoder), "encoder.")
        expected = {k: v for k, v in model.visual.state_dict().items() if not k.startswith("attnpool.")}
        check_fit(expected, encoder, config.init_encoder)
        model.visual.load_state_dict(encoder, strict=False)
    return model


def training_types(config: QualiCLIPTrainConfig) -> list[str]:
    unknown = sorted(set(config.holdout_types) - set(TYPES))
    if unknown:
        raise ValueError(f"unknown degradation type(s) in holdout_types: {', '.join(unknown)}")
    return [kind for kind in TYPES if kind not in config.holdout_types]


def training_content(
    images: list[torch.Tensor], config: QualiCLIPTrainConfig, generator: torch.Generator
) -> TrainingContent:
    """Photos and dead leaves; a dead-leaves image leaves room for two overlapping crops."""
    return TrainingContent(
        images, config.min_scale, config.procedural_probability, config.crop + config.crop // 2, generator
    )


def degraded_pairs(
    content: TrainingContent, config: QualiCLIPTrainConfig, kinds: list[str], generator: torch.Generator
) -> torch.Tensor:
    """(2 crops, 5 levels, batch, 3, crop, crop): each image's two crops at the same 5 levels of
    the same degradation, quantised to 8 bits."""
    per_image = []
    for index in torch.randint(len(content.photos), (config.images_per_step,), generator=generator).tolist():
        crops = overlapping_crops(content.photo(index), config.crop, generator)
        if float(torch.rand(1, generator=generator)) < config.composite_probability:
            seed = int(torch.randint(2**62, (1,), generator=generator))
            levels = torch.stack(
                [
                    composite(crops, level, torch.Generator().manual_seed(seed), allowed=kinds)[0]
                    for level in range(NUM_LEVELS)
                ]
            )
        else:
            levels = degrade_levels(crops, draw_kind(generator, kinds), generator)
        per_image.append(levels.transpose(0, 1))  # (2, 5, 3, H, W)
    return quantize(torch.stack(per_image, dim=2))


def train_qualiclip(
    config: QualiCLIPTrainConfig, out: str, resume: bool = False, progress: bool = True, stop_at: int | None = None
) -> RunDirectory:
    run = RunDirectory(out, {"trainer": "qualiclip", **config_dict(config)}, resume)
    generator = seed_everything(config.seed)
    kinds = training_types(config)
    train_images, eval_images = split_pristine(config.images, config.holdout_images)
    content = training_content(train_images, config, generator)

    model = build_qualiclip(config)
    optimizer = torch.optim.AdamW(model.visual.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def embed_batch() -> tuple[torch.Tensor, torch.Tensor]:
        batch = degraded_pairs(content, config, kinds, generator)
        return batch, model.embed(normalize_float(batch.reshape(-1, *batch.shape[-3:])))

    def step_loss() -> tuple[torch.Tensor, dict]:
        batch, features = embed_batch()
        similarities = model.similarities(features).reshape(*batch.shape[:3], model.num_pairs, 2)
        losses = qualiclip_losses(similarities, config.margin, config.consistency_margin)
        terms = {
            "loss_positive": losses.positive.item(),
            "loss_negative": losses.negative.item(),
            "loss_consistency": losses.consistency.item(),
        }
        return losses.total(config.weight_consistency, config.weight_positive, config.weight_negative), terms

    def evaluate(step: int) -> dict:
        if not eval_images:
            return {}
        results = synthetic_ranking(
            model_score_fn(model), eval_images, TYPES, config.crop, config.eval_crops_per_image, seed=config.seed
        )
        return {f"srcc_{row['group']}": row["ranking_srcc"] for row in summarize_ranking(results, config.holdout_types)}

    return fit(
        run,
        model,
        optimizer,
        generator,
        config,
        step_loss,
        evaluate,
        resume,
        progress,
        stop_at,
        forward_batch=embed_batch,
    )
