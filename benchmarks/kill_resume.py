"""Kill `iqart score` at random points with SIGKILL and SIGTERM, resume each time, and check that
the output ends with every file exactly once, scored as an uninterrupted run scores it.

    python3 benchmarks/kill_resume.py [--count 3000] [--kills 6] [--model qualiclip-tiny] [--out-format csv]

What a preempted cluster job goes through: the scheduler sends SIGTERM (Kubernetes, Slurm) or the
node dies (SIGKILL, the OOM killer), and the job is started again with `--resume`. For each kill
the script reports the rows on disk just before the signal (counted from the journal by this
script, not by iqart), the rows on disk after the process died, and the rows lost (on disk before,
gone after; after a SIGTERM there can be more rows than before: the batch in flight is finished).
Each kill comes at a random row count within the run. A final run without interruption scores the
same folder into another file;
the resumed output must hold the same files, once each, with the same scores. Peak RSS is the
largest ru_maxrss of all the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from iqart.engine.results.formats import read_result_file
from iqart.engine.results.journal import journal_path

SIZES = [(96, 96), (112, 80), (80, 112), (128, 96)]


def write_images(folder: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        coarse = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"img_{index:05d}.jpg", quality=90)


def rows_on_disk(out: Path) -> set[str]:
    """Paths with a score in the output and its journal, read independently of iqart's reader
    (a journal line counts only when complete)."""
    paths = set()
    if out.exists():
        paths |= {row["path"] for row in read_result_file(out) if row["error"] is None}
    journal = journal_path(out)
    if journal.exists():
        for line in journal.read_bytes().splitlines(keepends=True):
            if line.endswith(b"\n"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if "path" in record and record.get("error") is None:
                    paths.add(record["path"])
    return paths


def score_command(folder: Path, out: Path, model: str, resume: bool) -> list[str]:
    return [
        sys.executable,
        "-m",
        "iqart.engine.cli.main",
        "score",
        str(folder),
        "--model",
        model,
        "--out",
        str(out),
        *(["--resume"] if resume else []),
    ]


def wait_child(child: subprocess.Popen) -> tuple[int, int, str]:
    """(exit code, peak RSS KiB, output) of a finished child."""
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage.ru_maxrss, child.stdout.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--model", default="qualiclip-tiny")
    parser.add_argument("--out-format", default="csv", choices=["csv", "jsonl", "parquet"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    signals = [signal.SIGKILL if index % 2 == 0 else signal.SIGTERM for index in range(args.kills)]
    with tempfile.TemporaryDirectory(prefix="iqart-kill-") as tmp:
        folder, out = Path(tmp) / "images", Path(tmp) / f"scores.{args.out_format}"
        folder.mkdir()
        write_images(folder, args.count, args.seed)
        subprocess.run(
            [sys.executable, "-c", f"from iqart import Scorer; Scorer({args.model!r})"], check=True, capture_output=True
        )
        peak_kib, report, started = 0, [], time.perf_counter()
        for number, signum in enumerate(signals, start=1):
            child = subprocess.Popen(
                score_command(folder, out, args.model, resume=True),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            baseline = len(rows_on_disk(out))
            share = (args.count - baseline) // (len(signals) - number + 2)  # leave work for the later kills
            target = baseline + rng.randint(1, max(1, share))  # a random point of this run
            while len(rows_on_disk(out)) < target and child.poll() is None:
                time.sleep(0.02)
            if child.poll() is not None:
                raise SystemExit(f"run {number} finished before its kill: use more images (--count)")
            before = len(rows_on_disk(out))
            child.send_signal(signum)
            code, kib, output = wait_child(child)
            peak_kib = max(peak_kib, kib)
            after = len(rows_on_disk(out))
            report.append(
                {
                    "kill": number,
                    "signal": signal.Signals(signum).name,
                    "exit": code,
                    "rows_before_kill": before,
                    "rows_after_kill": after,
                    "rows_lost": max(0, before - after),
                    "finished_after_signal": max(0, after - before),
                }
            )
        child = subprocess.Popen(
            score_command(folder, out, args.model, resume=True),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        code, kib, output = wait_child(child)
        peak_kib = max(peak_kib, kib)
        already = re.search(r"(\d+) already scored", output)
        if code != 0:
            raise SystemExit(f"the last resume failed ({code}):\n{output}")
        resumed_wall = time.perf_counter() - started
        reference = Path(tmp) / f"reference.{args.out_format}"
        child = subprocess.Popen(
            score_command(folder, reference, args.model, resume=False),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ref_code, kib, _ = wait_child(child)
        peak_kib = max(peak_kib, kib)
        rows, expected = read_result_file(out), {row["path"]: row["score"] for row in read_result_file(reference)}
        paths = [row["path"] for row in rows]
        leftovers = sorted(p.name for p in Path(tmp).iterdir() if p.name not in {"images", out.name, reference.name})
        exactly_once = len(paths) == len(set(paths)) == args.count and set(paths) == set(expected)
        same_scores = exactly_once and all(abs(row["score"] - expected[row["path"]]) <= 1e-6 for row in rows)
    for line in report:
        print(
            f"kill {line['kill']}: {line['signal']:7s} exit {line['exit']:4d}; "
            f"rows on disk before {line['rows_before_kill']:5d}, "
            f"found after {line['rows_after_kill']:5d}: rows lost {line['rows_lost']}"
            + (
                f" ({line['finished_after_signal']} more: the batch in flight was finished)"
                if line["finished_after_signal"]
                else ""
            )
        )
    print(
        f"final resume: exit {code}, {already.group(1) if already else '?'} already scored; "
        f"{args.kills} kills + resumes took {resumed_wall:.0f} s; reference run exit {ref_code}"
    )
    print(
        f"output: {len(paths)} rows for {args.count} files; every file exactly once: {exactly_once}; "
        f"scores equal an uninterrupted run: {same_scores}; files left beside it: {leftovers or 'none'}"
    )
    print(
        f"rows lost per kill: {[line['rows_lost'] for line in report]}; "
        f"peak RSS of any run: {peak_kib / 1024:.0f} MiB; "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs"
    )
    if not (exactly_once and same_scores and not leftovers and all(line["rows_lost"] == 0 for line in report)):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
