"""What every training run shares: a run directory with a resumable checkpoint, a CSV log of
losses and metrics, a PNG plot of the curves, the learning-rate schedule and the exported weights.

Layout of a run directory:
  config.json      the exact configuration (a resumed run must use the same one)
  checkpoint.pt    model, optimiser, step and random states: enough to resume bit-for-bit
  log.csv          one row per logged step: step, lr, each loss term, each metric
  curves.png       the log plotted
  weights.pt       the trained weights as an iqart checkpoint (what `iqart score -w` loads)
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from iqart.train.models.checkpoints import save_checkpoint


def cosine_lr(step: int, total_steps: int, base_lr: float, warmup_steps: int, final_fraction: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to final_fraction · base_lr at total_steps."""
    if warmup_steps and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return base_lr * (final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _atomic_torch_save(obj: object, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class RunDirectory:
    """A training run on disk. `resume=True` continues from checkpoint.pt; otherwise the
    directory must not already hold a run (nothing is overwritten by accident)."""

    def __init__(self, path: str | os.PathLike, config: dict, resume: bool):
        self.path = Path(path)
        self.config = config
        config_file = self.path / "config.json"
        if resume:
            if not self.checkpoint_file.is_file():
                raise ValueError(f"{self.path}: nothing to resume (no checkpoint.pt)")
            saved = json.loads(config_file.read_text())
            if saved != config:
                changed = sorted(k for k in set(saved) | set(config) if saved.get(k) != config.get(k))
                raise ValueError(
                    f"{self.path}: the configuration differs from the run being resumed: {', '.join(changed)}"
                )
        else:
            if self.checkpoint_file.exists():
                raise ValueError(
                    f"{self.path} already holds a run: pass --resume to continue it, or choose another --out"
                )
            self.path.mkdir(parents=True, exist_ok=True)
            config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    @property
    def checkpoint_file(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def log_file(self) -> Path:
        return self.path / "log.csv"

    @property
    def weights_file(self) -> Path:
        return self.path / "weights.pt"

    def save(
        self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
    ) -> None:
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
        }
        _atomic_torch_save(state, self.checkpoint_file)

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> int:
        """Load checkpoint.pt into the given objects; returns the step to continue from."""
        state = torch.load(self.checkpoint_file, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        self._truncate_log(state["step"])
        return state["step"]

    def _truncate_log(self, step: int) -> None:
        """Drop log rows written after the checkpoint: they will be written again."""
        if not self.log_file.is_file():
            return
        with open(self.log_file, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [row for row in rows if int(row["step"]) <= step]
        if rows:
            self._write_log(kept, list(rows[0]))

    def _write_log(self, rows: list[dict], columns: list[str]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".log.", suffix=".tmp")
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.log_file)

    def log(self, row: dict) -> None:
        """Append one row; a row with new columns rewrites the file with the wider header."""
        rows, columns = [], list(row)
        if self.log_file.is_file():
            with open(self.log_file, newline="") as f:
                reader = csv.DictReader(f)
                rows, columns = list(reader), list(reader.fieldnames or [])
            columns += [c for c in row if c not in columns]
        self._write_log(rows + [row], columns)

    def read_log(self) -> list[dict]:
        if not self.log_file.is_file():
            return []
        with open(self.log_file, newline="") as f:
            return list(csv.DictReader(f))

    def plot(self) -> Path:
        """curves.png: every logged column against the step, one panel per column."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.read_log()
        columns = [c for c in (rows[0] if rows else {}) if c != "step"]
        fig, axes = plt.subplots(
            len(columns) or 1, 1, figsize=(7, 1.8 * max(1, len(columns))), sharex=True, squeeze=False
        )
        for ax, column in zip(axes[:, 0], columns, strict=False):
            points = [(int(r["step"]), float(r[column])) for r in rows if r.get(column) not in (None, "")]
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None)
            ax.set_ylabel(column, fontsize=8)
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("step")
        fig.tight_layout()
        out = self.path / "curves.png"
        fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".curves.", suffix=".png")
        os.close(fd)
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, out)
        return out

    def export_weights(self, model_name: str, state_dict: dict, half: bool = False) -> Path:
        """weights.pt: an iqart checkpoint; `half` stores fp16 (demo weights kept small in git)."""
        if half:
            state_dict = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
        save_checkpoint(self.weights_file, model_name, state_dict)
        return self.weights_file


def set_train_mode(model: torch.nn.Module, freeze_batchnorm: bool) -> None:
    """Train mode, except (optionally) batch norms, which keep their pretrained statistics."""
    model.train()
    if freeze_batchnorm:
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eval()


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, forward_batch, batches: int) -> None:
    """Reset every batch norm's running statistics to their average over `batches` training
    batches (forward_batch() runs one forward pass), then leave them frozen.

    Why: a network trained from scratch with frozen batch norms starts from statistics 0/1 that
    match nothing, so activations drift in scale layer after layer; training batch norms in
    train mode instead lets the ranking loss read the other crops of its batch (all levels of
    one image sit in one batch), a shortcut that fails at evaluation. Calibrated, frozen
    statistics normalise like batch norm and leak nothing.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return
    momenta = [m.momentum for m in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative average over the calibration batches
    model.eval()
    for module in norms:
        module.train()
    for _ in range(batches):
        forward_batch()
    for module, momentum in zip(norms, momenta, strict=True):
        module.momentum = momentum
    model.eval()


def fit(
    run: RunDirectory,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    config,
    step_loss,
    evaluate,
    resume: bool,
    progress: bool,
    stop_at: int | None = None,
    max_grad_norm: float = 5.0,
    forward_batch=None,
) -> RunDirectory:
    """The loop both trainers share: schedule, step, log, evaluate, checkpoint, export.

    step_loss() -> (loss, {name: value}) computes one batch's loss; evaluate(step) -> {name: value}
    scores the model (in eval mode); forward_batch() runs one training batch forward, for
    calibrate_batchnorm before the first step when config.calibrate_batchnorm > 0. `stop_at`
    ends this run early at that step, with a checkpoint, so that `resume` continues it; the
    weights are exported when all steps are done.
    """
    from tqdm import tqdm

    step = start = run.restore(model, optimizer, generator) if resume else 0
    if step == 0 and forward_batch is not None:
        calibrate_batchnorm(model, forward_batch, config.calibrate_batchnorm)
    end = min(config.steps, stop_at) if stop_at is not None else config.steps
    bar = tqdm(total=config.steps, initial=step, unit="step", disable=not progress)
    while step < end:
        set_train_mode(model, config.freeze_batchnorm)
        lr = cosine_lr(step, config.steps, config.lr, config.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        loss, terms = step_loss()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}: lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % config.log_every == 0 or step == config.steps:
            run.log({"step": step, "lr": lr, "loss": loss.item(), **terms})
        if config.eval_every and step % config.eval_every == 0 and step != config.steps:
            model.eval()
            _log_metrics(run, step, evaluate(step))
        if step % config.checkpoint_every == 0 or step == end:
            run.save(step, model, optimizer, generator)
    bar.close()
    model.eval()
    if step == config.steps and (step > start or not run.weights_file.exists()):
        _log_metrics(run, step, evaluate(step))
        run.export_weights(config.model, model.state_dict(), half=config.half_weights)
        run.plot()
    return run


def _log_metrics(run: RunDirectory, step: int, metrics: dict) -> None:
    if metrics:
        run.log({"step": step, **metrics})
