"""IQA correlation metrics: SRCC, PLCC (after the VQEG logistic fit), KRCC, and a torch PLCC loss.

SRCC and KRCC measure monotonic agreement and ignore the scale of the predictions. PLCC is
reported the way IQA papers report it: the predictions are first mapped onto the MOS scale by
the 4-parameter logistic of the VQEG FR-TV Phase II report,

    f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2,

fitted by least squares, so that a model is not penalised for a monotone but non-linear score
scale. The logistic absorbs the direction of the relation, so PLCC carries the sign of the fitted
curve: a model that ranks in reverse (DMOS against MOS) reads negative in all three. Inputs may be lists,
NumPy arrays or torch tensors of any shape (they are flattened).
If predictions or targets are constant every correlation is undefined and NaN is returned.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import optimize, special, stats

MIN_ITEMS = 3
LOGISTIC_MAX_EVALS = 20000


def _as_array(values, what: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    array = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} contains NaN or infinite values")
    return array


def _validated(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred, target = _as_array(pred, "pred"), _as_array(target, "target")
    if pred.size != target.size:
        raise ValueError(f"pred and target differ in length: {pred.size} != {target.size}")
    if pred.size < MIN_ITEMS:
        raise ValueError(f"correlations need at least {MIN_ITEMS} items, got {pred.size}")
    return pred, target


def _constant(*arrays: np.ndarray) -> bool:
    return any(np.ptp(a) == 0 for a in arrays)


def logistic_4(x, b1, b2, b3, b4):
    """The VQEG 4-parameter logistic; `expit` keeps it free of overflow for any slope."""
    return (b1 - b2) * special.expit((x - b3) / max(abs(b4), 1e-12)) + b2


def _logistic_4_jacobian(x, b1, b2, b3, b4):
    """Analytic derivatives: MINPACK's finite differences use a step relative to each parameter
    and stall when a start value is tiny but not zero (a mean prediction of 1e-17, say)."""
    scale = max(abs(b4), 1e-12)
    z = (x - b3) / scale
    s = special.expit(z)
    slope = (b1 - b2) * s * (1.0 - s)
    return np.stack([s, 1.0 - s, -slope / scale, -slope * z * np.sign(b4) / scale], axis=1)


def fit_logistic(pred, target) -> np.ndarray:
    """Least-squares parameters (b1, b2, b3, b4) mapping `pred` onto `target`.

    Start from the usual guess: the plateaus at the extreme targets (swapped when the relation
    is decreasing), the midpoint at the mean prediction and the slope at the predictions'
    spread. Raises RuntimeError when the fit does not converge.
    """
    pred, target = _validated(pred, target)
    increasing = np.corrcoef(pred, target)[0, 1] >= 0
    high, low = (target.max(), target.min()) if increasing else (target.min(), target.max())
    guess = [high, low, pred.mean(), pred.std() or 1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)  # no covariance needed
        params, _ = optimize.curve_fit(
            logistic_4, pred, target, p0=guess, jac=_logistic_4_jacobian, maxfev=LOGISTIC_MAX_EVALS
        )
    return params


def srcc(pred, target) -> float:
    """Spearman rank-order correlation."""
    pred, target = _validated(pred, target)
    if _constant(pred, target):
        return float("nan")
    return float(stats.spearmanr(pred, target).statistic)


def krcc(pred, target) -> float:
    """Kendall rank-order correlation (tau-b, which accounts for ties)."""
    pred, target = _validated(pred, target)
    if _constant(pred, target):
        return float("nan")
    return float(stats.kendalltau(pred, target).statistic)


def plcc(pred, target) -> float:
    """Pearson correlation between the logistic-mapped predictions and the targets.

    The fitted logistic absorbs the direction of the relation, so the result is signed by it
    (negative when the logistic decreases): like SRCC and KRCC, an inverted scale reads -1.
    Falls back to the raw Pearson correlation, with a RuntimeWarning, only when the logistic
    fit fails to converge.
    """
    pred, target = _validated(pred, target)
    if _constant(pred, target):
        return float("nan")
    try:
        params = fit_logistic(pred, target)
    except RuntimeError as error:
        warnings.warn(
            f"logistic fit did not converge ({error}); reporting the raw Pearson correlation",
            RuntimeWarning,
            stacklevel=2,
        )
        return float(stats.pearsonr(pred, target).statistic)
    mapped = logistic_4(pred, *params)
    if np.ptp(mapped) == 0:  # the fit collapsed onto a constant: no relation beyond the linear one
        return float(stats.pearsonr(pred, target).statistic)
    direction = 1.0 if params[0] >= params[1] else -1.0
    return direction * float(stats.pearsonr(mapped, target).statistic)


def correlations(pred, target) -> dict[str, float]:
    """All three correlations: {"srcc": ..., "plcc": ..., "krcc": ...}."""
    return {"srcc": srcc(pred, target), "plcc": plcc(pred, target), "krcc": krcc(pred, target)}


def differentiable_plcc(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Plain Pearson correlation in torch, differentiable w.r.t. both inputs (loss: `1 - plcc`).

    No logistic fit here: the loss should reward linear agreement with the normalised MOS.
    `eps` keeps the gradient finite when a batch's predictions are all equal.
    """
    pred, target = pred.reshape(-1), target.reshape(-1).to(pred.dtype)
    if pred.numel() != target.numel():
        raise ValueError(f"pred and target differ in length: {pred.numel()} != {target.numel()}")
    if pred.numel() < 2:
        raise ValueError(f"Pearson correlation needs at least 2 items, got {pred.numel()}")
    pred, target = pred - pred.mean(), target - target.mean()
    return (pred * target).sum() / (pred.norm() * target.norm() + eps)
