"""`iqart score` on shards: WebDataset tar shards or Parquet tables of encoded images, local or
behind any fsspec URL, into one result file or one per shard (`--out-dir`)."""

from __future__ import annotations

import argparse
import os
import sys

from tqdm import tqdm

from iqart.engine.cli.attributes import explained_columns
from iqart.engine.cli.signals import exit_code
from iqart.engine.cli.usage import UsageError, require_existing, user_input
from iqart.engine.pipeline.batch_scoring import PipelineStats
from iqart.engine.pipeline.path_lists import read_list_entries
from iqart.engine.results.output import ResultOutput
from iqart.engine.results.shard_outputs import OUTPUT_FORMATS, OneOutput, PerShardOutputs
from iqart.engine.sources.samples import IMAGE_EXTENSIONS, SampleFormat
from iqart.engine.sources.shard_locations import NoShardsError, is_url, list_shards, looks_like_shards
from iqart.engine.sources.shard_reader import ParquetColumns, sample_formats
from iqart.engine.sources.shard_scoring import score_shards
from iqart.train.models.zoo import ModelCard


def add_shard_arguments(p: argparse.ArgumentParser) -> None:
    shards = p.add_argument_group(
        "shards",
        "PATHs may be WebDataset .tar shards or Parquet tables of encoded images: files, folders of "
        "them, globs, brace ranges (shards/{00000..00999}.tar), local or fsspec URLs (s3://, gs://, "
        "https://, hf://; pip install 'iqart[s3]' or 'iqart[gcs]'). Rows then name shard and key.",
    )
    shards.add_argument(
        "--image-ext",
        default=",".join(IMAGE_EXTENSIONS),
        metavar="EXT,...",
        help=f"tar shards: a sample's image is its first member with one of these extensions "
        f"(default {','.join(IMAGE_EXTENSIONS)})",
    )
    shards.add_argument(
        "--ref-ext",
        metavar="EXT",
        help="full-reference models: the member of the same sample that is the reference (e.g. ref.jpg); "
        "Parquet: the column holding the reference",
    )
    shards.add_argument(
        "--image-column", default="jpg", metavar="NAME", help="Parquet: the column of encoded images (default jpg)"
    )
    shards.add_argument(
        "--key-column", default="key", metavar="NAME", help="Parquet: the column of sample keys (default key)"
    )
    shards.add_argument(
        "--keep-fields",
        default="",
        metavar="NAME,...",
        help="copy these fields of each sample's .json member (or Parquet row) into its row, e.g. url,caption",
    )
    shards.add_argument(
        "--out-dir",
        metavar="DIR",
        help="write one output per shard, DIR/SHARD-STEM.parquet (a folder or an fsspec URL), each when its "
        "shard is done; with --resume, shards whose output exists are skipped",
    )
    shards.add_argument(
        "--out-format", choices=OUTPUT_FORMATS, default="parquet", help="--out-dir: the outputs' format"
    )


def shard_names(args: argparse.Namespace) -> list[str] | None:
    """The shard names the command line gives, or None when it names image files."""
    listed: list[str] = []
    if args.paths_from:
        require_existing(("--paths-from", args.paths_from))
        with user_input():
            base = os.path.dirname(os.path.abspath(args.paths_from))
            listed = [
                entry if is_url(entry) else os.path.join(base, entry)
                for entry in read_list_entries(args.paths_from, args.path_column)
            ]
    names = [*args.paths, *listed]
    if not looks_like_shards(names) and not args.out_dir:
        return None
    return names


def sample_format(args: argparse.Namespace, card: ModelCard, shards: list[str]) -> tuple[SampleFormat, ParquetColumns]:
    """The command line's reading of `shards`' samples (iqart.engine.sources.shard_reader.sample_formats)."""
    if card.task == "fr" and not args.ref_ext:
        raise UsageError(f"{card.name} is a full-reference model: name the reference member with --ref-ext")
    if card.task == "nr" and args.ref_ext:
        raise UsageError(f"{card.name} is a no-reference model: --ref-ext does not apply")
    keep = tuple(name.strip() for name in args.keep_fields.split(",") if name.strip())
    with user_input():
        return sample_formats(
            shards, tuple(args.image_ext.split(",")), args.ref_ext, keep, args.image_column, args.key_column
        )


def run_score_shards(args: argparse.Namespace, card: ModelCard, names: list[str], digest: str, scorer_factory) -> int:
    """Score the shards `names` give; exit status as `iqart score`'s."""
    if args.ref or args.pairs:
        raise UsageError("--ref and --pairs pair image files; in a shard the reference is a member (--ref-ext)")
    try:
        shards = list_shards(names)
    except NoShardsError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot list the shards: {exc}") from None
    fmt, columns = sample_format(args, card, shards)
    attributes = explained_columns(card, args.explain)
    with user_input():
        if args.out_dir:
            sink_context = PerShardOutputs(
                args.out_dir,
                shards,
                args.out_format,
                card.name,
                digest,
                card.task,
                fmt.keep_fields,
                args.resume,
                attributes=attributes,
            )
            output = None
        else:
            output = ResultOutput(
                args.out,
                card.name,
                digest,
                card.task,
                resume=args.resume,
                shards=True,
                keep_fields=fmt.keep_fields,
                attributes=attributes,
            )
            sink_context = output
    with sink_context:
        sink = sink_context if args.out_dir else OneOutput(output)
        todo = [shard for shard in shards if not sink.is_shard_done(shard)]
        if not todo:
            if output is not None:
                output.finish()
            print(f"{card.name}: all {len(shards)} shards already scored")
            return 0
        scorer = scorer_factory()
        scored = failed = 0
        stopped: KeyboardInterrupt | None = None
        stats = PipelineStats()
        with tqdm(unit="img", disable=None) as bar:
            try:
                for row in score_shards(
                    scorer,
                    todo,
                    sink,
                    fmt,
                    columns,
                    stats,
                    decode=args.decode,
                    decode_timeout=args.decode_timeout or None,
                    decode_device=args.decode_device,
                    explain=bool(attributes),
                ):
                    scored, failed = scored + row.ok, failed + (not row.ok)
                    if not row.ok:
                        tqdm.write(f"error: {row.where}: {row.error}", file=sys.stderr)
                    bar.update(1)
            except KeyboardInterrupt as exc:
                stopped = exc
        if output is not None:
            output.finish()
    where = args.out_dir if args.out_dir else output.path
    skipped = len(shards) - len(todo)
    resumed = f", {skipped} shards already done" if skipped else ""
    rate = (scored + failed) / stats.wall_s if stats.wall_s else 0.0
    print(
        f"{card.name} on {scorer.backend.name} ({scorer.backend.device}): {len(todo)} shards, scored {scored}, "
        f"failed {failed}{resumed}; {rate:.1f} images/s -> {where}"
    )
    if stopped is not None:
        print(f"iqart: stopped by {stopped or 'SIGINT'}; run again with --resume to finish", file=sys.stderr)
        return exit_code(stopped)
    return 0 if scored or (output is not None and output.kept_scored) else 1
