"""The `iqart` command line: `iqart score PATH... --model NAME --out FILE` and friends."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from engine.bench_cli import add_bench_parser
from engine.distributed_cli import add_ray_arguments, run_score_on_ray
from engine.images import find_images
from engine.jobs import ScoreJob, pair_with_references, read_pairs
from engine.path_lists import read_path_list
from engine.pipeline import PipelineStats
from engine.plan_cache import DEFAULT_MAX_SIDE, PlanMismatchError
from engine.quantize_cli import add_int8_arguments, add_quantize_parser, quantize_and_report
from engine.result_files import open_result_writer, read_result_file
from engine.scorer import BACKENDS, Scorer
from engine.tensorrt_backend import TensorRTUnavailableError
from engine.torch_backend import PRECISIONS
from train.checkpoints import CheckpointError
from train.cli import add_training_parsers
from train.zoo import MissingWeightsError, ModelCard, get_card, list_models


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
                    max_side=args.max_side)

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


def add_export_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a model's artifact: ONNX graphs (fp32, fp16, TensorRT flavour) + spec.json")
    p.add_argument("-m", "--model", required=True, help=f"model name: {', '.join(list_models())}")
    p.add_argument("-w", "--weights", help="local weight file (default: demo or official weights)")
    p.add_argument("-o", "--out", required=True, help="artifact directory to write (replaced atomically)")
    p.add_argument("--int8", action="store_true", help="also write model.int8.onnx and its parity report "
                                                       "(as `iqart quantize` does)")
    add_int8_arguments(p)
    p.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from export.artifact import export_artifact, read_spec

    started = time.perf_counter()
    out = export_artifact(args.model, args.out, args.weights)
    spec = read_spec(out)
    print(f"{args.model}: exported to {out} in {time.perf_counter() - started:.1f} s "
          f"({spec['plugin']['nodes']} FusedCrossAttention node(s) in model.trt.onnx)")
    return quantize_and_report(out, args) if args.int8 else 0


def add_validate_parser(subparsers) -> None:
    p = subparsers.add_parser("validate", help="parity of an artifact's graphs against the PyTorch reference")
    p.add_argument("artifact", help="artifact directory written by `iqart export`")
    p.add_argument("-w", "--weights", help="weight file the artifact was exported from (default: as export resolves it)")
    p.add_argument("--images", nargs="*", help="real images or folders to validate on (default: examples/images)")
    p.add_argument("--skip-trt-reference", action="store_true", help="skip the slow onnx.reference run of model.trt.onnx")
    p.set_defaults(run=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    from export.artifact import read_spec, sha256_file
    from export.validate import default_images, format_table, validate_artifact
    from train.zoo import load_model, resolve_weights

    spec = read_spec(args.artifact)
    card = get_card(spec["name"])
    weights = resolve_weights(card.name, args.weights)
    if spec["sha256"]["weights"] not in (None, sha256_file(weights)):
        raise UsageError(f"{weights} is not the weight file {args.artifact} was exported from (sha256 differs)")
    images = [path for path, _ in find_images(args.images)] if args.images else default_images()
    rows = validate_artifact(args.artifact, load_model(card.name, weights), card, images, trt_check=not args.skip_trt_reference)
    print(format_table(rows))
    return 1 if any(row.passed is False for row in rows) else 0


def add_build_parser(subparsers) -> None:
    p = subparsers.add_parser("build", help="build TensorRT plans for an artifact ahead of time")
    p.add_argument("artifact", help="artifact directory written by `iqart export`")
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 32], metavar="N",
                   help="the profile's batch range: MIN OPT MAX, or one N for 1 N N (default: 1 8 32)")
    p.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                   help="native-resolution models: the largest image side the plan accepts")
    p.add_argument("--device", help="CUDA device (default: the current one)")
    p.set_defaults(run=run_build)


def run_build(args: argparse.Namespace) -> int:
    from engine.plan_cache import profile_for
    from engine.tensorrt_backend import build_plan, import_tensorrt
    from export.artifact import read_spec

    spec = read_spec(args.artifact)
    sizes = args.batch_sizes
    if len(sizes) not in (1, 3):
        raise UsageError("--batch-sizes takes MIN OPT MAX, or one N")
    profile = profile_for(spec, (1, sizes[0], sizes[0]) if len(sizes) == 1 else tuple(sizes), args.max_side)
    import_tensorrt()  # says clearly when TensorRT is missing, before any work
    started = time.perf_counter()
    path = build_plan(args.artifact, profile, args.device)
    print(f"{spec['name']}: plan {path} ({path.stat().st_size / 2**20:.1f} MiB) for profile {profile.to_json()}, "
          f"ready in {time.perf_counter() - started:.1f} s")
    return 0


class UsageError(Exception):
    """A mistake in the command line; reported without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iqart", description="CLIP-based image quality: QualiCLIP and BPCLIP")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_score_parser(subparsers)
    add_export_parser(subparsers)
    add_validate_parser(subparsers)
    add_build_parser(subparsers)
    add_quantize_parser(subparsers)
    add_bench_parser(subparsers)
    add_training_parsers(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (MissingWeightsError, PlanMismatchError, TensorRTUnavailableError) as exc:
        print(f"iqart: {exc}", file=sys.stderr)
        return 2
    except (CheckpointError, UsageError, ValueError, OSError) as exc:
        print(f"iqart: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
