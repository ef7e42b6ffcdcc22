"""BPCLIP's opinion-aware training: regress normalised MOS with MSE + (1 − PLCC).

Data comes from a MOS dataset (`data = "kadid10k"`, `root = ...`; readers in train/data/datasets.py,
official split where there is one, otherwise a seeded 80/20 split by content), or, for the demo
weights, from `data = "synthetic"`: crops of pristine images degraded at a random level of a
random type (or a composite of several groups), with the level-derived target
1 − (level + 1) / 5 (1 for an undegraded crop, 0 at the strongest level). Those targets are not
human opinions; weights trained on them are demo weights, not the paper's results. A no-reference
model can also learn from a trained full-reference one (`teacher`, ours): its score of each
(distorted, pristine) pair becomes the target, which follows what a degradation does to that
content (a blur of a flat patch changes little) where the level target cannot.

Defaults (all ours; the paper's code and settings are not public): AdamW with a cosine schedule,
a 10x lower learning rate for the pretrained encoder, random crops and horizontal flips (the same
for the distorted image and its reference), batch-norm statistics kept frozen when the encoder is
pretrained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iqart.train.config import config_dict
from iqart.train.data.degradations import NUM_LEVELS, TYPES, composite, degrade, degrade_levels, draw_kind
from iqart.train.data.pristine import TrainingContent, quantize, random_crop, split_pristine
from iqart.train.evaluate import (
    model_score_fn,
    mos_correlations,
    summarize_ranking,
    synthetic_ranking,
)
from iqart.train.losses import mos_loss
from iqart.train.models.bpclip import BPCLIP
from iqart.train.models.checkpoints import check_fit, is_clip_state_dict, read_state_dict, select_prefix
from iqart.train.models.clip_backbone import read_init
from iqart.train.models.preprocess import normalize_float
from iqart.train.models.zoo import build_model, get_card, load_model
from iqart.train.runs import RunDirectory, fit, seed_everything


@dataclass(frozen=True)
class BPCLIPTrainConfig:
    model: str = "bpclip-nr"  # zoo name: bpclip-nr, bpclip-fr, or their -tiny versions
    # CLIP weights (encoder + adjective embeddings) or BPCLIP weights; "openai" = OpenAI's CLIP RN50; "" = random
    init: str = ""
    init_encoder: str = ""  # ours: BPCLIP weights (FR or NR) whose image encoder starts this model's (after init)
    # ours: full-reference BPCLIP weights (of this model's size) as a frozen teacher for a no-reference
    # model: the regression target becomes teacher_weight * teacher(distorted, reference)
    # + (1 - teacher_weight) * the level target; the ranking hinge keeps ordering by level
    teacher: str = ""
    teacher_weight: float = 1.0
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
    procedural_probability: float = 0.0  # synthetic: share of crops cut from dead leaves (train/data/dead_leaves.py)
    level_sets: bool = False  # synthetic: a batch is whole sets (a crop undegraded and at all 5 levels of one draw)
    rank_weight: float = 0.0  # synthetic, level_sets: weight of a hinge that orders each set by level
    rank_margin: float = 0.02  # ... with this margin between consecutive targets' scores
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
        state = read_init(config.init, get_card(config.model).backbone)
        if is_clip_state_dict(state):
            model.init_from_clip(state, config.init)
        else:
            model.load_weights(state, config.init)
    if config.init_encoder:
        encoder = select_prefix(read_state_dict(config.init_encoder), "encoder.")
        check_fit(model.encoder.state_dict(), encoder, config.init_encoder)
        model.encoder.load_state_dict(encoder)
    return model


class SyntheticMOS:
    """Endless batches of (distorted, reference, target) from pristine images and degradations.

    Each item is one crop at a random level of a random draw, or, with `level_sets`, whole sets:
    one crop undegraded (target 1) and at the 5 levels of one draw (targets 0.8 .. 0), so the loss
    sees the same content at every level and cannot score content instead of degradation. The
    batch then holds batch_size // 6 sets (`set_size` items each)."""

    set_size = NUM_LEVELS + 1

    def __init__(self, config: BPCLIPTrainConfig, images: list[torch.Tensor], generator: torch.Generator):
        unknown = sorted(set(config.holdout_types) - set(TYPES))
        if unknown:
            raise ValueError(f"unknown degradation type(s) in holdout_types: {', '.join(unknown)}")
        if config.level_sets and config.batch_size < self.set_size:
            raise ValueError(f"level_sets needs batch_size >= {self.set_size}, got {config.batch_size}")
        self.config, self.images, self.generator = config, images, generator
        self.kinds = [kind for kind in TYPES if kind not in config.holdout_types]
        self.content = TrainingContent(
            images, config.min_scale, config.procedural_probability, config.crop + config.crop // 4, generator
        )

    def _draw(self) -> float:
        return float(torch.rand(1, generator=self.generator))

    def _reference(self) -> torch.Tensor:
        g = self.generator
        return random_crop(
            self.content.photo(int(torch.randint(len(self.images), (1,), generator=g))), self.config.crop, g
        )

    def level_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One crop undegraded and at the 5 levels of one draw (6, 3, H, W), and its targets (6,)."""
        g = self.generator
        reference = self._reference()
        if self._draw() < self.config.composite_probability:
            seed = int(torch.randint(2**62, (1,), generator=g))
            levels = torch.stack(
                [
                    composite(reference[None], level, torch.Generator().manual_seed(seed), allowed=self.kinds)[0][0]
                    for level in range(NUM_LEVELS)
                ]
            )
        else:
            levels = degrade_levels(reference[None], draw_kind(g, self.kinds), g)[:, 0]
        targets = 1.0 - torch.arange(self.set_size, dtype=torch.float32) / NUM_LEVELS
        return torch.cat([reference[None], levels]), targets

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        g = self.generator
        reference = self._reference()
        if self._draw() < self.config.pristine_probability:
            return reference, reference, 1.0
        level = int(torch.randint(NUM_LEVELS, (1,), generator=g))
        if self._draw() < self.config.composite_probability:
            distorted = composite(reference[None], level, g, allowed=self.kinds)[0][0]
        else:
            distorted = degrade(reference[None], draw_kind(g, self.kinds), level, g)[0]
        return distorted, reference, 1.0 - (level + 1) / NUM_LEVELS

    def batch(self) -> dict[str, torch.Tensor]:
        if self.config.level_sets:
            sets = [self.level_set() for _ in range(self.config.batch_size // self.set_size)]
            images = quantize(torch.cat([s[0] for s in sets]))
            return {
                "image": images,
                "reference": images[:: self.set_size].repeat_interleave(self.set_size, 0),
                "target": torch.cat([s[1] for s in sets]),
            }
        samples = [self.sample() for _ in range(self.config.batch_size)]
        return {
            "image": quantize(torch.stack([s[0] for s in samples])),
            "reference": quantize(torch.stack([s[1] for s in samples])),
            "target": torch.tensor([s[2] for s in samples]),
        }


def set_ranking_loss(scores: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean hinge max(0, s_j − s_i + margin) over every pair i < j of each row of `scores`
    (sets, items ordered from best to worst): within a set, a cleaner crop must score higher."""
    better, worse = torch.triu_indices(scores.shape[1], scores.shape[1], offset=1, device=scores.device)
    return torch.relu(scores[:, worse] - scores[:, better] + margin).mean()


