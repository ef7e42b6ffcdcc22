"""`iqart explain IMAGE... -m MODEL -o DIR`: per image, the model's quality map as a heat-map
overlay (.png) and as raw numbers (.npy), and explain.json saying what each channel is.

The maps come from the PyTorch model (iqart.train.models.quality_maps): they read the model's
feature grid, which the exported graphs do not output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from iqart.engine.cli.usage import UsageError, require_existing, require_output_folder, user_input
from iqart.engine.explain import (
    MAP_SUFFIX,
    OVERLAY_SUFFIX,
    SUMMARY_FILE,
    clashing_stems,
    explain_image,
    output_stem,
    write_outputs,
    write_summary,
)
from iqart.engine.pipeline.images import ImageError, scan_images
from iqart.train.models.quality_maps import map_channel_names
from iqart.train.models.zoo import get_card, list_models, load_model


def add_explain_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "explain",
        help="quality maps: where in each image the model's score and attributes fall (PNG overlay + .npy)",
        description="Quality maps of image files or folders (searched recursively): the model's score head "
        "read at every location of its last feature grid (1/32 of the input), for QualiCLIP the score and "
        "its 7 antonym-pair probabilities, for BPCLIP the score and its six quality dimensions (BPCLIP-FR: each "
        "image against its reference, --ref). Writes "
        f"per image <name>{OVERLAY_SUFFIX} (the score channel over the image the model saw; red low, blue "
        f"high, scale 0..1) and <name>{MAP_SUFFIX} (float32 channels x grid), and explain.json naming the "
        "channels. The method is iqart's, not the papers' (docs/explain.md).",
    )
    p.add_argument("paths", nargs="+", metavar="IMAGE", help="image files and/or folders (searched recursively)")
    p.add_argument(
        "-m",
        "--model",
        default="qualiclip",
        help=f"a no-reference model (default: qualiclip): {', '.join(list_models())}",
    )
    p.add_argument("-w", "--weights", metavar="FILE", help="local weight file (default: demo or official weights)")
    p.add_argument(
        "-r", "--ref", metavar="DIR", help="full-reference models: folder of references, paired by relative path"
    )
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="folder for the maps, overlays and explain.json")
    p.add_argument(
        "--per-attribute",
        action="store_true",
        help=f"also one overlay per attribute, <name>.<attribute>{OVERLAY_SUFFIX}",
    )
    p.add_argument("--device", default="cpu", help="torch device of the model: cpu (default), cuda, cuda:1, ...")
    p.set_defaults(run=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    with user_input():
        card = get_card(args.model)
        device = torch.device(args.device)
    if card.task == "fr" and not args.ref:
        raise UsageError(f"{card.name} is a full-reference model: pass --ref DIR (references paired by relative path)")
    if card.task == "nr" and args.ref:
        raise UsageError(f"{card.name} is a no-reference model: --ref does not apply")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: no CUDA device is available")
    require_existing(*((None, path) for path in args.paths), ("--weights", args.weights), ("--ref", args.ref))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    require_output_folder(out / SUMMARY_FILE, "--out")
    files = scan_images(args.paths).files
    if not files:
        raise UsageError(f"no image files in {', '.join(args.paths)}")
    clashes = clashing_stems(files)
    if clashes:
        raise UsageError(f"two inputs would write the same outputs: {'; '.join(clashes)}")
    model = load_model(card.name, args.weights).to(device)

    rows, errors = [], []
    for file, root in files:
        reference = Path(args.ref) / file.relative_to(root) if args.ref else None
        try:
            image, maps = explain_image(model, card, file, reference)
        except ImageError as exc:
            print(f"error: {file}: {exc}", file=sys.stderr)
            errors.append({"source": str(file), "error": str(exc)})
            continue
        written = write_outputs(out, output_stem(file, root), maps, image, args.per_attribute)
        score = float(maps.scores[0])
        rows.append(
            {
                "source": str(file),
                "score": score,
                "attributes": dict(zip(maps.names[1:], map(float, maps.attributes[0]), strict=True)),
                "input_size": list(image.shape[:2]),
                "grid": list(maps.maps.shape[-2:]),
                "map": str(written[0].relative_to(out)),
                "overlays": [str(path.relative_to(out)) for path in written[1:]],
            }
        )
        print(f"{file}: score {score:.4f}, map {maps.maps.shape[-2]}x{maps.maps.shape[-1]} -> {written[1]}")
    summary = write_summary(out, card, map_channel_names(model), rows, errors)
    print(f"{card.name}: explained {len(rows)}, failed {len(errors)} -> {summary}")
    return 0 if rows else 1  # 1: no image could be explained
