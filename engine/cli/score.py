"""`iqart score`: score files, folders or path lists into CSV, JSONL or Parquet."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tqdm import tqdm

from iqart.engine.artifact_cache import weights_sha256
from iqart.engine.backends.plan_cache import DEFAULT_MAX_SIDE
from iqart.engine.cli.artifact import add_attention_argument
from iqart.engine.cli.attributes import add_explain_argument, explained_columns
from iqart.engine.cli.ray import add_ray_arguments, run_score_on_ray, run_shards_on_ray
from iqart.engine.cli.score_shards import add_shard_arguments, run_score_shards, shard_names
from iqart.engine.cli.signals import exit_code
from iqart.engine.cli.usage import UsageError, positive_int, require_existing, user_input
from iqart.engine.pipeline.batch_scoring import DECODE_TIMEOUT_S, PipelineStats
from iqart.engine.pipeline.gpu_decode import DECODE_DEVICES, check_decode_device
from iqart.engine.pipeline.images import DECODERS, scan_images
from iqart.engine.pipeline.jobs import ScoreJob, pair_with_references, read_pairs
from iqart.engine.pipeline.path_lists import read_path_list
from iqart.engine.results.output import ResultOutput, check_output_path
from iqart.engine.scorer import BACKENDS, PRECISION_CHOICES, Scorer
from iqart.train.models.zoo import ModelCard, get_card, list_models


def precision_help() -> str:
    """--precision's help from the Scorer's table, so a backend added there is described here."""
    per_backend = "; ".join(
        f"{backend}: {', '.join(PRECISION_CHOICES[backend])}" for backend in BACKENDS if backend in PRECISION_CHOICES
    )
    return (
        f"numeric precision; the first of each backend is its default ({per_backend}). torch fp16/bf16 are "
        "autocast; int8 (CPU) is calibrated on first use"
    )


def add_score_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "score",
        help="score image files, folders or path lists, writing CSV, JSONL or Parquet",
        description="Score image files, folders (searched recursively) or path lists with a zoo model and write "
        "one row per image (path, score, error, model, weights) to CSV, JSONL or Parquet. A file that "
        "cannot be scored becomes an error row and the run goes on; a path named here that does not "
        "exist is a usage error before any work.",
    )
    inputs = p.add_argument_group("inputs")
    inputs.add_argument("paths", nargs="*", metavar="PATH", help="image files and/or folders (searched recursively)")
    inputs.add_argument(
        "--paths-from",
        metavar="FILE",
        help="also score the images a list names: a .txt file (one "
        "path per line) or a column of a .csv or .parquet file (relative paths: against the list's "
        "folder)",
    )
    inputs.add_argument(
        "--path-column",
        default="path",
        metavar="NAME",
        help="--paths-from CSV/Parquet: the column of paths (default: path)",
    )
    pairs = inputs.add_mutually_exclusive_group()
    pairs.add_argument(
        "-r", "--ref", metavar="DIR", help="full-reference models: folder of references, paired by relative path"
    )
    pairs.add_argument(
        "--pairs",
        metavar="CSV",
        help="full-reference models: CSV with columns distorted,reference "
        "(relative paths are resolved against the CSV's folder)",
    )

    model = p.add_argument_group("model and backend")
    model.add_argument(
        "-m", "--model", default="qualiclip", help=f"model name (default: qualiclip): {', '.join(list_models())}"
    )
    model.add_argument("-w", "--weights", metavar="FILE", help="local weight file (default: demo or official weights)")
    model.add_argument(
        "--backend",
        default="onnxruntime",
        choices=BACKENDS,
        help=f"inference engine: {', '.join(BACKENDS)} (default: onnxruntime)",
    )
    model.add_argument(
        "--device", help="cpu, cuda or cuda:N (default: a CUDA GPU when the backend can use one, else cpu)"
    )
    precisions = dict.fromkeys(name for names in PRECISION_CHOICES.values() for name in names)
    model.add_argument("--precision", choices=list(precisions), help=precision_help())
    model.add_argument(
        "-b",
        "--batch-size",
        type=positive_int,
        default=8,
        metavar="N",
        help="images per inference call (default 8); images of different sizes go in separate batches",
    )
    model.add_argument(
        "--fused-attention", action="store_true", help="torch backend: use iqart's fused CUDA attention op"
    )
    model.add_argument(
        "--max-side",
        type=int,
        default=DEFAULT_MAX_SIDE,
        metavar="PIXELS",
        help=f"tensorrt, native-resolution models: the largest image side the plan accepts "
        f"(default {DEFAULT_MAX_SIDE})",
    )
    add_attention_argument(model)

    decoding = p.add_argument_group("decoding")
    decoding.add_argument(
        "--decode",
        choices=DECODERS,
        default="iqart",
        help="iqart (default): EXIF orientation, ICC to sRGB, modes converted explicitly; official: "
        "Image.open(path).convert('RGB') exactly, as the official QualiCLIP script (bit-exact "
        "comparison with published scores)",
    )
    decoding.add_argument(
        "--decode-device",
        choices=DECODE_DEVICES,
        help="where JPEGs are decoded: cuda (nvJPEG, batched; other formats and files it cannot "
        "decode as the CPU would go to the CPU) or cpu (PIL). Default: cuda for backends on a "
        "GPU (torch on CUDA, tensorrt), else cpu; cuda without a GPU is an error. --decode "
        "official decodes on the CPU",
    )
    decoding.add_argument(
        "--decode-timeout",
        type=float,
        default=DECODE_TIMEOUT_S,
        metavar="SECONDS",
        help=f"a file whose decode takes longer becomes an error row and the run goes on "
        f"(default {DECODE_TIMEOUT_S:g}; 0: no limit)",
    )
    decoding.add_argument(
        "-j", "--workers", type=positive_int, metavar="N", help="decoding threads (default: min(8, CPU cores))"
    )

    output = p.add_argument_group("output")
    output.add_argument(
        "-o",
        "--out",
        default="scores.csv",
        metavar="FILE",
        help="output file, .csv, .jsonl or .parquet (default: scores.csv): rows are journaled beside "
        "it as they come (.NAME.journal), the file itself is written atomically at the end",
    )
    output.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows already in --out (and in the journal of a killed run) and score only the "
        "files without a score there; refuses rows of another model or other weights",
    )
    add_explain_argument(output)
    add_shard_arguments(p)
    add_ray_arguments(p)
    p.set_defaults(run=run_score)


def score_jobs_from_args(args: argparse.Namespace, card: ModelCard) -> list[ScoreJob]:
    """The jobs the command line names, with absolute paths (rows name their files whatever the
    working directory of a later --resume); the scan's skipped files are reported, not hidden."""
    if card.task == "nr" and (args.ref or args.pairs):
        raise UsageError(f"{card.name} is a no-reference model: {'--ref' if args.ref else '--pairs'} does not apply")
    if card.task == "fr" and not (args.ref or args.pairs):
        raise UsageError(f"{card.name} is a full-reference model: pass --ref DIR or --pairs CSV")
    require_named_paths(args)
    if args.pairs:
        if args.paths or args.paths_from:
            raise UsageError("--pairs lists the images to score: pass no PATH or --paths-from with it")
        with user_input():
            return [_absolute(job) for job in read_pairs(args.pairs)]
    if not args.paths and not args.paths_from:
        raise UsageError("pass at least one image file or folder, or --paths-from FILE")
    with user_input():
        listed = read_path_list(args.paths_from, args.path_column) if args.paths_from else []
    scan = scan_images(args.paths)
    if scan.skipped:
        print(f"iqart: note: skipped {scan.skipped_summary()}, not images by their suffix", file=sys.stderr)
    files = scan.files + [(path, path.parent) for path in listed]
    if not files:
        raise UsageError(f"no images found under: {' '.join(args.paths)}")
    jobs = pair_with_references(files, args.ref) if args.ref else [ScoreJob(path) for path, _ in files]
    return [_absolute(job) for job in jobs]


