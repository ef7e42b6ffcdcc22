"""Nothing lost, nothing mixed: the journal, the output lock, resume by resolved path and by
provenance, signals and their exit codes, checks of --out before any work, and the umask.

Killing is done for real (a child `iqart score` gets SIGKILL, SIGTERM or SIGHUP while it scores);
the journal's on-disk states are made by the same code a run uses."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqart.engine.cli.main import main
from iqart.engine.results import journal
from iqart.engine.results.formats import read_result_file
from iqart.engine.results.journal import journal_path
from iqart.engine.results.output import OutputError, ResultOutput, merge_rows
from iqart.train.models.checkpoints import save_checkpoint
from iqart.train.models.zoo import build_model
from tests.helpers import EXAMPLE_IMAGES, REPO

pytestmark = pytest.mark.usefixtures("iqart_home")
MODEL = "qualiclip-tiny"


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    """600 small JPEGs: a run long enough (seconds) to be stopped half-way."""
    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(1)
    for index in range(600):
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(folder / f"i{index:04d}.jpg")
    return folder


def row(path, score=0.5, error=None):
    return {"path": path, "reference": None, "score": score, "error": error}


# -- the journal and the output ------------------------------------------------------------------


def test_rows_are_on_disk_as_they_are_written_and_the_final_file_at_the_end(tmp_path):
    out = tmp_path / "s.csv"
    with ResultOutput(out, MODEL, "ab" * 32, "nr") as output:
        output.write(row("/x/a.png"))
        lines = journal_path(out).read_text().splitlines()
        assert json.loads(lines[0])["model"] == MODEL and json.loads(lines[1])["path"] == "/x/a.png"
        assert not out.exists()  # the final file appears only complete
        output.finish()
    assert not journal_path(out).exists()
    assert read_result_file(out) == [{**row("/x/a.png"), "score": 0.5, "model": MODEL, "weights_sha256": "ab" * 32}]


def test_a_killed_run_leaves_a_journal_that_resume_reads_and_a_torn_line_is_ignored(tmp_path, capsys):
    out = tmp_path / "s.jsonl"
    output = ResultOutput(out, MODEL, "ab" * 32, "nr")
    output.write(row("/x/a.png"))
    output.write(row("/x/b.png", None, "corrupt"))
    output.journal.close()  # what the kernel does when the process is killed: the lock goes, the file stays
    with open(journal_path(out), "ab") as f:
        f.write(b'{"path": "/x/c.p')  # a line cut short by power loss
    resumed = ResultOutput(out, MODEL, "ab" * 32, "nr", resume=True)
    assert resumed.is_done(("/x/a.png", None)) and not resumed.is_done(("/x/b.png", None))
    resumed.write(row("/x/b.png", 0.25))
    resumed.finish()
    resumed.close()
    assert {r["path"]: r["score"] for r in read_result_file(out)} == {"/x/a.png": 0.5, "/x/b.png": 0.25}
    assert "1 damaged line(s) ignored" in capsys.readouterr().err


def test_a_second_writer_is_refused_at_once_until_the_first_dies(tmp_path, weights, capsys):
    out = tmp_path / "s.csv"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from iqart.engine.results.output import ResultOutput\n"
            f"o = ResultOutput({str(out)!r}, 'm', 'ab' * 32, 'nr')\n"
            "o.write({'path': 'p', 'score': 1.0, 'error': None})\n"
            "print('locked', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.perf_counter()
        assert main(["score", str(EXAMPLE_IMAGES), "--model", MODEL, "-w", str(weights(MODEL)), "--out", str(out)]) == 2
        assert time.perf_counter() - started < 10
        assert "is being written by another iqart process" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert (
        main(
            [
                "score",
                str(EXAMPLE_IMAGES / "coffee.png"),
                "--model",
                MODEL,
                "-w",
                str(weights(MODEL)),
                "--out",
                str(out),
            ]
        )
        == 0
    )


def test_merge_keeps_one_row_per_file_however_it_was_spelled(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    a_real, a_link = str(tmp_path / "real" / "a.png"), str(tmp_path / "link" / "a.png")
    b_real, b_link = str(tmp_path / "real" / "b.png"), str(tmp_path / "link" / "b.png")
    merged = merge_rows(
        [
            row(a_real, None, "broken then"),
            row(b_real, None, "broken"),
            row(a_link, 0.7),
            row(b_link, None, "still broken"),
            row(str(tmp_path / "real" / "c.png"), 0.1),
        ]
    )
    assert [(r["path"], r["score"], r["error"]) for r in merged] == [
        (a_link, 0.7, None),
        (b_link, None, "still broken"),
        (str(tmp_path / "real" / "c.png"), 0.1, None),
    ]
    os.symlink(a_real, tmp_path / "real" / "alias.png")
    both = merge_rows([row(a_real, 0.7), row(str(tmp_path / "real" / "alias.png"), 0.7)])
    assert len(both) == 2  # two names of one file, both scored: both kept


def test_resume_through_a_symlink_or_a_relative_path_duplicates_nothing(tmp_path, weights, capsys, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.png", "coffee.png", "rocket.png"):
        shutil.copy(EXAMPLE_IMAGES / name, folder / name)
    (folder / "broken.png").write_text("not yet")
    os.symlink(folder, tmp_path / "same")
    out = tmp_path / "s.csv"
    common = ["--model", MODEL, "-w", str(weights(MODEL)), "--out", str(out), "--resume"]
    assert main(["score", str(folder), *common]) == 0
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["score", "same", *common]) == 0  # the broken file is tried again, the rest recognised
    assert "scored 0, failed 1, 3 already scored" in capsys.readouterr().out
    assert main(["score", "./photos/../photos", *common]) == 0
    rows = read_result_file(out)
    assert len(rows) == 4 and len({os.path.realpath(r["path"]) for r in rows}) == 4


def test_resume_exits_zero_when_only_failed_files_remain(tmp_path, weights):
    shutil.copy(EXAMPLE_IMAGES / "coffee.png", tmp_path / "good.png")
    (tmp_path / "bad.png").write_text("never an image")
    out = tmp_path / "o" / "s.csv"
    out.parent.mkdir()
    command = [
        "score",
        str(tmp_path / "good.png"),
        str(tmp_path / "bad.png"),
        "--model",
        MODEL,
        "-w",
        str(weights(MODEL)),
        "--out",
        str(out),
        "--resume",
    ]
    assert main(command) == 0
    assert main(command) == 0  # a scheduler that retries on failure must not loop for ever
    assert (
        main(
            [
                "score",
                str(tmp_path / "bad.png"),
                "--model",
                MODEL,
                "-w",
                str(weights(MODEL)),
                "--out",
                str(tmp_path / "o" / "only_bad.csv"),
            ]
        )
        == 1
    )  # nothing could be scored


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda tmp: tmp / "dir.csv", "is a directory"),
        (lambda tmp: tmp / "missing" / "s.csv", "does not exist"),
    ],
)
def test_an_unwritable_out_is_a_usage_error_before_any_work(tmp_path, weights, capsys, make, message):
    out = make(tmp_path)
    if out.name == "dir.csv":
        out.mkdir()
    home = Path(os.environ["IQART_HOME"])
    exported_before = sorted(home.rglob("model.onnx")) if home.exists() else []
    other = tmp_path / "unexported.pt"  # weights never exported: an export would show in the cache
    save_checkpoint(other, MODEL, build_model(MODEL, seed=11).state_dict())
    assert main(["score", str(EXAMPLE_IMAGES), "--model", MODEL, "-w", str(other), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert (sorted(home.rglob("model.onnx")) if home.exists() else []) == exported_before


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: a read-only folder is writable anyway")
def test_a_read_only_folder_is_a_usage_error(tmp_path, weights, capsys):
    (tmp_path / "ro").mkdir(mode=0o555)
    assert (
        main(
            [
                "score",
                str(EXAMPLE_IMAGES),
                "--model",
                MODEL,
                "-w",
                str(weights(MODEL)),
                "--out",
                str(tmp_path / "ro" / "s.csv"),
            ]
        )
        == 2
    )
    assert "is not writable" in capsys.readouterr().err


def test_resume_refuses_an_output_that_does_not_record_its_model(tmp_path):
    out = tmp_path / "old.csv"
    out.write_text("path,score,error\n/x/a.png,0.5,\n")
    with pytest.raises(OutputError, match="does not record which model"):
        ResultOutput(out, MODEL, "ab" * 32, "nr", resume=True)
    assert not journal_path(out).exists()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_files_we_create_honour_the_umask(tmp_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow", reason="Parquet needs pyarrow (the ray extra)")
    previous = os.umask(0o027)
    try:
        out = tmp_path / f"s{suffix}"
        with ResultOutput(out, MODEL, "ab" * 32, "nr") as output:
            output.write(row("/x/a.png"))
            assert journal_path(out).stat().st_mode & 0o777 == 0o640
            output.finish()
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o640  # tempfile's own mode would be 0600


def test_stale_temporaries_of_a_killed_final_write_are_removed(tmp_path):
    out = tmp_path / "s.csv"
    (tmp_path / ".s.csv.abc123.tmp").write_text("half a file")
    with ResultOutput(out, MODEL, "ab" * 32, "nr", resume=True) as output:
        output.write(row("/x/a.png"))
        output.finish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


# -- durability: what reaches the disk, and what a resume counts ----------------------------------


@pytest.fixture
def fsyncs(monkeypatch):
    """Every os.fsync this test makes, as (monotonic time, st_dev, st_ino) of the file synced,
    recorded before the real fsync runs. A spy, not a stand-in: the data still reaches the disk."""
    calls, real_fsync = [], os.fsync

    def recording_fsync(fd):
        status = os.fstat(fd)
        calls.append((time.monotonic(), status.st_dev, status.st_ino))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return calls


def synced_at(calls, path) -> list[float]:
    """When the file or folder at `path` (as it is now) was fsynced."""
    status = os.stat(path)
    return [when for when, device, inode in calls if (device, inode) == (status.st_dev, status.st_ino)]


def test_the_journal_and_its_folder_are_synced_when_a_run_starts(tmp_path, fsyncs):
    """A fresh journal's header, and its name in the folder, survive power loss from the start."""
    for resume in (False, True):  # --resume without a journal starts one the same way
        out = tmp_path / f"s{resume}.csv"
        with ResultOutput(out, MODEL, "ab" * 32, "nr", resume=resume) as output:
            assert synced_at(fsyncs, journal_path(out)), "the journal was not fsynced at start"
            assert synced_at(fsyncs, tmp_path), "the journal's folder was not fsynced at start"
            output.write(row("/x/a.png"))


