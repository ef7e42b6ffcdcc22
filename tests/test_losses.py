"""QualiCLIP's hinge losses and BPCLIP's MOS loss: signs, margins and gradients."""

from __future__ import annotations

import pytest
import torch

from iqart.train.losses import mos_loss, qualiclip_losses


def ordered_similarities(gap: float, batch: int = 3, pairs: int = 7) -> torch.Tensor:
    """(2, 5, batch, pairs, 2): s_p falls and s_n rises by `gap` per level; both crops equal."""
    levels = torch.arange(5, dtype=torch.float32).view(1, 5, 1, 1)
    s_pos = 0.3 - gap * levels
    s_neg = 0.1 + gap * levels
    sims = torch.stack([s_pos.expand(2, 5, batch, pairs), s_neg.expand(2, 5, batch, pairs)], dim=-1)
    return sims.clone()


def test_correct_ranking_beyond_the_margin_costs_nothing():
    losses = qualiclip_losses(ordered_similarities(gap=0.06), margin=0.05, consistency_margin=0.02)
    assert losses.positive.item() == 0 and losses.negative.item() == 0 and losses.consistency.item() == 0


def test_ranking_inside_the_margin_or_reversed_is_penalised():
    inside = qualiclip_losses(ordered_similarities(gap=0.01), margin=0.05, consistency_margin=0.02)
    reversed_ = qualiclip_losses(ordered_similarities(gap=-0.05), margin=0.05, consistency_margin=0.02)
    assert 0 < inside.positive.item() < reversed_.positive.item()
    assert 0 < inside.negative.item() < reversed_.negative.item()
    # adjacent levels 0.01 apart leave 0.04 of margin; the mean over the 10 level pairs (gaps 1..4)
    expected = sum(max(0.0, 0.05 - 0.01 * (j - i)) for i in range(5) for j in range(i + 1, 5)) / 10
    assert inside.positive.item() == pytest.approx(expected, abs=1e-6)


def test_gradients_push_clean_crops_to_the_positive_prompt_and_degraded_ones_away():
    sims = ordered_similarities(gap=0.0).requires_grad_(True)
    losses = qualiclip_losses(sims, margin=0.05, consistency_margin=0.02)
    (losses.positive + losses.negative).backward()
    grad_pos, grad_neg = sims.grad[..., 0], sims.grad[..., 1]
    # descending the gradient raises s_p of the cleanest level and lowers it for the most degraded
    assert (grad_pos[:, 0] < 0).all() and (grad_pos[:, -1] > 0).all()
    assert (grad_neg[:, 0] > 0).all() and (grad_neg[:, -1] < 0).all()


def test_consistency_only_penalises_crops_that_disagree_beyond_its_margin():
    sims = ordered_similarities(gap=0.06)
    sims[1] += 0.01
    assert qualiclip_losses(sims, 0.05, consistency_margin=0.02).consistency.item() == 0
    sims[1] += 0.05
    disagreeing = sims.clone().requires_grad_(True)
    losses = qualiclip_losses(disagreeing, 0.05, consistency_margin=0.02)
    assert losses.consistency.item() == pytest.approx(0.04, abs=1e-6)
    losses.consistency.backward()
    assert (disagreeing.grad[0] < 0).all() and (disagreeing.grad[1] > 0).all()


def test_total_weights_the_terms():
    losses = qualiclip_losses(ordered_similarities(gap=-0.02), 0.05, 0.0)
    total = losses.total(weight_consistency=0.0, weight_positive=2.0, weight_negative=0.5)
    assert total.item() == pytest.approx(2 * losses.positive.item() + 0.5 * losses.negative.item())


def test_qualiclip_losses_reject_a_wrong_shape():
    with pytest.raises(ValueError, match="shape"):
        qualiclip_losses(torch.zeros(5, 3, 7, 2), 0.05, 0.02)


def test_mos_loss_is_zero_for_exact_predictions_and_has_gradients_otherwise():
    target = torch.tensor([0.1, 0.4, 0.5, 0.9])
    assert mos_loss(target.clone(), target, plcc_weight=1.0).item() == pytest.approx(0.0, abs=1e-6)
    predicted = torch.tensor([0.9, 0.5, 0.4, 0.1], requires_grad=True)
    loss = mos_loss(predicted, target, plcc_weight=1.0)
    assert loss.item() > 2.0  # MSE plus 1 − (−1)
    loss.backward()
    assert torch.isfinite(predicted.grad).all() and predicted.grad.abs().sum() > 0