def _absolute(job: ScoreJob) -> ScoreJob:
    return ScoreJob(
        Path(os.path.abspath(job.path)), None if job.reference is None else Path(os.path.abspath(job.reference))
    )


def decode_timeout(args: argparse.Namespace) -> float | None:
    if args.decode_timeout < 0:
        raise UsageError(f"--decode-timeout must be 0 (no limit) or positive, not {args.decode_timeout:g}")
    return args.decode_timeout or None


def require_named_paths(args: argparse.Namespace) -> None:
    """Every path the command line names must exist (files a list or a --ref folder names may not:
    those become error rows)."""
    require_existing(
        *((None, path) for path in args.paths),
        ("--paths-from", args.paths_from),
        ("--ref", args.ref),
        ("--pairs", args.pairs),
        ("--weights", args.weights),
    )


def run_score(args: argparse.Namespace) -> int:
    with user_input():
        card = get_card(args.model)
    timeout = decode_timeout(args)
    if args.ray is None:  # on Ray the GPUs are the actors', not necessarily this machine's
        with user_input():
            check_decode_device(args.decode_device)
    check_output_path(args.out)  # a mistake in --out costs nothing: checked before any work
    shards = shard_names(args)
    if shards is not None:
        if args.ray is not None:
            return run_shards_on_ray(args, card, shards, timeout)
        digest = weights_sha256(card.name, args.weights)
        return run_score_shards(args, card, shards, digest, lambda: make_scorer(args, card))
    jobs = score_jobs_from_args(args, card)
    digest = weights_sha256(card.name, args.weights)
    if args.ray is not None:
        return run_score_on_ray(args, card, jobs, timeout)
    attributes = explained_columns(card, args.explain)
    with ResultOutput(args.out, card.name, digest, card.task, resume=args.resume, attributes=attributes) as output:
        todo = [job for job in jobs if not output.is_done(job.key)]
        if not todo:
            output.finish()
            print(f"{card.name}: all {len(jobs)} images already scored in {output.path}")
            return 0
        scorer = make_scorer(args, card)
        scored = failed = 0
        stopped: KeyboardInterrupt | None = None
        stats = PipelineStats()
        with tqdm(total=len(todo), unit="img", disable=None) as bar:
            try:
                for row in scorer.score_jobs(
                    todo,
                    stats,
                    decode=args.decode,
                    decode_timeout=timeout,
                    decode_device=args.decode_device,
                    explain=bool(attributes),
                ):
                    output.write(row)
                    scored, failed = scored + row.ok, failed + (not row.ok)
                    if not row.ok:
                        tqdm.write(f"error: {row.where}: {row.error}", file=sys.stderr)
                    bar.update(1)
            except KeyboardInterrupt as exc:  # SIGINT, SIGTERM, SIGHUP: keep what is done
                stopped = exc
        output.finish()
    resumed = f", {len(jobs) - len(todo)} already scored" if args.resume else ""
    print(
        f"{card.name} on {scorer.backend.name} ({scorer.backend.device}): scored {scored}, failed {failed}{resumed}; "
        f"{summary(stats, scored + failed, scorer.workers)} -> {output.path}"
    )
    if stopped is not None:
        print(
            f"iqart: stopped by {stopped or 'SIGINT'} after {scored + failed} of {len(todo)} images; run again with "
            "--resume to finish",
            file=sys.stderr,
        )
        return exit_code(stopped)
    return 0 if scored or output.kept_scored else 1  # 1: nothing in the output has a score


def make_scorer(args: argparse.Namespace, card: ModelCard) -> Scorer:
    return Scorer(
        card.name,
        args.backend,
        args.device,
        args.batch_size,
        weights=args.weights,
        precision=args.precision,
        workers=args.workers,
        fused_attention=args.fused_attention,
        max_side=args.max_side,
        attention=args.attention,
    )


def summary(stats: PipelineStats, images: int, workers: int) -> str:
    rate = images / stats.wall_s if stats.wall_s else 0.0
    gpu = ""
    if stats.gpu_decoded or stats.gpu_rejected:
        rejected = f", {stats.gpu_rejected} rejected by it and decoded on the CPU" if stats.gpu_rejected else ""
        gpu = f"{stats.gpu_decoded} decoded by nvJPEG{rejected}; "
    return (
        f"{rate:.1f} images/s; {gpu}decode {stats.decode_s:.1f} s over {workers} workers, "
        f"inference {stats.inference_s:.1f} s (backend busy {stats.backend_busy:.0%})"
    )
