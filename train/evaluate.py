"""Evaluation: how well a model ranks synthetic degradation levels, and how well it predicts MOS.

Synthetic ranking (no human opinions needed): crops of held-out pristine images are degraded at
the 5 levels of each type; for each (crop, type) the SRCC between the model's score and the
level (negated when higher scores mean better quality) says whether the model orders the
levels correctly. We report its mean per type, per group and overall ("ranking"), and the SRCC
over all crops of a type pooled together ("pooled"), which also asks scores to be comparable
across contents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from iqart.train.data.degradations import GROUPS, NUM_LEVELS, degrade_levels, group_of
from iqart.train.data.pristine import quantize, random_crop
from iqart.train.metrics import correlations

# Scores a batch of float images in [0, 1] (N, 3, H, W), with references for FR models.
ScoreFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]


@dataclass
class RankingResult:
    kind: str
    ranking: float  # mean over crops of SRCC(score, -level)
    pooled: float  # SRCC(score, -level) over all crops of the type together
    crops: int

    @property
    def group(self) -> str:
        return group_of(self.kind)


def _srcc(scores: np.ndarray, levels: np.ndarray) -> float:
    if np.ptp(scores) == 0:
        return 0.0  # a model that cannot tell the levels apart ranks nothing
    return float(stats.spearmanr(scores, -levels).statistic)


@torch.no_grad()
def synthetic_ranking(
    score: ScoreFn,
    images: dict[str, torch.Tensor],
    kinds: list[str] | tuple[str, ...],
    crop: int = 224,
    crops_per_image: int = 2,
    seed: int = 0,
    full_reference: bool = False,
    higher_better: bool = True,
) -> list[RankingResult]:
    """One RankingResult per degradation type, on `crops_per_image` random crops of each image."""
    generator = torch.Generator().manual_seed(seed)
    crops = torch.stack(
        [random_crop(image, crop, generator) for image in images.values() for _ in range(crops_per_image)]
    )
    levels = np.arange(NUM_LEVELS, dtype=float)
    results = []
    for kind in kinds:
        degraded = quantize(degrade_levels(crops, kind, generator))  # (levels, crops, 3, H, W)
        flat = degraded.reshape(-1, *crops.shape[1:])
        reference = quantize(crops).repeat(NUM_LEVELS, 1, 1, 1) if full_reference else None
        scores = score(flat, reference).float().cpu().numpy().reshape(NUM_LEVELS, len(crops))
        if not higher_better:
            scores = -scores
        per_crop = [_srcc(scores[:, i], levels) for i in range(len(crops))]
        pooled = _srcc(scores.reshape(-1), np.repeat(levels, len(crops)))
        results.append(RankingResult(kind, float(np.mean(per_crop)), pooled, len(crops)))
    return results


def summarize_ranking(results: list[RankingResult], held_out_kinds: tuple[str, ...] = ()) -> list[dict]:
    """Rows per group (types in group order) plus 'all', and 'held-out types' when any."""
    rows = []
    for group in GROUPS:
        members = [r for r in results if r.group == group]
        if members:
            rows.append(_summary_row(group, members, held_out_kinds))
    rows.append(_summary_row("all", results, held_out_kinds))
    held = [r for r in results if r.kind in held_out_kinds]
    if held:
        rows.append(_summary_row("held-out types", held, held_out_kinds))
    return rows


def _summary_row(name: str, members: list[RankingResult], held_out_kinds: tuple[str, ...]) -> dict:
    return {
        "group": name,
        "types": ", ".join(r.kind + ("*" if r.kind in held_out_kinds else "") for r in members),
        "ranking_srcc": float(np.mean([r.ranking for r in members])),
        "pooled_srcc": float(np.mean([r.pooled for r in members])),
    }


def format_ranking_table(rows: list[dict]) -> str:
    lines = [f"{'group':<20} {'ranking SRCC':>12} {'pooled SRCC':>12}  types (* = held out from training)"]
    for row in rows:
        lines.append(f"{row['group']:<20} {row['ranking_srcc']:>12.3f} {row['pooled_srcc']:>12.3f}  {row['types']}")
    return "\n".join(lines)


@torch.no_grad()
def predict_dataset(score: ScoreFn, loader, full_reference: bool) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and normalised MOS over a DataLoader of MOSDataset items."""
    predictions, targets = [], []
    for batch in loader:
        reference = batch["reference"] if full_reference else None
        predictions.append(score(batch["image"], reference).float().cpu())
        targets.append(batch["target"].float())
    return torch.cat(predictions).numpy(), torch.cat(targets).numpy()


def mos_correlations(score: ScoreFn, loader, full_reference: bool) -> dict[str, float]:
    predictions, targets = predict_dataset(score, loader, full_reference)
    return correlations(predictions, targets)


def model_score_fn(model: torch.nn.Module, batch_size: int = 32) -> ScoreFn:
    """A ScoreFn for a QualiCLIP or BPCLIP module: CLIP-normalises and scores in chunks."""
    from iqart.train.models.preprocess import normalize_float

    @torch.no_grad()
    def score(images: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        device = next(model.parameters()).device
        out = []
        for start in range(0, len(images), batch_size):
            args = [normalize_float(images[start : start + batch_size].to(device))]
            if reference is not None:
                args.append(normalize_float(reference[start : start + batch_size].to(device)))
            out.append(model(*args).float().cpu())
        return torch.cat(out)

    return score
