"""Scoring on Ray Data, in local mode on this machine's 2 CPUs: the rows must be those of the
single-process path (scores and error rows), whatever Ray does to the actors.

One local Ray serves the whole module (starting it costs seconds); every run starts its own
actor pool, which costs most of each test's time.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from iqart.engine.artifact_cache import weights_sha256
from iqart.engine.cli.main import main
from iqart.engine.pipeline.jobs import ScoreRow
from iqart.engine.results.formats import ParquetResultWriter, read_result_file
from iqart.engine.results.journal import journal_path
from iqart.engine.results.output import ResultOutput

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (the dev extra includes it)")
distributed = pytest.importorskip(
    "iqart.engine.distributed", reason="Ray Data is not installed: pip install -e '.[ray]'"
)

MODEL = "qualiclip-tiny"
BAD_FILES = {"empty.png": b"", "text.jpg": b"not an image", "truncated.png": None, "small.png": None}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """24 images of three sizes (in two folders), and one file for each kind of bad input."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index in range(24):
        height, width = [(64, 80), (80, 64), (72, 72)][index % 3]
        folder = root / ("a" if index % 2 else "b")
        folder.mkdir(exist_ok=True)
        coarse = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR).save(folder / f"img{index:02d}.png")
    for name, data in BAD_FILES.items():
        if data is not None:
            (root / name).write_bytes(data)
    Image.new("RGB", (20, 40)).save(root / "small.png")
    (root / "truncated.png").write_bytes((root / "a" / "img01.png").read_bytes()[:200])
    return root


@pytest.fixture(scope="module")
def single_process(iqart_home, images, weights, tmp_path_factory):
    """{path: row} from `iqart score` without Ray: what every distributed run must reproduce."""
    out = tmp_path_factory.mktemp("single") / "scores.csv"
    assert (
        main(["score", str(images), "--model", MODEL, "--weights", str(weights(MODEL)), "-b", "2", "--out", str(out)])
        == 0
    )
    rows = {row["path"]: row for row in read_result_file(out)}
    assert len(rows) == 24 + len(BAD_FILES) and sum(row["error"] is not None for row in rows.values()) == len(BAD_FILES)
    return rows


def assert_same_rows(rows: list[dict], expected: dict[str, dict]) -> None:
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)), "a path was written twice"
    assert set(paths) == set(expected)
    for row in rows:
        want = expected[row["path"]]
        assert row["error"] == want["error"], row["path"]
        if want["error"] is None:
            assert row["score"] == pytest.approx(want["score"], abs=1e-6), row["path"]
        else:
            assert row["score"] is None


def test_rows_survive_the_trip_through_arrow_with_any_file_name():
    rows = [
        ScoreRow("caf\udce9/a.png", 0.25),
        ScoreRow("b.png", error="too small: 1x1"),
        ScoreRow("c.png", 0.5, reference="ref/\udcff.png"),
    ]
    assert distributed.table_rows(distributed.rows_table(rows)) == rows


def test_scores_and_error_rows_equal_the_single_process_path(ray_cluster, images, weights, single_process, tmp_path):
    out = tmp_path / "scores.jsonl"
    listed_twice = images / "a" / "img01.png"  # also found in the folder: scored twice, written once
    summary = distributed.score_distributed([images, listed_twice], out, MODEL, weights=weights(MODEL), batch_size=2)
    assert (summary.jobs, summary.scored, summary.failed) == (len(single_process) + 1, 24, len(BAD_FILES))
    assert summary.duplicates == 1 and summary.missing == [] and summary.stopped is None
    assert summary.actors == 2  # the machine's 2 CPUs, one per actor
    assert_same_rows(read_result_file(out), single_process)


