"""`iqart filter`: new tar shards holding only the samples whose scores pass, copied byte for
byte, with a Parquet index of what was kept."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from iqart.engine.cli.signals import exit_code
from iqart.engine.cli.usage import UsageError, positive_int, require_output_folder, user_input
from iqart.engine.sources.shard_filter import (
    INDEX_NAME,
    CopyReport,
    FilterInputError,
    IndexWriter,
    choose,
    copy_kept,
    read_scores,
    result_files,
)
from iqart.engine.sources.shard_locations import NoShardsError, is_url, list_shards, shard_kind, shard_stem
from iqart.engine.sources.shard_writer import OutputFolder, ShardWriter


def add_filter_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "filter",
        help="copy the samples of tar shards whose scores pass into new shards, byte for byte",
        description="From the rows of `iqart score` on WebDataset tar shards (one result file, or the folder "
        "of per-shard outputs --out-dir wrote) and the same shards, write new shards 00000.tar, 00001.tar, ... "
        "holding only the kept samples: every member of a kept sample copied unchanged (same names, same "
        "bytes, no re-encoding), in source order, with shard_index.parquet naming each kept sample's new "
        "shard, key, source shard and score. Rows with an error are never kept.",
    )
    p.add_argument(
        "shards",
        nargs="*",
        metavar="SHARD",
        help="where to read the scored shards (paths, globs, brace ranges, folders, fsspec URLs), matched to "
        "the rows by name, else by file name stem; default: the shards the rows name",
    )
    p.add_argument(
        "-s",
        "--scores",
        required=True,
        metavar="FILE|DIR",
        help="a result file of `iqart score` on shards (.csv, .jsonl, .parquet), or a folder of per-shard "
        "outputs (--out-dir); local or an fsspec URL",
    )
    keep = p.add_mutually_exclusive_group(required=True)
    keep.add_argument(
        "--min",
        type=float,
        metavar="SCORE",
        help="keep samples at least this good: score >= SCORE (score <= SCORE for a model whose lower scores "
        "are better)",
    )
    keep.add_argument(
        "--top-fraction",
        type=float,
        metavar="F",
        help="keep the best floor(F x N) of the N scored samples, 0 < F <= 1 (ties: the earlier row)",
    )
    p.add_argument(
        "-o",
        "--out-dir",
        required=True,
        metavar="DIR",
        help="folder for the new shards and their index (local or an fsspec URL); must hold no shards yet",
    )
    p.add_argument(
        "--samples-per-shard",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="at most N samples in each new shard (default 10000, as img2dataset writes)",
    )
    p.set_defaults(run=run_filter)


def _sources(chosen: dict, names: list[str]) -> dict[str, str]:
    """Where to read each chosen shard: the SHARD given with the same name, else the one with the
    same file name stem; with no SHARD, where the rows say."""
    if not names:
        return {shard: shard for shard in chosen}
    try:
        given = list_shards(names)
    except NoShardsError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot list the shards: {exc}") from None
    named = set(given)
    by_stem: dict[str, list[str]] = {}
    for url in given:
        by_stem.setdefault(shard_stem(url), []).append(url)
    sources = {}
    for shard in chosen:
        if shard in named:
            sources[shard] = shard
            continue
        matches = by_stem.get(shard_stem(shard), [])
        if len(matches) != 1:
            what = "no SHARD given has" if not matches else f"{len(matches)} SHARDs given have"
            raise UsageError(f"{what} the name of {shard}, whose samples the scores keep")
        sources[shard] = matches[0]
    return sources


def _criterion(args: argparse.Namespace, higher_better: bool) -> str:
    if args.min is not None:
        return f"score {'>=' if higher_better else '<='} {args.min:g}"
    direction = "highest" if higher_better else "lowest (lower is better)"
    return f"the {direction} {args.top_fraction:g} of scores"


def run_filter(args: argparse.Namespace) -> int:
    if args.top_fraction is not None and not 0 < args.top_fraction <= 1:
        raise UsageError(f"--top-fraction must be in (0, 1], not {args.top_fraction:g}")
    if not is_url(args.out_dir):
        require_output_folder(args.out_dir, "--out-dir")
    try:
        scores = read_scores(result_files(args.scores))
    except FilterInputError as exc:
        raise UsageError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--scores {args.scores}: {exc}") from None
    chosen = choose(scores, args.min, args.top_fraction)
    sources = _sources(chosen, args.shards)
    tables = [url for url in sources.values() if shard_kind(url) == "parquet"]
    if tables:
        raise UsageError(
            f"{tables[0]} is a Parquet table: `iqart filter` writes tar shards from tar shards; keep rows of a "
            "table by joining it with the scores on its key column (pyarrow, DuckDB, Spark)"
        )
    with user_input():
        folder = OutputFolder(args.out_dir)
        there = [name for name in folder.existing() if name.endswith(".tar") or name == INDEX_NAME]
    if there:
        folder.close()
        raise UsageError(f"--out-dir {args.out_dir} holds shards already ({there[0]}, ...): choose an empty folder")

    kept = sum(len(keys) for keys in chosen.values())
    index = IndexWriter(folder, scores.model, scores.weights_sha256)
    writer = ShardWriter(folder, args.samples_per_shard, index.shard_written)
    stopped: KeyboardInterrupt | None = None
    report = CopyReport()
    try:
        with writer, tqdm(total=kept, unit="sample", disable=None) as bar:
            for copied in copy_kept(chosen, sources, writer, report):
                bar.update(copied)
    except KeyboardInterrupt as exc:  # SIGINT, SIGTERM, SIGHUP: the complete shards stay, indexed
        stopped = exc
    except BaseException:
        index.discard()
        folder.close()
        raise
    index_url = index.commit()
    folder.close()
    print(
        f"{scores.model}: kept {kept} of {scores.scored} scored samples ({_criterion(args, scores.higher_better)}), "
        f"copied {index.rows} from {len(chosen)} shards into {len(writer.shards)} shards -> {folder.root}; "
        f"index {index_url}"
    )
    for problem in report.problems:
        print(f"iqart: not copied: {problem}", file=sys.stderr)
    if stopped is not None:
        print(
            f"iqart: stopped by {stopped or 'SIGINT'}: the {len(writer.shards)} complete shards and their index "
            "stay; run again into an empty folder to finish",
            file=sys.stderr,
        )
        return exit_code(stopped)
    return 1 if report.problems else 0
