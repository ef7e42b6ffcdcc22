"""The `iqart` command line: `iqart score PATH... --model NAME --out FILE` and friends."""

from __future__ import annotations

import argparse
import sys
import time

from tqdm import tqdm

from engine.images import find_images
from engine.scoring import ScoreJob, pair_with_references, score_jobs
from engine.torch_backend import PRECISIONS, TorchBackend
from engine.writer import AtomicResultWriter
from train.checkpoints import CheckpointError
from train.zoo import MissingWeightsError, get_card, list_models

BACKENDS = ("torch",)


def add_score_parser(subparsers) -> None:
    p = subparsers.add_parser("score", help="score image files or folders, writing CSV or JSONL")
    p.add_argument("paths", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("-m", "--model", default="qualiclip", help=f"model name: {', '.join(list_models())}")
    p.add_argument("-w", "--weights", help="local weight file (default: demo or official weights)")
    p.add_argument("--backend", default="torch", choices=BACKENDS)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS), help="torch backend precision")
    p.add_argument("--fused-attention", action="store_true", help="torch backend: use iqart's fused CUDA attention op")
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument("-r", "--ref", help="full-reference models: folder of references, paired by relative path")
    p.add_argument("-o", "--out", default="scores.csv", help="output file, .csv or .jsonl (written atomically)")
    p.set_defaults(run=run_score)


def run_score(args: argparse.Namespace) -> int:
    card = get_card(args.model)
    if card.task == "fr" and not args.ref:
        raise UsageError(f"{card.name} is a full-reference model: pass --ref DIR")
    if card.task == "nr" and args.ref:
        raise UsageError(f"{card.name} is a no-reference model: --ref does not apply")
    files = find_images(args.paths)
    if not files:
        raise UsageError(f"no images found under: {' '.join(args.paths)}")
    jobs = pair_with_references(files, args.ref) if args.ref else [ScoreJob(path) for path, _ in files]
    backend = TorchBackend.from_zoo(card.name, args.weights, device=args.device, precision=args.precision,
                                   fused_attention=args.fused_attention)

    columns = ["path", "reference", "score", "error"] if card.task == "fr" else ["path", "score", "error"]
    scored = failed = 0
    started = time.perf_counter()
    with AtomicResultWriter(args.out, columns) as writer, tqdm(total=len(jobs), unit="img", disable=None) as bar:
        for row in score_jobs(jobs, backend, card.resize, args.batch_size):
            writer.write(row.as_dict())
            scored, failed = scored + (row.error is None), failed + (row.error is not None)
            if row.error:
                tqdm.write(f"error: {row.path}: {row.error}", file=sys.stderr)
            bar.update(1)
    elapsed = time.perf_counter() - started
    print(f"{card.name}: scored {scored}, failed {failed}, {len(jobs) / elapsed:.1f} images/s -> {args.out}")
    return 0 if scored else 1


def add_export_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="write a model's artifact: ONNX graphs (fp32, fp16, TensorRT flavour) + spec.json")
    p.add_argument("-m", "--model", required=True, help=f"model name: {', '.join(list_models())}")
    p.add_argument("-w", "--weights", help="local weight file (default: demo or official weights)")
    p.add_argument("-o", "--out", required=True, help="artifact directory to write (replaced atomically)")
    p.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from export.artifact import export_artifact, read_spec

    started = time.perf_counter()
    out = export_artifact(args.model, args.out, args.weights)
    spec = read_spec(out)
    print(f"{args.model}: exported to {out} in {time.perf_counter() - started:.1f} s "
          f"({spec['plugin']['nodes']} FusedCrossAttention node(s) in model.trt.onnx)")
    return 0


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


class UsageError(Exception):
    """A mistake in the command line; reported without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iqart", description="CLIP-based image quality: QualiCLIP and BPCLIP")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_score_parser(subparsers)
    add_export_parser(subparsers)
    add_validate_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MissingWeightsError as exc:
        print(f"iqart: {exc}", file=sys.stderr)
        return 2
    except (CheckpointError, UsageError, ValueError, OSError) as exc:
        print(f"iqart: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
