"""`iqart score`: score files, folders or path lists into CSV, JSONL or Parquet."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tqdm import tqdm

from iqart.engine.artifacts import weights_sha256
from iqart.engine.backends.plan_cache import DEFAULT_MAX_SIDE
from iqart.engine.backends.torch_backend import PRECISIONS
from iqart.engine.cli.artifact import add_attention_argument
from iqart.engine.cli.ray import add_ray_arguments, run_score_on_ray
from iqart.engine.cli.signals import exit_code
from iqart.engine.cli.usage import UsageError
from iqart.engine.pipeline.gpu_decode import DECODE_DEVICES, check_decode_device
from iqart.engine.pipeline.images import DECODERS, scan_images
from iqart.engine.pipeline.jobs import ScoreJob, pair_with_references, read_pairs
from iqart.engine.pipeline.path_lists import read_path_list
from iqart.engine.pipeline.scoring import DECODE_TIMEOUT_S, PipelineStats
from iqart.engine.results.output import ResultOutput, check_output_path
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
    p.add_argument("-o", "--out", default="scores.csv",
                   help="output file, .csv, .jsonl or .parquet: rows are journaled beside it as they come "
                        "(.NAME.journal), the file itself is written atomically at the end")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows already in --out (and in the journal of a killed run) and score only the files "
                        "without a score there; refuses rows of another model or other weights")
    p.add_argument("--decode", choices=DECODERS, default="iqart",
                   help="iqart (default): EXIF orientation, ICC to sRGB, modes converted explicitly; official: "
                        "Image.open(path).convert('RGB') exactly, as the official QualiCLIP script (bit-exact "
                        "comparison with published scores)")
    p.add_argument("--decode-device", choices=DECODE_DEVICES,
                   help="where JPEGs are decoded: cuda (nvJPEG, batched; other formats and files it cannot decode as "
                        "the CPU would go to the CPU) or cpu (PIL). Default: cuda for backends on a GPU (torch on "
                        "CUDA, tensorrt), else cpu; cuda without a GPU is an error. --decode official decodes on the CPU")
    p.add_argument("--decode-timeout", type=float, default=DECODE_TIMEOUT_S, metavar="SECONDS",
                   help=f"a file whose decode takes longer becomes an error row and the run goes on "
                        f"(default {DECODE_TIMEOUT_S:g}; 0: no limit)")
    p.add_argument("--paths-from", metavar="FILE", help="also score the images a list names: a .txt file (one path "
                   "per line) or a column of a .csv or .parquet file (relative paths: against the list's folder)")
    p.add_argument("--path-column", default="path", metavar="NAME",
                   help="--paths-from CSV/Parquet: the column of paths (default: path)")
    add_ray_arguments(p)
    p.set_defaults(run=run_score)


def score_jobs_from_args(args: argparse.Namespace, card: ModelCard) -> list[ScoreJob]:
    """The jobs the command line names, with absolute paths (rows name their files whatever the
    working directory of a later --resume); the scan's skipped files are reported, not hidden."""
    if card.task == "nr" and (args.ref or args.pairs):
        raise UsageError(f"{card.name} is a no-reference model: {'--ref' if args.ref else '--pairs'} does not apply")
    if card.task == "fr" and not (args.ref or args.pairs):
        raise UsageError(f"{card.name} is a full-reference model: pass --ref DIR or --pairs CSV")
    if args.pairs:
        if args.paths or args.paths_from:
            raise UsageError("--pairs lists the images to score: pass no PATH or --paths-from with it")
        return [_absolute(job) for job in read_pairs(args.pairs)]
    if not args.paths and not args.paths_from:
        raise UsageError("pass at least one image file or folder, or --paths-from FILE")
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
    return ScoreJob(Path(os.path.abspath(job.path)),
                    None if job.reference is None else Path(os.path.abspath(job.reference)))


def decode_timeout(args: argparse.Namespace) -> float | None:
    if args.decode_timeout < 0:
        raise UsageError(f"--decode-timeout must be 0 (no limit) or positive, not {args.decode_timeout:g}")
    return args.decode_timeout or None


def run_score(args: argparse.Namespace) -> int:
    card = get_card(args.model)
    timeout = decode_timeout(args)
    if args.ray is None:  # on Ray the GPUs are the actors', not necessarily this machine's
        check_decode_device(args.decode_device)
    check_output_path(args.out)  # a mistake in --out costs nothing: checked before any work
    jobs = score_jobs_from_args(args, card)
    digest = weights_sha256(card.name, args.weights)
    if args.ray is not None:
        return run_score_on_ray(args, card, jobs, timeout)
    with ResultOutput(args.out, card.name, digest, card.task, resume=args.resume) as output:
        todo = [job for job in jobs if not output.is_done(job.key)]
        if not todo:
            output.finish()
            print(f"{card.name}: all {len(jobs)} images already scored in {output.path}")
            return 0
        scorer = Scorer(card.name, args.backend, args.device, args.batch_size, weights=args.weights,
                        precision=args.precision, workers=args.workers, fused_attention=args.fused_attention,
                        max_side=args.max_side, attention=args.attention)
        scored = failed = 0
        stopped: KeyboardInterrupt | None = None
        stats = PipelineStats()
        with tqdm(total=len(todo), unit="img", disable=None) as bar:
            try:
                for row in scorer.score_jobs(todo, stats, decode=args.decode, decode_timeout=timeout,
                                             decode_device=args.decode_device):
                    output.write(row)
                    scored, failed = scored + row.ok, failed + (not row.ok)
                    if not row.ok:
                        tqdm.write(f"error: {row.path}: {row.error}", file=sys.stderr)
                    bar.update(1)
            except KeyboardInterrupt as exc:  # SIGINT, SIGTERM, SIGHUP: keep what is done
                stopped = exc
        output.finish()
    resumed = f", {len(jobs) - len(todo)} already scored" if args.resume else ""
    print(f"{card.name} on {scorer.backend.name} ({scorer.backend.device}): scored {scored}, failed {failed}{resumed}; "
          f"{summary(stats, scored + failed, scorer.workers)} -> {output.path}")
    if stopped is not None:
        print(f"iqart: stopped by {stopped or 'SIGINT'} after {scored + failed} of {len(todo)} images; run again with "
              "--resume to finish", file=sys.stderr)
        return exit_code(stopped)
    return 0 if scored or output.kept_scored else 1  # 1: nothing in the output has a score


def summary(stats: PipelineStats, images: int, workers: int) -> str:
    rate = images / stats.wall_s if stats.wall_s else 0.0
    gpu = ""
    if stats.gpu_decoded or stats.gpu_rejected:
        rejected = f", {stats.gpu_rejected} rejected by it and decoded on the CPU" if stats.gpu_rejected else ""
        gpu = f"{stats.gpu_decoded} decoded by nvJPEG{rejected}; "
    return (f"{rate:.1f} images/s; {gpu}decode {stats.decode_s:.1f} s over {workers} workers, "
            f"inference {stats.inference_s:.1f} s (backend busy {stats.backend_busy:.0%})")