def load_teacher(config: BPCLIPTrainConfig) -> BPCLIP | None:
    """The frozen full-reference teacher of a no-reference student (None without `teacher`): the
    FR model of the student's size (bpclip-nr-tiny learns from bpclip-fr-tiny), in eval mode."""
    if not config.teacher:
        return None
    if get_card(config.model).task != "nr":
        raise ValueError(f"teacher: {config.model} is full-reference; a teacher trains a no-reference model")
    if config.data != "synthetic":
        raise ValueError('teacher needs data = "synthetic": the teacher compares each crop with its pristine source')
    if not 0.0 <= config.teacher_weight <= 1.0:
        raise ValueError(f"teacher_weight must lie in [0, 1], got {config.teacher_weight}")
    teacher = load_model(config.model.replace("bpclip-nr", "bpclip-fr"), config.teacher)
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def teacher_targets(teacher: BPCLIP | None, batch: dict[str, torch.Tensor], weight: float) -> torch.Tensor:
    """A batch's regression targets: its level targets, blended with the teacher's scores of
    (image, reference) when there is a teacher."""
    target = batch["target"].float()
    if teacher is None:
        return target
    scores = teacher(normalize_float(batch["image"]), normalize_float(batch["reference"])).float()
    return weight * scores + (1.0 - weight) * target


