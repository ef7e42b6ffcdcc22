"""BPCLIP's opinion-aware training: regress normalised MOS with MSE + (1 − PLCC).

Data comes from a MOS dataset (`data = "kadid10k"`, `root = ...`; readers in train/datasets.py,
official split where there is one, otherwise a seeded 80/20 split by content), or, for the demo
weights, from `data = "synthetic"`: crops of pristine images degraded at a random level of a
random type (or a composite of several groups), with the level-derived target
1 − (level + 1) / 5 (1 for an undegraded crop, 0 at the strongest level). Those targets are not
human opinions; weights trained on them are demo weights, not the paper's results.

Defaults (all ours; the paper's code and settings are not public): AdamW with a cosine schedule,
a 10x lower learning rate for the pretrained encoder, random crops and horizontal flips (the same
for the distorted image and its reference), batch-norm statistics kept frozen when the encoder is
pretrained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iqart.train.bpclip import BPCLIP
from iqart.train.checkpoints import is_clip_state_dict, read_state_dict
from iqart.train.config import config_dict
from iqart.train.degradations import NUM_LEVELS, TYPES, composite, degrade, draw_kind
from iqart.train.evaluate import (
    model_score_fn,
    mos_correlations,
    summarize_ranking,
    synthetic_ranking,
)
from iqart.train.losses import mos_loss
from iqart.train.preprocess import normalize_float
from iqart.train.pristine import quantize, random_crop, random_rescale, split_pristine
from iqart.train.runs import RunDirectory, fit, seed_everything
from iqart.train.zoo import build_model, get_card


@dataclass(frozen=True)
class BPCLIPTrainConfig:
    model: str = "bpclip-nr"  # zoo name: bpclip-nr, bpclip-fr, or their -tiny versions
    init: str = ""  # CLIP weights (encoder + adjective embeddings) or BPCLIP weights; "" = random
    data: str = "synthetic"  # "synthetic" or a dataset name: kadid10k, koniq10k, live, csiq, tid2013, spaq, clive
    root: str = ""  # the dataset's folder
    split_seed: int = 0  # for datasets without an official split
    images: str = "skimage"  # synthetic: pristine images (folder or skimage[:name,...])
    holdout_images: tuple[str, ...] = ()  # synthetic: never trained on; used by the evaluation
    holdout_types: tuple[str, ...] = ()  # synthetic: degradation types never trained on
    pristine_probability: float = 0.15  # synthetic: share of undegraded crops (target 1)
    composite_probability: float = 0.25  # synthetic: share of crops degraded by several groups
    crop: int = 224
    min_scale: float = 1.0  # synthetic: images are resized by a random factor in [min_scale, 1] (and flipped)
    batch_size: int = 16
    steps: int = 3000
    lr: float = 1e-4
    encoder_lr_scale: float = 0.1
    weight_decay: float = 0.05
    warmup_steps: int = 100
    plcc_weight: float = 1.0
    freeze_batchnorm: bool = True  # keep BN statistics fixed (pretrained or calibrated); see runs.calibrate_batchnorm
    calibrate_batchnorm: int = 0  # batches to estimate BN statistics from before training (from scratch: ~20)
    workers: int = 2  # DataLoader workers for MOS datasets
    eval_every: int = 0  # 0: evaluate at the end only
    eval_crops_per_image: int = 2
    checkpoint_every: int = 100
    log_every: int = 10
    half_weights: bool = False
    seed: int = 0


def build_bpclip(config: BPCLIPTrainConfig) -> BPCLIP:
    if get_card(config.model).family != "bpclip":
        raise ValueError(f"{config.model} is not a BPCLIP model")
    model = build_model(config.model, seed=config.seed)
    if config.init:
        state = read_state_dict(config.init)
        if is_clip_state_dict(state):
            model.init_from_clip(state, config.init)
        else:
            model.load_weights(state, config.init)
    return model


class SyntheticMOS:
    """Endless batches of (distorted, reference, target) from pristine images and degradations."""

    def __init__(self, config: BPCLIPTrainConfig, images: list[torch.Tensor], generator: torch.Generator):
        unknown = sorted(set(config.holdout_types) - set(TYPES))
        if unknown:
            raise ValueError(f"unknown degradation type(s) in holdout_types: {', '.join(unknown)}")
        self.config, self.images, self.generator = config, images, generator
        self.kinds = [kind for kind in TYPES if kind not in config.holdout_types]

    def _draw(self) -> float:
        return float(torch.rand(1, generator=self.generator))

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        g = self.generator
        image = self.images[int(torch.randint(len(self.images), (1,), generator=g))]
        reference = random_crop(random_rescale(image, self.config.min_scale, g), self.config.crop, g)
        if self._draw() < self.config.pristine_probability:
            return reference, reference, 1.0
        level = int(torch.randint(NUM_LEVELS, (1,), generator=g))
        if self._draw() < self.config.composite_probability:
            distorted = composite(reference[None], level, g, allowed=self.kinds)[0][0]
        else:
            distorted = degrade(reference[None], draw_kind(g, self.kinds), level, g)[0]
        return distorted, reference, 1.0 - (level + 1) / NUM_LEVELS

    def batch(self) -> dict[str, torch.Tensor]:
        samples = [self.sample() for _ in range(self.config.batch_size)]
        return {"image": quantize(torch.stack([s[0] for s in samples])),
                "reference": quantize(torch.stack([s[1] for s in samples])),
                "target": torch.tensor([s[2] for s in samples])}


def _endless(loader):
    while True:
        yield from loader


def dataset_loaders(config: BPCLIPTrainConfig, task: str, generator: torch.Generator):
    """Train (endless, shuffled) and test loaders for a MOS dataset."""
    from iqart.train.datasets import MOSDataset, read_dataset, split

    if not config.root:
        raise ValueError(f"data = {config.data!r} needs root = the dataset's folder")
    info, samples = read_dataset(config.data, config.root)
    if task == "fr" and info.task != "fr":
        raise ValueError(f"{config.model} is full-reference but {info.name} has no reference images")
    train_samples, test_samples = split(info, samples, seed=config.split_seed)
    train_set = MOSDataset(train_samples, info, crop=config.crop, train=True, task=task)
    test_set = MOSDataset(test_samples, info, crop=config.crop, train=False, task=task)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=True, drop_last=True,
                                               num_workers=config.workers, generator=generator)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=config.batch_size, num_workers=config.workers)
    return _endless(train_loader), test_loader


def _optimizer(model: BPCLIP, config: BPCLIPTrainConfig) -> torch.optim.Optimizer:
    encoder = list(model.encoder.parameters())
    encoder_ids = {id(p) for p in encoder}
    head = [p for p in model.parameters() if id(p) not in encoder_ids]
    return torch.optim.AdamW([{"params": encoder, "lr_scale": config.encoder_lr_scale},
                              {"params": head, "lr_scale": 1.0}], lr=config.lr, weight_decay=config.weight_decay)


def train_bpclip(config: BPCLIPTrainConfig, out: str, resume: bool = False, progress: bool = True,
                 stop_at: int | None = None) -> RunDirectory:
    run = RunDirectory(out, {"trainer": "bpclip", **config_dict(config)}, resume)
    generator = seed_everything(config.seed)
    model = build_bpclip(config)
    full_reference = model.task == "fr"
    eval_images, test_loader = {}, None
    if config.data == "synthetic":
        train_images, eval_images = split_pristine(config.images, config.holdout_images)
        batches = iter(SyntheticMOS(config, train_images, generator).batch, None)
    else:
        batches, test_loader = dataset_loaders(config, model.task, generator)

    def predict_batch() -> tuple[torch.Tensor, torch.Tensor]:
        batch = next(batches)
        args = [normalize_float(batch["image"])]
        if full_reference:
            args.append(normalize_float(batch["reference"]))
        return model(*args), batch["target"].float()

    def step_loss() -> tuple[torch.Tensor, dict]:
        predicted, target = predict_batch()
        return mos_loss(predicted, target, config.plcc_weight), {}

    def evaluate(step: int) -> dict:
        score = model_score_fn(model)
        if test_loader is not None:
            return {f"test_{k}": v for k, v in mos_correlations(score, test_loader, full_reference).items()}
        if not eval_images:
            return {}
        results = synthetic_ranking(score, eval_images, TYPES, config.crop, config.eval_crops_per_image,
                                    seed=config.seed, full_reference=full_reference)
        return {f"srcc_{row['group']}": row["ranking_srcc"] for row in summarize_ranking(results, config.holdout_types)}

    return fit(run, model, _optimizer(model, config), generator, config, step_loss, evaluate, resume, progress, stop_at,
               forward_batch=predict_batch)