def test_rows_are_synced_while_they_arrive(tmp_path, fsyncs, monkeypatch):
    """After each row a sync of the journal follows without waiting for the run to stop (the
    periodic syncer; it runs every SYNC_INTERVAL_S, here 0.1 s, and the wait allows 100 of them
    so that a loaded machine waking it late does not fail the test)."""
    interval = 0.1
    monkeypatch.setattr(journal, "SYNC_INTERVAL_S", interval)
    out = tmp_path / "s.csv"
    with ResultOutput(out, MODEL, "ab" * 32, "nr") as output:
        for index in range(5):
            output.write(row(f"/x/{index}.png"))
            written = time.monotonic()
            deadline = written + 100 * interval  # generous: a loaded machine wakes the syncer late
            while not any(when > written for when in synced_at(fsyncs, journal_path(out))):
                assert time.monotonic() < deadline, f"row {index} not fsynced within {100 * interval:.0f} s"
                time.sleep(interval / 10)
        output.finish()


@pytest.mark.parametrize("stop", ["finish", "close"])
def test_every_stop_syncs_the_rows_written_since_the_last_sync(tmp_path, fsyncs, monkeypatch, stop):
    """Whether a run finishes (the final file, also on a stop signal) or just closes (an error),
    the rows written since the last periodic sync reach the disk before the lock goes; finish()
    also syncs the final file before its rename and the folder after it."""
    monkeypatch.setattr(journal, "SYNC_INTERVAL_S", 3600.0)  # no periodic sync during this test
    out = tmp_path / "s.csv"
    output = ResultOutput(out, MODEL, "ab" * 32, "nr")
    output.write(row("/x/a.png"))
    output.write(row("/x/b.png"))
    written = time.monotonic()
    journal_file = journal_path(out)
    journal_status = os.stat(journal_file)
    if stop == "finish":
        output.finish()
    output.close()
    journal_syncs = [
        when for when, device, inode in fsyncs if (device, inode) == (journal_status.st_dev, journal_status.st_ino)
    ]
    assert any(when > written for when in journal_syncs), f"{stop}: the last rows were not fsynced"
    if stop == "finish":
        final_syncs, folder_syncs = synced_at(fsyncs, out), synced_at(fsyncs, tmp_path)
        assert final_syncs and any(when > min(final_syncs) for when in folder_syncs)
    else:
        assert journal_file.read_bytes().count(b"\n") == 3  # header and two rows, kept for --resume