def _endless(loader):
    while True:
        yield from loader


def dataset_loaders(config: BPCLIPTrainConfig, task: str, generator: torch.Generator):
    """Train (endless, shuffled) and test loaders for a MOS dataset."""
    from iqart.train.data.datasets import MOSDataset, read_dataset, split

    if not config.root:
        raise ValueError(f"data = {config.data!r} needs root = the dataset's folder")
    info, samples = read_dataset(config.data, config.root)
    if task == "fr" and info.task != "fr":
        raise ValueError(f"{config.model} is full-reference but {info.name} has no reference images")
    train_samples, test_samples = split(info, samples, seed=config.split_seed)
    train_set = MOSDataset(train_samples, info, crop=config.crop, train=True, task=task)
    test_set = MOSDataset(test_samples, info, crop=config.crop, train=False, task=task)
    train_loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=config.workers,
        generator=generator,
    )
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=config.batch_size, num_workers=config.workers)
    return _endless(train_loader), test_loader


def _optimizer(model: BPCLIP, config: BPCLIPTrainConfig) -> torch.optim.Optimizer:
    encoder = list(model.encoder.parameters())
    encoder_ids = {id(p) for p in encoder}
    head = [p for p in model.parameters() if id(p) not in encoder_ids]
    return torch.optim.AdamW(
        [{"params": encoder, "lr_scale": config.encoder_lr_scale}, {"params": head, "lr_scale": 1.0}],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )


def train_bpclip(
    config: BPCLIPTrainConfig, out: str, resume: bool = False, progress: bool = True, stop_at: int | None = None
) -> RunDirectory:
    run = RunDirectory(out, {"trainer": "bpclip", **config_dict(config)}, resume)
    generator = seed_everything(config.seed)
    model = build_bpclip(config)
    full_reference = model.task == "fr"
    teacher = load_teacher(config)
    eval_images, test_loader = {}, None
    if config.data == "synthetic":
        train_images, eval_images = split_pristine(config.images, config.holdout_images)
        batches = iter(SyntheticMOS(config, train_images, generator).batch, None)
    else:
        batches, test_loader = dataset_loaders(config, model.task, generator)

    def predict_batch(with_teacher: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        batch = next(batches)
        args = [normalize_float(batch["image"])]
        if full_reference:
            args.append(normalize_float(batch["reference"]))
        target = teacher_targets(teacher, batch, config.teacher_weight) if with_teacher else batch["target"].float()
        return model(*args), target

    def step_loss() -> tuple[torch.Tensor, dict]:
        predicted, target = predict_batch(with_teacher=True)
        loss = mos_loss(predicted, target, config.plcc_weight)
        if not (config.level_sets and config.rank_weight):
            return loss, {}
        ranking = set_ranking_loss(predicted.reshape(-1, SyntheticMOS.set_size), config.rank_margin)
        return loss + config.rank_weight * ranking, {"loss_rank": ranking.item()}

    def evaluate(step: int) -> dict:
        score = model_score_fn(model)
        if test_loader is not None:
            return {f"test_{k}": v for k, v in mos_correlations(score, test_loader, full_reference).items()}
        if not eval_images:
            return {}
        results = synthetic_ranking(
            score,
            eval_images,
            TYPES,
            config.crop,
            config.eval_crops_per_image,
            seed=config.seed,
            full_reference=full_reference,
        )
        return {f"srcc_{row['group']}": row["ranking_srcc"] for row in summarize_ranking(results, config.holdout_types)}

    return fit(
        run,
        model,
        _optimizer(model, config),
        generator,
        config,
        step_loss,
        evaluate,
        resume,
        progress,
        stop_at,
        forward_batch=predict_batch,
    )
