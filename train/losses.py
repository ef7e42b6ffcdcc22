"""Training losses: QualiCLIP's ranking and consistency hinges, BPCLIP's MSE + PLCC.

QualiCLIP (opinion-unaware). For one antonym pair, s_p and s_n are the cosine similarities of a
crop to the positive and the negative prompt. Level i is less degraded than level j (i < j):
  L_pos  = Σ max(0, s_p(I_j) − s_p(I_i) + m)      the cleaner crop is closer to the positive prompt,
  L_neg  = Σ max(0, s_n(I_i) − s_n(I_j) + m)      the more degraded crop is closer to the negative one,
  L_cons = Σ_i max(0, |s(I_i¹) − s(I_i²)| − m_c)  two overlapping crops at one level agree (both prompts).
Sums run over level pairs, antonym pairs, crops and images; we report means (sums scaled by a
constant), so that the loss and the learning rate do not depend on the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from iqart.train.metrics import differentiable_plcc


@dataclass
class QualiCLIPLosses:
    positive: torch.Tensor
    negative: torch.Tensor
    consistency: torch.Tensor

    def total(self, weight_consistency: float, weight_positive: float, weight_negative: float) -> torch.Tensor:
        return weight_consistency * self.consistency + weight_positive * self.positive + weight_negative * self.negative


def qualiclip_losses(similarities: torch.Tensor, margin: float, consistency_margin: float) -> QualiCLIPLosses:
    """similarities: (crops=2, levels, batch, pairs, 2), the last axis (positive, negative) prompt,
    levels ordered from least to most degraded."""
    if similarities.ndim != 5 or similarities.shape[0] != 2 or similarities.shape[-1] != 2:
        raise ValueError(
            f"expected similarities of shape (2, levels, batch, pairs, 2), got {tuple(similarities.shape)}"
        )
    levels = similarities.shape[1]
    less, more = torch.triu_indices(levels, levels, offset=1, device=similarities.device)
    s_pos, s_neg = similarities[..., 0], similarities[..., 1]
    positive = torch.relu(s_pos[:, more] - s_pos[:, less] + margin).mean()
    negative = torch.relu(s_neg[:, less] - s_neg[:, more] + margin).mean()
    consistency = torch.relu((similarities[0] - similarities[1]).abs() - consistency_margin).mean()
    return QualiCLIPLosses(positive, negative, consistency)


def mos_loss(predicted: torch.Tensor, target: torch.Tensor, plcc_weight: float) -> torch.Tensor:
    """MSE against normalised MOS plus plcc_weight · (1 − PLCC): MSE fixes the scale, PLCC the
    ordering within the batch (it needs at least 3 items)."""
    loss = torch.mean((predicted - target) ** 2)
    if plcc_weight and predicted.numel() >= 3:
        loss = loss + plcc_weight * (1.0 - differentiable_plcc(predicted, target))
    return loss
