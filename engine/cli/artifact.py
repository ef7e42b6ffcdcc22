"""`iqart export`, `iqart validate` and `iqart build`: write a model's artifact, check its graphs
against the PyTorch reference, and build TensorRT plans from it ahead of time."""

from __future__ import annotations

import argparse
import time

from iqart.engine.backends.plan_cache import DEFAULT_MAX_SIDE, GRAPHS
from iqart.engine.cli.quantize import add_int8_arguments, check_image_sources, quantize_and_report
from iqart.engine.cli.usage import UsageError, require_existing, require_output_folder, user_input
from iqart.engine.pipeline.images import find_images
from iqart.train.models.zoo import get_card, list_models

ATTENTION_MODES = tuple(GRAPHS)  # as the TensorRT backends' (not imported here: torch)


def add_export_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="write a model's artifact: ONNX graphs (fp32, fp16, two TensorRT flavours) + spec.json",
        description="Write a model's artifact directory: model.onnx (fp32), model.fp16.onnx, the "
        "two TensorRT graphs and spec.json, the contract the engine and C++ users "
        "read. `iqart score` exports into its cache on first use; this writes one "
        "where you choose.",
    )
    p.add_argument("-m", "--model", required=True, help=f"model name: {', '.join(list_models())}")
    p.add_argument("-w", "--weights", metavar="FILE", help="local weight file (default: demo or official weights)")
    p.add_argument(
        "-o", "--out", required=True, metavar="DIR", help="artifact directory to write (replaced atomically)"
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="also write model.int8.onnx and its parity report (as `iqart quantize` does)",
    )
    add_int8_arguments(p)
    p.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    from iqart.export.artifact import export_artifact, read_spec

    with user_input():
        get_card(args.model)
    require_existing(("--weights", args.weights))
    require_output_folder(args.out, "--out")
    if args.int8:
        check_image_sources(args)
    started = time.perf_counter()
    out = export_artifact(args.model, args.out, args.weights)
    spec = read_spec(out)
    print(
        f"{args.model}: exported to {out} in {time.perf_counter() - started:.1f} s "
        f"({spec['plugin']['nodes']} FusedCrossAttention node(s) in model.trt.onnx, "
        f"{spec['native_attention']['nodes']} Attention op(s) in {spec['native_attention']['graph']})"
    )
    return quantize_and_report(out, args) if args.int8 else 0


def add_validate_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "validate",
        help="parity of an artifact's graphs against the PyTorch reference",
        description="Score images with each of an artifact's graphs (ONNX Runtime, and the "
        "TensorRT graphs through onnx.reference) and with the PyTorch reference, "
        "and print the differences against their tolerances; exit 1 when one fails.",
    )
    p.add_argument("artifact", help="artifact directory written by `iqart export`")
    p.add_argument(
        "-w",
        "--weights",
        metavar="FILE",
        help="weight file the artifact was exported from (default: as export resolves it)",
    )
    p.add_argument(
        "--images", nargs="*", metavar="PATH", help="real images or folders to validate on (default: examples/images)"
    )
    p.add_argument(
        "--skip-trt-reference",
        action="store_true",
        help="skip the slow onnx.reference run of model.trt.onnx (model.trt-native.onnx is always checked)",
    )
    p.set_defaults(run=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    from iqart.export.artifact import read_spec, sha256_file
    from iqart.export.validate import default_images, format_table, validate_artifact
    from iqart.train.models.zoo import load_model, resolve_weights

    require_existing((None, args.artifact), ("--weights", args.weights), *((None, path) for path in args.images or ()))
    with user_input():
        spec = read_spec(args.artifact)
        card = get_card(spec["name"])
    weights = resolve_weights(card.name, args.weights)
    if spec["sha256"]["weights"] not in (None, sha256_file(weights)):
        raise UsageError(f"{weights} is not the weight file {args.artifact} was exported from (sha256 differs)")
    images = [path for path, _ in find_images(args.images)] if args.images else default_images()
    rows = validate_artifact(
        args.artifact, load_model(card.name, weights), card, images, trt_check=not args.skip_trt_reference
    )
    print(format_table(rows))
    return 1 if any(row.passed is False for row in rows) else 0


def add_build_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "build",
        help="build TensorRT plans for an artifact ahead of time",
        description="Build a TensorRT plan for an artifact and one batch/size profile into its "
        "plans/ cache, so that the first `iqart score --backend tensorrt` does not "
        "wait for a build. TensorRT builds on the GPU it will run on; TensorRT for "
        "RTX (--backend tensorrt-rtx) builds on any machine, a CPU-only one "
        "included, for Ampere, Ada and Blackwell RTX GPUs.",
    )
    p.add_argument("artifact", help="artifact directory written by `iqart export`")
    p.add_argument(
        "--backend",
        choices=("tensorrt", "tensorrt-rtx"),
        default="tensorrt",
        help="which TensorRT writes the plan: tensorrt (TensorRT 11, on this GPU) or tensorrt-rtx "
        "(TensorRT for RTX, ahead of time, no GPU needed) (default: tensorrt)",
    )
    p.add_argument(
        "--batch-sizes",
        nargs="+",
        type=int,
        default=[1, 8, 32],
        metavar="N",
        help="the profile's batch range: MIN OPT MAX, or one N for 1 N N (default: 1 8 32)",
    )
    p.add_argument(
        "--max-side",
        type=int,
        default=DEFAULT_MAX_SIDE,
        metavar="PIXELS",
        help=f"native-resolution models: the largest image side the plan accepts (default {DEFAULT_MAX_SIDE})",
    )
    p.add_argument("--device", help="tensorrt: CUDA device, cuda or cuda:N (default: the current one)")
    add_attention_argument(p)
    p.set_defaults(run=run_build)


def add_attention_argument(parser) -> None:
    """--attention for the commands that build or run TensorRT plans (build, score)."""
    parser.add_argument(
        "--attention",
        choices=ATTENTION_MODES,
        help="TensorRT backends: which graph carries attention, "
        f"{', '.join(f'{mode} ({graph})' for mode, graph in GRAPHS.items())}: plugin is iqart's "
        "fused kernel, native TensorRT's fused attention (needs only pip's TensorRT). Default: "
        "the plugin when its library is built or can be built here, else native",
    )


def run_build(args: argparse.Namespace) -> int:
    from iqart.engine.backends.plan_cache import profile_for
    from iqart.engine.backends.tensorrt_build import build_plan, choose_attention
    from iqart.engine.backends.tensorrt_import import LIBRARIES
    from iqart.export.artifact import read_spec

    require_existing((None, args.artifact))
    with user_input():
        spec = read_spec(args.artifact)
    sizes = args.batch_sizes
    if len(sizes) not in (1, 3):
        raise UsageError("--batch-sizes takes MIN OPT MAX, or one N")
    with user_input():
        profile = profile_for(spec, (1, sizes[0], sizes[0]) if len(sizes) == 1 else tuple(sizes), args.max_side)
    library = LIBRARIES[args.backend]
    library.load()  # says clearly when TensorRT is missing, before any work
    attention, why = choose_attention(args.attention, args.artifact)
    print(f"{spec['name']}: {attention} attention ({why})")
    started = time.perf_counter()
    path, _ = build_plan(args.artifact, profile, args.device, attention, library)
    print(
        f"{spec['name']}: plan {path} ({path.stat().st_size / 2**20:.1f} MiB) for profile {profile.to_json()}, "
        f"ready in {time.perf_counter() - started:.1f} s"
    )
    return 0
