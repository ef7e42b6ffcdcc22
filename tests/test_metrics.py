import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from iqart.train import metrics
from iqart.train.metrics import correlations, differentiable_plcc, krcc, plcc, srcc


def noisy_pair(n=200, noise=0.5, seed=0):
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=n)
    return pred, 2.0 * pred + 3.0 + noise * rng.normal(size=n)


def test_rank_correlations_agree_with_scipy_on_random_data():
    for seed in range(3):
        pred, target = noisy_pair(seed=seed, noise=2.0)
        assert srcc(pred, target) == pytest.approx(stats.spearmanr(pred, target).statistic, abs=1e-12)
        assert krcc(pred, target) == pytest.approx(stats.kendalltau(pred, target).statistic, abs=1e-12)


def test_plcc_of_a_linear_relation_matches_pearson():
    pred, target = noisy_pair(noise=1.0)
    pearson = stats.pearsonr(pred, target).statistic
    assert plcc(pred, target) == pytest.approx(pearson, abs=0.01)
    assert plcc(pred, target) >= pearson - 1e-3  # the logistic can only fit at least about as well


def test_perfect_monotone_nonlinear_relation():
    pred = np.linspace(-4, 4, 60)
    target = 1.0 + 4.0 / (1.0 + np.exp(-2.5 * (pred - 0.5)))  # a MOS-like saturating scale
    assert srcc(pred, target) == pytest.approx(1.0)
    assert krcc(pred, target) == pytest.approx(1.0)
    assert plcc(pred, target) == pytest.approx(1.0, abs=1e-6)
    assert stats.pearsonr(pred, target).statistic < 0.95  # the fit is what makes PLCC 1


def test_plcc_does_not_depend_on_the_scale_or_offset_of_predictions():
    pred = np.linspace(-4, 4, 60)
    target = 1.0 + 4.0 / (1.0 + np.exp(-2.5 * (pred - 0.5))) + 0.05 * np.sin(7 * pred)
    reference = plcc(pred, target)
    # 1e-17 mimics a mean prediction that is zero but for rounding, where finite differences stall
    for scaled in (pred * 1e-3, pred * 1e3 + 5e3, pred + 1e-17, 0.01 * pred + 0.5):
        assert plcc(scaled, target) == pytest.approx(reference, abs=1e-6)


def test_anti_correlated_gives_minus_one():
    pred = np.linspace(0, 1, 30)
    result = correlations(pred, 5.0 - 3.0 * pred)
    assert result["srcc"] == pytest.approx(-1.0)
    assert result["krcc"] == pytest.approx(-1.0)
    assert result["plcc"] == pytest.approx(-1.0, abs=1e-3)


def test_srcc_and_krcc_are_invariant_to_monotone_transforms():
    pred, target = noisy_pair(noise=3.0, seed=4)
    for transform in (np.exp, lambda x: x**3, lambda x: 7.0 * x - 2.0, np.arctan):
        assert srcc(transform(pred), target) == pytest.approx(srcc(pred, target), abs=1e-12)
        assert krcc(transform(pred), target) == pytest.approx(krcc(pred, target), abs=1e-12)


def test_accepts_lists_numpy_and_torch():
    pred, target = noisy_pair(n=20)
    expected = correlations(pred, target)
    for convert in (list, np.asarray, torch.tensor, lambda a: torch.tensor(a, dtype=torch.float32)):
        got = correlations(convert(pred), convert(target))
        assert set(got) == {"srcc", "plcc", "krcc"}
        assert all(isinstance(v, float) for v in got.values())
        for key in expected:
            assert got[key] == pytest.approx(expected[key], abs=1e-5)


@pytest.mark.parametrize("fn", [srcc, plcc, krcc, correlations])
def test_bad_input_raises(fn):
    with pytest.raises(ValueError, match="differ in length"):
        fn([1, 2, 3, 4], [1, 2, 3])
    with pytest.raises(ValueError, match="at least 3"):
        fn([1, 2], [2, 1])
    with pytest.raises(ValueError, match="NaN"):
        fn([1, 2, float("nan"), 4], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="NaN"):
        fn(np.arange(4.0), torch.tensor([1.0, 2.0, float("inf"), 4.0]))


def test_constant_predictions_give_nan():
    result = correlations([0.5, 0.5, 0.5, 0.5], [1, 2, 3, 4])
    assert all(np.isnan(v) for v in result.values())


def test_plcc_falls_back_to_pearson_with_a_warning_when_the_fit_fails(monkeypatch):
    def no_convergence(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(metrics.optimize, "curve_fit", no_convergence)
    pred, target = noisy_pair(n=50)
    with pytest.warns(RuntimeWarning, match="raw Pearson"):
        value = plcc(pred, target)
    assert value == pytest.approx(stats.pearsonr(pred, target).statistic)


def test_plcc_does_not_warn_when_the_fit_converges():
    pred, target = noisy_pair(n=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plcc(pred, target)


def test_differentiable_plcc_matches_numpy_and_has_gradients():
    pred_np, target_np = noisy_pair(n=32, noise=1.5, seed=7)
    pred = torch.tensor(pred_np, dtype=torch.float64, requires_grad=True)
    target = torch.tensor(target_np, dtype=torch.float64)
    value = differentiable_plcc(pred, target)
    assert value.item() == pytest.approx(np.corrcoef(pred_np, target_np)[0, 1], abs=1e-9)
    (1 - value).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    # a gradient step on the loss increases the correlation
    with torch.no_grad():
        stepped = pred - 0.5 * pred.grad
    assert differentiable_plcc(stepped, target) > value


def test_differentiable_plcc_shapes_and_constant_batch():
    pred = torch.zeros(8, 1, requires_grad=True)
    value = differentiable_plcc(pred, torch.arange(8.0))
    value.backward()
    assert torch.isfinite(pred.grad).all()
    with pytest.raises(ValueError, match="differ in length"):
        differentiable_plcc(torch.zeros(4), torch.zeros(5))