def test_resume_counts_each_whole_row_once_and_redoes_a_cut_line(tmp_path, capsys):
    """A journal cut where a kill or power loss can cut it (at every row boundary, and inside
    every line): each row written whole counts as done exactly once, a row cut short is not done
    and is scored again, and the final file holds every file once. The slow kill -9 test below
    is the end-to-end proof; this one is every cut, in a second."""
    paths = [str(tmp_path / f"i{index}.png") for index in range(4)]
    written = [row(paths[0], 0.1), row(paths[1], None, "corrupt"), row(paths[2], 0.3), row(paths[3], 0.4)]
    made = tmp_path / "made.jsonl"
    output = ResultOutput(made, MODEL, "ab" * 32, "nr")
    for record in written:
        output.write(record)
    output.journal.close()  # what a killed run leaves: the lock released, the journal kept
    data = journal_path(made).read_bytes()
    line_ends = [index + 1 for index, byte in enumerate(data) if byte == ord("\n")]
    assert len(line_ends) == 1 + len(written)
    starts = [0, *line_ends[:-1]]
    inside = {
        cut for start, end in zip(starts, line_ends, strict=True) for cut in (start + 1, (start + end) // 2, end - 1)
    }
    for cut in [0, *line_ends, *sorted(inside)]:  # 0: killed before the header was written
        whole = sum(end <= cut for end in line_ends[1:])  # rows whose line, newline included, survived
        folder = tmp_path / f"cut{cut}"
        folder.mkdir()
        out = folder / "s.jsonl"
        journal_path(out).write_bytes(data[:cut])
        resumed = ResultOutput(out, MODEL, "ab" * 32, "nr", resume=True)
        done = [resumed.is_done((path, None)) for path in paths]
        assert done == [index < whole and written[index]["error"] is None for index in range(4)], (cut, whole)
        assert [kept["path"] for kept in resumed.kept] == paths[:whole], cut
        for path, is_done in zip(paths, done, strict=True):
            if not is_done:
                resumed.write(row(path, 0.9))
        resumed.finish()
        resumed.close()
        final = {result["path"]: result["score"] for result in read_result_file(out)}
        assert [result["path"] for result in read_result_file(out)] == sorted(final, key=paths.index)
        assert final == {path: written[index]["score"] if done[index] else 0.9 for index, path in enumerate(paths)}
    capsys.readouterr()


# -- real signals ----------------------------------------------------------------------------------


def start_scoring(folder: Path, out: Path, weights: Path, *extra: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "iqart.engine.cli.main",
        "score",
        str(folder),
        "--model",
        MODEL,
        "-w",
        str(weights),
        "-b",
        "4",
        "--out",
        str(out),
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def journal_rows(out: Path) -> int:
    try:
        return max(0, journal_path(out).read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


def wait_for_rows(child: subprocess.Popen, out: Path, rows: int, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while journal_rows(out) < rows:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "no rows appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_sigterm_sighup_and_sigint_stop_keeping_every_row(many_images, weights, tmp_path, signum, code):
    out = tmp_path / "s.csv"
    child = start_scoring(many_images, out, weights(MODEL))
    wait_for_rows(child, out, 20)
    child.send_signal(signum)
    _, err = child.communicate(timeout=60)
    assert child.returncode == code, err
    assert "run again with --resume" in err
    rows = read_result_file(out)  # the final file, complete as far as it goes
    assert 20 <= len(rows) < 600 and not journal_path(out).exists()
    assert len({r["path"] for r in rows}) == len(rows)


@pytest.mark.slow
def test_kill_9_loses_no_written_row_and_resume_scores_each_file_once(many_images, weights, tmp_path):
    out = tmp_path / "s.jsonl"
    for _ in range(2):
        child = start_scoring(many_images, out, weights(MODEL), "--resume")
        wait_for_rows(child, out, journal_rows(out) + 30)
        written = journal_rows(out)
        child.kill()
        child.wait()
        assert journal_rows(out) >= written and not out.exists()
    child = start_scoring(many_images, out, weights(MODEL), "--resume")
    stdout, err = child.communicate(timeout=300)
    assert child.returncode == 0, err
    rows = read_result_file(out)
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == 600 and all(r["error"] is None for r in rows)
    assert int(re.search(r"(\d+) already scored", stdout).group(1)) >= written  # every row written before the kill
