"""A few training steps of each trainer on the GPU with autocast: the losses must stay finite and
fall. Nothing else trains on a GPU in this project (CI and development machines have none), so
this is where a dtype mismatch under autocast, a tensor left on the CPU, or an fp16 overflow in a
loss would show. gpu_verify.sh runs it as the `train-steps` step of `--part checks`.

    python3 benchmarks/train_steps_gpu.py [--models qualiclip,bpclip-nr,bpclip-fr] [--steps 8] \
        [--device cuda] [--json out.json]

Each model is built as its trainer builds it (build_qualiclip, build_bpclip: random weights, RN50
for the full-size models), one batch is drawn as its trainer draws one (degraded_pairs for
QualiCLIP: 2 crops x 5 levels of each image; SyntheticMOS for BPCLIP: whole level sets), its batch
norms are calibrated on that batch (train/runs.py calibrate_batchnorm, as the trainers do from
scratch: random weights with the initial statistics would let activations grow unchecked through
50 layers, which fp16 may not hold), and the same batch is trained on for --steps steps with the
trainer's loss (qualiclip_losses; mos_loss plus the level-set ranking hinge) and optimizer (AdamW;
BPCLIP's encoder/head groups), in the loop of train/runs.py's fit (train mode with frozen batch
norms, gradient clipping at 5). One fixed batch, so a loss that does not fall means the step does
not learn, not that the next batch was harder. "Falling": the mean loss of the last third of the
steps is below that of the first third (BPCLIP's 1 - PLCC term swings by tenths in the first steps
from random weights, whose scores barely differ across a batch, so two single steps are no
measure). On CUDA: fp16 autocast with a GradScaler (the path most likely to overflow); on the CPU,
bf16 autocast (how tests/test_gpu_verify.py runs it on the tiny models). The learning rate is 5e-4,
the rate the demo configs (train/configs/*-tiny.toml) train from scratch at: ten steps from random
weights then fall clearly (tiny models, 64 px crops, bf16 on the CPU: QualiCLIP 0.109 -> 0.019,
BPCLIP-NR 1.62 -> 0.107, BPCLIP-FR 0.73 -> 0.124). `--json` is rewritten after every step.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

MODELS = ("qualiclip", "bpclip-nr", "bpclip-fr")
MAX_GRAD_NORM = 5.0  # train/runs.py fit's clipping
# Photos inside scikit-image's wheel (some of its others are downloaded on first use, and the GPU
# machine reaches no network).
PHOTOS = "skimage:astronaut,chelsea,coffee,rocket"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated (default {','.join(MODELS)})")
    parser.add_argument("--steps", type=int, default=10, help="steps per model on one fixed batch (default 10)")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--crop", type=int, default=224, help="training crop side (default 224, the paper's)")
    parser.add_argument("--device", default="cuda", help="cuda (fp16 autocast + GradScaler) or cpu (bf16 autocast)")
    parser.add_argument("--json", help="write every step's loss here, after every step")
    return parser


def check_args(args: argparse.Namespace) -> list[str]:
    from iqart.train.models.zoo import get_card

    names = [name for name in args.models.split(",") if name]
    for name in names:
        if get_card(name).family not in ("qualiclip", "bpclip"):
            raise SystemExit(f"--models: {name} is neither a QualiCLIP nor a BPCLIP model")
    if args.steps < 3 or args.lr <= 0 or args.crop < 32:
        raise SystemExit("--steps must be at least 3 (a fall is between thirds), --lr positive, --crop at least 32")
    if args.device not in ("cuda", "cpu"):
        raise SystemExit(f"--device must be cuda or cpu, not {args.device!r}")
    return names


def qualiclip_setup(name: str, crop: int, lr: float, device: torch.device):
    """(model, optimizer, loss function, config) the way train_qualiclip sets them up."""
    from iqart.train.data.pristine import split_pristine
    from iqart.train.losses import qualiclip_losses
    from iqart.train.models.preprocess import normalize_float
    from iqart.train.runs import seed_everything
    from iqart.train.train_qualiclip import (
        QualiCLIPTrainConfig,
        build_qualiclip,
        degraded_pairs,
        training_content,
        training_types,
    )

    config = QualiCLIPTrainConfig(model=name, images=PHOTOS, crop=crop, images_per_step=2, lr=lr)
    generator = seed_everything(config.seed)
    images, _ = split_pristine(config.images, config.holdout_images)
    batch = degraded_pairs(training_content(images, config, generator), config, training_types(config), generator)
    model = build_qualiclip(config).to(device)
    optimizer = torch.optim.AdamW(model.visual.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batch = batch.to(device)

    def loss() -> torch.Tensor:  # train_qualiclip's step_loss on the fixed batch
        features = model.embed(normalize_float(batch.reshape(-1, *batch.shape[-3:])))
        similarities = model.similarities(features).reshape(*batch.shape[:3], model.num_pairs, 2)
        losses = qualiclip_losses(similarities, config.margin, config.consistency_margin)
        return losses.total(config.weight_consistency, config.weight_positive, config.weight_negative)

    return model, optimizer, loss, config


def bpclip_setup(name: str, crop: int, lr: float, device: torch.device):
    """(model, optimizer, loss function, config) the way train_bpclip sets them up, with level sets
    and the ranking hinge on, so that every term of its loss runs."""
    from iqart.train.data.pristine import split_pristine
    from iqart.train.losses import mos_loss
    from iqart.train.models.preprocess import normalize_float
    from iqart.train.runs import seed_everything
    from iqart.train.train_bpclip import (
        BPCLIPTrainConfig,
        SyntheticMOS,
        _optimizer,
        build_bpclip,
        set_ranking_loss,
    )

    config = BPCLIPTrainConfig(
        model=name, images=PHOTOS, crop=crop, batch_size=12, level_sets=True, rank_weight=1.0, lr=lr
    )
    generator = seed_everything(config.seed)
    images, _ = split_pristine(config.images, config.holdout_images)
    batch = {key: value.to(device) for key, value in SyntheticMOS(config, images, generator).batch().items()}
    model = build_bpclip(config).to(device)
    optimizer = _optimizer(model, config)
    full_reference = model.task == "fr"

    def loss() -> torch.Tensor:  # train_bpclip's step_loss on the fixed batch (no teacher)
        inputs = [normalize_float(batch["image"])]
        if full_reference:
            inputs.append(normalize_float(batch["reference"]))
        predicted = model(*inputs).float()
        total = mos_loss(predicted, batch["target"].float(), config.plcc_weight)
        ranking = set_ranking_loss(predicted.reshape(-1, SyntheticMOS.set_size), config.rank_margin)
        return total + config.rank_weight * ranking

    return model, optimizer, loss, config


def train_steps(name: str, args: argparse.Namespace, record) -> dict:
    """Runs args.steps steps of one model; record(row) is called after each. Returns the summary."""
    from iqart.train.models.zoo import get_card
    from iqart.train.runs import calibrate_batchnorm, set_train_mode

    device = torch.device(args.device)
    started = time.perf_counter()
    setup = qualiclip_setup if get_card(name).family == "qualiclip" else bpclip_setup
    model, optimizer, loss_fn, config = setup(name, args.crop, args.lr, device)
    calibrate_batchnorm(model, loss_fn, 1)  # the fixed batch's statistics, frozen from here on
    prepared = time.perf_counter() - started
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    losses, applied = [], 0
    for step in range(args.steps):
        set_train_mode(model, config.freeze_batchnorm)
        with torch.autocast(device.type, dtype=dtype):
            loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        scale_before = scaler.get_scale() if cuda else 1.0
        scaler.step(optimizer)  # skipped (and the scale lowered) when a gradient overflowed fp16
        scaler.update()
        skipped = cuda and scaler.get_scale() < scale_before
        applied += not skipped
        losses.append(loss.item())
        record({"model": name, "step": step, "loss": losses[-1], "step_skipped": bool(skipped)})
    if cuda:
        torch.cuda.synchronize()
    finite = all(math.isfinite(value) for value in losses)
    third = len(losses) // 3
    falling = finite and sum(losses[-third:]) < sum(losses[:third])
    summary = {
        "model": name,
        "device": args.device,
        "autocast": str(dtype).removeprefix("torch."),
        "steps": args.steps,
        "steps_applied": applied,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "finite": finite,
        "falling": falling,
        "setup_s": prepared,
        "steps_s": time.perf_counter() - started - prepared,
    }
    # Half the steps at least must reach the weights: a GradScaler skips the first few while it
    # finds its scale, but one that skips most of them means the loss overflows fp16.
    summary["ok"] = finite and falling and applied >= args.steps / 2
    return summary


def dry_run(args: argparse.Namespace) -> None:
    """The arguments and the imports both setups make (on the meta device: no weights, no data)."""
    names = check_args(args)
    from iqart.train import train_bpclip, train_qualiclip  # noqa: F401  (the imports the run makes)
    from iqart.train.models.zoo import build_model

    for name in names:
        with torch.device("meta"):
            build_model(name)
    print(f"train steps: {', '.join(names)} build; {args.steps} steps each on {args.device}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = check_args(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("train_steps_gpu: needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    rows: list[dict] = []
    summaries: list[dict] = []

    def save() -> None:
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"torch": torch.__version__, "summaries": summaries, "steps": rows}, f, indent=1)

    def record(row: dict) -> None:
        rows.append(row)
        print(f"{row['model']} step {row['step']}: loss {row['loss']:.5f}{' (skipped)' if row['step_skipped'] else ''}")
        save()

    failed = 0
    for name in names:
        try:
            summary = train_steps(name, args, record)
        except Exception as exc:  # one trainer's failure is reported; the others still run
            summary = {"model": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        summaries.append(summary)
        save()
        failed += not summary["ok"]
        print(
            f"== {name}: {'ok' if summary['ok'] else 'FAILED'} "
            + (
                summary.get("error")
                or f"loss {summary['first_loss']:.5f} -> {summary['last_loss']:.5f} in {summary['steps']} steps "
                f"({summary['steps_applied']} applied; {summary['autocast']} autocast), setup "
                f"{summary['setup_s']:.1f} s, steps {summary['steps_s']:.1f} s"
            ),
            flush=True,
        )
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
