"""`iqart score ... --ray [ADDRESS]`: the score command's options for Ray, and the run that
hands its jobs to iqart.engine.distributed (imported only then: Ray is an optional extra)."""

from __future__ import annotations

import argparse
import sys

from tqdm import tqdm

from iqart.engine.cli.attributes import explained_columns
from iqart.engine.cli.usage import UsageError
from iqart.engine.pipeline.jobs import ScoreJob, ScoreRow
from iqart.train.models.zoo import ModelCard


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("distributed", "score on a Ray cluster (pip install 'iqart[ray]')")
    group.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="score on Ray: join the cluster at ADDRESS (auto, HOST:PORT, ray://HOST:10001); with no "
        "ADDRESS, the one in RAY_ADDRESS or started here by `ray start`, else a local Ray "
        "with this machine's cores",
    )
    group.add_argument(
        "--ray-actors",
        type=int,
        metavar="N",
        help="scoring actors, each holding one model (default: as many as the GPUs or CPUs allow)",
    )
    group.add_argument(
        "--ray-cpus-per-actor",
        type=float,
        default=1.0,
        metavar="C",
        help="CPUs reserved per actor; a CPU actor decodes and infers on this many threads (default 1)",
    )
    group.add_argument(
        "--ray-gpus-per-actor",
        type=float,
        default=0.0,
        metavar="G",
        help="GPUs per actor, fractions allowed (0.5: two actors per GPU); default 0: CPU actors",
    )


def run_score_on_ray(
    args: argparse.Namespace, card: ModelCard, jobs: list[ScoreJob], decode_timeout: float | None
) -> int:
    """Score `jobs` on Ray into args.out; exit code as `iqart score` without Ray."""
    try:
        import ray.data

        from iqart.engine.distributed import score_distributed
    except ImportError as exc:
        raise UsageError(f"--ray needs Ray Data: pip install 'iqart[ray]' ({exc})") from None
    if args.ray_actors is not None and args.ray_actors < 1:
        raise UsageError(f"--ray-actors must be at least 1, not {args.ray_actors}")
    ray.data.DataContext.get_current().enable_progress_bars = False  # the bar below counts rows
    options = _scorer_options(args)
    with tqdm(total=None if args.resume else len(jobs), unit="img", disable=None) as bar:

        def show(row: ScoreRow) -> None:
            if not row.ok:
                tqdm.write(f"error: {row.path}: {row.error}", file=sys.stderr)
            bar.update(1)

        summary = score_distributed(
            jobs,
            args.out,
            card.name,
            resume=args.resume,
            address=args.ray or None,
            actors=args.ray_actors,
            cpus_per_actor=args.ray_cpus_per_actor,
            gpus_per_actor=args.ray_gpus_per_actor,
            on_row=show,
            decode=args.decode,
            decode_timeout=decode_timeout,
            decode_device=args.decode_device,
            attributes=explained_columns(card, args.explain),
            **options,
        )
    resumed = f", {summary.kept} kept from before" if args.resume else ""
    actors = f"{summary.actors} {args.backend} actor{'' if summary.actors == 1 else 's'}"
    print(
        f"{card.name} on Ray ({actors}): scored {summary.scored}, "
        f"failed {summary.failed}{resumed}; {summary.images_per_s:.1f} images/s over {summary.wall_s:.1f} s "
        f"({summary.startup_s:.1f} s to start, then {summary.steady_images_per_s:.1f} images/s) -> {args.out}"
    )
    if summary.missing:
        print(
            f"iqart: {summary.stopped or 'stopped early'}: {len(summary.missing)} of {summary.jobs} images not "
            "scored; run again with --resume to finish",
            file=sys.stderr,
        )
        return 128 + summary.signal if summary.signal else 1
    return 0 if summary.scored or summary.kept else 1  # 1: nothing in the output has a score


def run_shards_on_ray(
    args: argparse.Namespace, card: ModelCard, shards: list[str], decode_timeout: float | None
) -> int:
    """Score shards on Ray, one whole shard per task, each task writing its shard's output into
    --out-dir (iqart.engine.distributed_shards); exit code as `iqart score` without Ray."""
    from iqart.engine.cli.score_shards import sample_format
    from iqart.engine.sources.shard_locations import NoShardsError, list_shards

    if not args.out_dir:
        raise UsageError(
            "--ray with shards needs --out-dir: each task writes its own shard's output there "
            "(a folder every node reaches, or object storage)"
        )
    try:
        import ray.data

        from iqart.engine.distributed_shards import score_shards_distributed
    except ImportError as exc:
        raise UsageError(f"--ray needs Ray Data: pip install 'iqart[ray]' ({exc})") from None
    try:
        fmt, columns = sample_format(args, card, list_shards(shards))
    except (NoShardsError, OSError) as exc:
        raise UsageError(str(exc)) from None
    ray.data.DataContext.get_current().enable_progress_bars = False
    summary = score_shards_distributed(
        shards,
        args.out_dir,
        card.name,
        fmt=fmt,
        columns=columns,
        out_format=args.out_format,
        resume=args.resume,
        address=args.ray or None,
        actors=args.ray_actors,
        cpus_per_actor=args.ray_cpus_per_actor,
        gpus_per_actor=args.ray_gpus_per_actor,
        decode=args.decode,
        decode_timeout=decode_timeout,
        decode_device=args.decode_device,
        attributes=explained_columns(card, args.explain),
        **_scorer_options(args),
    )
    skipped = f", {summary.skipped} already done" if summary.skipped else ""
    print(
        f"{card.name} on Ray ({summary.actors} {args.backend} actors): {summary.shards} shards{skipped}, scored "
        f"{summary.scored}, failed {summary.failed}; {summary.images_per_s:.1f} images/s -> {args.out_dir}"
    )
    if summary.given_up or summary.stopped:
        print(
            f"iqart: {summary.stopped or 'Ray gave up on some shards'}: {len(summary.given_up)} shards not "
            "finished; run again with --resume to finish",
            file=sys.stderr,
        )
        return 1
    return 0 if summary.scored or summary.skipped else 1


def _scorer_options(args: argparse.Namespace) -> dict:
    options = {
        "backend": args.backend,
        "device": args.device,
        "batch_size": args.batch_size,
        "weights": args.weights,
        "precision": args.precision,
        "fused_attention": args.fused_attention,
        "max_side": args.max_side,
        "attention": args.attention,
    }
    if args.workers:
        options["workers"] = args.workers
    return options
