"""`iqart score`: score files, folders or path lists into CSV, JSONL or Parquet."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from iqart.engine.backends.plan_cache import DEFAULT_MAX_SIDE
from iqart.engine.backends.torch_backend import PRECISIONS
from iqart.engine.cli.ray import add_ray_arguments, run_score_on_ray
from iqart.engine.cli.usage import UsageError
from iqart.engine.pipeline.images import find_images
from iqart.engine.pipeline.jobs import ScoreJob, pair_with_references, read_pairs
from iqart.engine.pipeline.path_lists import read_path_list
from iqart.engine.pipeline.scoring import PipelineStats
from iqart.engine.results.files import open_result_writer, read_result_file
from iqart.engine.cli.artifact import add_attention_argument
from iqart.engine.scorer import BACKENDS, Scorer
from iqart.train.zoo import ModelCard, get_card, list_models


def add_score_parser(subparsers) -> None:
    p = subparsers.add_parser("score", help="score image files or folders, writing CSV or JSONL")
    p.add_argument("paths", nargs="*", help="image files and/or folders (searched recursively)")
    p.add_argument("-m", "--model", default="qualiclip", help=f"model name: {', '.join(list_models())}")
    p.add_argument("-w", "--weights", help="local weight file (default: demo or official weights)")
    p.add_argument("--backend", default="onnxruntime", choices=BACKENDS)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: a CUDA GPU when the backend can use one, else cpu)")
    p.add_argument("--precision", choices=[*PRECISIONS, "int8"],
                   help="torch: fp32 (default), fp16 or bf16 autocast; onnxruntime: fp32 (default), fp16 or int8 "
                        "(CPU; calibrated on first use); tensorrt: fp16")
    p.add_argument("--fused-attention", action="store_true", help="torch backend: use iqart's fused CUDA attention op")
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument("-j", "--workers", type=int, help="decoding threads (default: min(8, CPU cores))")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                   help="tensorrt, native-resolution models: the largest image side the plan accepts")
    add_attention_argument(p)
    pairs = p.add_mutually_exclusive_group()
    pairs.add_argument("-r", "--ref", help="full-reference models: folder of references, paired by relative path")
    pairs.add_argument("--pairs", help="full-reference models: CSV with columns distorted,reference "
                                       "(relative paths are resolved against the CSV's folder)")
    p.add_argument("-o", "--out", default="scores.csv", help="output file, .csv, .jsonl or .parquet (written atomically)")
    p.add_argument("--resume", action="store_true", help="keep the rows already in --out and score only the files "
                                                         "without a score there")
    p.add_argument("--paths-from", metavar="FILE", help="also score the images a list names: a .txt file (one path "
                   "per line) or a column of a .csv or .parquet file (relative paths: against the list's folder)")
    p.add_argument("--path-column", default="path", metavar="NAME",
                   help="--paths-from CSV/Parquet: the column of paths (default: path)")
    add_ray_arguments(p)
    p.set_defaults(run=run_score)


def score_jobs_from_args(args: argparse.Namespace, card: ModelCard) -> list[ScoreJob]:
    if card.task == "nr" and (args.ref or args.pairs):
        raise UsageError(f"{card.name} is a no-reference model: {'--ref' if args.ref else '--pairs'} does not apply")
    if card.task == "fr" and not (args.ref or args.pairs):
        raise UsageError(f"{card.name} is a full-reference model: pass --ref DIR or --pairs CSV")
    if args.pairs:
        if args.paths or args.paths_from:
            raise UsageError("--pairs lists the images to score: pass no PATH or --paths-from with it")
        return read_pairs(args.pairs)
    if not args.paths and not args.paths_from:
        raise UsageError("pass at least one image file or folder, or --paths-from FILE")
    listed = read_path_list(args.paths_from, args.path_column) if args.paths_from else []
    files = find_images(args.paths) + [(path, path.parent) for path in listed]
    if not files:
        raise UsageError(f"no images found under: {' '.join(args.paths)}")
    return pair_with_references(files, args.ref) if args.ref else [ScoreJob(path) for path, _ in files]


def previous_rows(out: Path, card: ModelCard) -> list[dict]:
    """The rows of an earlier run's output, checked to come from the same kind of model."""
    if not out.is_file():
        return []
    rows = read_result_file(out)
    if any((row["reference"] is None) == (card.task == "fr") for row in rows if row["error"] is None):
        kind = "no-reference" if card.task == "fr" else "full-reference"
        raise UsageError(f"--resume: {out} holds {kind} results; {card.name} cannot add to them")
    return rows


def run_score(args: argparse.Namespace) -> int:
    card = get_card(args.model)
    jobs = score_jobs_from_args(args, card)
    if args.ray is not None:
        return run_score_on_ray(args, card, jobs)
    out = Path(args.out)
    kept = previous_rows(out, card) if args.resume else []
    done = {(row["path"], row["reference"]) for row in kept if row["error"] is None and row["score"] is not None}
    todo = [job for job in jobs if job.key not in done]
    todo_keys = {job.key for job in todo}
    kept = [row for row in kept if (row["path"], row["reference"]) not in todo_keys]  # failed rows are redone
    if not todo:
        print(f"{card.name}: all {len(jobs)} images already scored in {out}")
        return 0
    scorer = Scorer(card.name, args.backend, args.device, args.batch_size, weights=args.weights,
                    precision=args.precision, workers=args.workers, fused_attention=args.fused_attention,
                    max_side=args.max_side, attention=args.attention)

    columns = ["path", "reference", "score", "error"] if card.task == "fr" else ["path", "score", "error"]
    scored = failed = 0
    interrupted = False
    stats = PipelineStats()
    with open_result_writer(out, columns) as writer, tqdm(total=len(todo), unit="img", disable=None) as bar:
        for row in kept:
            writer.write(row)
        try:
            for row in scorer.score_jobs(todo, stats):
                writer.write(row.as_dict())
                scored, failed = scored + row.ok, failed + (not row.ok)
                if not row.ok:
                    tqdm.write(f"error: {row.path}: {row.error}", file=sys.stderr)
                bar.update(1)
        except KeyboardInterrupt:  # keep what is done: the file is complete as far as it goes
            interrupted = True
    resumed = f", {len(jobs) - len(todo)} already scored" if args.resume else ""
    print(f"{card.name} on {scorer.backend.name} ({scorer.backend.device}): scored {scored}, failed {failed}{resumed}; "
          f"{summary(stats, scored + failed, scorer.workers)} -> {out}")
    if interrupted:
        print(f"iqart: interrupted after {scored + failed} of {len(todo)} images; run again with --resume to finish",
              file=sys.stderr)
        return 130
    return 0 if scored else 1


def summary(stats: PipelineStats, images: int, workers: int) -> str:
    rate = images / stats.wall_s if stats.wall_s else 0.0
    return (f"{rate:.1f} images/s; decode {stats.decode_s:.1f} s over {workers} workers, "
            f"inference {stats.inference_s:.1f} s (backend busy {stats.backend_busy:.0%})")
