"""The `iqart` console script: what must be decided before torch is imported, then the CLI.

`iqart bench` interleaves engines in one process. torch's OpenMP threads spin after each call
(libgomp's default), taking the cores from the engine timed next: on a 2-core machine torch's
batch-1 p95 went from 96 ms alone to 1,076 ms interleaved with ONNX Runtime, and "speed-ups" of
4.9x and 9.9x vanished with OMP_WAIT_POLICY=PASSIVE (docs/benchmarking.md). libgomp reads that
variable once, when torch loads it, so it is set here, for bench only, unless the user set it.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    if sys.argv[1:2] == ["bench"]:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from iqart.engine.cli.main import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
