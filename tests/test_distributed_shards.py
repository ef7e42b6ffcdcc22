"""Shards on Ray Data, in local mode on this machine's 2 CPUs: each task scores whole shards and
writes their outputs; the rows must be those of the single-process shard run, whatever happens
to the actors, and --resume works by shard across runs."""

from __future__ import annotations

import os

import pytest

from iqart.engine.cli.main import main
from iqart.engine.results.formats import read_result_file
from iqart.train.models.prompts import attribute_names
from tests.helpers import EXAMPLE_IMAGES
from tests.shard_data import write_with_tarfile

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (the dev extra includes it)")
distributed_shards = pytest.importorskip(
    "iqart.engine.distributed_shards", reason="Ray Data is not installed: pip install -e '.[ray]'"
)

MODEL = "qualiclip-tiny"


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three tar shards of the example photos (5, 5 and 6 samples), keys unique per shard."""
    root = tmp_path_factory.mktemp("shards")
    photos = sorted(EXAMPLE_IMAGES.glob("*.png"))
    for number, chunk in enumerate((photos[:5], photos[5:10], photos[10:])):
        write_with_tarfile(root / f"{number:05d}.tar", [[(f"{photo.stem}.png", photo.read_bytes())] for photo in chunk])
    return root


@pytest.fixture(scope="module")
def single_process(iqart_home, shards, weights, tmp_path_factory):
    """{(shard, key): score} from `iqart score` on the shards without Ray."""
    out = tmp_path_factory.mktemp("single") / "scores.csv"
    assert main(["score", str(shards), "-m", MODEL, "-w", str(weights(MODEL)), "-o", str(out)]) == 0
    rows = read_result_file(out)
    assert len(rows) == 16 and all(row["error"] is None for row in rows)
    return {(row["shard"], row["key"]): row["score"] for row in rows}


def read_outputs(out_dir) -> dict:
    rows = [row for path in sorted(out_dir.glob("*.parquet")) for row in read_result_file(path)]
    keys = [(row["shard"], row["key"]) for row in rows]
    assert len(keys) == len(set(keys)), "a sample was written twice"
    return {key: row["score"] for key, row in zip(keys, rows, strict=True)}


def test_each_shard_scored_on_ray_into_its_own_output(ray_cluster, shards, weights, single_process, tmp_path):
    """With the attributes asked for (--explain): QualiCLIP's 7 pair probabilities, whose mean is
    the score, in every shard's output."""
    out_dir = tmp_path / "out"
    names = attribute_names("qualiclip")
    summary = distributed_shards.score_shards_distributed(
        [str(shards / "{00000..00002}.tar")],
        str(out_dir),
        MODEL,
        weights=weights(MODEL),
        batch_size=2,
        attributes=names,
    )
    assert summary.given_up == [] and summary.stopped is None and summary.scored == 16
    assert sorted(p.name for p in out_dir.iterdir()) == ["00000.parquet", "00001.parquet", "00002.parquet"]
    scores = read_outputs(out_dir)
    assert scores.keys() == single_process.keys()
    assert all(scores[key] == pytest.approx(single_process[key], abs=1e-6) for key in scores)
    for row in read_result_file(out_dir / "00001.parquet"):
        assert row["score"] == pytest.approx(sum(row[name] for name in names) / len(names), abs=1e-6)


def test_files_on_ray_keep_their_attributes(ray_cluster, weights, tmp_path):
    from iqart.engine.distributed import score_distributed

    out = tmp_path / "scores.jsonl"
    names = attribute_names("qualiclip")
    summary = score_distributed([EXAMPLE_IMAGES], out, MODEL, weights=weights(MODEL), batch_size=4, attributes=names)
    rows = read_result_file(out)
    assert summary.scored == 16 and len(rows) == 16
    for row in rows:
        assert row["score"] == pytest.approx(sum(row[name] for name in names) / len(names), abs=1e-6)


def test_a_shard_whose_actor_dies_is_done_again_and_resume_skips_finished_shards(
    ray_cluster, shards, weights, single_process, tmp_path
):
    marker = tmp_path / "died"

    class DiesOnceMidShard(distributed_shards.ShardScoringActor):
        """Dies before its first shard's output is written: the node lost mid-shard."""

        def __call__(self, block):
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return super().__call__(block)
            os._exit(1)

    out_dir = tmp_path / "out"
    first = distributed_shards.score_shards_distributed(
        [str(shards / "0000[01].tar")], str(out_dir), MODEL, weights=weights(MODEL), actor_class=DiesOnceMidShard
    )
    assert marker.exists(), "no actor died: the test did not test anything"
    assert first.given_up == [] and first.scored == 10 and len(list(out_dir.glob("*.parquet"))) == 2
    second = distributed_shards.score_shards_distributed(
        [str(shards)], str(out_dir), MODEL, weights=weights(MODEL), resume=True
    )
    assert second.skipped == 2 and second.scored == 6, "the finished shards were scored again"
    scores = read_outputs(out_dir)
    assert scores.keys() == single_process.keys()
    assert all(scores[key] == pytest.approx(single_process[key], abs=1e-6) for key in scores)


def test_ray_on_shards_needs_an_output_folder(shards, weights, tmp_path, capsys):
    code = main(["score", str(shards), "-m", MODEL, "-w", str(weights(MODEL)), "-o", str(tmp_path / "s.csv"), "--ray"])
    assert code == 2 and "--ray with shards needs --out-dir" in capsys.readouterr().err