def test_cli_scores_a_parquet_list_and_resumes(ray_cluster, images, weights, single_process, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    manifest = images / "manifest.parquet"  # beside the images: its relative paths resolve against its folder
    pq.write_table(pa.table({"file": sorted(os.path.relpath(path, images) for path in single_process)}), manifest)
    out = tmp_path / "scores.parquet"
    kept, failed_before = str(images / "b" / "img00.png"), str(images / "a" / "img01.png")
    made_by = {"model": MODEL, "weights_sha256": weights_sha256(MODEL, weights(MODEL))}
    with ParquetResultWriter(out, ["path", "score", "error", *made_by]) as writer:
        writer.write({"path": kept, "score": 0.125, "error": None, **made_by})  # a score no model gives: kept as is
        writer.write({"path": failed_before, "score": None, "error": "backend failed: out of memory", **made_by})
    code = main(
        [
            "score",
            "--paths-from",
            str(manifest),
            "--path-column",
            "file",
            "--ray",
            "--model",
            MODEL,
            "--weights",
            str(weights(MODEL)),
            "-b",
            "2",
            "-j",
            "1",  # -j: an actor's own option wins
            "--out",
            str(out),
            "--resume",
        ]
    )
    assert code == 0
    rows = read_result_file(out)
    assert {row["path"]: row["score"] for row in rows}[kept] == 0.125
    assert_same_rows(
        [row for row in rows if row["path"] != kept], {p: r for p, r in single_process.items() if p != kept}
    )


def test_an_actor_killed_mid_run_loses_and_duplicates_no_rows(ray_cluster, images, weights, single_process, tmp_path):
    marker = tmp_path / "died"

    class DiesOnce(distributed.ScoringActor):
        """Scores its block, then kills its own process before returning it: once per run."""

        def __call__(self, block):
            rows = super().__call__(block)
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return rows
            os._exit(1)

    out = tmp_path / "scores.csv"
    summary = distributed.score_distributed(
        [images], out, MODEL, weights=weights(MODEL), batch_size=2, actor_class=DiesOnce
    )
    assert marker.exists(), "no actor died: the test did not test anything"
    assert summary.missing == [] and summary.stopped is None
    assert summary.scored + summary.failed == len(single_process)
    assert_same_rows(read_result_file(out), single_process)


def test_a_block_that_kills_its_actor_every_time_becomes_error_rows(
    ray_cluster, images, weights, single_process, tmp_path
):
    poison = str(min(single_process))

    class DiesOnOneFile(distributed.ScoringActor):
        """Dies whenever its block holds the poison file, as a decoder crash would, every retry."""

        def __call__(self, block):
            if poison.encode() in block.column("path").to_pylist():
                os._exit(1)
            return super().__call__(block)

    out = tmp_path / "scores.csv"
    summary = distributed.score_distributed(
        [images], out, MODEL, weights=weights(MODEL), batch_size=2, actor_class=DiesOnOneFile
    )
    rows = read_result_file(out)
    given_up = {row["path"] for row in rows if row["error"] == distributed.GIVEN_UP}
    assert summary.missing == [] and summary.stopped is None  # the run went on to the end
    assert poison in given_up and len(given_up) <= distributed.BLOCK_BATCHES * 2  # one block of batches of 2
    assert summary.given_up == len(given_up) and summary.scored + summary.failed == len(single_process)
    assert all(row["score"] is None for row in rows if row["path"] in given_up)
    assert_same_rows(
        [row for row in rows if row["path"] not in given_up],
        {path: row for path, row in single_process.items() if path not in given_up},
    )


@pytest.mark.slow  # another actor pool: about 20 s
def test_ray_resumes_from_the_journal_of_a_killed_run_and_refuses_a_second_writer(
    ray_cluster, images, weights, single_process, tmp_path, capsys
):
    out = tmp_path / "scores.csv"
    killed = ResultOutput(out, MODEL, weights_sha256(MODEL, weights(MODEL)), "nr")
    first = sorted(path for path, row in single_process.items() if row["error"] is None)[:5]
    for path in first:
        killed.write({**single_process[path], "score": 0.125})  # a score no model gives: must be kept
    with pytest.raises(ValueError, match="is being written by another iqart process"):
        distributed.score_distributed([images], out, MODEL, weights=weights(MODEL), batch_size=2)
    killed.journal.close()  # the process dies: its lock goes, its journal stays
    summary = distributed.score_distributed([images], out, MODEL, weights=weights(MODEL), batch_size=2, resume=True)
    assert summary.kept == 5 and summary.scored + summary.failed == len(single_process) - 5
    rows = read_result_file(out)
    assert {row["path"]: row["score"] for row in rows if row["path"] in first} == dict.fromkeys(first, 0.125)
    assert_same_rows(
        [row for row in rows if row["path"] not in first],
        {path: row for path, row in single_process.items() if path not in first},
    )
    assert not journal_path(out).exists()


def test_ray_options_are_checked_before_any_work(images, weights, tmp_path, capsys):
    code = main(
        [
            "score",
            str(images),
            "--model",
            MODEL,
            "--weights",
            str(weights(MODEL)),
            "--ray",
            "--ray-actors",
            "0",
            "--out",
            str(tmp_path / "s.csv"),
        ]
    )
    assert code == 2 and "--ray-actors must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()
