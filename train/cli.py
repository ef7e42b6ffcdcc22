"""Training subcommands of the `iqart` command line: degrade, train, eval.

They live with the training code (iqart.engine.cli.main only registers them) so that `train` stays free
of any import from `engine`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from iqart.train.storage import write_json_atomic

TRAINERS = ("qualiclip", "bpclip-nr", "bpclip-fr")


def add_training_parsers(subparsers) -> None:
    add_degrade_parser(subparsers)
    add_train_parser(subparsers)
    add_eval_parser(subparsers)


def add_degrade_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "degrade",
        help="picture of every degradation type (rows) at its 5 levels (columns)",
        description="Draw one image under every synthetic degradation the training uses, one "
        "type a row, the original then its 5 levels (mildest first), as a PNG.",
    )
    p.add_argument("image", help="an image file")
    p.add_argument("-o", "--out", default="degradations.png", help="PNG to write (default: degradations.png)")
    p.add_argument("--tile", type=int, default=128, help="size of each tile in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random degradation parameters (default 0)")
    p.set_defaults(run=run_degrade)


def run_degrade(args: argparse.Namespace) -> int:
    from iqart.train.data.degradations import degradation_grid
    from iqart.train.data.pristine import fit_short_side, read_image

    image = fit_short_side(read_image(Path(args.image)), args.tile)
    grid = degradation_grid(image, seed=args.seed, tile=args.tile)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp.png")
    grid.save(tmp)
    tmp.replace(out)
    print(f"wrote {out} ({grid.width}x{grid.height})")
    return 0


def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train QualiCLIP (opinion-unaware) or BPCLIP (MOS or synthetic targets)",
        description="Train a model into a run directory (checkpoints, log, curves, final "
        "weights) from a TOML configuration and KEY=VALUE overrides; --resume "
        "continues a stopped run.",
    )
    p.add_argument("trainer", choices=TRAINERS, help="what to train (the -tiny variants through the configuration)")
    p.add_argument("-c", "--config", help="TOML file of settings (see train/configs/); defaults otherwise")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting")
    p.add_argument("-o", "--out", help="run directory (default: runs/<model>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(run=run_train)


def run_train(args: argparse.Namespace) -> int:
    from iqart.train.config import load_config
    from iqart.train.train_bpclip import BPCLIPTrainConfig, train_bpclip
    from iqart.train.train_qualiclip import QualiCLIPTrainConfig, train_qualiclip

    qualiclip = args.trainer == "qualiclip"
    config_class = QualiCLIPTrainConfig if qualiclip else BPCLIPTrainConfig
    config = load_config(config_class, args.config, args.set, base=config_class(model=args.trainer))
    if config.model not in (args.trainer, f"{args.trainer}-tiny"):
        raise ValueError(
            f"`iqart train {args.trainer}` trains {args.trainer} or {args.trainer}-tiny, "
            f"but the configuration names model = {config.model!r}"
        )
    out = args.out or str(Path("runs") / config.model)
    run = (train_qualiclip if qualiclip else train_bpclip)(config, out, resume=args.resume)
    print(f"{config.model}: weights {run.weights_file}, log {run.log_file}, curves {run.path / 'curves.png'}")
    return 0


def add_eval_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a model: SRCC/PLCC/KRCC on a MOS dataset, or synthetic ranking",
        description="Evaluate a zoo model: SRCC, PLCC and KRCC against the MOS of a dataset, "
        "or how well its scores rank the 5 levels of each synthetic degradation.",
    )
    p.add_argument("model", help="zoo model name")
    p.add_argument("-w", "--weights", help="weight file (default: demo or official weights)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="MOS dataset: kadid10k, koniq10k, live, csiq, tid2013, spaq, clive")
    source.add_argument(
        "--synthetic", action="store_true", help="rank the 5 levels of every degradation type on pristine images"
    )
    p.add_argument("--root", help="the dataset's folder (with --dataset)")
    p.add_argument(
        "--split",
        choices=("test", "all"),
        default="test",
        help="test split (within-dataset) or every image (cross-dataset)",
    )
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split (default 0)")
    p.add_argument("--images", default="skimage", help="pristine images for --synthetic (folder or skimage[:names])")
    p.add_argument("--holdout-types", default="", help="comma-separated types to mark as held out from training")
    p.add_argument("--crop", type=int, default=224, help="side of the crops scored, in pixels (default 224)")
    p.add_argument(
        "--crops-per-image", type=int, default=4, help="--synthetic: crops taken from each pristine image (default 4)"
    )
    p.add_argument("--seed", type=int, default=1, help="--synthetic: seed of the crops and degradations (default 1)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from iqart.train.evaluate import (
        format_ranking_table,
        model_score_fn,
        mos_correlations,
        summarize_ranking,
        synthetic_ranking,
    )
    from iqart.train.models.zoo import get_card, load_model

    card = get_card(args.model)
    model = load_model(card.name, args.weights)
    score = model_score_fn(model)
    full_reference = card.task == "fr"
    if args.synthetic:
        from iqart.train.data.degradations import TYPES
        from iqart.train.data.pristine import load_pristine

        held_out = tuple(t.strip() for t in args.holdout_types.split(",") if t.strip())
        results = synthetic_ranking(
            score,
            load_pristine(args.images),
            TYPES,
            args.crop,
            args.crops_per_image,
            seed=args.seed,
            full_reference=full_reference,
            higher_better=card.higher_better,
        )
        rows = summarize_ranking(results, held_out)
        print(f"{card.name}: SRCC between score and degradation level on {args.images}")
        print(format_ranking_table(rows))
        report = {"model": card.name, "images": args.images, "groups": rows, "types": [vars(r) for r in results]}
    else:
        if not args.root:
            raise ValueError("--dataset needs --root (the dataset's folder)")
        from torch.utils.data import DataLoader

        from iqart.train.data.datasets import MOSDataset, read_dataset, split

        info, samples = read_dataset(args.dataset, args.root)
        if full_reference and info.task != "fr":
            raise ValueError(f"{card.name} is full-reference but {info.name} has no reference images")
        if args.split == "test":
            samples = split(info, samples, seed=args.split_seed)[1]
        dataset = MOSDataset(samples, info, crop=args.crop, train=False, task=card.task)
        metrics = mos_correlations(score, DataLoader(dataset, batch_size=16), full_reference)
        print(
            f"{card.name} on {info.name} ({args.split}, {len(samples)} images): "
            + ", ".join(f"{k.upper()} {v:.4f}" for k, v in metrics.items())
        )
        report = {"model": card.name, "dataset": info.name, "split": args.split, "images": len(samples), **metrics}
    if args.json:
        write_json_atomic(args.json, report)
    return 0
