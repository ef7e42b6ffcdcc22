"""No hang: a FIFO is an error row without being opened, a decode that overstays its time limit
becomes an error row while the run goes on, and one Ctrl-C stops a run whose decode is stuck.

The slow decode is real: a 49-megapixel PNG cut short takes PIL a good fraction of a second to
decode before it finds the cut (then it is an error row, so no test ever scores it), far longer
than the time limit given, and far longer than the small images beside it take."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqart.engine.cli.main import main
from iqart.engine.pipeline.decode_workers import DecodeWorkers
from iqart.engine.results.formats import read_result_file
from iqart.engine.results.journal import journal_path
from tests.helpers import EXAMPLE_IMAGES, REPO

pytestmark = pytest.mark.usefixtures("iqart_home")
MODEL = "qualiclip-tiny"


@pytest.fixture(scope="module")
def slow_png(tmp_path_factory):
    """A 7000x7000 PNG (tiled noise: 6 MB on disk) with its last 3% cut off."""
    path = tmp_path_factory.mktemp("slow") / "slow.png"
    tile = np.random.default_rng(0).integers(0, 256, (250, 250, 3), dtype=np.uint8)
    Image.fromarray(np.tile(tile, (28, 28, 1))).save(path, compress_level=1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 97 // 100])
    return path


def test_a_fifo_is_an_error_row_and_is_never_opened(tmp_path, weights):
    os.mkfifo(tmp_path / "x.jpg")  # opening it for reading would block until a writer comes
    shutil.copy(EXAMPLE_IMAGES / "coffee.png", tmp_path / "y.png")
    out = tmp_path / "s.csv"
    done = []
    runner = threading.Thread(
        target=lambda: done.append(
            main(["score", str(tmp_path), "--model", MODEL, "-w", str(weights(MODEL)), "--out", str(out)])
        ),
        daemon=True,
    )
    runner.start()
    runner.join(120)
    assert done == [0], "the run hung on the FIFO"
    rows = {Path(r["path"]).name: r for r in read_result_file(out)}
    assert rows["x.jpg"]["error"] == "is a FIFO, not a regular file: not opened" and rows["y.png"]["error"] is None


def test_a_decode_over_the_time_limit_is_an_error_row_and_the_run_goes_on(tmp_path, weights, slow_png, capsys):
    shutil.copy(slow_png, tmp_path / "a_slow.png")
    for name in ("chelsea.png", "coffee.png", "rocket.png"):
        shutil.copy(EXAMPLE_IMAGES / name, tmp_path / name)
    out = tmp_path / "s.csv"
    assert (
        main(
            [
                "score",
                str(tmp_path),
                "--model",
                MODEL,
                "-w",
                str(weights(MODEL)),
                "-j",
                "1",
                "--decode-timeout",
                "0.15",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = {Path(r["path"]).name: r for r in read_result_file(out)}
    assert rows["a_slow.png"]["error"].startswith("decode did not finish within 0.15 s")  # not "truncated"
    assert all(
        rows[name]["error"] is None for name in ("chelsea.png", "coffee.png", "rocket.png")
    )  # one worker, replaced


def test_an_abandoned_worker_is_replaced_and_does_not_hold_the_process(tmp_path):
    workers = DecodeWorkers(1)
    never = threading.Event()
    stuck = workers.submit(never.wait)
    after = workers.submit(lambda: "decoded")
    with pytest.raises(TimeoutError):
        stuck.wait(0.1)
    workers.abandon(stuck)
    assert after.wait(5) == "decoded"  # the queue behind the stuck call moves on
    workers.shutdown([])
    script = (
        "import threading\nfrom iqart.engine.pipeline.decode_workers import DecodeWorkers\n"
        "w = DecodeWorkers(2)\nt = w.submit(threading.Event().wait)\n"
        "import time; time.sleep(0.2)\nw.shutdown([t])\nprint('exiting')\n"
    )
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0 and result.stdout.strip() == "exiting" and time.perf_counter() - started < 30


def test_one_ctrl_c_stops_a_run_while_a_decode_is_stuck(tmp_path, weights, slow_png):
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(EXAMPLE_IMAGES / "coffee.png", folder / "a.png")
    for index in range(6):
        os.link(slow_png, folder / f"b{index}.png")
    out = tmp_path / "s.csv"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "iqart.engine.cli.main",
            "score",
            str(folder),
            "--model",
            MODEL,
            "-w",
            str(weights(MODEL)),
            "-j",
            "1",
            "-b",
            "1",
            "--decode-timeout",
            "0",
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    deadline = time.monotonic() + 120
    while not (journal_path(out).exists() and journal_path(out).read_bytes().count(b"\n") >= 2):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.02)
    child.send_signal(signal.SIGINT)  # once
    _, err = child.communicate(timeout=30)
    assert child.returncode == 130, err
    rows = read_result_file(out)
    assert Path(rows[0]["path"]).name == "a.png" and len(rows) < 7
