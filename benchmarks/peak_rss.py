"""Peak memory of `iqart score` on large photos at the default settings.

    python3 benchmarks/peak_rss.py [--count 8] [--size 4000x3000] [--model qualiclip-tiny] [-- EXTRA iqart ARGS]

Writes `--count` JPEGs of one size (smooth colour fields with noise: content a photo might have)
into a temporary folder, makes sure the model's artifact is cached (in a separate process, so the
export is not counted), then runs `iqart score` on the folder as a child process and reports the
child's peak resident memory (ru_maxrss from wait4) and wall time. Native-resolution models
(QualiCLIP) score the photos at full size, so memory is what batching decides: the pixel budget
per batch (iqart.engine.pipeline.batch_scoring) is what keeps it near one image's worth.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def write_photos(folder: Path, count: int, width: int, height: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for index in range(count):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
        noisy = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(folder / f"photo_{index:02d}.jpg", quality=90)


def run_measured(command: list[str]) -> tuple[int, float, float]:
    """(exit code, peak RSS in MiB, wall seconds) of a child process."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    output = child.stdout.read()
    if child.returncode:
        print(output, file=sys.stderr)
    return child.returncode, usage.ru_maxrss / 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--size", default="4000x3000", help="WxH")
    parser.add_argument("--model", default="qualiclip-tiny")
    parser.add_argument("extra", nargs="*", help="more `iqart score` arguments (after --), e.g. -b 1")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="iqart-rss-") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        write_photos(folder, args.count, width, height)
        subprocess.run([sys.executable, "-c", f"from iqart import Scorer; Scorer({args.model!r})"], check=True)
        command = [
            sys.executable,
            "-m",
            "iqart.engine.cli.main",
            "score",
            str(folder),
            "--model",
            args.model,
            "--out",
            str(Path(tmp) / "scores.csv"),
            *args.extra,
        ]
        code, peak, wall = run_measured(command)
    print(
        f"{args.count} x {width}x{height} JPEG, {args.model}, `iqart score` {' '.join(args.extra) or '(defaults)'}: "
        f"exit {code}, peak RSS {peak:.0f} MiB ({peak / 1024:.2f} GiB), {wall:.1f} s"
    )


if __name__ == "__main__":
    main()
